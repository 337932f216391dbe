-- demo/07f_loop.sql -- 数据反馈-绩效评估-分配调优: the allocation loop over one simulated season.
-- The CRM's own visit, order and survey tables are attached; 12 weeks of field work are written
-- into them (simulated time: the season starts now; only a superuser may date rows ahead); then
-- scorecards, strategy effectiveness, alerts and rewards, run_maintenance(), and a per-rep
-- scorecard chart (:outdir/scorecard.svg).
\set ON_ERROR_STOP 1
\pset null '-'

\echo
\echo '== The allocation loop: one season of outcomes (数据反馈-绩效评估-分配调优) =='
\echo '-- the DBA attaches the CRM''s visit, order and survey tables, and the customers'' potential'
SELECT allocation.manage_outcomes('crm.visit', 'followup', 'customer_id',
         '{"at": "visited_at", "rep": "rep_id", "channel": "channel", "note": "summary"}') AS visits_source,
       allocation.manage_outcomes('crm.sales_order', 'deal', 'customer_id',
         '{"at": "ordered_at", "amount": "total", "product": "sku"}') AS orders_source,
       allocation.manage_outcomes('crm.survey', 'satisfaction', 'customer_id',
         '{"at": "answered_at", "score": "nps", "scale": "nps"}') AS surveys_source;
SELECT allocation.set_potential('crm.customer', 'coalesce(annual_volume, 0)', '{"high": 400000, "medium": 80000}');
SELECT p.tier, count(*) AS customers FROM allocation._potentials((SELECT id FROM allocation.managed_table WHERE tbl = 'crm.customer'::regclass)) p
 GROUP BY p.tier ORDER BY min(p.value) DESC;

-- the season: 12 weeks from now (simulated)
SELECT date_trunc('hour', now()) AS t0, date_trunc('hour', now()) + interval '12 weeks' AS t_end \gset
-- a deterministic uniform number in [0, 1) per customer and draw (no random(): the same season every run)
CREATE FUNCTION pg_temp.u(id bigint, draw integer) RETURNS double precision LANGUAGE sql IMMUTABLE AS
$$ SELECT (hashint8(id * 1000 + draw) & 1048575) / 1048576.0 $$;
-- each rep's diligence (0.25 .. 0.95) and knack (how well a visit turns into an order)
CREATE TEMP TABLE demo_rep AS
SELECT r.id, r.code, 0.25 + 0.7 * ((hashint8(r.id * 7919) & 1023) / 1023.0) AS diligence,
       0.10 + 0.25 * ((hashint8(r.id * 104729) & 1023) / 1023.0)
       + CASE WHEN t.code LIKE 'crop%' THEN 0.12 ELSE 0 END AS knack        -- specialists convert better
  FROM allocation.rep r LEFT JOIN allocation.team t ON t.id = r.team_id WHERE r.active;
\echo '-- 12 weeks of field work: visits by the holders (as diligent as they are), orders after visits, NPS surveys'
INSERT INTO crm.visit (customer_id, rep_id, visited_at, channel, summary)
SELECT c.id, c.owner_id, :'t0'::timestamptz + (w - 1) * interval '1 week' + pg_temp.u(c.id, 100 + w) * interval '6 days',
       (ARRAY['visit', 'call', 'wechat', 'demo'])[1 + floor(pg_temp.u(c.id, 200 + w) * 4)::int], 'week ' || w
  FROM crm.customer c JOIN demo_rep d ON d.id = c.owner_id, generate_series(1, 12) w
 WHERE pg_temp.u(c.id, w) < d.diligence * 0.22;
