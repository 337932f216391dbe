--
-- 14_explain: explain(tbl, key) and explain(tbl, row jsonb): the decision
-- trace (territories, rules, candidates, result), no side effects, and the
-- same answer as the INSERT that follows.
--
CREATE EXTENSION allocation;
\pset null '(null)'
-- CONTEXT lines name line numbers inside the extension's functions: not part of the contract
\set SHOW_CONTEXT never

INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales'), (2, 'dealers', 'Dealer desk'), (3, 'rr', 'Round robin');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, active) VALUES
    (1, 'a',   'Owner of A',          1, 10,   true),
    (2, 'b',   'Owner of B',          1, 10,   true),
    (3, 'o',   'Owner of O',          1, 10,   true),
    (4, 'e',   'Key accounts',        NULL, NULL, true),
    (5, 'd1',  'Dealer desk 1 (cap 1)', 2, 1,  true),
    (6, 'd2',  'Dealer desk 2 (cap 2)', 2, 2,  true),
    (7, 'd3',  'Dealer desk 3 (inactive)', 2, 5, false),
    (8, 'r1',  'Round robin 1',       3, NULL, true),
    (9, 'r2',  'Round robin 2',       3, NULL, true);
-- A and B share the border x = 10; O overlaps both with a higher priority
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "County A"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "B", "name": "County B"},
   "geometry": {"type": "Polygon", "coordinates": [[[10,0],[20,0],[20,10],[10,10],[10,0]]]}},
  {"type": "Feature", "properties": {"code": "O", "name": "Orchard zone"},
   "geometry": {"type": "Polygon", "coordinates": [[[8,0],[12,0],[12,4],[8,4],[8,0]]]}}
]}'::jsonb);
UPDATE allocation.territory SET owner_rep_id = 1 WHERE code = 'A';
UPDATE allocation.territory SET owner_rep_id = 2 WHERE code = 'B';
UPDATE allocation.territory SET owner_rep_id = 3, priority = 5 WHERE code = 'O';

CREATE TABLE r14_customer (
    id      integer PRIMARY KEY,
    name    text,
    tier    text,
    volume  numeric,
    loc     geometry(Point, 4326),
    owner   bigint
);
SELECT allocation.manage('r14_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl, condition)
     VALUES ('big_volume', 30, 'rep', 4, 'r14_customer', 'volume > 1000');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy, tiers)
     VALUES ('dealers', 20, 'team', 2, 'least_loaded', '{dealer}');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy, tiers)
     VALUES ('walk_ins', 15, 'team', 3, 'round_robin', '{walk_in}');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
     VALUES ('terr', 10, 'team', 1, 'territory_owner');

-- readers for the parts of a trace
CREATE FUNCTION r14_rules(ex jsonb)
RETURNS TABLE (rule text, matched boolean, why text, outcome text, chosen text)
LANGUAGE sql AS $$
    SELECT r->>'rule', (r->>'matched')::boolean, r->>'why', r->>'outcome',
           (SELECT code FROM allocation.rep WHERE id = (r->>'chosen_rep_id')::bigint)
      FROM jsonb_array_elements(ex->'rules') WITH ORDINALITY AS x(r, n) ORDER BY n
$$;
CREATE FUNCTION r14_candidates(ex jsonb)
RETURNS TABLE (rule text, "order" int, rep text, held int, capacity int, available boolean, why text)
LANGUAGE sql AS $$
    SELECT r->>'rule', (c->>'order')::int, c->>'rep', (c->>'held')::int, (c->>'capacity')::int,
           (c->>'available')::boolean, c->>'why'
      FROM jsonb_array_elements(ex->'rules') WITH ORDINALITY AS x(r, n),
           jsonb_array_elements(r->'candidates') WITH ORDINALITY AS y(c, m)
     ORDER BY n, m
$$;
CREATE FUNCTION r14_territories(ex jsonb)
RETURNS TABLE (code text, priority int, owner text, winner boolean)
LANGUAGE sql AS $$
    SELECT t->>'code', (t->>'priority')::int,
           (SELECT code FROM allocation.rep WHERE id = (t->>'owner_rep_id')::bigint), (t->>'winner')::boolean
      FROM jsonb_array_elements(ex->'territories') WITH ORDINALITY AS x(t, n) ORDER BY n
