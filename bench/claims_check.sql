-- bench/claims_check.sql: the invariants of claims, checked by bench/claims.sh after each phase
-- (psql variable phase).  Each check is one row of claims.violation; n must be 0.  The checks
-- look at the whole history (both phases so far), so phase 2's rows include phase 1.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE TABLE IF NOT EXISTS claims.violation (phase integer, ord integer, what text, n bigint);

WITH m AS (SELECT id FROM allocation.managed_table WHERE tbl = 'claims.customer'::regclass AND active),
hist AS (SELECT a.* FROM allocation.assignment a, m WHERE a.managed_id = m.id),
limits AS (SELECT r.id AS rep_id, l.* FROM allocation.rep r CROSS JOIN LATERAL allocation.claim_limits(r.id) l),
-- the claim day as allocation.claim_today() computed it: the date of the claim's transaction
-- (event.at = now()) in allocation.claim_timezone
claim_events AS (SELECT e.to_rep AS rep_id,
                        (e.at AT TIME ZONE coalesce(nullif(current_setting('allocation.claim_timezone', true), ''),
                                                    'Asia/Shanghai'))::date AS day,
                        count(*) AS n
                   FROM allocation.event e, m
                  WHERE e.managed_id = m.id AND e.kind = 'claim' GROUP BY 1, 2),
counts AS (
    SELECT (SELECT count(*) + count(*) FILTER (WHERE op ~ '^pair') FROM claims.outcome
             WHERE outcome = 'ok' AND op !~ '^release') AS claims_by_outcome,
           (SELECT count(*) FROM claims.outcome WHERE outcome = 'ok' AND op ~ '^(release|move|swap)') AS releases_by_outcome,
           (SELECT count(*) FROM allocation.event e, m WHERE e.managed_id = m.id AND e.kind = 'claim') AS claim_events,
           (SELECT count(*) FROM allocation.event e, m WHERE e.managed_id = m.id AND e.kind = 'release') AS release_events,
           (SELECT count(*) FROM hist WHERE source = 'claim') AS claimed_rows,
           (SELECT count(*) FROM hist WHERE closed_reason = 'release') AS released_rows)
INSERT INTO claims.violation (phase, ord, what, n)
SELECT :phase, * FROM (
-- one active owner per customer
SELECT 1, 'customers with more than one open registry row (active owner)',
       (SELECT count(*) FROM (SELECT key FROM hist WHERE valid_to IS NULL GROUP BY key HAVING count(*) > 1) x)
UNION ALL
SELECT 2, 'customers whose owner column differs from their open registry row (or have none)',
       (SELECT count(*) FROM claims.customer c
         WHERE (SELECT count(*) FROM hist h WHERE h.key = c.id::text AND h.valid_to IS NULL
                   AND h.rep_id IS NOT DISTINCT FROM c.owner_id) <> 1)
UNION ALL
-- capacity and the claim policy's holdings limit
SELECT 3, 'reps over capacity (open registry rows > rep.capacity)',
       (SELECT count(*) FROM allocation.rep r
         WHERE r.capacity < (SELECT count(*) FROM hist h WHERE h.rep_id = r.id AND h.valid_to IS NULL))
UNION ALL
SELECT 4, 'reps over capacity (rep_load.held > rep.capacity)',
       (SELECT count(*) FROM allocation.rep r JOIN allocation.rep_load l ON l.rep_id = r.id WHERE l.held > r.capacity)
UNION ALL
SELECT 5, 'reps over the claim policy''s max_held (open registry rows)',
       (SELECT count(*) FROM limits l
         WHERE l.max_held < (SELECT count(*) FROM hist h WHERE h.rep_id = l.rep_id AND h.valid_to IS NULL))
UNION ALL
-- daily limit: the audit log's claims per rep and claim day against the limit and the counter
SELECT 6, 'daily-limit violations (rep-days with more claim events than daily_claims)',
       (SELECT count(*) FROM claim_events c JOIN limits l ON l.rep_id = c.rep_id WHERE c.n > l.daily_claims)
UNION ALL
SELECT 7, 'rep-days whose claim_day counter differs from the claim events',
       (SELECT count(*) FROM claim_events c FULL JOIN allocation.claim_day d ON d.rep_id = c.rep_id AND d.day = c.day
         WHERE coalesce(c.n, 0) <> coalesce(d.claims, 0))
UNION ALL
-- cooldown: no claim sooner than the cooldown after the same rep gave the customer back.  Every
-- change of one customer happens under its row lock, so a lower id is earlier in its history.
SELECT 8, 'cooldown violations (claims less than the cooldown after the rep''s own release)',
       (SELECT count(*)
          FROM (SELECT h.source, h.rep_id, h.valid_from,
                       max(h.valid_to) FILTER (WHERE h.closed_reason IN ('release', 'recycle'))
                           OVER (PARTITION BY h.key, h.rep_id ORDER BY h.id
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS gave_back
                  FROM hist h WHERE h.rep_id IS NOT NULL) x
          JOIN limits l ON l.rep_id = x.rep_id
         WHERE x.source = 'claim' AND x.gave_back + l.cooldown > x.valid_from)
UNION ALL
-- the engine's own health check
SELECT 9, 'allocation.check_consistency() rows', (SELECT count(*) FROM allocation.check_consistency())
UNION ALL
-- every committed success is in the outcomes, the audit log and the registry alike
-- (a move or a swap is one claim and one release, a pair two claims)
SELECT 10, 'successful claims: outcomes, claim events and registry rows of source claim disagree by',
       abs(claims_by_outcome - claim_events) + abs(claim_events - claimed_rows) FROM counts
UNION ALL
SELECT 11, 'successful releases: outcomes, release events and registry rows closed by release disagree by',
       abs(releases_by_outcome - release_events) + abs(release_events - released_rows) FROM counts
UNION ALL
-- what the watcher saw while pgbench ran (each sample is one snapshot)
SELECT 12, 'watcher snapshots during the run that saw a violation of 1-5 or a counter mismatch',
       (SELECT count(*) FROM claims.sample
         WHERE multi_owner + owner_mismatch + over_capacity + over_max_held + counter_mismatch > 0)
) v;
