-- pgTAP: customer identity functions (normalize_name, normalize_phone, credit_code_is_valid)
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
BEGIN;
CREATE EXTENSION allocation;
SELECT plan(57);

-- volatility and strictness (usable in indexes)
SELECT is((SELECT provolatile::text || proisstrict::text || proparallel::text FROM pg_proc
            WHERE oid = 'allocation.normalize_name(text)'::regprocedure), 'strues',
          'normalize_name(text) is STABLE (it reads allocation.name_term) STRICT PARALLEL SAFE');
SELECT is((SELECT provolatile::text || proisstrict::text || proparallel::text FROM pg_proc
            WHERE oid = 'allocation.normalize_name(text, text[])'::regprocedure), 'itrues',
          'normalize_name(text, text[]) is IMMUTABLE STRICT PARALLEL SAFE (usable in an index)');
SELECT is((SELECT provolatile::text || proisstrict::text || proparallel::text FROM pg_proc
            WHERE oid = 'allocation.normalize_phone(text)'::regprocedure), 'itrues', 'normalize_phone is IMMUTABLE STRICT PARALLEL SAFE');
SELECT is((SELECT provolatile::text || proisstrict::text || proparallel::text FROM pg_proc
            WHERE oid = 'allocation.credit_code_is_valid(text)'::regprocedure), 'itrues', 'credit_code_is_valid is IMMUTABLE STRICT PARALLEL SAFE');

-- normalize_name: a table of cases
SELECT is(allocation.normalize_name(input), expected, format('normalize_name(%s) = %s', input, expected))
  FROM (VALUES
    ('湘潭县丰收农资店', '湘潭县丰收'),
    ('湘潭县丰收农资有限公司', '湘潭县丰收'),
    ('湘潭县 丰收 农资 有限责任公司', '湘潭县丰收'),
    ('（湘潭县）丰收农资经营部', '湘潭县丰收'),
    ('湘潭县丰收农资门市部', '湘潭县丰收'),
    ('湘潭县·丰收', '湘潭县丰收'),
    ('【湘潭县】丰收股份有限公司', '湘潭县丰收'),
    ('ＡＢＣ　Ｓｅｅｄｓ Co., Ltd.', 'abcseeds'),
    ('Green-Field  Inc.', 'greenfield'),
    ('GREEN FIELD LIMITED', 'greenfield'),
    ('绿丰种植专业合作社', '绿丰种植合作社'),     -- a cooperative stays one
    ('丰收东1号农化有限公司', '丰收东1号'),
    ('丰收东1号农资店', '丰收东1号'),
    ('丰收农业科技有限公司', '丰收'),
    ('金农药店', '金农药'),                     -- never reduced to one character
    ('长沙绿丰商行', '长沙绿丰'),
    ('有限公司', '有限'),
    ('', '')) AS t(input, expected);
SELECT is(allocation.normalize_name('丰收农资店'), allocation.normalize_name('丰 收 农 资 有 限 公 司'),
          'spacing and legal form do not tell two dealers apart');
SELECT isnt(allocation.normalize_name('丰收农资店'), allocation.normalize_name('丰年农资店'),
            'different names stay different');
SELECT is(allocation.normalize_name('湘潭丰收商贸', ARRAY['商贸']), '湘潭丰收', 'custom suffix list');
SELECT is(allocation.normalize_name('湘潭丰收农资店', ARRAY['商贸']), '湘潭丰收农资店', 'custom list replaces the built-in one');
SELECT is(allocation.normalize_name(NULL), NULL, 'NULL in, NULL out');

-- normalize_phone: a table of cases
SELECT is(allocation.normalize_phone(input), expected, format('normalize_phone(%s) = %s', input, coalesce(expected, 'NULL')))
  FROM (VALUES
    ('+86 138 0013 8000', '13800138000'),
    ('0086-13800138000', '13800138000'),
    ('86 13800138000', '13800138000'),
    ('138-0013-8000', '13800138000'),
    ('１３８ ００１３ ８０００', '13800138000'),
    ('0731-8888 8888', '073188888888'),
    ('(0731) 8888-8888', '073188888888'),
    ('+86 731 88888888', '073188888888'),
    ('010-6655 4433', '01066554433'),
    ('12345', NULL),
    ('+1 415 555 0100', NULL),
    ('138001380001', NULL),
    ('1380013800', NULL),
    ('call 13800138000', NULL),
    ('8888 8888', NULL)) AS t(input, expected);

-- credit_code_is_valid: a table of cases
SELECT is(allocation.credit_code_is_valid(input), expected, format('credit_code_is_valid(%s) = %s', input, expected))
  FROM (VALUES
    ('91350100M000100Y43', true),
    ('91110108551385082Q', true),
    ('51430000500000001T', true),
    ('91350100M000100Y44', false),      -- wrong check character
    ('9135010OM000100Y43', false),      -- O is not in the alphabet
    ('91350100I000100Y43', false),      -- I is not in the alphabet
    ('91350100m000100y43', true),       -- lower case: compared upper case
    (' 91350100 M000100Y43 ', true),    -- blanks: compared without them
    ('９１３５０１００Ｍ０００１００Ｙ４３', true),   -- full width
    ('91350100m000100y44', false),      -- lower case, wrong check character
    ('91350100M000100Y4', false),       -- 17 characters
    ('91350100M000100Y433', false),     -- 19 characters
    ('91350100M 00100Y43', false),      -- 17 characters and a blank
    ('91350100M-000100Y43', false),     -- a dash is no blank
    ('', false)) AS t(input, expected);

SELECT * FROM finish();
ROLLBACK;