$$;
CREATE FUNCTION r14_result(ex jsonb)
RETURNS TABLE (outcome text, rep text, rule text, territory text, reason text)
LANGUAGE sql AS $$
    SELECT ex#>>'{result,outcome}', ex#>>'{result,rep}',
           (SELECT name FROM allocation.rule WHERE id = (ex#>>'{result,rule_id}')::bigint),
           (SELECT code FROM allocation.territory WHERE id = (ex#>>'{result,territory_id}')::bigint),
           ex#>>'{result,reason}'
$$;
-- everything explain() must leave alone
CREATE VIEW r14_side_effects AS
SELECT (SELECT count(*) FROM r14_customer) AS customers,
       (SELECT count(*) FROM allocation.assignment) AS registry_rows,
       (SELECT count(*) FROM allocation.event) AS events,
       (SELECT count(*) FROM allocation.suggestion) AS suggestions,
       (SELECT coalesce(string_agg(rep_id || ':' || held, ',' ORDER BY rep_id), '') FROM allocation.rep_load) AS loads,
       (SELECT coalesce(string_agg(team_id || ':' || last_rep_id, ',' ORDER BY team_id), '') FROM allocation.rr_cursor) AS rr_cursor;

-- fill the dealer desk: d1 1 of 1 (full), d2 1 of 2
INSERT INTO r14_customer (id, name, owner) VALUES (101, 'preload d1', 5), (102, 'preload d2', 6);

-------------------------------------------------------------------------------
-- A stored customer: the keys of the trace, and a matched rule
-------------------------------------------------------------------------------
INSERT INTO r14_customer (id, name, tier, volume, loc) VALUES (1, 'big one in A', 'grower', 5000, 'SRID=4326;POINT(5 5)');
SELECT (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(allocation.explain('r14_customer', '1')) k) AS keys;
SELECT e->>'table' AS tbl, e->>'key' AS key, e->'hypothetical' AS hypothetical, e->'current_owner' AS current_owner,
       e->'customer' AS customer
  FROM allocation.explain('r14_customer', '1') e;
SELECT * FROM r14_rules(allocation.explain('r14_customer', '1'));
SELECT * FROM r14_candidates(allocation.explain('r14_customer', '1'));
SELECT * FROM r14_result(allocation.explain('r14_customer', '1'));

-------------------------------------------------------------------------------
-- Structured-filter miss, condition miss (false and NULL)
-------------------------------------------------------------------------------
SELECT * FROM r14_rules(allocation.explain('r14_customer', '{"id": 2, "tier": "retailer", "volume": 10, "loc": "SRID=4326;POINT(5 5)"}'::jsonb));
SELECT * FROM r14_rules(allocation.explain('r14_customer', '{"id": 2, "tier": "retailer", "loc": "SRID=4326;POINT(5 5)"}'::jsonb));
SELECT * FROM r14_result(allocation.explain('r14_customer', '{"id": 2, "tier": "retailer", "loc": "SRID=4326;POINT(5 5)"}'::jsonb));

-------------------------------------------------------------------------------
-- Candidates at capacity or inactive, with held/capacity
-------------------------------------------------------------------------------
SELECT * FROM r14_candidates(allocation.explain('r14_customer', '{"tier": "dealer", "loc": "SRID=4326;POINT(5 5)"}'::jsonb));
SELECT * FROM r14_result(allocation.explain('r14_customer', '{"tier": "dealer", "loc": "SRID=4326;POINT(5 5)"}'::jsonb));
-- the desk fills up: every dealer candidate is skipped, the rule falls through to terr
INSERT INTO r14_customer (id, name, owner) VALUES (103, 'preload d2', 6);
SELECT * FROM r14_rules(allocation.explain('r14_customer', '{"tier": "dealer", "loc": "SRID=4326;POINT(5 5)"}'::jsonb));
SELECT * FROM r14_candidates(allocation.explain('r14_customer', '{"tier": "dealer", "loc": "SRID=4326;POINT(5 5)"}'::jsonb));
SELECT * FROM r14_result(allocation.explain('r14_customer', '{"tier": "dealer", "loc": "SRID=4326;POINT(5 5)"}'::jsonb));

-------------------------------------------------------------------------------
-- Territories: border point, overlap tie-break, outside every territory
-------------------------------------------------------------------------------
-- on the border of A and B (same priority): both cover it, A wins (lower id)
SELECT * FROM r14_territories(allocation.explain('r14_customer', '{"loc": "SRID=4326;POINT(10 8)"}'::jsonb));
SELECT * FROM r14_result(allocation.explain('r14_customer', '{"loc": "SRID=4326;POINT(10 8)"}'::jsonb));
-- inside A and O: O has the higher priority
SELECT * FROM r14_territories(allocation.explain('r14_customer', '{"loc": "SRID=4326;POINT(9 2)"}'::jsonb));
SELECT * FROM r14_result(allocation.explain('r14_customer', '{"loc": "SRID=4326;POINT(9 2)"}'::jsonb));
-- the corner shared by A, B and O
SELECT * FROM r14_territories(allocation.explain('r14_customer', '{"loc": "SRID=4326;POINT(10 0)"}'::jsonb));
-- outside every territory
SELECT e->'territories' AS territories, e#>'{customer,location}' AS location
  FROM allocation.explain('r14_customer', '{"loc": "SRID=4326;POINT(50 50)"}'::jsonb) e;
SELECT * FROM r14_rules(allocation.explain('r14_customer', '{"loc": "SRID=4326;POINT(50 50)"}'::jsonb));
SELECT * FROM r14_result(allocation.explain('r14_customer', '{"loc": "SRID=4326;POINT(50 50)"}'::jsonb));
-- no location at all
SELECT * FROM r14_result(allocation.explain('r14_customer', '{"tier": "grower"}'::jsonb));

-------------------------------------------------------------------------------
-- A hypothetical row without key
-------------------------------------------------------------------------------
SELECT e->'key' AS key, e->'hypothetical' AS hypothetical, e->'current_owner' AS current_owner, e->'customer' AS customer
  FROM allocation.explain('r14_customer', '{"tier": "walk_in", "loc": "SRID=4326;POINT(15 5)"}'::jsonb) e;
SELECT * FROM r14_result(allocation.explain('r14_customer', '{"tier": "walk_in", "loc": "SRID=4326;POINT(15 5)"}'::jsonb));

-------------------------------------------------------------------------------
-- No side effects: counters, round-robin cursor, registry, events, suggestions
-------------------------------------------------------------------------------
INSERT INTO allocation.rule (name, priority, mode, target_kind, target_team_id, policy, tiers)
     VALUES ('suggest_walk_ins', 16, 'suggest', 'team', 3, 'least_loaded', '{suggest_me}');
INSERT INTO r14_customer (id, name, tier) VALUES (3, 'first walk-in', 'walk_in');
SELECT * FROM r14_side_effects \gset se_
SELECT * FROM r14_side_effects;
SELECT r.rep AS walk_in_explained_1 FROM r14_result(allocation.explain('r14_customer', '{"tier": "walk_in"}'::jsonb)) r;
SELECT r.rep AS walk_in_explained_2 FROM r14_result(allocation.explain('r14_customer', '{"tier": "walk_in"}'::jsonb)) r;
SELECT count(*) AS explains FROM generate_series(1, 20) g,
       LATERAL allocation.explain('r14_customer', jsonb_build_object('tier', CASE WHEN g % 2 = 0 THEN 'walk_in' ELSE 'suggest_me' END,
                                                                    'volume', g * 100, 'loc', 'SRID=4326;POINT(5 5)')) e;
SELECT r.outcome, r.rep FROM r14_result(allocation.explain('r14_customer', '{"tier": "suggest_me"}'::jsonb)) r;
SELECT count(*) AS explains FROM r14_customer c, LATERAL allocation.explain('r14_customer', c.id::text) e;
SELECT customers = :se_customers AS customers, registry_rows = :se_registry_rows AS registry,
       events = :se_events AS events, suggestions = :se_suggestions AS suggestions,
       loads = :'se_loads' AS loads, rr_cursor = :'se_rr_cursor' AS rr_cursor
  FROM r14_side_effects;
-- explain() inside a transaction that rolls back leaves nothing either, and does not lock the counters
BEGIN;
SELECT r.rep FROM r14_result(allocation.explain('r14_customer', '{"tier": "walk_in"}'::jsonb)) r;
SELECT count(*) AS locked_counters FROM pg_locks l
  WHERE l.relation = 'allocation.rep_load'::regclass AND l.mode <> 'AccessShareLock';
ROLLBACK;

-------------------------------------------------------------------------------
-- explain() agrees with what the INSERT then does
-------------------------------------------------------------------------------
CREATE TABLE r14_probe (id integer, row jsonb);
INSERT INTO r14_probe VALUES
    (10, '{"id": 10, "name": "walk-in", "tier": "walk_in", "loc": "SRID=4326;POINT(15 5)"}'),
    (11, '{"id": 11, "name": "walk-in", "tier": "walk_in"}'),
    (12, '{"id": 12, "name": "big", "volume": 2000, "loc": "SRID=4326;POINT(9 2)"}'),
    (13, '{"id": 13, "name": "dealer, desk full", "tier": "dealer", "loc": "SRID=4326;POINT(10 8)"}'),
    (14, '{"id": 14, "name": "border", "loc": "SRID=4326;POINT(10 8)"}'),
    (15, '{"id": 15, "name": "orchard", "loc": "SRID=4326;POINT(11 1)"}'),
    (16, '{"id": 16, "name": "outside", "loc": "SRID=4326;POINT(50 50)"}'),
    (17, '{"id": 17, "name": "suggested", "tier": "suggest_me", "loc": "SRID=4326;POINT(5 5)"}');
-- one at a time: explain, then insert the same row, then compare
CREATE TABLE r14_compare (id integer, explained jsonb, stored jsonb);
DO $$
DECLARE p record; ex jsonb;
BEGIN
    FOR p IN SELECT * FROM r14_probe ORDER BY id LOOP
        ex := allocation.explain('r14_customer', p.row) -> 'result';
        INSERT INTO r14_customer SELECT * FROM jsonb_populate_record(NULL::r14_customer, p.row);
        INSERT INTO r14_compare
        SELECT p.id, ex,
               jsonb_build_object('outcome', CASE WHEN a.rep_id IS NOT NULL THEN 'assign'
                                                  WHEN s.rep_id IS NOT NULL THEN 'suggest' ELSE 'pool' END,
                                  'rep_id', coalesce(a.rep_id, s.rep_id), 'rule_id', a.rule_id,
                                  'territory_id', a.territory_id, 'reason', a.reason)
          FROM allocation.current_owner a
          LEFT JOIN allocation.pending_suggestion s ON s.tbl = a.tbl AND s.key = a.key
         WHERE a.tbl = 'r14_customer'::regclass AND a.key = p.id::text;
    END LOOP;
END $$;
SELECT c.id, c.explained->>'outcome' AS outcome, r.code AS rep, ru.name AS rule, t.code AS territory,
       (c.explained->>'outcome') = (c.stored->>'outcome') AS same_outcome,
       (c.explained->'rep_id') = (c.stored->'rep_id') AS same_rep,
       (c.explained->'rule_id') = (c.stored->'rule_id') AS same_rule,
       (c.explained->'territory_id') = (c.stored->'territory_id') AS same_territory,
       (c.explained->>'reason') = (c.stored->>'reason') AS same_reason
  FROM r14_compare c
  LEFT JOIN allocation.rep r ON r.id = (c.explained->>'rep_id')::bigint
  LEFT JOIN allocation.rule ru ON ru.id = (c.explained->>'rule_id')::bigint
  LEFT JOIN allocation.territory t ON t.id = (c.explained->>'territory_id')::bigint
 ORDER BY c.id;
-- and a stored customer explained afterwards gives the decision it got
SELECT c.id, r.code AS owner, x.outcome, x.rep AS explained_rep
  FROM r14_customer c LEFT JOIN allocation.rep r ON r.id = c.owner,
       LATERAL r14_result(allocation.explain('r14_customer', c.id::text)) x
 WHERE c.id BETWEEN 10 AND 17 ORDER BY c.id;

-------------------------------------------------------------------------------
-- Errors
-------------------------------------------------------------------------------
SELECT allocation.explain('r14_customer', '999');
\echo :SQLSTATE
SELECT allocation.explain('r14_customer', '[1, 2]'::jsonb);
\echo :SQLSTATE
SELECT allocation.explain('r14_customer', '"text"'::jsonb);
\echo :SQLSTATE
SELECT allocation.explain('r14_probe', '1');
\echo :SQLSTATE
SELECT allocation.explain('r14_customer', NULL::text) IS NULL AS null_key, allocation.explain('r14_customer', NULL::jsonb) IS NULL AS null_row;
SELECT * FROM allocation.check_consistency();

DROP TABLE r14_compare, r14_probe;
DROP VIEW r14_side_effects;
DROP FUNCTION r14_rules(jsonb), r14_candidates(jsonb), r14_territories(jsonb), r14_result(jsonb);
DROP TABLE r14_customer;
DROP EXTENSION allocation CASCADE;
