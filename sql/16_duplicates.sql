--
-- 16_duplicates: duplicate detection on INSERT/UPDATE (same valid credit code,
-- same normalized phone, similar name nearby) with the actions block, dispute
-- and warn; the dispute queue; identities kept in step with UPDATE, DELETE,
-- TRUNCATE; and that a blocked write stores nothing (but is audited).
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

CREATE FUNCTION r16_mask(t text) RETURNS text LANGUAGE sql IMMUTABLE
RETURN regexp_replace(t, '\w{3} \w{3} \d+ [0-9:.]+ \d{4} \w+', '<time>', 'g');
CREATE FUNCTION r16_try(sql text) RETURNS TABLE (code text, message text, detail text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE sql;
    code := '00000';
    RETURN NEXT;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
    detail := r16_mask(detail);
    RETURN NEXT;
END $f$;
-- waits until the background writer of a blocked duplicate's event is done
CREATE PROCEDURE r16_wait_events(n integer) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..200 LOOP
        EXIT WHEN (SELECT count(*) FROM allocation.event WHERE kind = 'duplicate_blocked') >= n;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;

INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id) VALUES (1, 'a', 'Rep A', 1), (2, 'b', 'Rep B', 1);
INSERT INTO allocation.rule (name, target_kind, target_rep_id) VALUES ('everything to a', 'rep', 1);
CREATE TABLE r16_dealer (
    id     integer PRIMARY KEY,
    name   text,
    tel    text,
    uscc   text,
    loc    geometry(Point, 4326),
    owner  bigint
);
SELECT allocation.manage('r16_dealer', 'id', 'loc', 'owner', '{"name": "name", "phone": "tel", "credit_code": "uscc"}');
-- two dealers already share a phone before the policy exists
INSERT INTO r16_dealer (id, name, tel, uscc, loc) VALUES
    (1, '河南绿丰农资有限公司', '138-0013-8000', '91350100M000100Y43', ST_SetSRID(ST_MakePoint(113.60, 34.70), 4326)),
    (2, '丰收种业经营部',       '0371-6688 1234', NULL,               ST_SetSRID(ST_MakePoint(113.70, 34.80), 4326)),
    (3, '郑州惠农门市部',       '+86 371 66881234', 'bad-code',       ST_SetSRID(ST_MakePoint(113.65, 34.75), 4326));

CREATE VIEW r16_state AS
SELECT d.id, d.name, r.code AS owner, a.source
  FROM r16_dealer d LEFT JOIN allocation.rep r ON r.id = d.owner
  LEFT JOIN allocation.assignment a ON a.key = d.id::text AND a.valid_to IS NULL
 ORDER BY d.id;
CREATE VIEW r16_queue AS
SELECT key, other_key, match, value, round(similarity::numeric, 2) AS similarity, action, status
  FROM allocation.duplicate ORDER BY id;
CREATE VIEW r16_fingerprint AS
SELECT (SELECT string_agg(id || ':' || coalesce(owner::text, '-') || ':' || coalesce(tel, '-'), ',' ORDER BY id) FROM r16_dealer) AS rows,
       (SELECT count(*) FROM allocation.assignment) AS registry_rows,
       (SELECT count(*) FROM allocation.event WHERE kind <> 'duplicate_blocked') AS events,
       (SELECT coalesce(string_agg(key || '/' || coalesce(phone, '-') || '/' || coalesce(credit_code, '-'), ',' ORDER BY key), '') FROM allocation.identity) AS identities,
       (SELECT coalesce(string_agg(kind || '=' || value || '>' || key, ',' ORDER BY kind, value), '') FROM allocation.identity_key) AS holders,
       (SELECT count(*) FROM allocation.duplicate) AS queued;

