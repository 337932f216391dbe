--
-- 21_duplicate_trust: duplicate detection told the truth and kept its evidence
-- (issue 10): industry-aware name normalization from allocation.name_term (and
-- re-indexing when it changes), credit codes normalized before validation,
-- the owner a disputed write asked for kept in its event, and messages that
-- do not show a rep another rep's customer.
--
CREATE EXTENSION allocation;
CREATE EXTENSION pg_trgm;
\pset null '(null)'
\set SHOW_CONTEXT never
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_r21_wang;
DROP ROLE IF EXISTS regress_r21_li;
DROP ROLE IF EXISTS regress_r21_app;
RESET client_min_messages;
CREATE ROLE regress_r21_wang;
CREATE ROLE regress_r21_li;
CREATE ROLE regress_r21_app;

CREATE FUNCTION r21_try(sql text) RETURNS TABLE (code text, message text, detail text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE sql;
    code := '00000';
    RETURN NEXT;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
    detail := regexp_replace(detail, 'since .*\.$', 'since <time>.');
    RETURN NEXT;
END $f$;

-------------------------------------------------------------------------------
-- Name terms: the registered company name and the shop sign of one dealer
-- normalize alike; a cooperative or a farm stays apart from the shop
-------------------------------------------------------------------------------
SELECT kind, count(*) AS terms FROM allocation.name_term GROUP BY kind ORDER BY kind;
CREATE TABLE r21_pair (a text, b text, same_dealer boolean);
INSERT INTO r21_pair VALUES
    ('丰收东1号农化有限公司',   '丰收东1号农资店',       true),
    ('丰收农资店',              '丰收农资商店',          true),
    ('湘潭县丰收植保服务部',    '湘潭县丰收农药门市部',  true),
    ('绿丰种业有限责任公司',    '绿丰种子经营部',        true),
    ('长沙金穗化肥批发部',      '长沙金穗肥业有限公司',  true),
    ('河南绿丰农业科技有限公司', '河南绿丰农资店',       true),
    ('（湘潭）惠农 农资 商行',  '湘潭惠农农化股份有限公司', true),
    ('ＡＢＣ Seeds Co., Ltd.', 'abc seeds ltd',          true),
    ('丰收种植专业合作社',      '丰收农资店',            false),
    ('丰收家庭农场',            '丰收农资店',            false),
    ('丰收合作社',              '丰收农民专业合作社',    true),
    ('丰收农资店',              '丰年农资店',            false),
    ('湘潭县丰收农资店',        '湘乡市丰收农资店',      false),
    ('金农药店',                '金农化肥店',            false);
SELECT a, b, allocation.normalize_name(a) AS norm_a, allocation.normalize_name(b) AS norm_b,
       allocation.normalize_name(a) = allocation.normalize_name(b) AS same_norm,
       round(similarity(allocation.normalize_name(a), allocation.normalize_name(b))::numeric, 2) AS similarity,
       same_dealer
  FROM r21_pair;
-- every pair that is one dealer normalizes to one name; no other pair is 0.6 similar
SELECT count(*) FILTER (WHERE same_dealer AND allocation.normalize_name(a) <> allocation.normalize_name(b)) AS missed,
       count(*) FILTER (WHERE NOT same_dealer AND similarity(allocation.normalize_name(a), allocation.normalize_name(b)) >= 0.6)
           AS false_matches
  FROM r21_pair;
-- the explicit list keeps its meaning: only these suffixes, all of them removed
SELECT allocation.normalize_name('湘潭丰收商贸', ARRAY['商贸']) AS custom, allocation.normalize_name('丰收合作社', ARRAY['合作社']) AS custom_entity;

INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, login) VALUES
    (1, 'wang', 'Wang', 1, 'regress_r21_wang'), (2, 'li', 'Li', 1, 'regress_r21_li');
