-- bench/agreement_lean.sql: does the engine, given only the territory-owner rule, decide
-- what the lean PL/pgSQL reference (bench/reference_lean.sql) decides?
--
-- Inputs (bench/run.sh prepares them):
--   bench.lean_decision  the lean trigger's decisions of its last timed INSERT ... SELECT
--                        (key, winner territory from its audit row, owner column)
--   bench.customer_m     the same customers inserted by the engine with the rule set reduced
--                        to one rule, 'owner-only': territory_owner within team field (2),
--                        capacities lifted (the lean trigger knows no capacity)
--   allocation.territory, allocation.rep, allocation.team   configuration only
--
-- What both must decide identically ("compared"):
--   no_territory    no territory covers the point (or it has no location): no owner;
--   owner_rep       the winner's owner is an active rep of team field (or a sub-team):
--                   that rep.
-- Not compared (the two decide different things by definition), counted:
--   rep_excluded    the winner's owner rep is outside team field or inactive: the rule
--                   refuses it (the engine pools), the lean trigger takes it;
--   owner_team      the winner is owned by a team: the engine picks its least loaded rep,
--                   the lean trigger leaves the owner empty;
--   no_owner        the winner has no owner: the engine walks up to the nearest owned
--                   ancestor, the lean trigger leaves the owner empty.
-- The winner territory of every customer is also compared with the full reference's
-- (whole polygons, bench/reference.sql) and the engine's under the full rule set, both
-- from bench.agree (bench/agreement.sql): this checks the subdivided pieces against the
-- whole polygons for every customer, compared or not.
\set ON_ERROR_STOP 1
\pset footer off

DROP TABLE IF EXISTS bench.agree_lean;
CREATE TABLE bench.agree_lean AS
WITH field AS (   -- team field and its sub-teams, recursively
    WITH RECURSIVE t AS (
        SELECT id FROM allocation.team WHERE id = 2
        UNION SELECT c.id FROM allocation.team c JOIN t ON c.parent_id = t.id)
    SELECT r.id FROM allocation.rep r JOIN t ON t.id = r.team_id WHERE r.active)
SELECT s.id AS key, s.seq, s.kind,
       l.key IS NOT NULL AS in_lean, m.id IS NOT NULL AS in_ext,
       l.territory_id AS lean_territory, g.ref_territory, g.ext_territory,
       l.owner AS lean_owner, m.owner AS ext_owner,
       CASE WHEN l.territory_id IS NULL THEN 'no_territory'
            WHEN t.owner_rep_id IN (SELECT id FROM field) THEN 'owner_rep'
            WHEN t.owner_rep_id IS NOT NULL THEN 'rep_excluded'
            WHEN t.owner_team_id IS NOT NULL THEN 'owner_team'
            ELSE 'no_owner' END AS class
  FROM bench.src_customer s
  LEFT JOIN bench.lean_decision l ON l.key = s.id
  LEFT JOIN bench.customer_m m ON m.id = s.id
  LEFT JOIN allocation.territory t ON t.id = l.territory_id
  LEFT JOIN bench.agree g ON g.key = s.id
 WHERE s.seq <= (SELECT count(*) FROM bench.lean_decision);

\echo
\echo == agreement check: engine (owner-only rule set) vs lean PL/pgSQL reference ==
SELECT count(*) AS customers,
       count(*) FILTER (WHERE NOT in_lean OR NOT in_ext) AS missing_on_one_side,
       count(*) FILTER (WHERE class IN ('no_territory', 'owner_rep')) AS compared,
       count(*) FILTER (WHERE class IN ('no_territory', 'owner_rep') AND lean_owner IS DISTINCT FROM ext_owner) AS owner_disagreements,
       count(*) FILTER (WHERE class = 'rep_excluded') AS rep_excluded,
       count(*) FILTER (WHERE class = 'owner_team') AS owner_team,
       count(*) FILTER (WHERE class = 'no_owner') AS no_owner,
       count(*) FILTER (WHERE lean_territory IS DISTINCT FROM ref_territory) AS territory_vs_full_ref,
       count(*) FILTER (WHERE lean_territory IS DISTINCT FROM ext_territory) AS territory_vs_engine
  FROM bench.agree_lean;

-- by kind of location (border, overlay and hole points are the interesting ones)
SELECT kind, count(*) AS customers,
       count(*) FILTER (WHERE class IN ('no_territory', 'owner_rep')) AS compared,
       count(*) FILTER (WHERE class IN ('no_territory', 'owner_rep') AND lean_owner IS DISTINCT FROM ext_owner) AS owner_diff,
       count(*) FILTER (WHERE lean_territory IS DISTINCT FROM ref_territory) AS territory_diff_full_ref
  FROM bench.agree_lean GROUP BY ROLLUP (kind) ORDER BY kind;

-- the first disagreements, with the exact point and the truth from the whole polygons
SELECT a.seq, a.key, a.kind, a.class,
       CASE WHEN s.loc IS NULL THEN NULL ELSE 'POINT(' || ST_X(s.loc)::text || ' ' || ST_Y(s.loc)::text || ')' END AS point_exact,
       a.lean_territory, a.ref_territory, a.ext_territory,
       (SELECT string_agg(t.id || ':' || t.priority, ' ' ORDER BY t.priority DESC, t.id)
          FROM allocation.territory t WHERE ST_Covers(t.geom, s.loc)) AS covering_id_prio,
       (SELECT string_agg(DISTINCT p.territory_id::text, ' ')
          FROM lean.territory_part p WHERE ST_Covers(p.geom, s.loc)) AS covering_pieces,
       a.lean_owner, a.ext_owner
  FROM bench.agree_lean a JOIN bench.src_customer s ON s.id = a.key
 WHERE (a.class IN ('no_territory', 'owner_rep') AND a.lean_owner IS DISTINCT FROM a.ext_owner)
    OR a.lean_territory IS DISTINCT FROM a.ref_territory
    OR a.lean_territory IS DISTINCT FROM a.ext_territory
    OR NOT a.in_lean OR NOT a.in_ext
 ORDER BY a.seq
 LIMIT 12;
