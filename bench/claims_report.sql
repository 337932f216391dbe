-- bench/claims_report.sql: what bench/claims.sh prints after the run (outcomes, per-rep limits,
-- watcher, and the invariants of bench/claims_check.sql after each phase).
\set ON_ERROR_STOP 1
\pset footer off
SET client_min_messages = warning;

\echo
\echo '== outcomes of the attempts (one pgbench transaction each) =='
SELECT phase, op, outcome, count(*) AS attempts,
       CASE WHEN outcome NOT IN ('ok', 'noop') THEN min(message) END AS example_message
  FROM claims.outcome
 GROUP BY phase, op, outcome
 ORDER BY phase, op, outcome = 'ok' DESC, count(*) DESC;

\echo '== per phase =='
SELECT phase, count(*) AS attempts,
       count(*) FILTER (WHERE outcome = 'ok') AS ok,
       count(*) FILTER (WHERE outcome = 'noop') AS "noop (swap: held none)",
       count(*) FILTER (WHERE outcome = 'LA080') AS "LA080 owned",
       count(*) FILTER (WHERE outcome = 'LA022') AS "LA022 capacity",
       count(*) FILTER (WHERE outcome = 'LA082') AS "LA082 daily",
       count(*) FILTER (WHERE outcome = 'LA083') AS "LA083 cooldown",
       count(*) FILTER (WHERE outcome = 'LA086') AS "LA086 pool/not yours",
       count(*) FILTER (WHERE outcome = '55P03') AS "55P03 busy",
       count(*) FILTER (WHERE outcome = '40P01') AS "40P01 deadlock",
       count(*) FILTER (WHERE outcome NOT IN ('ok', 'noop', 'LA080', 'LA022', 'LA082', 'LA083', 'LA086', '55P03', '40P01'))
           AS other
  FROM claims.outcome
 GROUP BY ROLLUP (phase) ORDER BY phase;

\echo '== LA022 by the check that refused =='
SELECT phase, message, count(*) FROM claims.outcome WHERE outcome = 'LA022' GROUP BY 1, 2 ORDER BY 1, 3 DESC;

\echo '== per rep at the end: limits, claims today, holdings =='
SELECT r.id AS rep, t.code AS team, r.capacity, l.max_held, l.daily_claims, l.cooldown,
       coalesce(d.claims, 0) AS claims_today,
       (SELECT count(*) FROM allocation.event e
         WHERE e.kind = 'claim' AND e.to_rep = r.id
           AND (e.at AT TIME ZONE coalesce(nullif(current_setting('allocation.claim_timezone', true), ''),
                                           'Asia/Shanghai'))::date = allocation.claim_today()) AS claim_events_today,
       (SELECT count(*) FROM claims.outcome o WHERE o.outcome = 'LA082' AND o.rep = r.id) AS la082_refusals,
       coalesce(ld.held, 0) AS held_now
  FROM allocation.rep r
  JOIN allocation.team t ON t.id = r.team_id
  CROSS JOIN LATERAL allocation.claim_limits(r.id) l
  LEFT JOIN allocation.claim_day d ON d.rep_id = r.id AND d.day = allocation.claim_today()
  LEFT JOIN allocation.rep_load ld ON ld.rep_id = r.id
 ORDER BY r.id;

\echo '== successes: outcomes vs audit log vs registry (a move or swap = one claim + one release, a pair = two claims) =='
WITH m AS (SELECT id FROM allocation.managed_table WHERE tbl = 'claims.customer'::regclass AND active)
SELECT 'claims' AS what,
       (SELECT count(*) + count(*) FILTER (WHERE op ~ '^pair') FROM claims.outcome
         WHERE outcome = 'ok' AND op !~ '^release') AS ok_outcomes,
       (SELECT count(*) FROM allocation.event e, m WHERE e.managed_id = m.id AND e.kind = 'claim') AS events,
       (SELECT count(*) FROM allocation.assignment a, m WHERE a.managed_id = m.id AND a.source = 'claim') AS registry_rows
UNION ALL
SELECT 'releases',
       (SELECT count(*) FROM claims.outcome WHERE outcome = 'ok' AND op ~ '^(release|move|swap)'),
       (SELECT count(*) FROM allocation.event e, m WHERE e.managed_id = m.id AND e.kind = 'release'),
       (SELECT count(*) FROM allocation.assignment a, m WHERE a.managed_id = m.id AND a.closed_reason = 'release');

\echo '== watcher (one snapshot per sample, taken while pgbench ran) =='
SELECT phase, count(*) AS samples, min(held_total) AS min_held, max(held_total) AS max_held,
       sum(multi_owner) AS multi_owner, sum(owner_mismatch) AS owner_mismatch, sum(over_capacity) AS over_capacity,
       sum(over_max_held) AS over_max_held, sum(counter_mismatch) AS counter_mismatch
  FROM claims.sample GROUP BY phase ORDER BY phase;

\echo '== allocation.check_consistency() =='
SELECT * FROM allocation.check_consistency();

\echo '== unexpected errors (first 3) =='
SELECT phase, op, rep, key, outcome, detail FROM claims.outcome
 WHERE outcome NOT IN ('ok', 'noop', 'LA080', 'LA022', 'LA082', 'LA083', 'LA086', '55P03')
 LIMIT 3;

\echo '== invariants after each phase (every n must be 0) =='
SELECT v1.ord AS "#", v1.what AS invariant, v1.n AS "after phase 1", v2.n AS "after phase 2"
  FROM claims.violation v1 LEFT JOIN claims.violation v2 ON v2.ord = v1.ord AND v2.phase = 2
 WHERE v1.phase = 1
 ORDER BY v1.ord;