-- bad policies
SELECT * FROM r16_try($$SELECT allocation.set_duplicate_policy('r16_dealer', 'reject')$$);
SELECT * FROM r16_try($$SELECT allocation.set_duplicate_policy('r16_dealer', 'block', NULL)$$);
SELECT * FROM r16_try($$SELECT allocation.set_duplicate_policy('r16_dealer', 'block', 'warn', 1.5)$$);
SELECT * FROM r16_try($$SELECT allocation.set_duplicate_policy('r16_dealer', 'block', 'warn', 0.6, -10)$$);
SELECT * FROM r16_try($$SELECT allocation.set_duplicate_policy('pg_class', 'block')$$);
-- the engine reads identity columns with its owner's rights: user-defined types are refused
CREATE TYPE r16_tel AS (v text);
CREATE TABLE r16_odd (id int PRIMARY KEY, tel r16_tel, loc geometry(Point, 4326), owner bigint);
SELECT * FROM r16_try($$SELECT allocation.manage('r16_odd', 'id', 'loc', 'owner', '{"phone": "tel"}')$$);
DROP TABLE r16_odd;
DROP TYPE r16_tel;
-- fuzzy matching needs pg_trgm
SELECT * FROM r16_try($$SELECT allocation.set_duplicate_policy('r16_dealer', 'block', 'warn')$$);
CREATE TABLE r16_no_identity (id int PRIMARY KEY, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('r16_no_identity', 'id', 'loc', 'owner');
SELECT * FROM r16_try($$SELECT allocation.set_duplicate_policy('r16_no_identity', 'block')$$);
SELECT * FROM r16_try($$SELECT allocation.set_duplicate_policy('r16_no_identity', 'off', 'warn')$$);
CREATE ROLE regress_dup_other;
GRANT USAGE ON SCHEMA allocation TO regress_dup_other;
GRANT EXECUTE ON FUNCTION allocation.set_duplicate_policy(regclass, text, text, real, double precision) TO regress_dup_other;
SET ROLE regress_dup_other;
SELECT * FROM r16_try($$SELECT allocation.set_duplicate_policy('r16_dealer', 'block')$$);
RESET ROLE;
SELECT duplicate_exact, duplicate_fuzzy FROM allocation.managed_table WHERE tbl = 'r16_dealer'::regclass;

CREATE EXTENSION pg_trgm;
-- the stored customers are indexed; the two that share a phone are queued once
SELECT allocation.set_duplicate_policy('r16_dealer', exact => 'block', fuzzy => 'warn', name_similarity => 0.5, within_m => 5000);
SELECT allocation.set_duplicate_policy('r16_dealer', exact => 'block', fuzzy => 'warn', name_similarity => 0.5, within_m => 5000);
SELECT * FROM r16_queue;
SELECT key, credit_code, phone, name_norm FROM allocation.identity ORDER BY key;

-- block: the same credit code written differently, the same mobile with +86 and dashes
SELECT * FROM r16_fingerprint \gset before_
SELECT * FROM r16_try($$INSERT INTO r16_dealer (id, name, uscc) VALUES (10, '另一家', ' 91350100m000100y43 ')$$);
SELECT * FROM r16_try($$INSERT INTO r16_dealer (id, name, tel) VALUES (11, '王老板', '+86 138 0013 8000')$$);
-- two new rows with one phone in a single statement: the second is refused
SELECT * FROM r16_try($$INSERT INTO r16_dealer (id, name, tel) VALUES (12, '甲', '13912345678'), (13, '乙', '0086-139-1234-5678')$$);
SELECT * FROM r16_fingerprint \gset after_
SELECT :'before_rows' = :'after_rows' AS rows_kept, :before_registry_rows = :after_registry_rows AS registry_kept,
       :before_events = :after_events AS events_kept, :'before_identities' = :'after_identities' AS identities_kept,
       :'before_holders' = :'after_holders' AS holders_kept, :before_queued = :after_queued AS queue_kept;
-- ... but each refusal is in the audit log (written by a background worker, outside the failed transaction)
CALL r16_wait_events(3);
SELECT actor, kind, key, reason, detail->>'match' AS match, detail->>'other_key' AS other_key
  FROM allocation.event WHERE kind = 'duplicate_blocked' ORDER BY key;
-- an invalid credit code is never compared
INSERT INTO r16_dealer (id, name, uscc) VALUES (14, '无效代码店', 'bad-code');
-- a fuzzy match (similar name within 5 km) only warns: kept, owner assigned, queued
INSERT INTO r16_dealer (id, name, loc) VALUES (15, '河南绿丰农资店', ST_SetSRID(ST_MakePoint(113.61, 34.70), 4326));
-- the same name 50 km away is another dealer; a merely related name is no match
INSERT INTO r16_dealer (id, name, loc) VALUES (16, '河南绿丰', ST_SetSRID(ST_MakePoint(114.20, 34.70), 4326)),
                                            (17, '绿丰农资店', ST_SetSRID(ST_MakePoint(113.60, 34.70), 4326));
SELECT * FROM r16_queue WHERE action = 'warn';
SELECT kind, key, reason FROM allocation.event WHERE kind = 'duplicate_warning';
SELECT * FROM r16_state WHERE id >= 14;
SELECT name_norm, lon, lat FROM allocation.identity WHERE key IN ('15', '16', '17') ORDER BY key;

-- dispute: the row is kept without an owner (even one given explicitly) and queued
SELECT allocation.set_duplicate_policy('r16_dealer', exact => 'dispute', fuzzy => 'off');
INSERT INTO r16_dealer (id, name, tel, owner) VALUES (20, '张三', '13800138000', 2);
SELECT * FROM r16_state WHERE id = 20;
SELECT kind, key, reason FROM allocation.event WHERE key = '20';
SELECT * FROM r16_queue WHERE key = '20';
-- an UPDATE that makes a held customer a duplicate takes its owner away
UPDATE r16_dealer SET uscc = '91350100M000100Y43' WHERE id = 16;
SELECT * FROM r16_state WHERE id = 16;
-- nobody can claim a customer in dispute
SELECT * FROM r16_try($$SELECT allocation.claim('r16_dealer', '20', 1)$$);
-- the manager decides: customer 20 goes to rep b; the entry of 16 was no duplicate
SELECT allocation.resolve_dispute((SELECT id FROM allocation.duplicate WHERE key = '20'), 2, 'same shop, new number for b');
SELECT allocation.dismiss_dispute((SELECT id FROM allocation.duplicate WHERE key = '16'), 'branch office');
SELECT * FROM r16_try($$SELECT allocation.dismiss_dispute((SELECT id FROM allocation.duplicate WHERE key = '16'), 'again')$$);
SELECT * FROM r16_try($$SELECT allocation.resolve_dispute(999999, 1, 'x')$$);
SELECT * FROM r16_state WHERE id IN (16, 20);
-- a decided pair is not reported again: editing 16 keeps its (dismissed) duplicate code and its owner
UPDATE r16_dealer SET owner = 1 WHERE id = 16;
UPDATE r16_dealer SET name = '河南绿丰二店', uscc = '91350100M000100Y43' WHERE id = 16;
SELECT count(*) AS open_entries_for_16 FROM allocation.duplicate WHERE key = '16' AND status = 'open';
SELECT key, status, decision FROM allocation.duplicate WHERE key IN ('16', '20') ORDER BY id;
SELECT kind, key, reason FROM allocation.event WHERE kind LIKE 'dispute_%' ORDER BY id;

-- identities follow the rows: a deleted holder passes its phone to the customer that shares it
SELECT kind, value, key FROM allocation.identity_key WHERE value = '13800138000';
DELETE FROM r16_dealer WHERE id = 1;
SELECT kind, value, key FROM allocation.identity_key WHERE value = '13800138000';
SELECT allocation.set_duplicate_policy('r16_dealer', exact => 'block');
SELECT * FROM r16_try($$INSERT INTO r16_dealer (id, name, tel) VALUES (21, '李四', '13800138000')$$);
-- a changed phone frees the old one
UPDATE r16_dealer SET tel = '13700000000' WHERE id = 20;
SELECT kind, value, key FROM allocation.identity_key WHERE value IN ('13800138000', '13700000000') ORDER BY value;
-- ON CONFLICT on the customer's own key is no duplicate of itself
INSERT INTO r16_dealer (id, name, tel) VALUES (20, '张三', '13700000000') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name;
INSERT INTO r16_dealer (id, name, tel) VALUES (20, '张三', '13700000000') ON CONFLICT DO NOTHING;
-- a statement that fails after our trigger leaves no identity behind
SELECT * FROM r16_try($$INSERT INTO r16_dealer (id, name, tel) VALUES (30, 'x', '13600000000'), (30, 'y', '13500000000')$$);
SELECT count(*) AS leftover FROM allocation.identity WHERE key = '30';
-- TRUNCATE and switching the policy off forget the identities
TRUNCATE r16_dealer;
SELECT count(*) AS identities, (SELECT count(*) FROM allocation.identity_key) AS holders FROM allocation.identity;
INSERT INTO r16_dealer (id, name, tel) VALUES (40, 'a', '13800138000');
SELECT allocation.set_duplicate_policy('r16_dealer', exact => 'off');
SELECT count(*) AS identities FROM allocation.identity;
INSERT INTO r16_dealer (id, name, tel) VALUES (41, 'b', '13800138000');
SELECT * FROM allocation.check_consistency();
-- a fuzzy block: a similar name nearby is refused with its own SQLSTATE, and nothing is stored
SELECT allocation.set_duplicate_policy('r16_dealer', exact => 'off', fuzzy => 'block', name_similarity => 0.5, within_m => 5000);
INSERT INTO r16_dealer (id, name, loc) VALUES (50, '河南绿丰农资有限公司', ST_SetSRID(ST_MakePoint(113.60, 34.70), 4326));
SELECT count(*) AS rows_before FROM r16_dealer \gset
SELECT code, message FROM r16_try($$INSERT INTO r16_dealer (id, name, loc) VALUES (51, '河南绿丰农资店', ST_SetSRID(ST_MakePoint(113.61, 34.70), 4326))$$);
SELECT count(*) = :rows_before AS nothing_stored, NOT EXISTS (SELECT 1 FROM allocation.identity WHERE key = '51') AS no_identity FROM r16_dealer;
-- the refused writes' events are written by background workers: wait for all five before dropping
CALL r16_wait_events(5);
SELECT key FROM allocation.event WHERE kind = 'duplicate_blocked' ORDER BY key;

DROP TABLE r16_dealer, r16_no_identity CASCADE;
DROP EXTENSION allocation CASCADE;
DROP EXTENSION pg_trgm;
DROP FUNCTION r16_try(text), r16_mask(text);
DROP PROCEDURE r16_wait_events(integer);
DROP OWNED BY regress_dup_other;
DROP ROLE regress_dup_other;
