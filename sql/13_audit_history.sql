--
-- 13_audit_history: the audit log (one event per decision, append-only),
-- owner_at() over time, manual decisions with assign(), and the suggestion
-- queue (accept_suggestion / reject_suggestion).
--
CREATE EXTENSION allocation;
\pset null '(null)'
-- CONTEXT lines name line numbers inside the extension's functions: not part of the contract
\set SHOW_CONTEXT never

INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, capacity) VALUES
    (1, 'a', 'Rep A', 1, 10),
    (2, 'b', 'Rep B', 1, 10),
    (3, 'c', 'Rep C (capacity 1)', 1, 1);
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "County A"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "B", "name": "County B"},
   "geometry": {"type": "Polygon", "coordinates": [[[10,0],[20,0],[20,10],[10,10],[10,0]]]}}
]}'::jsonb);
UPDATE allocation.territory SET owner_rep_id = 1 WHERE code = 'A';
UPDATE allocation.territory SET owner_rep_id = 2 WHERE code = 'B';

CREATE TABLE r13_customer (
    id     integer PRIMARY KEY,
    name   text,
    tier   text,
    loc    geometry(Point, 4326),
    owner  bigint
);
CREATE TABLE r13_other (
    code   text PRIMARY KEY,
    owner  bigint
);
CREATE TABLE r13_doomed (
    id     integer PRIMARY KEY,
    volume numeric,
    owner  bigint
);
CREATE TABLE r13_never_managed (
    id     integer PRIMARY KEY,
    owner  bigint
);
INSERT INTO r13_other (code, owner) VALUES ('x1', 1), ('x2', NULL);
SELECT allocation.manage('r13_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
SELECT allocation.manage('r13_other', 'code', NULL, 'owner');
SELECT allocation.manage('r13_doomed', 'id', NULL, 'owner');

INSERT INTO allocation.rule (name, priority, target_kind, tiers) VALUES ('junk_to_pool', 30, 'pool', '{junk}');
INSERT INTO allocation.rule (name, priority, mode, target_kind, target_team_id, policy, tiers)
     VALUES ('leads_suggested', 20, 'suggest', 'team', 1, 'territory_owner', '{lead}');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy, tbl)
     VALUES ('terr', 10, 'team', 1, 'territory_owner', 'r13_customer');
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl, condition)
     VALUES ('doomed_big', 10, 'rep', 2, 'r13_doomed', 'volume > 100');

-- (event ids are not shown: ORDER BY id gives the order)
CREATE VIEW r13_events AS
SELECT e.id AS event_id, e.kind, e.table_name, e.key, fr.code AS from_rep, tr.code AS to_rep,
       coalesce(ru.name, e.rule_id::text) AS rule, e.reason
  FROM allocation.event e
  LEFT JOIN allocation.rep fr ON fr.id = e.from_rep
  LEFT JOIN allocation.rep tr ON tr.id = e.to_rep
  LEFT JOIN allocation.rule ru ON ru.id = e.rule_id;

-------------------------------------------------------------------------------
-- One event per decision
-------------------------------------------------------------------------------
INSERT INTO r13_customer (id, name, tier, loc) VALUES
    (1, 'assign by rule', NULL, 'SRID=4326;POINT(5 5)'),
    (2, 'pool: terr falls through (outside)', NULL, 'SRID=4326;POINT(50 50)'),
    (3, 'pool rule', 'junk', 'SRID=4326;POINT(5 5)'),
    (4, 'suggested', 'lead', 'SRID=4326;POINT(15 5)'),
    (5, 'suggested too', 'lead', 'SRID=4326;POINT(5 5)'),
    (6, 'suggested, later superseded', 'lead', 'SRID=4326;POINT(5 5)'),
    (7, 'suggested, later rejected', 'lead', 'SRID=4326;POINT(15 5)');
INSERT INTO r13_customer (id, name, owner) VALUES (8, 'owner given on insert', 2);
INSERT INTO r13_other (code) VALUES ('x3');
UPDATE r13_customer SET owner = 1 WHERE id = 8;                        -- reassign
UPDATE r13_customer SET owner = NULL WHERE id = 1;                     -- release
UPDATE r13_customer SET loc = 'SRID=4326;POINT(15 5)' WHERE id = 2;    -- reevaluate: pool -> b
UPDATE r13_customer SET owner = 2 WHERE id = 6;                        -- manual, supersedes the suggestion
SELECT allocation.accept_suggestion(s.id) FROM allocation.suggestion s WHERE s.key = '4' AND s.status = 'pending';
SELECT allocation.reject_suggestion(s.id, 'dealer already works with another company')
  FROM allocation.suggestion s WHERE s.key = '7' AND s.status = 'pending';
