-- demo/07d_virtual_team.sql -- 虚拟团队, 业绩分成: a provincial distributor's annual program
-- gets a temporary cross-department team with a preset revenue split; deals are split to the
-- cent as of their time, a mid-year change of shares does not rewrite earlier deals.
\set ON_ERROR_STOP 1
\pset null '-'

\echo
\echo '== A virtual team with a preset revenue split (虚拟团队, 业绩分成) =='
-- the key distributor with the lowest id held by a key-account rep, the local rep of its
-- territory and a crop specialist for its crop
SELECT c.id AS kd, c.name AS kd_name, c.owner_id AS ka_rep, c.crop AS kd_crop
  FROM crm.customer c JOIN allocation.rep r ON r.id = c.owner_id
 WHERE c.tier = 'key_distributor' AND r.team_id = (SELECT id FROM allocation.team WHERE code = 'ka')
 ORDER BY c.id LIMIT 1 \gset
SELECT coalesce(t.owner_rep_id, (SELECT min(r.id) FROM allocation.rep r WHERE r.team_id = t.owner_team_id AND r.active)) AS county_rep
  FROM allocation.territory t
 WHERE t.id = allocation.territory_at((SELECT location FROM crm.customer WHERE id = :kd)) \gset
SELECT r.id AS specialist FROM allocation.rep r
  JOIN allocation.team t ON t.id = r.team_id AND t.parent_id = (SELECT id FROM allocation.team WHERE code = 'crop')
 WHERE r.active ORDER BY (:'kd_crop' = ANY (r.crops)) DESC, r.id LIMIT 1 \gset
SELECT code AS ka_code FROM allocation.rep WHERE id = :ka_rep \gset
SELECT code AS county_code FROM allocation.rep WHERE id = :county_rep \gset
SELECT code AS spec_code FROM allocation.rep WHERE id = :specialist \gset

\echo '-- the manager forms the team for the year around' :kd_name '(' :ka_code '+' :county_code '+' :spec_code ')'
SET ROLE demo_manager;
SELECT allocation.create_virtual_team(:'kd_name' || ' 年度项目', 'annual program of the provincial distributor',
         tstzrange(now(), now() + interval '1 year'),
         jsonb_build_array(jsonb_build_object('rep_id', :ka_rep, 'share', 50, 'role', 'key account'),
                           jsonb_build_object('rep_id', :county_rep, 'share', 30, 'role', 'county rep'),
                           jsonb_build_object('rep_id', :specialist, 'share', 20, 'role', 'crop specialist')),
         'crm.customer', ARRAY[:'kd']) AS vt \gset
SELECT rep_code, role, share FROM allocation.team_shares_at(:vt);
\echo '-- the shares must sum to 100: an unbalanced change is refused'
SELECT demo.try(format('SELECT allocation.set_team_shares(%s, %L)', :vt,
                       jsonb_build_array(jsonb_build_object('rep_id', :ka_rep, 'share', 60),
                                         jsonb_build_object('rep_id', :county_rep, 'share', 30)))) AS unbalanced;

\echo '-- deals are recorded once each, with the order number; the split as of the deal is frozen'
SELECT allocation.record_deal('crm.customer', :'kd', 128000.00, ref => 'SO-2027-0001') AS deal1 \gset
SELECT allocation.record_deal('crm.customer', :'kd', 1000.01, ref => 'SO-2027-0002') AS deal2 \gset
SELECT demo.try($$SELECT allocation.record_deal('crm.customer', '$$ || :'kd' || $$', 128000.00, ref => 'SO-2027-0001')$$) AS recorded_twice;
\echo '-- mid-year the county rep takes over more of the work'
SELECT allocation.set_team_shares(:vt, jsonb_build_array(jsonb_build_object('rep_id', :ka_rep, 'share', 40),
                                                         jsonb_build_object('rep_id', :county_rep, 'share', 40),
                                                         jsonb_build_object('rep_id', :specialist, 'share', 20)));
SELECT allocation.record_deal('crm.customer', :'kd', 56000.00, ref => 'SO-2027-0003') AS deal3 \gset
RESET ROLE;
SELECT d.ref, d.amount, r.code AS rep, s.share, s.amount AS credited
  FROM allocation.deal d JOIN allocation.deal_split s ON s.deal_id = d.id JOIN allocation.rep r ON r.id = s.rep_id
 WHERE d.id IN (:deal1, :deal2, :deal3) ORDER BY d.id, s.share DESC, r.code;
\echo '-- 1000.01 in 50/30/20: the odd cent goes by largest remainder, the lines sum exactly'
SELECT d.ref, d.amount, sum(s.amount) AS lines_sum FROM allocation.deal d JOIN allocation.deal_split s ON s.deal_id = d.id
 WHERE d.id IN (:deal1, :deal2, :deal3) GROUP BY d.id, d.ref, d.amount ORDER BY d.id;
\echo '-- BI: credit per rep and team (allocation.revenue_credit)'
SELECT rep_code, team_name, deals, credited FROM allocation.revenue_credit ORDER BY credited DESC, rep_code;
