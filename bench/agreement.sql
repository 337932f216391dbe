-- bench/agreement.sql: do the extension and the PL/pgSQL reference assign identically?
-- Compares, for every customer inserted by the last timed INSERT ... SELECT, the owner
-- (the owner column of bench.customer_m and of bench.customer_ref), the winner territory
-- and the deciding rule.
\set ON_ERROR_STOP 1
\pset footer off

DROP TABLE IF EXISTS bench.agree;
CREATE TABLE bench.agree AS
WITH
-- The engine's territory and rule of each customer's last decision: the ONE place this
-- check reads the engine's records (its audit log, since customer_m was last emptied).
-- Owners come from the customer table's owner column, not from here.
ext AS (
    SELECT DISTINCT ON (e.key) e.key::bigint AS key, e.territory_id,
           r.name AS rule
      FROM allocation.event e
      LEFT JOIN allocation.rule r ON r.id = e.rule_id
     WHERE e.managed_id = (SELECT id FROM allocation.managed_table WHERE tbl = 'bench.customer_m'::regclass AND active)
       AND e.id > coalesce((SELECT max(t.id) FROM allocation.event t
                             WHERE t.kind = 'truncate'
                               AND t.managed_id = (SELECT id FROM allocation.managed_table WHERE tbl = 'bench.customer_m'::regclass AND active)), 0)
       AND e.key IS NOT NULL
     ORDER BY e.key, e.id DESC),
rf AS (
    SELECT key::bigint AS key, territory_id, rep_id, rule FROM ref.assignment WHERE valid_to IS NULL)
SELECT coalesce(m.id, c.id) AS key,
       m.id IS NOT NULL AS in_ext, c.id IS NOT NULL AS in_ref,
       e.territory_id AS ext_territory, f.territory_id AS ref_territory,
       m.owner AS ext_rep, c.owner AS ref_rep,
       e.key IS NOT NULL AS ext_logged, f.rep_id AS ref_registry_rep,
       e.rule AS ext_rule, f.rule AS ref_rule
  FROM bench.customer_m m
  FULL JOIN bench.customer_ref c ON c.id = m.id
  LEFT JOIN ext e ON e.key = coalesce(m.id, c.id)
  LEFT JOIN rf f ON f.key = coalesce(m.id, c.id);

\echo
\echo == agreement check: extension vs PL/pgSQL reference ==
SELECT count(*) AS customers,
       count(*) FILTER (WHERE NOT in_ext OR NOT in_ref) AS missing_on_one_side,
       count(*) FILTER (WHERE ext_territory IS DISTINCT FROM ref_territory) AS territory_disagreements,
       count(*) FILTER (WHERE ext_rep IS DISTINCT FROM ref_rep) AS owner_disagreements,
       count(*) FILTER (WHERE ext_rule IS DISTINCT FROM ref_rule) AS rule_disagreements,
       count(*) FILTER (WHERE NOT ext_logged OR ref_registry_rep IS DISTINCT FROM ref_rep) AS unlogged,
       count(*) FILTER (WHERE ext_rep IS NOT NULL) AS assigned,
       count(*) FILTER (WHERE ext_territory IS NOT NULL) AS in_a_territory
  FROM bench.agree;

SELECT 'extension' AS side,
       md5(string_agg(key || ',' || coalesce(ext_territory::text, '-') || ',' || coalesce(ext_rep::text, '-'), ';' ORDER BY key)) AS md5_key_territory_owner
  FROM bench.agree WHERE in_ext
UNION ALL
SELECT 'reference',
       md5(string_agg(key || ',' || coalesce(ref_territory::text, '-') || ',' || coalesce(ref_rep::text, '-'), ';' ORDER BY key))
  FROM bench.agree WHERE in_ref;

-- by kind of location (border points are the interesting ones)
SELECT s.kind,
       count(*) AS customers,
       count(*) FILTER (WHERE a.ext_territory IS NOT NULL) AS in_territory,
       count(*) FILTER (WHERE a.ext_territory IS DISTINCT FROM a.ref_territory) AS territory_diff,
       count(*) FILTER (WHERE a.ext_rep IS DISTINCT FROM a.ref_rep) AS owner_diff
  FROM bench.agree a JOIN bench.src_customer s ON s.id = a.key
 GROUP BY s.kind ORDER BY s.kind;

-- how often the hard cases happen: points covered by two or more territories (shared
-- borders, nodes, enclave rings, overlaps), decided by priority or by the lowest-id tie-break
SELECT s.kind,
       count(*) AS customers,
       count(*) FILTER (WHERE c.n >= 2) AS covered_by_2_plus,
       count(*) FILTER (WHERE c.n >= 3) AS covered_by_3_plus,
       count(*) FILTER (WHERE c.n >= 2 AND c.ties = 1) AS won_by_priority,
       count(*) FILTER (WHERE c.n >= 2 AND c.ties >= 2) AS won_by_lowest_id
  FROM bench.src_customer s
 CROSS JOIN LATERAL (
        SELECT count(*) AS n,
               count(*) FILTER (WHERE t.priority = (SELECT max(t2.priority) FROM ref.territory t2
                                                     WHERE ST_Covers(t2.geom, s.loc))) AS ties
          FROM ref.territory t WHERE ST_Covers(t.geom, s.loc)) c
 WHERE s.kind NOT IN ('uniform', 'far_outside', 'no_location')
 GROUP BY ROLLUP (s.kind) ORDER BY s.kind;

-- the first disagreements, in insert order, with the exact point and the truth from SQL
SELECT s.seq, a.key, s.kind,
       CASE WHEN s.loc IS NULL THEN NULL ELSE 'POINT(' || ST_X(s.loc)::text || ' ' || ST_Y(s.loc)::text || ')' END AS point_exact,
       a.ext_territory, a.ref_territory,
       (SELECT string_agg(t.id || ':' || t.priority, ' ' ORDER BY t.priority DESC, t.id)
          FROM allocation.territory t WHERE ST_Covers(t.geom, s.loc)) AS covering_id_prio,
       a.ext_rep, a.ref_rep, a.ext_rule, a.ref_rule
  FROM bench.agree a JOIN bench.src_customer s ON s.id = a.key
 WHERE a.ext_territory IS DISTINCT FROM a.ref_territory
    OR a.ext_rep IS DISTINCT FROM a.ref_rep
    OR a.ext_rule IS DISTINCT FROM a.ref_rule
    OR NOT a.in_ext OR NOT a.in_ref
 ORDER BY s.seq
 LIMIT 12;
