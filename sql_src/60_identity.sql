-------------------------------------------------------------------------------
-- Customer identity (issue #3 groundwork): normalized names and phones,
-- unified social credit code check
-------------------------------------------------------------------------------
CREATE FUNCTION allocation.normalize_name(name text)
RETURNS text
AS 'MODULE_PATHNAME', 'allocation_normalize_name'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION allocation.normalize_name(text) IS
'A customer name reduced for comparison: full-width to half-width, lower case, no whitespace or punctuation, legal/trade suffixes (有限公司, 农资店, 经营部, 门市部, ...) removed from the end';

CREATE FUNCTION allocation.normalize_name(name text, suffixes text[])
RETURNS text
AS 'MODULE_PATHNAME', 'allocation_normalize_name_with'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION allocation.normalize_name(text, text[]) IS
'normalize_name() with your own list of suffixes to remove (instead of the built-in list)';

CREATE FUNCTION allocation.normalize_phone(phone text)
RETURNS text
AS 'MODULE_PATHNAME', 'allocation_normalize_phone'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION allocation.normalize_phone(text) IS
'Digits of a Chinese phone number: mobile as 11 digits (+86/0086 removed), landline as area code with 0 plus number; NULL when the text is no such number';

CREATE FUNCTION allocation.credit_code_is_valid(code text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'allocation_credit_code_is_valid'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION allocation.credit_code_is_valid(text) IS
'Whether a unified social credit code (统一社会信用代码) has 18 characters of its alphabet and the GB 32100-2015 check character';