INSERT INTO crm.sales_order (customer_id, ordered_at, total, sku)
SELECT v.customer_id, v.first_visit + pg_temp.u(c.id, 301) * interval '10 days',
       round((CASE c.tier WHEN 'key_distributor' THEN 60000 WHEN 'wholesaler' THEN 18000 WHEN 'retailer' THEN 4000 ELSE 1500 END
              * (0.5 + pg_temp.u(c.id, 302)))::numeric, 2),
       (ARRAY['fungicide-A', 'herbicide-B', 'insecticide-C', 'foliar-D'])[1 + floor(pg_temp.u(c.id, 303) * 4)::int]
  FROM (SELECT customer_id, min(visited_at) AS first_visit, count(*) AS visits FROM crm.visit GROUP BY customer_id) v
  JOIN crm.customer c ON c.id = v.customer_id JOIN demo_rep d ON d.id = c.owner_id
 WHERE pg_temp.u(c.id, 300) < d.knack * least(v.visits, 4) / 2.0
   AND v.first_visit + interval '10 days' < :'t_end'::timestamptz;
INSERT INTO crm.survey (customer_id, answered_at, nps)
SELECT o.customer_id, o.ordered_at + interval '3 days', least(10, greatest(0, round(4 + 6 * d.diligence + 2 * (pg_temp.u(c.id, 401) - 0.5))))::int
  FROM crm.sales_order o JOIN crm.customer c ON c.id = o.customer_id JOIN demo_rep d ON d.id = c.owner_id
 WHERE pg_temp.u(c.id, 400) < 0.4 AND o.ordered_at + interval '3 days' < :'t_end'::timestamptz;
SELECT (SELECT count(*) FROM crm.visit) AS visits, (SELECT count(*) FROM crm.sales_order) AS orders,
       (SELECT count(*) FROM crm.survey) AS surveys,
       (SELECT count(*) FROM allocation.followup WHERE source_id IS NOT NULL) AS landed_followups,
       (SELECT count(*) FROM allocation.deal WHERE source <> 'record_deal') AS landed_deals,
       (SELECT count(*) FROM allocation.satisfaction) AS landed_answers;

\echo '-- scorecards of the season: the teams, and the five reps with the most revenue and the five with the least conversion'
SELECT code, name, held_end, touched_pct, conversion_pct, revenue, satisfaction_avg
  FROM allocation.scorecard(tstzrange(:'t0', :'t_end')) WHERE level = 'team' ORDER BY revenue DESC;
SELECT * FROM (SELECT code, held_end, touched_pct, date_trunc('hour', first_contact_median) AS first_contact, conversion_pct, revenue, satisfaction_avg
                 FROM allocation.scorecard(tstzrange(:'t0', :'t_end')) WHERE level = 'rep' ORDER BY revenue DESC LIMIT 5) top
UNION ALL
SELECT * FROM (SELECT code, held_end, touched_pct, date_trunc('hour', first_contact_median) AS first_contact, conversion_pct, revenue, satisfaction_avg
                 FROM allocation.scorecard(tstzrange(:'t0', :'t_end')) WHERE level = 'rep' AND conversion_base >= 20
                ORDER BY conversion_pct, code LIMIT 5) bottom;
\echo '-- strategy effectiveness: what each rule achieved (counts first: small groups are visibly small)'
SELECT value AS rule, holdings, touched_pct, conversion_pct, revenue_per_holding, satisfaction_avg
  FROM allocation.strategy_effectiveness(tstzrange(:'t0', :'t_end')) WHERE dimension = 'rule' ORDER BY holdings DESC;

\echo '-- warnings at the end of the season (each new alert is also a NOTIFY on channel allocation_alert)'
INSERT INTO allocation.alert_rule (name, kind, params) VALUES
    ('big customer untouched 3 weeks', 'untouched_high_potential', '{"days": 21, "tiers": ["high"]}'),
    ('converts below 10 % with 20 customers', 'low_conversion', '{"below_pct": 10, "period_days": 84, "min_customers": 20}'),
    ('county untouched 4 weeks', 'territory_untouched', '{"days": 28}');
SELECT opened, resolved FROM allocation.evaluate_alerts(:'t_end');
SELECT kind, count(*) AS open_alerts, count(DISTINCT rep_id) AS reps FROM allocation.alert WHERE resolved_at IS NULL GROUP BY kind ORDER BY kind;
SELECT a.kind, a.subject, r.code AS rep, a.manager, left(a.detail::text, 90) AS detail
  FROM allocation.alert a LEFT JOIN allocation.rep r ON r.id = a.rep_id
 WHERE a.resolved_at IS NULL AND a.kind = 'low_conversion' ORDER BY a.subject LIMIT 5;

