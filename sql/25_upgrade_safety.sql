--
-- 25_upgrade_safety: the compiled form of a rule condition is a cache stamped
-- with the server that wrote it (version number / system identifier).  A tree
-- from any other server -- what pg_upgrade leaves behind: another node format,
-- other OIDs -- is never read: the engine compiles the condition's text again
-- (under its saved search path) for inserts, explain() and the DDL follow-ups.
-- Also: the library serves SQL version 1.0 (upgrade pending), and an UPDATE
-- that changes nothing does not touch updated_at.
--
CREATE EXTENSION allocation;
\set SHOW_CONTEXT never

CREATE FUNCTION public.u25_is_big(v numeric) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS 'SELECT v > 1000';
CREATE TABLE u25_customer (id int PRIMARY KEY, name text, volume numeric, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('u25_customer', 'id', 'loc', 'owner', '{"name": "name"}');
INSERT INTO allocation.team (id, code, name) VALUES (1, 't', 'Team');
INSERT INTO allocation.rep (id, code, name, team_id) VALUES (1, 'big', 'Big desk', 1), (2, 'other', 'Other', 1);
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl, condition)
    VALUES ('big growers', 50, 'rep', 1, 'u25_customer', 'u25_is_big(volume) AND name IS NOT NULL');
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id) VALUES ('rest', 10, 'rep', 2);

-- the stamp is this server's
SELECT condition_stamp = allocation._condition_stamp() AS stamped_here,
       allocation._condition_stamp() = (current_setting('server_version_num')::int / 10000)::text || '/'
                                       || (SELECT system_identifier FROM pg_control_system()) AS major_and_system_id,
       condition_bin IS NOT NULL AS compiled
  FROM allocation.rule WHERE name = 'big growers';
INSERT INTO u25_customer VALUES (1, 'grower one', 5000, NULL, NULL), (2, 'small', 5, NULL, NULL);
SELECT id, owner FROM u25_customer ORDER BY id;

-- an UPDATE that changes nothing keeps updated_at (and records no config change)
UPDATE allocation.rule SET updated_at = '2020-01-01' WHERE name = 'big growers';
SELECT updated_at = '2020-01-01' AS set_by_hand FROM allocation.rule WHERE name = 'big growers';
UPDATE allocation.rule SET condition = condition WHERE name = 'big growers';
SELECT updated_at = '2020-01-01' AS kept_by_noop FROM allocation.rule WHERE name = 'big growers';
UPDATE allocation.rule SET description = 'the large growers desk' WHERE name = 'big growers';
SELECT updated_at > '2020-01-01' AS bumped_by_change FROM allocation.rule WHERE name = 'big growers';

-- forge what pg_upgrade leaves: a tree in a node format this server cannot read,
-- stamped by another server (the rule trigger is bypassed, as by pg_upgrade)
SET session_replication_role = replica;
UPDATE allocation.rule
   SET condition_bin = '{OPEXPR_FROM_ANOTHER_VERSION :opno 99999 :opfuncid 99999 :args ({VAR :varno 1 :varattno 3})}',
       condition_stamp = '140011/7000000000000000001'
 WHERE name = 'big growers';
RESET session_replication_role;
SELECT pg_notify('u25', 'config changed outside the triggers');
\c
SET client_min_messages = warning;
\set SHOW_CONTEXT never
-- inserts: the condition is compiled again from its text
INSERT INTO u25_customer VALUES (3, 'grower three', 9000, NULL, NULL), (4, 'small four', 9, NULL, NULL);
SELECT id, owner FROM u25_customer ORDER BY id;
SELECT a.key, r.name AS rule FROM allocation.assignment a JOIN allocation.rule r ON r.id = a.rule_id
 WHERE a.key IN ('3', '4') AND a.valid_to IS NULL ORDER BY a.key;
-- explain() agrees with the trigger
SELECT r.name AS explain_rule FROM allocation.rule r
 WHERE r.id = (allocation.explain('u25_customer', '{"id": 5, "name": "x", "volume": 7000}'::jsonb) -> 'result' ->> 'rule_id')::bigint;
