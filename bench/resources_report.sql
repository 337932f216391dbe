-- bench/resources_report.sql: what bench/resources.sh prints after the run (outcomes, the pool, per
-- rep and per customer use, the audit log, the watcher and the invariants after each phase).
\set ON_ERROR_STOP 1
\pset footer off
SET client_min_messages = warning;

\echo
\echo '== outcomes of the attempts (one pgbench transaction each) =='
SELECT phase, op, outcome, count(*) AS attempts, sum(qty) AS units_asked,
       round(avg(ms), 2) AS avg_ms, round((percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))::numeric, 1) AS p99_ms,
       round(max(ms), 1) AS max_ms,
       CASE WHEN outcome NOT IN ('granted', 'waitlisted', 'released', 'noop') THEN min(message) END AS example_message
  FROM resources.outcome
 GROUP BY phase, op, outcome
 ORDER BY phase, op DESC, count(*) DESC;

\echo '== per phase =='
SELECT phase, count(*) AS attempts,
       count(*) FILTER (WHERE outcome = 'granted') AS granted,
       sum(qty) FILTER (WHERE outcome = 'granted') AS units_granted,
       count(*) FILTER (WHERE outcome = 'waitlisted') AS waitlisted,
       count(*) FILTER (WHERE outcome = 'LA092') AS "LA092 qty",
       count(*) FILTER (WHERE outcome = 'LA093') AS "LA093 customer cap",
       count(*) FILTER (WHERE outcome = 'LA094') AS "LA094 rep cap",
       count(*) FILTER (WHERE outcome = 'released') AS released,
       count(*) FILTER (WHERE outcome = 'noop') AS "noop (no grant)",
       count(*) FILTER (WHERE outcome = 'LA096') AS "LA096 released already",
       count(*) FILTER (WHERE outcome = '40P01') AS "40P01 deadlock",
       count(*) FILTER (WHERE outcome NOT IN ('granted', 'waitlisted', 'released', 'noop',
                                              'LA092', 'LA093', 'LA094', 'LA096', '40P01')) AS other
  FROM resources.outcome
 GROUP BY ROLLUP (phase) ORDER BY phase;

\echo '== phase 1: how the pool ran out (attempts in commit order of their outcome rows) =='
WITH o AS (SELECT outcome, qty, at, row_number() OVER (ORDER BY at) AS n FROM resources.outcome WHERE phase = 1),
last_grant AS (SELECT max(n) AS n, max(at) AS at FROM o WHERE outcome = 'granted')
SELECT (SELECT n FROM last_grant) AS "attempts until the last unit",
       round(extract(epoch FROM (SELECT at FROM last_grant) - (SELECT min(at) FROM o))::numeric, 2) AS "seconds until the last unit",
       (SELECT count(*) FROM o, last_grant l WHERE o.n <= l.n AND o.outcome = 'granted') AS "grants",
       (SELECT count(*) FROM o, last_grant l WHERE o.n <= l.n AND o.outcome = 'waitlisted') AS "waitlisted before (qty 2, 1 left)",
       (SELECT count(*) FROM o, last_grant l WHERE o.n <= l.n AND o.outcome = 'LA093') AS "LA093 before",
       (SELECT count(*) FROM o, last_grant l WHERE o.n <= l.n AND o.outcome = 'LA094') AS "LA094 before",
       (SELECT count(*) FROM o, last_grant l WHERE o.n > l.n) AS "attempts after (all waitlisted or refused)";

\echo '== the pool at the end (allocation.resource_utilization) =='
SELECT code, total, remaining, granted, utilization_pct, pending, waitlisted
  FROM allocation.resource_utilization WHERE code = 'bench-samples';

\echo '== per rep at the end: customers, granted units (requests vs resource_rep_use) vs per_rep_cap =='
WITH p AS (SELECT * FROM allocation.resource_pool WHERE code = 'bench-samples'),
la094 AS (SELECT c.owner_id AS rep_id, count(*) AS n FROM resources.outcome o JOIN resources.customer c ON c.id = o.key
           WHERE o.outcome = 'LA094' GROUP BY 1)
SELECT r.id AS rep, r.code,
       (SELECT count(*) FROM resources.customer c WHERE c.owner_id = r.id) AS customers,
       (SELECT coalesce(sum(q.qty), 0) FROM allocation.resource_request q, p
         WHERE q.pool_id = p.id AND q.rep_id = r.id AND q.status = 'granted') AS granted_units,
       (SELECT u.used FROM allocation.resource_rep_use u, p WHERE u.pool_id = p.id AND u.rep_id = r.id) AS rep_use,
       (SELECT per_rep_cap FROM p) AS cap,
       coalesce((SELECT n FROM la094 WHERE la094.rep_id = r.id), 0) AS la094_refusals,
       (SELECT count(*) FROM allocation.resource_request q, p
         WHERE q.pool_id = p.id AND q.rep_id = r.id AND q.status = 'waitlisted') AS waitlisted
  FROM allocation.rep r
 ORDER BY r.id;