DELETE FROM r13_customer WHERE id = 3;
TRUNCATE r13_other;
INSERT INTO r13_doomed (id, volume) VALUES (1, 500);
SELECT allocation.unmanage('r13_doomed');
SELECT allocation.manage('r13_doomed', 'id', NULL, 'owner');
DROP TABLE r13_doomed;
SELECT kind, table_name, key, from_rep, to_rep, rule, reason FROM r13_events ORDER BY event_id;
-- every kind the engine writes
SELECT kind, count(*) FROM allocation.event GROUP BY kind ORDER BY kind;
-- details of the decisions on r13_customer (no timestamps)
SELECT kind, key, team_id, territory_id, source, pinned, detail FROM allocation.event WHERE table_name = 'public.r13_customer' ORDER BY id;
SELECT kind, reason, detail FROM allocation.event WHERE kind = 'manage' ORDER BY id;
-- the dropped rule is kept in the detail
SELECT kind, reason, detail->>'name' AS rule, detail->>'condition' AS condition, detail->>'target_rep_id' AS target_rep_id
  FROM allocation.event WHERE kind = 'rule_dropped' ORDER BY id;

-------------------------------------------------------------------------------
-- The audit log is append-only
-------------------------------------------------------------------------------
SELECT count(*) AS events_before FROM allocation.event \gset
UPDATE allocation.event SET reason = 'rewritten' WHERE kind = 'assign';
\echo :SQLSTATE
DELETE FROM allocation.event WHERE kind = 'release';
\echo :SQLSTATE
TRUNCATE allocation.event;
\echo :SQLSTATE
-- also from inside a function and a CTE
DO $$ BEGIN DELETE FROM allocation.event; END $$;
\echo :SQLSTATE
WITH d AS (DELETE FROM allocation.event RETURNING 1) SELECT count(*) FROM d;
\echo :SQLSTATE
SELECT count(*) = :events_before AS all_events_remain, count(*) FILTER (WHERE reason = 'rewritten') AS rewritten
  FROM allocation.event;

-------------------------------------------------------------------------------
-- owner_at(): who owned a customer at a point in time
-------------------------------------------------------------------------------
SELECT clock_timestamp() AS t0 \gset
BEGIN;
INSERT INTO r13_customer (id, name, loc) VALUES (20, 'history', 'SRID=4326;POINT(5 5)');   -- a
COMMIT;
SELECT clock_timestamp() AS t1 \gset
BEGIN;
UPDATE r13_customer SET owner = 2 WHERE id = 20;                                           -- b
COMMIT;
SELECT clock_timestamp() AS t2 \gset
BEGIN;
SELECT allocation.assign('r13_customer', '20', NULL, 'back to the pool for the spring campaign');
COMMIT;
SELECT clock_timestamp() AS t3 \gset
BEGIN;
-- two changes in one transaction: only the last one is visible at any later time
UPDATE r13_customer SET owner = 2 WHERE id = 20;
SELECT allocation.assign('r13_customer', '20', 1, 'a visited the dealer last season');
COMMIT;
SELECT clock_timestamp() AS t4 \gset
BEGIN;
DELETE FROM r13_customer WHERE id = 20;
COMMIT;
SELECT clock_timestamp() AS t5 \gset
SELECT 't0 before insert' AS at, allocation.owner_at('r13_customer', '20', :'t0') AS owner
UNION ALL SELECT 't1 after insert', allocation.owner_at('r13_customer', '20', :'t1')
UNION ALL SELECT 't2 after update', allocation.owner_at('r13_customer', '20', :'t2')
UNION ALL SELECT 't3 after release', allocation.owner_at('r13_customer', '20', :'t3')
UNION ALL SELECT 't4 after two changes', allocation.owner_at('r13_customer', '20', :'t4')
UNION ALL SELECT 't5 after delete', allocation.owner_at('r13_customer', '20', :'t5');
SELECT r.code AS rep, a.source, a.pinned, a.reason, a.valid_to IS NULL AS current, a.closed_reason
  FROM allocation.assignment a LEFT JOIN allocation.rep r ON r.id = a.rep_id
 WHERE a.key = '20' ORDER BY a.id;
SELECT kind, key, from_rep, to_rep, rule, reason FROM r13_events WHERE key = '20' ORDER BY event_id;
-- unknown key: NULL; table that was never managed: LA012
SELECT allocation.owner_at('r13_customer', '999', now()) AS unknown_key;
SELECT allocation.owner_at('r13_never_managed', '1', now());
\echo :SQLSTATE

-------------------------------------------------------------------------------
-- assign(): a manager's decision, with a reason
-------------------------------------------------------------------------------
SELECT allocation.assign('r13_customer', '5', 2, 'b speaks the dealer''s dialect');
SELECT c.id, r.code AS owner, a.source, a.pinned, a.reason
  FROM r13_customer c LEFT JOIN allocation.rep r ON r.id = c.owner
  JOIN allocation.current_owner a ON a.tbl = 'r13_customer'::regclass AND a.key = c.id::text
 WHERE c.id = 5;
