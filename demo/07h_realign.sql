-- demo/07h_realign.sql — realignment (调整分配方案): the planting structure of loc07's
-- counties changed (new vegetable belts), so loc07 moves to the key-account desk and loc06,
-- next door, takes over its counties. Changing the territories'
-- owner directly would move nobody (a NOTICE says so); a realignment plan moves the customers
-- already there, after a preview, with evidence.
--   :outdir/map_realign.html   the map with the plan's before/after toggle (open it with
--                              #after to start in the after view)
-- Runs after 07g_map_html.
-- Run with: psql -v outdir=demo/out -f demo/07h_realign.sql

\set ON_ERROR_STOP on
SET client_min_messages = warning;

\echo
\echo '=== 1. The manager stages the plan: loc07''s counties to loc06, loc06''s capacity raised'
SELECT allocation.realign_create('loc07 counties to loc06', 'vegetable belts: loc06 takes over loc07''s counties') AS plan \gset
SELECT t.code, t.name, allocation.realign_stage_territory(:plan, t.code, owner_rep => (SELECT id FROM allocation.rep WHERE code = 'loc06'))
  FROM allocation.territory t WHERE t.owner_rep_id = (SELECT id FROM allocation.rep WHERE code = 'loc07') ORDER BY t.code;
SELECT allocation.realign_stage_rep(:plan, (SELECT id FROM allocation.rep WHERE code = 'loc06'), capacity => 700);

\echo
\echo '=== 2. Preview (the trigger''s own decision code, nothing changes): who moves, who stays and why'
SELECT outcome, count(*) AS customers FROM allocation.realign_preview(:plan) GROUP BY outcome ORDER BY outcome;
SELECT from_rep_code AS "from", to_rep_code AS "to", count(*) AS customers
  FROM allocation.realign_preview(:plan) WHERE outcome = 'moves' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 8;
SELECT regexp_replace(reason, ' \(.*$', '') AS stays_because, count(*) AS customers
  FROM allocation.realign_preview(:plan) WHERE outcome = 'stays' GROUP BY 1 ORDER BY 2 DESC;
SELECT rep_code, held_before, moving_out, moving_in, held_after, capacity_after, over_capacity
  FROM allocation.realign_preview_reps(:plan) WHERE moving_in + moving_out > 0 ORDER BY rep_code;

\echo
\echo '=== 3. The map with the plan''s before/after toggle: map_realign.html'
\pset format unaligned
\pset tuples_only on
\o :outdir/map_realign.html
SELECT allocation.territory_map_html('Realignment: loc07''s counties to loc06', plan_id => :plan, simplify => 0.0005);
\o
\pset tuples_only off
\pset format aligned

\echo
\echo '=== 4. Apply: in committed batches, resumable, one realign event per moved customer'
SET client_min_messages = notice;
CALL allocation.realign_apply(:plan, 'vegetable belts: loc06 takes over loc07''s counties', 200);
SET client_min_messages = warning;
SELECT name, status, total, moved, stayed, unchanged, pending FROM allocation.realign_progress WHERE plan_id = :plan;
SELECT r.code, l.held FROM allocation.rep r JOIN allocation.rep_load l ON l.rep_id = r.id
 WHERE r.code IN ('loc07', 'loc06') ORDER BY r.code;
SELECT count(*) AS realign_events, min(reason) AS example
  FROM allocation.event WHERE kind = 'realign' AND detail ->> 'realign_plan' = :'plan';
SELECT problem, count(*) FROM allocation.check_consistency() GROUP BY problem;
