-- bench/resources_check.sql: the invariants of resource grants, checked by bench/resources.sh after
-- each phase (psql variable phase).  Each check is one row of resources.violation; n must be 0
-- (NULL: the check does not apply to this phase).  The checks look at the whole history (both
-- phases so far), so phase 2's rows include phase 1.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE TABLE IF NOT EXISTS resources.violation (phase integer, ord integer, what text, n numeric);

WITH p AS (SELECT * FROM allocation.resource_pool WHERE code = 'bench-samples'),
m AS (SELECT id FROM allocation.managed_table WHERE tbl = 'resources.customer'::regclass AND active),
req AS (SELECT q.* FROM allocation.resource_request q, p WHERE q.pool_id = p.id),
g AS (SELECT * FROM req WHERE status = 'granted'),
by_customer AS (SELECT managed_id, key, sum(qty) AS n FROM g GROUP BY 1, 2),
by_rep AS (SELECT rep_id, sum(qty) AS n FROM g WHERE rep_id IS NOT NULL GROUP BY 1),
cu AS (SELECT u.* FROM allocation.resource_customer_use u, p WHERE u.pool_id = p.id AND u.used <> 0),
ru AS (SELECT u.* FROM allocation.resource_rep_use u, p WHERE u.pool_id = p.id AND u.used <> 0),
ev AS (SELECT e.kind, e.reason, (e.detail->>'request_id')::bigint AS request_id
         FROM allocation.event e, m, p
        WHERE e.managed_id = m.id AND e.kind LIKE 'resource\_%' AND (e.detail->>'pool_id')::bigint = p.id),
o AS (SELECT * FROM resources.outcome),
counts AS (
    SELECT (SELECT count(*) FROM req) AS requests,
           (SELECT count(*) FROM req WHERE status IN ('granted', 'released')) AS ever_granted,
           (SELECT count(*) FROM req WHERE status = 'released') AS released,
           (SELECT count(*) FROM req WHERE status = 'waitlisted') AS waitlisted_now,
           (SELECT count(*) FROM ev WHERE kind = 'resource_requested') AS ev_requested,
           (SELECT count(*) FROM ev WHERE kind = 'resource_granted') AS ev_granted,
           (SELECT count(*) FROM ev WHERE kind = 'resource_granted' AND reason IS NULL) AS ev_granted_direct,
           (SELECT count(*) FROM ev WHERE kind = 'resource_granted' AND reason = 'served from the waitlist') AS ev_served,
           (SELECT count(*) FROM ev WHERE kind = 'resource_waitlisted') AS ev_waitlisted,
           (SELECT count(*) FROM ev WHERE kind = 'resource_released') AS ev_released,
           (SELECT count(*) FROM o WHERE outcome = 'granted') AS o_granted,
           (SELECT count(*) FROM o WHERE outcome = 'waitlisted') AS o_waitlisted,
           (SELECT count(*) FROM o WHERE outcome = 'released') AS o_released)
INSERT INTO resources.violation (phase, ord, what, n)
SELECT :phase, * FROM (
SELECT 1, 'pool remaining outside [0, total]',
       (SELECT count(*) FROM p WHERE p.remaining < 0 OR p.remaining > p.total)::numeric
UNION ALL
SELECT 2, 'granted total (sum of qty of granted requests) differs from total - remaining by',
       (SELECT abs(coalesce((SELECT sum(qty) FROM g), 0) - (p.total - p.remaining)) FROM p)
UNION ALL
SELECT 3, 'phase 1: granted total differs from the units available (pool total) by',
       CASE WHEN :phase = 1 THEN (SELECT abs(coalesce((SELECT sum(qty) FROM g), 0) - p.total) FROM p) END
UNION ALL
SELECT 4, 'customers whose granted units exceed per_customer_cap',
       (SELECT count(*) FROM by_customer b, p WHERE b.n > p.per_customer_cap)
UNION ALL
SELECT 5, 'reps whose customers'' granted units exceed per_rep_cap',
       (SELECT count(*) FROM by_rep b, p WHERE b.n > p.per_rep_cap)
UNION ALL
SELECT 6, 'customers whose resource_customer_use differs from their granted units',
       (SELECT count(*) FROM by_customer b FULL JOIN cu ON cu.managed_id = b.managed_id AND cu.key = b.key
         WHERE b.n IS DISTINCT FROM cu.used)
UNION ALL
SELECT 7, 'reps whose resource_rep_use differs from their customers'' granted units',
       (SELECT count(*) FROM by_rep b FULL JOIN ru ON ru.rep_id = b.rep_id WHERE b.n IS DISTINCT FROM ru.used)
UNION ALL
SELECT 8, 'requests ever granted (granted + released) vs resource_granted events: differ by',
       (SELECT abs(ever_granted - ev_granted) FROM counts)
        + (SELECT count(*) FROM (SELECT request_id FROM ev WHERE kind = 'resource_granted'
                                  GROUP BY 1 HAVING count(*) > 1) x)
UNION ALL
SELECT 9, 'direct grants: ''granted'' outcomes vs resource_granted events without a waitlist reason',
       (SELECT abs(o_granted - ev_granted_direct) FROM counts)
UNION ALL
SELECT 10, 'waitlisted: outcomes vs resource_waitlisted events vs (still waitlisted + served)',
       (SELECT abs(o_waitlisted - ev_waitlisted) + abs(ev_waitlisted - (waitlisted_now + ev_served)) FROM counts)
UNION ALL
SELECT 11, 'releases: ''released'' outcomes vs resource_released events vs released requests',
       (SELECT abs(o_released - ev_released) + abs(ev_released - released) FROM counts)
UNION ALL
SELECT 12, 'request rows vs resource_requested events vs granted + waitlisted outcomes',
       (SELECT abs(requests - ev_requested) + abs(requests - (o_granted + o_waitlisted)) FROM counts)
UNION ALL
SELECT 13, 'requests pending, rejected or expired (no approval, no season: none expected)',
       (SELECT count(*) FROM req WHERE status IN ('pending', 'rejected', 'expired'))
UNION ALL
SELECT 14, 'allocation.check_consistency() rows',
       (SELECT count(*) FROM allocation.check_consistency())
UNION ALL
SELECT 15, 'watcher snapshots during the run that saw a violation of 1, 2, 4-7',
       (SELECT count(*) FROM resources.sample
         WHERE out_of_range + granted_mismatch + over_customer_cap + over_rep_cap + use_mismatch > 0)
) v;
