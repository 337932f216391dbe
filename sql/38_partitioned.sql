--
-- 38_partitioned: a customer table partitioned by province.  manage() accepts
-- it; the triggers cover every partition present and future (also one whose
-- columns sit at other numbers, with dropped columns); a key unique only with
-- the province is checked across partitions; moving a row to another
-- partition (UPDATE of the province) keeps its one ownership; TRUNCATE,
-- DETACH and DROP of a partition close its customers; explain(), assign(),
-- follow_parent, rep security and unmanage() work on the partitioned table.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_p34_wang;
RESET client_min_messages;
CREATE ROLE regress_p34_wang;

INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login) VALUES
    (1, 'wang', 'Wang (West)', 1, 100, 'regress_p34_wang'), (2, 'li', 'Li (East)', 1, 100, NULL),
    (3, 'vip', 'Key accounts', NULL, 100, NULL);
INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id) VALUES
    (1, 'W', 'West', ST_Multi(ST_MakeEnvelope(0, 0, 10, 10, 4326)), 1),
    (2, 'E', 'East', ST_Multi(ST_MakeEnvelope(10, 0, 20, 10, 4326)), 2);
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy, business_types) VALUES
    ('retailers follow their distributor', 30, 'team', 1, 'follow_parent', '{retailer}'),
    ('territory', 10, 'team', 1, 'territory_owner', NULL);

-- by province; the Shandong partition was built separately (a dropped column,
-- its columns in another order) and attached; Henan is sub-partitioned by key
CREATE TABLE p34_customer (
    id        integer NOT NULL,
    province  text NOT NULL,
    legacy    text,
    name      text,
    kind      text,
    parent_id integer,
    volume    numeric,
    loc       geometry(Point, 4326),
    owner     bigint,
    PRIMARY KEY (id, province)
) PARTITION BY LIST (province);
CREATE TABLE p34_hebei PARTITION OF p34_customer FOR VALUES IN ('hebei');
CREATE TABLE p34_shandong (scratch int, owner bigint, loc geometry(Point, 4326), volume numeric, parent_id integer,
                           kind text, name text, legacy text, province text NOT NULL, id integer NOT NULL);
ALTER TABLE p34_shandong DROP COLUMN scratch;
ALTER TABLE p34_customer ATTACH PARTITION p34_shandong FOR VALUES IN ('shandong');
CREATE TABLE p34_henan PARTITION OF p34_customer FOR VALUES IN ('henan') PARTITION BY HASH (id);
CREATE TABLE p34_henan_0 PARTITION OF p34_henan FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE p34_henan_1 PARTITION OF p34_henan FOR VALUES WITH (MODULUS 2, REMAINDER 1);
ALTER TABLE p34_customer DROP COLUMN legacy;
SELECT attrelid::regclass AS rel, attnum, attname FROM pg_attribute
 WHERE attrelid IN ('p34_customer'::regclass, 'p34_shandong'::regclass) AND attname IN ('id', 'owner', 'loc', 'kind', 'volume')
 ORDER BY 1, 2;
-- rows stored before manage(): registered like any table's
INSERT INTO p34_customer (id, province, name, kind, loc) VALUES (1, 'hebei', 'old dealer', 'distributor', 'SRID=4326;POINT(5 5)');

-- bad inputs, refused with nothing registered
\set VERBOSITY default
SELECT allocation.manage('p34_hebei', 'id', 'loc', 'owner');
\echo :SQLSTATE
SELECT allocation.manage('p34_customer', 'name', 'loc', 'owner');
\echo :SQLSTATE
SELECT allocation.manage('p34_customer', 'province', 'loc', 'owner');   -- not the first column of the key
\echo :SQLSTATE
INSERT INTO p34_customer (id, province, name) VALUES (1, 'shandong', 'same id, other province');
SELECT allocation.manage('p34_customer', 'id', 'loc', 'owner');
\echo :SQLSTATE
SELECT count(*) AS registered FROM allocation.managed_table;
DELETE FROM p34_customer WHERE province = 'shandong';
\set VERBOSITY terse