CREATE TABLE r21_dealer (id integer PRIMARY KEY, name text, tel text, uscc text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('r21_dealer', 'id', 'loc', 'owner', '{"name": "name", "phone": "tel", "credit_code": "uscc"}');
-- a low threshold: the cooperative's and the farm's names are over 40 % similar to the shop's,
-- yet a cooperative or a farm is no match for a shop
SELECT round(similarity(allocation.normalize_name('丰收东1号农资店'), allocation.normalize_name(x))::numeric, 2) AS similarity_to_the_shop, x
  FROM unnest(ARRAY['丰收东1号种植专业合作社', '丰收东1号家庭农场']) x;
SELECT allocation.set_duplicate_policy('r21_dealer', exact => 'block', fuzzy => 'block', name_similarity => 0.4, within_m => 5000);
INSERT INTO r21_dealer (id, name, loc, owner) VALUES (1, '丰收东1号农资店', 'SRID=4326;POINT(113.60 34.70)', 2);
SELECT code, message FROM r21_try($$INSERT INTO r21_dealer (id, name, loc) VALUES (2, '丰收东1号农化有限公司', 'SRID=4326;POINT(113.601 34.70)')$$);
SELECT code, message FROM r21_try($$INSERT INTO r21_dealer (id, name, loc) VALUES (3, '丰收东1号种植专业合作社', 'SRID=4326;POINT(113.601 34.70)')$$);
SELECT code, message FROM r21_try($$INSERT INTO r21_dealer (id, name, loc) VALUES (4, '丰收东1号家庭农场', 'SRID=4326;POINT(113.601 34.70)')$$);
SELECT id, name FROM r21_dealer ORDER BY id;

-- the DBA extends the list: stored names are normalized again at once
SELECT allocation.set_duplicate_policy('r21_dealer', exact => 'block', fuzzy => 'block', name_similarity => 0.6, within_m => 5000);
INSERT INTO r21_dealer (id, name, loc) VALUES (5, '惠民肥料站', 'SRID=4326;POINT(112.00 28.00)');
SELECT key, name_norm FROM allocation.identity WHERE key = '5';
SELECT code, message FROM r21_try($$INSERT INTO r21_dealer (id, name, loc) VALUES (6, '惠民农资店', 'SRID=4326;POINT(112.001 28.00)')$$);
DELETE FROM r21_dealer WHERE id = 6;
SELECT allocation.grant_role('regress_r21_wang', 'rep');
SET ROLE regress_r21_wang;   -- a rep: the terms are configuration
SELECT code, message FROM r21_try($$INSERT INTO allocation.name_term (term, kind) VALUES ('站', 'shop_suffix')$$);
RESET ROLE;
INSERT INTO allocation.name_term (term, kind, note) VALUES ('站', 'shop_suffix', 'county depots'), ('肥料', 'trade_term', NULL);
SELECT allocation.normalize_name('惠民肥料站') AS now_normalized;
SELECT key, name_norm FROM allocation.identity WHERE key = '5';
SELECT code, message FROM r21_try($$INSERT INTO r21_dealer (id, name, loc) VALUES (6, '惠民农资店', 'SRID=4326;POINT(112.001 28.00)')$$);
-- removing the terms restores the old normalization (and the stored one)
DELETE FROM allocation.name_term WHERE term IN ('站', '肥料');
SELECT allocation.normalize_name('惠民肥料站') AS normalized_again, (SELECT name_norm FROM allocation.identity WHERE key = '5') AS stored;
-- a term that only changes in a rolled-back transaction leaves nothing behind
BEGIN;
INSERT INTO allocation.name_term (term, kind) VALUES ('肥料站', 'shop_suffix');
SELECT allocation.normalize_name('惠民肥料站') AS inside, (SELECT name_norm FROM allocation.identity WHERE key = '5') AS stored_inside;
ROLLBACK;
SELECT allocation.normalize_name('惠民肥料站') AS after_rollback, (SELECT name_norm FROM allocation.identity WHERE key = '5') AS stored;

-------------------------------------------------------------------------------
-- Credit codes: upper case and without blanks before they are validated, on
-- every path (the rebuild of stored rows, the row trigger, the function)
-------------------------------------------------------------------------------
SELECT allocation.credit_code_is_valid('91350100m000100y43') AS lower_valid,
       allocation.credit_code_is_valid(E'9135 0100M000100Y43\t') AS blanks_valid,
       allocation.credit_code_is_valid('91350100m000100y44') AS wrong_check;
SELECT allocation.set_duplicate_policy('r21_dealer', exact => 'off');
INSERT INTO r21_dealer (id, name, uscc) VALUES (10, '甲', E'91350100m000100y43\t');
SELECT allocation.set_duplicate_policy('r21_dealer', exact => 'block');
SELECT key, credit_code FROM allocation.identity WHERE key = '10';
SELECT code, message FROM r21_try($$INSERT INTO r21_dealer (id, name, uscc) VALUES (11, '乙', '9135 0100 M000 100Y 43')$$);
INSERT INTO r21_dealer (id, name, uscc) VALUES (12, '丙', '91110108551385082q');
SELECT key, credit_code FROM allocation.identity WHERE key = '12';

-------------------------------------------------------------------------------
-- Dispute: the row is stored without an owner, and its event keeps the owner
-- the write asked for (direct INSERT path and the batch writer of an UPDATE)
-------------------------------------------------------------------------------
SELECT allocation.set_duplicate_policy('r21_dealer', exact => 'dispute');
INSERT INTO r21_dealer (id, name, tel, owner) VALUES (20, '张三', '13800138000', 1);
INSERT INTO r21_dealer (id, name, tel, owner) VALUES (21, '张三二店', '+86 138 0013 8000', 2);
INSERT INTO r21_dealer (id, name, tel) VALUES (22, '张三三店', '138-0013-8000');
INSERT INTO r21_dealer (id, name, tel, owner) VALUES (23, '李四', '13900139000', 1);
UPDATE r21_dealer SET tel = '13800138000', owner = 2 WHERE id = 23;
SELECT id, owner FROM r21_dealer WHERE id BETWEEN 20 AND 23 ORDER BY id;
SELECT key, kind, from_rep, to_rep, detail->>'requested_owner' AS requested_owner, source
  FROM allocation.event WHERE key IN ('20', '21', '22', '23') ORDER BY id;

-------------------------------------------------------------------------------
-- Messages about a duplicate do not show a rep another rep's customer
-------------------------------------------------------------------------------
SELECT allocation.grant_role('regress_r21_li', 'rep');
GRANT SELECT, INSERT, UPDATE, DELETE ON r21_dealer TO regress_r21_wang, regress_r21_li, regress_r21_app;
SELECT allocation.enable_rep_security('r21_dealer');
UPDATE r21_dealer SET tel = '13700137000' WHERE id = 1;
-- customer 1 (丰收东1号农资店, 13700137000) is li's, customer 20 (13800138000) wang's
SELECT id, name, tel, owner FROM r21_dealer WHERE id IN (1, 20) ORDER BY id;
SELECT allocation.set_duplicate_policy('r21_dealer', exact => 'warn', fuzzy => 'warn', name_similarity => 0.6, within_m => 5000);
-- a rep: "another customer", no key, name or holder
SET ROLE regress_r21_wang;
INSERT INTO r21_dealer (id, name, loc) VALUES (30, '丰收东1号农化有限公司', 'SRID=4326;POINT(113.601 34.70)');
INSERT INTO r21_dealer (id, name, tel) VALUES (31, '某店', '13700137000');
RESET ROLE;
-- the application (no rep's login) sees every row: the full text
SET ROLE regress_r21_app;
\set VERBOSITY terse
INSERT INTO r21_dealer (id, name, loc) VALUES (32, '丰收东1号农资商店', 'SRID=4326;POINT(113.602 34.70)');
\set VERBOSITY default
RESET ROLE;
SELECT allocation.set_duplicate_policy('r21_dealer', exact => 'block', fuzzy => 'block', name_similarity => 0.6, within_m => 5000);
SET ROLE regress_r21_wang;
SELECT * FROM r21_try($$INSERT INTO r21_dealer (id, name, loc) VALUES (40, '丰收东1号植保服务部', 'SRID=4326;POINT(113.601 34.70)')$$);
SELECT * FROM r21_try($$INSERT INTO r21_dealer (id, name, tel) VALUES (41, '某店', '13700137000')$$);
-- its own customer is named
SELECT * FROM r21_try($$INSERT INTO r21_dealer (id, name, tel) VALUES (44, '某店', '13800138000')$$);
RESET ROLE;
-- li holds customer 1: it may see it named
SET ROLE regress_r21_li;
SELECT * FROM r21_try($$INSERT INTO r21_dealer (id, name, loc) VALUES (42, '丰收东1号植保服务部', 'SRID=4326;POINT(113.601 34.70)')$$);
RESET ROLE;
SET ROLE regress_r21_app;
SELECT * FROM r21_try($$INSERT INTO r21_dealer (id, name, loc) VALUES (43, '丰收东1号植保服务部', 'SRID=4326;POINT(113.601 34.70)')$$);
RESET ROLE;
-- the audit log keeps the full evidence for managers
DO $$ BEGIN
    FOR i IN 1..200 LOOP
        -- every refusal of this test: 2, 6, 11, 40 to 44
        EXIT WHEN (SELECT count(*) FROM allocation.event WHERE kind = 'duplicate_blocked') >= 8;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT actor, key, detail->>'other_key' AS other_key, detail->>'match' AS match,
       regexp_replace(detail->>'holder', ' since.*', '') AS holder
  FROM allocation.event WHERE kind = 'duplicate_blocked' AND key IN ('40', '41', '42', '43', '44') ORDER BY key;
SELECT count(*) AS stored_refused FROM r21_dealer WHERE id IN (40, 41, 42, 43, 44);
SELECT * FROM allocation.check_consistency();

DROP TABLE r21_dealer, r21_pair;
DROP FUNCTION r21_try(text);
DROP EXTENSION allocation CASCADE;
DROP EXTENSION pg_trgm;
DROP OWNED BY regress_r21_wang, regress_r21_li;
DROP ROLE regress_r21_wang;
DROP ROLE regress_r21_li;
DROP ROLE regress_r21_app;
