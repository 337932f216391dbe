-- bench/claims_check.sql: after the pgbench run of bench/claims.sh, prints what happened and
-- every invariant check; the violations go to claims.violation (0 rows with n > 0 = correct).
\set ON_ERROR_STOP 1
\pset footer off
SET client_min_messages = warning;

\echo
\echo '== outcomes of the attempts (one pgbench transaction each) =='
SELECT op, outcome, count(*) AS attempts,
       CASE WHEN outcome NOT IN ('ok', 'noop') THEN min(message) END AS example_message
  FROM claims.outcome
 GROUP BY op, outcome
 ORDER BY op, outcome = 'ok' DESC, count(*) DESC;

SELECT count(*) AS attempts,
       count(*) FILTER (WHERE outcome = 'ok') AS succeeded,
       count(*) FILTER (WHERE outcome = 'noop') AS "swap: held nothing",
       count(*) FILTER (WHERE outcome = 'LA080') AS "LA080 already owned",
       count(*) FILTER (WHERE outcome = 'LA022') AS "LA022 capacity/max_held",
       count(*) FILTER (WHERE outcome = 'LA082') AS "LA082 daily limit",
       count(*) FILTER (WHERE outcome = 'LA083') AS "LA083 cooldown",
       count(*) FILTER (WHERE outcome = 'LA086') AS "LA086 pool/not yours",
       count(*) FILTER (WHERE outcome = '55P03') AS "55P03 busy",
       count(*) FILTER (WHERE outcome = '40P01') AS "40P01 deadlock",
       count(*) FILTER (WHERE outcome NOT IN ('ok', 'noop', 'LA080', 'LA022', 'LA082', 'LA083', 'LA086', '55P03', '40P01'))
           AS other
  FROM claims.outcome \gx

\echo '== LA022 by the check that refused =='
SELECT message, count(*) FROM claims.outcome WHERE outcome = 'LA022' GROUP BY message ORDER BY count(*) DESC;

\echo '== per rep: limits, claims today, what it holds now =='
SELECT r.id AS rep, t.code AS team, r.capacity, l.max_held, l.daily_claims, l.cooldown,
       coalesce(d.claims, 0) AS claims_today,
       (SELECT count(*) FROM allocation.event e
         WHERE e.kind = 'claim' AND e.to_rep = r.id AND e.at::date = current_date) AS claim_events_today,
       coalesce(ld.held, 0) AS held_now
  FROM allocation.rep r
  JOIN allocation.team t ON t.id = r.team_id
  CROSS JOIN LATERAL allocation.claim_limits(r.id) l
  LEFT JOIN allocation.claim_day d ON d.rep_id = r.id AND d.day = current_date
  LEFT JOIN allocation.rep_load ld ON ld.rep_id = r.id
 ORDER BY r.id;

-------------------------------------------------------------------------------
-- The invariants
-------------------------------------------------------------------------------
CREATE TABLE claims.violation (ord integer, what text, n bigint);

WITH m AS (SELECT id FROM allocation.managed_table WHERE tbl = 'claims.customer'::regclass AND active),
hist AS (SELECT a.* FROM allocation.assignment a, m WHERE a.managed_id = m.id)
INSERT INTO claims.violation
-- 1. one owner per customer
SELECT 1, 'customers with more than one open registry row (active owner)',
       (SELECT count(*) FROM (SELECT key FROM hist WHERE valid_to IS NULL GROUP BY key HAVING count(*) > 1) x)
UNION ALL
SELECT 2, 'customers whose owner column differs from the open registry row (or have none)',
       (SELECT count(*) FROM claims.customer c
         WHERE (SELECT count(*) FROM hist h WHERE h.key = c.id::text AND h.valid_to IS NULL
                   AND h.rep_id IS NOT DISTINCT FROM c.owner_id) <> 1)
UNION ALL
-- 2. capacity and the claim policy's holdings limit
SELECT 3, 'reps over capacity (open registry rows > rep.capacity)',
       (SELECT count(*) FROM allocation.rep r
         WHERE r.capacity < (SELECT count(*) FROM hist h WHERE h.rep_id = r.id AND h.valid_to IS NULL))
UNION ALL
SELECT 4, 'reps over capacity (rep_load.held > rep.capacity)',
       (SELECT count(*) FROM allocation.rep r JOIN allocation.rep_load l ON l.rep_id = r.id WHERE l.held > r.capacity)
UNION ALL
SELECT 5, 'reps over the claim policy''s max_held (open registry rows)',
       (SELECT count(*) FROM allocation.rep r CROSS JOIN LATERAL allocation.claim_limits(r.id) l
         WHERE l.max_held < (SELECT count(*) FROM hist h WHERE h.rep_id = r.id AND h.valid_to IS NULL))
UNION ALL
-- 3. daily limit: the audit log's claims per rep and day (the day of the claim's transaction,
--    in the TimeZone of the database like claim_day) against the limit, and the counter
SELECT 6, 'daily-limit violations (rep-days with more claim events than daily_claims)',
       (SELECT count(*) FROM (SELECT e.to_rep, e.at::date AS day, count(*) AS n FROM allocation.event e, m
                                WHERE e.managed_id = m.id AND e.kind = 'claim' GROUP BY 1, 2) c
                         CROSS JOIN LATERAL allocation.claim_limits(c.to_rep) l
         WHERE c.n > l.daily_claims)