\echo '-- rewards by rule: earned in the season, in force for the next one; new reps protected from recycling'
INSERT INTO allocation.reward_rule (name, measure, threshold, min_customers, effect, amount) VALUES
    ('converters get room', 'conversion_pct', 30, 20, 'capacity_bonus', 10),
    ('earners claim more', 'revenue', 400000, 1, 'daily_claims_bonus', 5);
INSERT INTO allocation.new_rep_policy (team_id, ramp_up, max_recycled) VALUES (NULL, interval '90 days', 3);
SELECT rep_code, rule, action, effect, amount, measure_value
  FROM allocation.evaluate_performance(tstzrange(:'t0', :'t_end')) ORDER BY rule, measure_value DESC, rep_code;
SELECT r.code, r.capacity, w.rule, w.effect, w.amount FROM allocation.active_reward w JOIN allocation.rep r ON r.id = w.rep_id
 WHERE w.effect = 'capacity_bonus' ORDER BY r.code;
\echo '-- the same period again changes nothing'
SELECT count(*) AS second_evaluation FROM allocation.evaluate_performance(tstzrange(:'t0', :'t_end'));

\echo '-- the whole loop is one scheduled call (pg_cron: SELECT cron.schedule(''allocation-maintenance'', ''* * * * *'', ''SELECT * FROM allocation.run_maintenance()''))'
SELECT step, outcome, left(result, 60) AS result, code FROM allocation.run_maintenance(:'t_end');

-- the per-rep scorecard chart: conversion (bar) and revenue (label), by team
CREATE TEMP TABLE demo_card AS
SELECT s.code, s.conversion_pct, s.revenue, s.held_end, t.code AS team,
       row_number() OVER (ORDER BY t.code, s.revenue DESC, s.code) AS n
  FROM allocation.scorecard(tstzrange(:'t0', :'t_end')) s
  JOIN allocation.rep r ON r.id = s.id JOIN allocation.team t ON t.id = r.team_id
 WHERE s.level = 'rep';
\pset format unaligned
\pset tuples_only on
\o :outdir/scorecard.svg
SELECT concat_ws(E'\n',
    format('<svg xmlns="http://www.w3.org/2000/svg" width="760" height="%s" font-family="sans-serif" font-size="11">',
           60 + 16 * (SELECT count(*) FROM demo_card)),
    '<text x="10" y="20" font-size="15" font-weight="bold">Season scorecard: conversion per rep (bar), revenue (label)</text>',
    '<text x="10" y="38" fill="#555">allocation.scorecard(season); conversion = first deal within the holding; bars from 0 to 100 %</text>',
    string_agg(format('<text x="10" y="%s">%s</text><text x="70" y="%s" fill="#777">%s</text>'
                      '<rect x="160" y="%s" width="%s" height="11" fill="hsl(%s,55%%,55%%)"><title>%s: %s %% of %s, %s</title></rect>'
                      '<text x="%s" y="%s">%s %%  ¥%s</text>',
                      58 + 16 * c.n, c.code, 58 + 16 * c.n, c.team,
                      49 + 16 * c.n, round(4 * coalesce(c.conversion_pct, 0)),
                      (hashtext(c.team) & 255) * 360 / 256, c.code, coalesce(c.conversion_pct, 0), c.held_end, c.revenue,
                      166 + round(4 * coalesce(c.conversion_pct, 0)), 58 + 16 * c.n,
                      coalesce(c.conversion_pct, 0), to_char(c.revenue, 'FM999,999,990')), E'\n' ORDER BY c.n),
    '</svg>')
  FROM demo_card c;
\o
\pset tuples_only off
\pset format aligned
SELECT count(*) AS reps_in_chart FROM demo_card;
DROP TABLE demo_card;
DROP TABLE demo_rep;
