-------------------------------------------------------------------------------
-- Customer identity (issue #3 groundwork): normalized names and phones,
-- unified social credit code check
-------------------------------------------------------------------------------
-- The words a dealer's name may end with that do not tell two dealers apart
-- (legal forms, shop signs, trade words), and the ones that do (entity terms:
-- a cooperative is not the shop of the same name).  normalize_name(text)
-- reads this table (cached per backend); changing it re-normalizes the
-- stored identities (trigger zz_reindex, in the duplicates part).
CREATE TABLE allocation.name_term (
    term       text PRIMARY KEY CHECK (btrim(term) <> ''),
    kind       text NOT NULL CHECK (kind IN ('legal_suffix', 'shop_suffix', 'trade_term', 'entity_term')),
    canonical  text CHECK (canonical IS NULL OR kind = 'entity_term'),
    builtin    boolean NOT NULL DEFAULT false,
    note       text
);
COMMENT ON TABLE allocation.name_term IS 'Terms normalize_name() takes off the end of a customer name: legal_suffix (有限公司), shop_suffix (农资店, 门市部), trade_term (农化, 植保) are removed; entity_term (合作社) is removed and its canonical form put back at the end, so a cooperative never matches a shop. Extend it for your trade; stored identities are re-normalized when it changes';
COMMENT ON COLUMN allocation.name_term.canonical IS 'entity_term only: the form kept at the end of the normalized name (专业合作社 -> 合作社); NULL = the term itself';
COMMENT ON COLUMN allocation.name_term.builtin IS 'shipped with the extension (not dumped by pg_dump; a restore recreates it)';
INSERT INTO allocation.name_term (term, kind, canonical, builtin) VALUES
    -- legal forms
    ('股份有限公司', 'legal_suffix', NULL, true), ('有限责任公司', 'legal_suffix', NULL, true),
    ('有限公司', 'legal_suffix', NULL, true), ('分公司', 'legal_suffix', NULL, true),
    ('公司', 'legal_suffix', NULL, true), ('个体工商户', 'legal_suffix', NULL, true),
    ('个体户', 'legal_suffix', NULL, true), ('Co., Ltd.', 'legal_suffix', NULL, true),
    ('Limited', 'legal_suffix', NULL, true), ('Ltd', 'legal_suffix', NULL, true),
    ('Inc', 'legal_suffix', NULL, true), ('LLC', 'legal_suffix', NULL, true),
    -- shop signs
    ('门市部', 'shop_suffix', NULL, true), ('服务部', 'shop_suffix', NULL, true),
    ('经营部', 'shop_suffix', NULL, true), ('营业部', 'shop_suffix', NULL, true),
    ('批发部', 'shop_suffix', NULL, true), ('销售部', 'shop_suffix', NULL, true),
    ('经销部', 'shop_suffix', NULL, true), ('农资部', 'shop_suffix', NULL, true),
    ('门市', 'shop_suffix', NULL, true), ('商店', 'shop_suffix', NULL, true),
    ('商行', 'shop_suffix', NULL, true), ('店', 'shop_suffix', NULL, true),
    -- trade words of agricultural inputs
    ('农资', 'trade_term', NULL, true), ('农化', 'trade_term', NULL, true),
    ('植保', 'trade_term', NULL, true), ('种业', 'trade_term', NULL, true),
    ('种子', 'trade_term', NULL, true), ('化肥', 'trade_term', NULL, true),
    ('肥业', 'trade_term', NULL, true), ('农药', 'trade_term', NULL, true),
    ('生资', 'trade_term', NULL, true), ('农业', 'trade_term', NULL, true),
    ('科技', 'trade_term', NULL, true), ('商贸', 'trade_term', NULL, true),
    ('贸易', 'trade_term', NULL, true),
    -- other kinds of entity: kept (a cooperative, a farm is not the shop of that name)
    ('农民专业合作社', 'entity_term', '合作社', true), ('专业合作社', 'entity_term', '合作社', true),
    ('股份合作社', 'entity_term', '合作社', true), ('合作联社', 'entity_term', '合作社', true),
    ('合作社', 'entity_term', NULL, true), ('家庭农场', 'entity_term', NULL, true),
    ('农场', 'entity_term', NULL, true);
CREATE TRIGGER zz_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON allocation.name_term
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._invalidate();

CREATE FUNCTION allocation.normalize_name(name text)
RETURNS text
AS 'MODULE_PATHNAME', 'allocation_normalize_name'
LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION allocation.normalize_name(text) IS
'A customer name reduced for comparison: full-width to half-width, lower case, no whitespace or punctuation, the terms of allocation.name_term (有限公司, 门市部, 店, 农化, 农资, ...) removed from the end; an entity term (合作社, 家庭农场) stays, in canonical form. STABLE: it depends on allocation.name_term';

CREATE FUNCTION allocation.normalize_name(name text, suffixes text[])
RETURNS text
AS 'MODULE_PATHNAME', 'allocation_normalize_name_with'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION allocation.normalize_name(text, text[]) IS
'normalize_name() with your own list of suffixes to remove (instead of allocation.name_term); IMMUTABLE, usable in an index';

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
'Whether a unified social credit code (统一社会信用代码), upper-cased and without blanks (as duplicate detection compares it), has 18 characters of its alphabet and the GB 32100-2015 check character';

CREATE FUNCTION allocation._credit_code(code text)
RETURNS text
AS 'MODULE_PATHNAME', 'allocation_credit_code'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION allocation._credit_code(text) IS 'internal: a credit code as duplicate detection compares it (upper case, no blanks), NULL when not valid';