SELECT allocation.manage('p34_customer', 'id', 'loc', 'owner', '{"business_type": "kind", "parent": "parent_id", "name": "name"}');
-- a rule with a condition: compiled against the table, evaluated in every partition's own columns
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl, condition)
     VALUES ('big volume', 50, 'rep', 3, 'p34_customer', 'volume > 1000');
SELECT tgrelid::regclass AS rel, string_agg(tgname, ', ' ORDER BY tgname) AS triggers
  FROM pg_trigger WHERE tgname LIKE 'zz_allocation%' GROUP BY 1 ORDER BY 1;

-- writes through the table and straight into partitions
INSERT INTO p34_customer (id, province, name, kind, volume, loc) VALUES
    (2, 'hebei', 'west retailer', 'shop', 10, 'SRID=4326;POINT(5 6)'),
    (3, 'shandong', 'east shop', 'shop', 10, 'SRID=4326;POINT(15 5)'),
    (4, 'henan', 'henan shop', 'shop', 10, 'SRID=4326;POINT(16 5)'),
    (5, 'henan', 'henan shop', 'shop', 10, 'SRID=4326;POINT(6 5)'),
    (6, 'shandong', 'big buyer', 'shop', 5000, 'SRID=4326;POINT(15 6)');
-- follow_parent finds the parent in another partition: retailer 7 (Shandong, in Li's East)
-- follows dealer 1 (Hebei) to Wang
SELECT allocation.assign('p34_customer', '1', 1, 'the old dealer goes to Wang');
INSERT INTO p34_shandong (id, province, name, kind, parent_id, loc) VALUES (7, 'shandong', 'retailer of 1', 'retailer', 1, 'SRID=4326;POINT(15 7)');
INSERT INTO p34_henan_1 (id, province, name, kind, volume, loc)
SELECT 8, 'henan', 'direct into a sub-partition', 'shop', 2000, 'SRID=4326;POINT(5 5)'
 WHERE satisfies_hash_partition('p34_henan'::regclass, 2, 1, 8);
-- a partition created after manage(): covered
CREATE TABLE p34_shanxi PARTITION OF p34_customer FOR VALUES IN ('shanxi');
INSERT INTO p34_shanxi (id, province, name, kind, loc) VALUES (9, 'shanxi', 'new province', 'shop', 'SRID=4326;POINT(4 4)');
SELECT c.tableoid::regclass AS part, c.id, c.name, r.code AS owner
  FROM p34_customer c LEFT JOIN allocation.rep r ON r.id = c.owner ORDER BY c.id;
SELECT key, (SELECT code FROM allocation.rep WHERE id = a.rep_id) AS rep, source FROM allocation.assignment a
 WHERE valid_to IS NULL ORDER BY key::int;
SELECT * FROM allocation.check_consistency();

-- one row per key across partitions: the same id in another province is refused (23505), nothing stored
CREATE VIEW p34_counts AS
    SELECT (SELECT count(*) FROM p34_customer) AS rows, (SELECT count(*) FROM allocation.event) AS events,
           (SELECT count(*) FROM allocation.assignment WHERE valid_to IS NULL) AS open;
CREATE TABLE p34_before AS SELECT * FROM p34_counts;
\set VERBOSITY default
INSERT INTO p34_customer (id, province, name, loc) VALUES (3, 'hebei', 'same id as a Shandong customer', 'SRID=4326;POINT(1 1)');
\echo :SQLSTATE
INSERT INTO p34_customer (id, province, name) VALUES (50, 'hebei', 'twice in one statement'), (50, 'henan', 'twice in one statement');
\echo :SQLSTATE
INSERT INTO p34_henan (id, province, name) VALUES (2, 'henan', 'through the sub-partitioned partition');
\echo :SQLSTATE
\set VERBOSITY terse
SELECT (SELECT row(b.*)::text FROM p34_before b) = (SELECT row(c.*)::text FROM p34_counts c) AS nothing_changed;
DROP TABLE p34_before;
-- the same province again: PostgreSQL's own unique index
INSERT INTO p34_customer (id, province) VALUES (3, 'shandong');
\echo :SQLSTATE

-- row movement: the customer moves to Hebei, keeps its one ownership (no delete, no new assign)
CREATE TABLE p34_before AS SELECT * FROM p34_counts;
UPDATE p34_customer SET province = 'hebei' WHERE id = 3;
SELECT c.tableoid::regclass AS part, c.id, r.code AS owner FROM p34_customer c JOIN allocation.rep r ON r.id = c.owner WHERE c.id = 3;
SELECT b.rows = c.rows AS same_rows, b.open = c.open AS same_open, c.events - b.events AS new_events
  FROM p34_before b, p34_counts c;
DROP TABLE p34_before;
-- ... moving and changing location at once: one re-evaluation event, from Li to Wang
UPDATE p34_customer SET province = 'henan', loc = 'SRID=4326;POINT(3 3)' WHERE id = 3;
SELECT c.tableoid::regclass AS part, c.id, r.code AS owner FROM p34_customer c JOIN allocation.rep r ON r.id = c.owner WHERE c.id = 3;
SELECT kind, key, (SELECT code FROM allocation.rep WHERE id = from_rep) AS from_rep,
       (SELECT code FROM allocation.rep WHERE id = to_rep) AS to_rep, reason
  FROM allocation.event WHERE key = '3' ORDER BY id;
-- ... a manual owner moves with its row (pinned, not re-evaluated)
SELECT allocation.assign('p34_customer', '9', 2, 'key account handed to Li');
UPDATE p34_customer SET province = 'shandong', loc = 'SRID=4326;POINT(2 2)' WHERE id = 9;
SELECT c.tableoid::regclass AS part, c.id, r.code AS owner FROM p34_customer c JOIN allocation.rep r ON r.id = c.owner WHERE c.id = 9;
SELECT key, (SELECT code FROM allocation.rep WHERE id = a.rep_id) AS rep, source, pinned FROM allocation.assignment a
 WHERE key = '9' ORDER BY valid_from;
-- ... several rows at once, across three partitions
UPDATE p34_customer SET province = 'shanxi' WHERE id IN (2, 4, 5);
SELECT c.tableoid::regclass AS part, c.id, r.code AS owner FROM p34_customer c JOIN allocation.rep r ON r.id = c.owner
 WHERE c.id IN (2, 4, 5) ORDER BY c.id;
SELECT count(*) AS delete_or_second_open FROM allocation.event WHERE kind = 'delete' OR (key IN ('2', '4', '5') AND kind = 'assign' AND id > (SELECT min(id) FROM allocation.event WHERE key = '9' AND kind = 'manual_assign'));
SELECT * FROM allocation.check_consistency();

-- explain by key finds the row in whichever partition; by row as for any table
SELECT e#>>'{result,rep}' AS rep, e#>>'{result,reason}' AS reason FROM allocation.explain('p34_customer', '7') e;
SELECT e#>>'{result,rep}' AS rep, e#>>'{result,reason}' AS reason
  FROM allocation.explain('p34_customer', '{"id": 99, "province": "hebei", "volume": 5000, "loc": "SRID=4326;POINT(15 5)"}'::jsonb) e;

-- rep security on the partitioned table: Wang sees its own customers, no partition directly
SELECT allocation.enable_rep_security('p34_customer');
GRANT SELECT, UPDATE ON p34_customer TO regress_p34_wang;
SET ROLE regress_p34_wang;
SELECT id, owner FROM p34_customer ORDER BY id;
SELECT id FROM p34_hebei;
RESET ROLE;

-- TRUNCATE of one partition closes its customers only; DETACH and DROP close theirs
SELECT array_agg(id ORDER BY id) AS shanxi FROM p34_shanxi;
TRUNCATE p34_shanxi;
SELECT key, kind, reason FROM allocation.event WHERE kind = 'truncate' ORDER BY key;
ALTER TABLE p34_customer DETACH PARTITION p34_shandong;
SELECT key, kind, reason FROM allocation.event WHERE kind = 'partition_detached' ORDER BY key;
SELECT count(*) AS engine_triggers_left FROM pg_trigger WHERE tgrelid = 'p34_shandong'::regclass AND tgname LIKE 'zz_allocation%';
INSERT INTO p34_shandong (id, province) VALUES (100, 'shandong');    -- an ordinary table now
-- a table holding rows cannot be attached (its customers were never registered)
\set VERBOSITY default
ALTER TABLE p34_customer ATTACH PARTITION p34_shandong FOR VALUES IN ('shandong');
\echo :SQLSTATE
\set VERBOSITY terse
DROP TABLE p34_shandong;
SELECT array_agg(id ORDER BY id) AS henan FROM p34_henan;
DROP TABLE p34_henan;
SELECT key, kind, reason FROM allocation.event WHERE kind = 'partition_dropped' ORDER BY key;
SELECT c.tableoid::regclass AS part, c.id FROM p34_customer c ORDER BY c.id;
SELECT key FROM allocation.assignment WHERE valid_to IS NULL ORDER BY key;
SELECT * FROM allocation.check_consistency();

-- a realignment scans the partitions (each with its own column order) and moves their customers
-- like any table's: preview == apply, one realign event each, counters consistent
CREATE TABLE p34_realign (id integer NOT NULL, province text NOT NULL, dropme integer, loc geometry(Point, 4326), owner bigint,
                          PRIMARY KEY (id, province)) PARTITION BY LIST (province);
CREATE TABLE p34_realign_hb PARTITION OF p34_realign FOR VALUES IN ('hebei');
ALTER TABLE p34_realign DROP COLUMN dropme;
CREATE TABLE p34_realign_sd (province text NOT NULL, owner bigint, loc geometry(Point, 4326), id integer NOT NULL);
ALTER TABLE p34_realign ATTACH PARTITION p34_realign_sd FOR VALUES IN ('shandong');
SELECT allocation.manage('p34_realign', 'id', 'loc', 'owner');
INSERT INTO p34_realign (id, province, loc)
SELECT g, CASE WHEN g % 2 = 0 THEN 'hebei' ELSE 'shandong' END, (SELECT ST_PointOnSurface(geom) FROM allocation.territory WHERE id = 1)
  FROM generate_series(1, 6) g;
SELECT owner, count(*) FROM p34_realign GROUP BY owner;
SELECT allocation.realign_create('p34 territory 1 to the other rep') AS plan \gset
SELECT allocation.realign_stage_territory(:plan, (SELECT code FROM allocation.territory WHERE id = 1),
                                          owner_rep => (SELECT min(id) FROM allocation.rep WHERE id <> (SELECT owner_rep_id FROM allocation.territory WHERE id = 1)));
SELECT table_name, count(*) FILTER (WHERE outcome = 'moves') AS moves FROM allocation.realign_preview(:plan)
 WHERE table_name = 'public.p34_realign' GROUP BY 1;
CALL allocation.realign_apply(:plan, 'p34', 1000);
SELECT c.tableoid::regclass AS part, count(*) AS customers, count(*) FILTER (WHERE c.owner = i.to_rep) AS as_previewed
  FROM p34_realign c JOIN allocation.realign_item i ON i.plan_id = :plan AND i.key = c.id::text
                                                  AND i.managed_id = (SELECT id FROM allocation.managed_table WHERE tbl = 'p34_realign'::regclass)
 GROUP BY 1 ORDER BY 1;
SELECT count(*) AS realign_events FROM allocation.event e
 WHERE e.kind = 'realign' AND e.table_name = 'public.p34_realign' AND e.detail ->> 'realign_plan' = :'plan';
SELECT * FROM allocation.check_consistency();
SELECT allocation.unmanage('p34_realign');
DROP TABLE p34_realign;

-- unmanage: no engine trigger left on the table or any partition
SELECT allocation.unmanage('p34_customer');
SELECT count(*) AS engine_triggers FROM pg_trigger WHERE tgname LIKE 'zz_allocation%';
SELECT count(*) AS open FROM allocation.assignment WHERE valid_to IS NULL;
INSERT INTO p34_customer (id, province) VALUES (200, 'hebei');

DROP VIEW p34_counts;
DROP TABLE p34_customer;
DROP EXTENSION allocation CASCADE;
DROP ROLE regress_p34_wang;