\echo '== customers by granted units at the end (per_customer_cap applies) =='
WITH p AS (SELECT * FROM allocation.resource_pool WHERE code = 'bench-samples'),
u AS (SELECT c.id, coalesce((SELECT sum(q.qty) FROM allocation.resource_request q, p
                              WHERE q.pool_id = p.id AND q.key = c.id::text AND q.status = 'granted'), 0) AS units
        FROM resources.customer c)
SELECT units AS granted_units, count(*) AS customers, sum(units) AS total_units, (SELECT per_customer_cap FROM p) AS cap
  FROM u GROUP BY units ORDER BY units;

\echo '== the waitlist at the end: why its requests wait (a release walks it in request order, under the pool lock) =='
WITH p AS (SELECT * FROM allocation.resource_pool WHERE code = 'bench-samples'),
w AS (SELECT q.* FROM allocation.resource_request q, p WHERE q.pool_id = p.id AND q.status = 'waitlisted'),
cu AS (SELECT u.key, u.used FROM allocation.resource_customer_use u, p WHERE u.pool_id = p.id),
ru AS (SELECT u.rep_id, u.used FROM allocation.resource_rep_use u, p WHERE u.pool_id = p.id),
c AS (SELECT w.id,
             coalesce((SELECT used FROM cu WHERE cu.key = w.key), 0) + w.qty > p.per_customer_cap AS customer_full,
             coalesce((SELECT used FROM ru WHERE ru.rep_id = w.rep_id), 0) + w.qty > p.per_rep_cap AS rep_full
        FROM w, p),
served AS (SELECT max((e.detail->>'request_id')::bigint) AS last_id FROM allocation.event e, p
            WHERE e.kind = 'resource_granted' AND e.reason = 'served from the waitlist'
              AND (e.detail->>'pool_id')::bigint = p.id)
SELECT count(*) AS waitlisted,
       count(DISTINCT w.key) AS customers,
       count(*) FILTER (WHERE c.customer_full OR c.rep_full) AS "over a cap if served now",
       count(*) FILTER (WHERE c.customer_full) AS "customer at cap",
       count(*) FILTER (WHERE c.rep_full) AS "rep at cap",
       count(*) FILTER (WHERE w.id < (SELECT last_id FROM served)) AS "ahead of the last request served"
  FROM w JOIN c ON c.id = w.id;

\echo '== audit log of the pool (allocation.event) =='
SELECT e.kind, coalesce(e.reason, '') AS reason, count(*) AS events
  FROM allocation.event e
 WHERE e.kind LIKE 'resource\_%'
   AND (e.detail->>'pool_id')::bigint = (SELECT id FROM allocation.resource_pool WHERE code = 'bench-samples')
 GROUP BY 1, 2 ORDER BY 1, 3 DESC;

\echo '== watcher (one snapshot per sample, taken while pgbench ran) =='
SELECT phase, count(*) AS samples, min(granted) AS min_granted, max(granted) AS max_granted,
       min(remaining) AS min_remaining, max(remaining) AS max_remaining, max(waitlisted) AS max_waitlisted,
       sum(out_of_range) AS out_of_range, sum(granted_mismatch) AS granted_mismatch,
       sum(over_customer_cap) AS over_customer_cap, sum(over_rep_cap) AS over_rep_cap, sum(use_mismatch) AS use_mismatch
  FROM resources.sample GROUP BY phase ORDER BY phase;

\echo '== unexpected errors (first 3) =='
SELECT phase, op, key, qty, outcome, message, detail FROM resources.outcome
 WHERE outcome NOT IN ('granted', 'waitlisted', 'released', 'noop', 'LA092', 'LA093', 'LA094', 'LA096')
 LIMIT 3;

\echo '== invariants after each phase (every n must be 0; - = not checked in that phase) =='
SELECT v1.ord AS "#", v1.what AS invariant, coalesce(v1.n::text, '-') AS "after phase 1",
       coalesce(v2.n::text, '-') AS "after phase 2"
  FROM resources.violation v1 LEFT JOIN resources.violation v2 ON v2.ord = v1.ord AND v2.phase = 2
 WHERE v1.phase = 1
 ORDER BY v1.ord;