-- before an ALTER TABLE the foreign tree is compiled again from the text
-- (event trigger allocation_ddl_start), so the rename is followed
ALTER TABLE u25_customer RENAME COLUMN volume TO annual_volume;
SELECT condition FROM allocation.rule WHERE name = 'big growers';
INSERT INTO u25_customer VALUES (6, 'grower six', 8000, NULL, NULL);
SELECT owner FROM u25_customer WHERE id = 6;
-- compiled and stamped here again
SELECT condition_stamp = allocation._condition_stamp() AS stamped_here,
       condition_bin NOT LIKE '%ANOTHER_VERSION%' AS recompiled
  FROM allocation.rule WHERE name = 'big growers';

-- a foreign tree whose text no longer compiles: the rule is skipped with a WARNING, inserts go on
SET session_replication_role = replica;
UPDATE allocation.rule
   SET condition = 'no_such_function(annual_volume)', condition_bin = '{GARBAGE}', condition_stamp = '140011/1'
 WHERE name = 'big growers';
RESET session_replication_role;
\c
\set SHOW_CONTEXT never
INSERT INTO u25_customer VALUES (7, 'grower seven', 8000, NULL, NULL);
SELECT owner FROM u25_customer WHERE id = 7;
-- the internal readers fail cleanly on it too
SELECT allocation._condition_deparse(condition_bin, tbl) FROM allocation.rule WHERE name = 'big growers';
SELECT allocation._condition_uses_column(condition_bin, 3::smallint) FROM allocation.rule WHERE name = 'big growers';
-- a foreign stamp and no text at all
SET session_replication_role = replica;
UPDATE allocation.rule SET condition = NULL WHERE name = 'big growers';
RESET session_replication_role;
\set VERBOSITY terse
SELECT allocation._condition_deparse(condition_bin, tbl) FROM allocation.rule WHERE name = 'big growers';
\set VERBOSITY default
SELECT condition_stamp AS foreign_stamp FROM allocation.rule WHERE name = 'big growers';
-- saving the condition again mends the rule
UPDATE allocation.rule SET condition = 'u25_is_big(annual_volume)' WHERE name = 'big growers';
INSERT INTO u25_customer VALUES (8, 'grower eight', 8000, NULL, NULL);
SELECT owner FROM u25_customer WHERE id = 8;
SELECT count(*) AS problems FROM allocation.check_consistency();

DROP TABLE u25_customer;
DROP FUNCTION public.u25_is_big(numeric);
DROP EXTENSION allocation;

-- the 1.1 library serving SQL version 1.0 (after make install, before ALTER EXTENSION UPDATE)
CREATE EXTENSION allocation VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'allocation';
CREATE TABLE u25_old (id int PRIMARY KEY, volume numeric, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('u25_old', 'id', 'loc', 'owner');
INSERT INTO allocation.rep (id, code, name) VALUES (1, 'big', 'Big desk');
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl, condition)
    VALUES ('big', 50, 'rep', 1, 'u25_old', 'volume > 1000');
INSERT INTO u25_old VALUES (1, 5000, NULL, NULL), (2, 5, NULL, NULL);
SELECT id, owner FROM u25_old ORDER BY id;
-- 1.0 has no stamps: its trees may come from another server (a 1.0 database through
-- pg_upgrade), so the library never reads them and compiles the text; a rename of a column a
-- condition reads cannot be followed from the text and is refused until the update
\set SHOW_CONTEXT always
ALTER TABLE u25_old RENAME COLUMN volume TO annual_volume;
\set SHOW_CONTEXT never
SELECT condition FROM allocation.rule WHERE name = 'big';
ALTER EXTENSION allocation UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'allocation';
SELECT condition_stamp = allocation._condition_stamp() AS stamped_by_upgrade FROM allocation.rule WHERE name = 'big';
ALTER TABLE u25_old RENAME COLUMN volume TO annual_volume;
SELECT condition FROM allocation.rule WHERE name = 'big';
INSERT INTO u25_old VALUES (3, 7000, NULL, NULL);
SELECT id, owner FROM u25_old ORDER BY id;
DROP TABLE u25_old;
DROP EXTENSION allocation;
