-- demo/05_report.sql — a manager's morning at the desk, then the summary a BI analyst would pull.
-- Everything here goes through the public API and views of the allocation schema.

\set ON_ERROR_STOP on
SET client_min_messages = warning;
\pset footer off
\pset null '-'

-- (a temporary helper view: each customer's outcome)
CREATE TEMP VIEW outcome AS
SELECT c.id, c.name, c.tier, c.crop, o.rep_id, o.rep_code, o.team_id, o.rule_name, o.source, o.reason, o.territory_code,
       CASE WHEN o.rep_id IS NOT NULL THEN 'assigned'
            WHEN s.id IS NOT NULL THEN 'suggested (pending review)'
            ELSE 'public pool' END AS outcome
  FROM crm.customer c
  JOIN allocation.current_owner o ON o.table_name = 'crm.customer' AND o.key = c.id::text
  LEFT JOIN allocation.pending_suggestion s ON s.table_name = 'crm.customer' AND s.key = c.id::text;

-------------------------------------------------------------------------------
-- The manager's desk
-------------------------------------------------------------------------------
\echo '== The manager''s desk =='
-- 1. the key-account head accepts the biggest pending suggestions (where the manager has room)
SELECT count(*) AS suggestions_accepted
  FROM (SELECT allocation.accept_suggestion(s.id)
          FROM allocation.pending_suggestion s
          JOIN crm.customer c ON c.id = s.key::bigint
          JOIN allocation.rep_portfolio p ON p.rep_id = s.rep_id
         WHERE s.table_name = 'crm.customer' AND p.free >= 5
         ORDER BY c.annual_volume DESC, s.id
         LIMIT 5) x;

-- 2. ... rejects one (it is a cooperative in all but name) and hands it to the county's rep by hand
DO $$
DECLARE
    s record;
BEGIN
    SELECT ps.id, ps.key, t.owner_rep_id INTO s
      FROM allocation.pending_suggestion ps
      JOIN crm.customer c ON c.id = ps.key::bigint
      JOIN allocation.territory t ON t.id = ps.territory_id
      JOIN allocation.rep_portfolio p ON p.rep_id = t.owner_rep_id AND p.free > 0 AND p.active
     WHERE ps.table_name = 'crm.customer' AND NOT t.exclusive
     ORDER BY c.tier = 'grower' DESC, c.annual_volume, ps.id LIMIT 1;
    IF s.id IS NULL THEN
        RAISE EXCEPTION 'demo: no pending suggestion in a county whose rep has room';
    END IF;
    PERFORM allocation.reject_suggestion(s.id, '实为合作社 (a cooperative in all but name): the county rep keeps it');
    PERFORM allocation.assign('crm.customer', s.key, s.owner_rep_id, 'suggestion rejected; the county rep serves this grower');
END $$;

-- 3. a dispute (撞单): a legacy customer "belongs" to one rep from memory but sits in another
--    rep's county; the manager arbitrates with a reason that stays in the audit log
SELECT o.key AS dispute_key, o.rep_code AS dispute_old, r.code AS dispute_new, r.id AS dispute_new_id
  FROM allocation.current_owner o
  JOIN crm.customer c ON c.id = o.key::bigint
  JOIN allocation.territory t ON t.id = allocation.territory_at(c.location)
  JOIN allocation.rep r ON r.id = t.owner_rep_id AND r.active
  JOIN allocation.rep_portfolio p ON p.rep_id = r.id AND p.free > 0
 WHERE o.table_name = 'crm.customer' AND o.source = 'manual' AND o.rep_id <> t.owner_rep_id
 ORDER BY c.annual_volume DESC, c.id LIMIT 1 \gset
SELECT now() AS before_arbitration \gset
SELECT allocation.assign('crm.customer', :'dispute_key', :dispute_new_id,
                         '撞单仲裁: the customer lies in ' || :'dispute_new' || '''s county; the old claim was never registered') \gset x_
SELECT :'dispute_key' AS customer, c.name,
       (SELECT code FROM allocation.rep WHERE id = allocation.owner_at('crm.customer', :'dispute_key', :'before_arbitration')) AS owner_before,
       (SELECT code FROM allocation.rep WHERE id = allocation.owner_at('crm.customer', :'dispute_key', now())) AS owner_now,
       e.reason AS audit_reason
  FROM crm.customer c, LATERAL (SELECT reason FROM allocation.event WHERE key = :'dispute_key' ORDER BY id DESC LIMIT 1) e
 WHERE c.id = :'dispute_key'::bigint;

-- 4. a retailer moves its shop to the next county: the app updates the location, the rules run again
WITH mover AS (
    SELECT c.id, t.code FROM crm.customer c JOIN allocation.current_owner o ON o.key = c.id::text AND o.table_name = 'crm.customer'
      JOIN allocation.territory t ON t.id = o.territory_id
     WHERE o.rule_name = 'everyone else -> territory owner' AND c.tier = 'retailer'
     ORDER BY c.id LIMIT 1
), target AS (
    SELECT ST_PointOnSurface(t.geom) AS pt FROM allocation.territory t JOIN allocation.rep_portfolio p ON p.rep_id = t.owner_rep_id
     WHERE t.properties->>'level' = 'county' AND t.code <> (SELECT code FROM mover) AND p.free > 0 AND p.active
     ORDER BY t.code DESC LIMIT 1
)
UPDATE crm.customer c SET location = target.pt FROM mover, target WHERE c.id = mover.id;
SELECT e.kind, e.key AS customer, f.code AS from_rep, t.code AS to_rep, e.reason
  FROM allocation.event e LEFT JOIN allocation.rep f ON f.id = e.from_rep LEFT JOIN allocation.rep t ON t.id = e.to_rep
 WHERE e.kind IN ('reevaluate', 'suggestion_accepted', 'suggestion_rejected', 'reassign')
 ORDER BY e.id;

-------------------------------------------------------------------------------
-- The summary
-------------------------------------------------------------------------------
\echo
\echo '================================================================================'
\echo ' SUMMARY'
\echo '================================================================================'
SELECT count(*) AS customers,
       count(*) FILTER (WHERE outcome = 'assigned') AS assigned,
       count(*) FILTER (WHERE outcome LIKE 'suggested%') AS suggested,
       count(*) FILTER (WHERE outcome = 'public pool') AS public_pool,
       round(100.0 * count(*) FILTER (WHERE outcome = 'assigned') / count(*), 1) AS assigned_pct
  FROM outcome;

\echo '-- by rule (what decided the current owner)'
SELECT coalesce(rule_name, CASE source WHEN 'manual' THEN '(manual: CRM owner at attach, rep''s own entry, manager)'
                                     WHEN 'suggestion' THEN '(suggestion accepted by a manager)'
                                     WHEN 'pool' THEN '(no rule decided)' ELSE source END) AS decided_by,
       count(*) AS customers, count(rep_id) AS with_owner
  FROM outcome
 GROUP BY 1 ORDER BY 2 DESC, 1;

\echo '-- by team (holdings of the department and its sub-teams)'
SELECT coalesce(p.name, t.name) AS department, t.name AS team, count(o.id) AS customers,
       (SELECT sum(r.capacity) FROM allocation.rep r WHERE r.team_id = t.id) AS capacity
  FROM allocation.team t LEFT JOIN allocation.team p ON p.id = t.parent_id
  LEFT JOIN outcome o ON o.team_id = t.id
 WHERE EXISTS (SELECT 1 FROM allocation.rep r WHERE r.team_id = t.id)
 GROUP BY t.id, p.name, t.name ORDER BY coalesce(t.parent_id, t.id), t.id;

\echo '-- by outcome (pool and suggestions with their reasons)'
SELECT outcome, CASE WHEN outcome = 'assigned' THEN '' ELSE reason END AS reason, count(*) AS customers
  FROM outcome GROUP BY 1, 2 ORDER BY CASE outcome WHEN 'assigned' THEN 1 WHEN 'public pool' THEN 3 ELSE 2 END, 3 DESC;

\echo '-- top reps by holdings vs capacity (allocation.rep_portfolio)'
SELECT rep_code, rep_name, team_name, held, capacity, utilization_pct AS "util_%", by_tier
  FROM allocation.rep_portfolio ORDER BY held DESC, rep_code LIMIT 10;
SELECT count(*) FILTER (WHERE free = 0) AS reps_full, count(*) FILTER (WHERE NOT active) AS reps_inactive,
       round(avg(utilization_pct), 1) AS avg_util_pct
  FROM allocation.rep_portfolio;

\echo '-- holdings per rep in the specialist teams (least_loaded / skill / round_robin / weighted spread the load)'
SELECT team_name, string_agg(format('%s %s/%s', rep_code, held, capacity), ', ' ORDER BY rep_code) AS "rep held/capacity"
  FROM allocation.rep_portfolio p JOIN allocation.team t ON t.id = p.team_id
 WHERE t.code IN ('ka', 'crop_rice', 'crop_fruit', 'crop_cotton')
 GROUP BY team_name, t.id ORDER BY t.id;

\echo '-- pending suggestions (allocation.pending_suggestion), waiting for the key-account head'
SELECT rule_name, rep_code AS suggested_rep, count(*) AS pending
  FROM allocation.pending_suggestion GROUP BY 1, 2 ORDER BY 3 DESC, 2;

\echo '-- customers exactly on a county border (both counties cover the point; priority, then lowest id wins)'
SELECT count(*) AS border_customers,
       count(*) FILTER (WHERE o.territory_code = (SELECT t.code FROM allocation.territory t
                                                    WHERE ST_Covers(t.geom, c.location) ORDER BY t.priority DESC, t.id LIMIT 1)) AS decided_by_tie_break
  FROM crm.customer c JOIN outcome o ON o.id = c.id
 WHERE (SELECT count(*) FROM allocation.territory t WHERE t.properties->>'level' = 'county' AND ST_Covers(t.geom, c.location)) > 1;

\echo '-- the audit log (allocation.event, append-only)'
SELECT kind, count(*) AS events FROM allocation.event GROUP BY 1 ORDER BY 2 DESC, 1;

-------------------------------------------------------------------------------
-- One decision, explained: the county dealer inside the locked county
-------------------------------------------------------------------------------
SELECT c.id AS explain_key, c.name AS explain_name FROM crm.customer c
 WHERE c.name = '锁区龙头农化有限公司' \gset
\echo
\echo '-- allocation.explain(''crm.customer'', key =' :explain_key ') for' :explain_name '(a county dealer in the locked county)'
SELECT r.ord AS "#", r.rule->>'priority' AS prio, r.rule->>'rule' AS rule,
       CASE WHEN (r.rule->>'matched')::boolean THEN 'matched -> ' || (r.rule->>'outcome') ELSE 'no match' END AS result,
       left(coalesce(r.rule->>'why',
                (SELECT string_agg((x->>'rep') || CASE WHEN (x->>'available')::boolean
                                                       THEN format(' (held %s/%s)', x->>'held', coalesce(x->>'capacity', '-'))
                                                       ELSE ': ' || (x->>'why') END, '; ')
                   FROM jsonb_array_elements(r.rule->'candidates') x)), 150) AS why
  FROM jsonb_array_elements(allocation.explain('crm.customer', :'explain_key')->'rules') WITH ORDINALITY AS r(rule, ord)
 ORDER BY r.ord;
\echo '-- the full trace (jsonb):'
\pset format unaligned
\pset tuples_only on
SELECT jsonb_pretty(allocation.explain('crm.customer', :'explain_key'));
\pset tuples_only off
\pset format aligned
\echo

\echo '-- ... and a what-if for the app''s "who would get this lead?" button: a hypothetical row, nothing stored'
SELECT x->'result'->>'outcome' AS outcome, x->'result'->>'rep' AS rep, x->'result'->>'reason' AS reason
  FROM allocation.explain('crm.customer', jsonb_build_object(
           'tier', 'grower', 'crop', 'citrus', 'business_type', 'large_grower', 'annual_volume', 90000,
           'is_cooperative', false, 'tags', '{}'::text[],
           'location', (SELECT ST_AsEWKT(ST_PointOnSurface(geom)) FROM allocation.territory
                         WHERE 'citrus' = ANY (crop_zones) AND properties->>'level' = 'county' ORDER BY code LIMIT 1))) x;

-------------------------------------------------------------------------------
-- Consistency
-------------------------------------------------------------------------------
\echo '-- allocation.check_consistency() (no rows = holdings counters agree with the registry, nobody over capacity)'
SELECT * FROM allocation.check_consistency();
SELECT count(*) > 0 AS consistency_failed FROM allocation.check_consistency() \gset
\if :consistency_failed
    \echo 'FAILED: allocation.check_consistency() reported problems'
    SELECT 1/0 AS check_consistency_failed;
\endif