SELECT kind, key, from_rep, to_rep, reason FROM allocation.event WHERE key = '5' ORDER BY id;
SELECT count(*) AS events_before FROM allocation.event \gset
SELECT allocation.assign('r13_customer', '5', 1, NULL);
\echo :SQLSTATE
SELECT allocation.assign('r13_customer', '5', 1, '   ');
\echo :SQLSTATE
SELECT allocation.assign('r13_customer', '999', 1, 'no such customer');
\echo :SQLSTATE
SELECT allocation.assign('r13_never_managed', '1', 1, 'not managed');
\echo :SQLSTATE
SELECT allocation.assign('r13_doomed_gone', '1', 1, 'no such table');
\echo :SQLSTATE
SELECT allocation.assign('r13_customer', '5', 99, 'unknown rep');
\echo :SQLSTATE
-- c (capacity 1) takes 8, then is full for 5
SELECT allocation.assign('r13_customer', '8', 3, 'c asked for this dealer');
SELECT allocation.assign('r13_customer', '5', 3, 'c is full');
\echo :SQLSTATE
SELECT count(*) - :events_before AS new_events FROM allocation.event;
SELECT c.id, r.code AS owner FROM r13_customer c LEFT JOIN allocation.rep r ON r.id = c.owner WHERE c.id IN (5, 8) ORDER BY c.id;

-------------------------------------------------------------------------------
-- Suggestions
-------------------------------------------------------------------------------
-- so far: 4 accepted, 5 superseded by assign(), 6 superseded by an UPDATE, 7 rejected
SELECT s.key, r.code AS rep, s.status, s.reason, s.decision_reason
  FROM allocation.suggestion s LEFT JOIN allocation.rep r ON r.id = s.rep_id ORDER BY s.id;
INSERT INTO r13_customer (id, name, tier, loc) VALUES
    (10, 'suggested to a, accepted', 'lead', 'SRID=4326;POINT(5 5)'),
    (11, 'suggested to b, rejected', 'lead', 'SRID=4326;POINT(15 5)'),
    (12, 'suggested to a, who fills up', 'lead', 'SRID=4326;POINT(6 6)');
SELECT key, rep_code, rule_name, reason FROM allocation.pending_suggestion ORDER BY key::int;
-- accepting gives the customer to the suggested rep
SELECT allocation.accept_suggestion(s.id) FROM allocation.suggestion s WHERE s.key = '10' AND s.status = 'pending';
-- rejecting leaves the customer in the pool
SELECT allocation.reject_suggestion(s.id, 'the dealer is closing') FROM allocation.suggestion s WHERE s.key = '11' AND s.status = 'pending';
SELECT c.id, r.code AS owner, a.source, a.pinned, a.reason FROM r13_customer c
  LEFT JOIN allocation.rep r ON r.id = c.owner
  JOIN allocation.current_owner a ON a.tbl = 'r13_customer'::regclass AND a.key = c.id::text
 WHERE c.id IN (4, 10, 11) ORDER BY c.id;
-- a suggestion for a rep who is full cannot be accepted, and stays pending
UPDATE allocation.rep SET capacity = 0 WHERE code = 'a';
SELECT allocation.accept_suggestion(s.id) FROM allocation.suggestion s WHERE s.key = '12' AND s.status = 'pending';
\echo :SQLSTATE
UPDATE allocation.rep SET capacity = 10 WHERE code = 'a';
SELECT key, rep_code, rule_name FROM allocation.pending_suggestion ORDER BY key::int;
-- decided suggestions cannot be decided again (the detail names the time: terse output)
\set VERBOSITY terse
SELECT allocation.accept_suggestion(s.id) FROM allocation.suggestion s WHERE s.key = '10';
\echo :SQLSTATE
SELECT allocation.reject_suggestion(s.id, 'again') FROM allocation.suggestion s WHERE s.key = '10';
\echo :SQLSTATE
SELECT allocation.accept_suggestion(s.id) FROM allocation.suggestion s WHERE s.key = '11';
\echo :SQLSTATE
SELECT allocation.reject_suggestion(s.id, 'again') FROM allocation.suggestion s WHERE s.key = '11';
\echo :SQLSTATE
SELECT allocation.accept_suggestion(s.id) FROM allocation.suggestion s WHERE s.key = '6';
\echo :SQLSTATE
SELECT allocation.reject_suggestion(s.id, 'superseded one') FROM allocation.suggestion s WHERE s.key = '6';
\echo :SQLSTATE
\set VERBOSITY default
-- unknown ids
SELECT allocation.accept_suggestion(12345);
\echo :SQLSTATE
SELECT allocation.reject_suggestion(12345, 'no such suggestion');
\echo :SQLSTATE
SELECT s.key, r.code AS rep, s.status, s.reason, s.decision_reason
  FROM allocation.suggestion s LEFT JOIN allocation.rep r ON r.id = s.rep_id ORDER BY s.id;
SELECT kind, key, from_rep, to_rep, rule, reason FROM r13_events WHERE kind LIKE 'suggest%' ORDER BY event_id;
SELECT count(*) AS pending FROM allocation.pending_suggestion;
SELECT * FROM allocation.check_consistency();

DROP VIEW r13_events;
DROP TABLE r13_customer, r13_other, r13_never_managed;
DROP EXTENSION allocation CASCADE;