UNION ALL
SELECT 7, 'rep-days whose claim_day counter differs from the claim events',
       (SELECT count(*) FROM (SELECT e.to_rep AS rep_id, e.at::date AS day, count(*) AS n FROM allocation.event e, m
                                WHERE e.managed_id = m.id AND e.kind = 'claim' GROUP BY 1, 2) c
                         FULL JOIN allocation.claim_day d ON d.rep_id = c.rep_id AND d.day = c.day
         WHERE coalesce(c.n, 0) <> coalesce(d.claims, 0))
UNION ALL
-- 4. cooldown: a claim after the same rep gave the customer back (earlier in the customer's
--    history = lower id: every change of one customer happens under its row lock)
SELECT 8, 'cooldown violations (claims less than the cooldown after the rep''s own release)',
       (SELECT count(*) FROM hist x CROSS JOIN LATERAL allocation.claim_limits(x.rep_id) l
         WHERE x.source = 'claim' AND l.cooldown IS NOT NULL
           AND (SELECT max(y.valid_to) FROM hist y
                 WHERE y.key = x.key AND y.rep_id = x.rep_id AND y.id < x.id
                   AND y.closed_reason IN ('release', 'recycle')) + l.cooldown > x.valid_from)
UNION ALL
-- 5. the engine's own check
SELECT 9, 'allocation.check_consistency() rows', (SELECT count(*) FROM allocation.check_consistency());

-- 6. every committed success is in the outcomes, the audit log and the registry alike
WITH m AS (SELECT id FROM allocation.managed_table WHERE tbl = 'claims.customer'::regclass AND active),
counts AS (
    SELECT (SELECT count(*) FROM claims.outcome WHERE outcome = 'ok' AND op LIKE 'claim%')
           + (SELECT count(*) FROM claims.outcome WHERE outcome = 'ok' AND op ~ '^(move|swap)') AS claims_by_outcome,
           (SELECT count(*) FROM claims.outcome WHERE outcome = 'ok' AND op LIKE 'release%')
           + (SELECT count(*) FROM claims.outcome WHERE outcome = 'ok' AND op ~ '^(move|swap)') AS releases_by_outcome,
           (SELECT count(*) FROM allocation.event e, m WHERE e.managed_id = m.id AND e.kind = 'claim') AS claim_events,
           (SELECT count(*) FROM allocation.event e, m WHERE e.managed_id = m.id AND e.kind = 'release') AS release_events,
           (SELECT count(*) FROM allocation.assignment a, m WHERE a.managed_id = m.id AND a.source = 'claim') AS claimed_rows,
           (SELECT count(*) FROM allocation.assignment a, m WHERE a.managed_id = m.id AND a.closed_reason = 'release') AS released_rows)
INSERT INTO claims.violation
SELECT 10, 'successful claims: outcomes, claim events and registry rows of source claim disagree',
       abs(claims_by_outcome - claim_events) + abs(claim_events - claimed_rows) FROM counts
UNION ALL
SELECT 11, 'successful releases: outcomes, release events and registry rows closed by release disagree',
       abs(releases_by_outcome - release_events) + abs(release_events - released_rows) FROM counts;

INSERT INTO claims.violation
SELECT 12, 'watcher samples (one snapshot each, during the run) that saw a violation',
       count(*) FILTER (WHERE multi_owner + owner_mismatch + over_capacity + over_max_held + counter_mismatch > 0)
  FROM claims.sample;

\echo '== success counts: outcomes vs audit log vs registry =='
WITH m AS (SELECT id FROM allocation.managed_table WHERE tbl = 'claims.customer'::regclass AND active)
SELECT 'claims' AS what,
       (SELECT count(*) FROM claims.outcome WHERE outcome = 'ok' AND op !~ '^release') AS ok_outcomes,
       (SELECT count(*) FROM allocation.event e, m WHERE e.managed_id = m.id AND e.kind = 'claim') AS events,
       (SELECT count(*) FROM allocation.assignment a, m WHERE a.managed_id = m.id AND a.source = 'claim') AS registry_rows
UNION ALL
SELECT 'releases',
       (SELECT count(*) FROM claims.outcome WHERE outcome = 'ok' AND op !~ '^claim'),
       (SELECT count(*) FROM allocation.event e, m WHERE e.managed_id = m.id AND e.kind = 'release'),
       (SELECT count(*) FROM allocation.assignment a, m WHERE a.managed_id = m.id AND a.closed_reason = 'release');

\echo '== watcher (snapshots taken while pgbench ran) =='
SELECT count(*) AS samples, min(held_total) AS min_held, max(held_total) AS max_held,
       sum(multi_owner) AS multi_owner, sum(owner_mismatch) AS owner_mismatch, sum(over_capacity) AS over_capacity,
       sum(over_max_held) AS over_max_held, sum(counter_mismatch) AS counter_mismatch
  FROM claims.sample;

\echo '== allocation.check_consistency() =='
SELECT * FROM allocation.check_consistency();

\echo '== invariants (every n must be 0) =='
SELECT ord AS "#", what AS invariant, n FROM claims.violation ORDER BY ord;
