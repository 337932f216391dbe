-- demo/07c_network.sql -- 立体客户网络: a county wholesaler's township retailers and the
-- growers they serve follow the wholesaler's rep (rule policy follow_parent), and the network
-- reads back as a tree and as a BI summary.
\set ON_ERROR_STOP 1
\pset null '-'

\echo
\echo '== Dealer networks (立体客户网络) =='
\echo '-- the admin: new retailers and growers that name their distributor go to the distributor''s rep'
INSERT INTO allocation.rule (name, priority, tiers, target_kind, target_team_id, policy, description)
SELECT 'network members follow their distributor', 150, '{retailer,grower}', 'team', t.id, 'follow_parent',
       'a retailer or grower with a parent customer goes to whoever holds that customer (local sales)'
  FROM allocation.team t WHERE t.code = 'local';

-- the local rep's wholesaler with the lowest id
SELECT c.id AS ws, c.name AS ws_name, r.code AS ws_rep FROM crm.customer c JOIN allocation.rep r ON r.id = c.owner_id
 WHERE c.tier = 'wholesaler' AND r.team_id IN (SELECT t.id FROM allocation.team t WHERE t.code LIKE 'local_%')
 ORDER BY c.id LIMIT 1 \gset
\echo '-- the field app registers 3 township retailers of wholesaler' :ws '(' :ws_rep ') and 2 growers of the first retailer, in one statement each'
WITH w AS (SELECT location FROM crm.customer WHERE id = :ws)
INSERT INTO crm.customer (name, tier, crop, business_type, location, parent_id)
SELECT (ARRAY['白沙镇丰收农资店', '青山铺绿野植保站', '石门桥惠农超市'])[g], 'retailer', 'rice', 'retail',
       ST_Translate(w.location, 0.01 * g, 0.005 * g), :ws
  FROM w, generate_series(1, 3) g;
SELECT min(id) AS r1 FROM crm.customer WHERE parent_id = :ws \gset
WITH w AS (SELECT location FROM crm.customer WHERE id = :r1)
INSERT INTO crm.customer (name, tier, crop, business_type, location, parent_id)
SELECT (ARRAY['种植大户 周建国', '稻田合作社 刘满秋'])[g], 'grower', 'rice', 'farm', ST_Translate(w.location, 0.004 * g, -0.003 * g), :r1
  FROM w, generate_series(1, 2) g;

\echo '-- the whole network, from any member (customer_network)'
SELECT customer_key, parent_key, depth, name, rep_code
  FROM allocation.customer_network('crm.customer', (SELECT max(id)::text FROM crm.customer));
\echo '-- why the last grower went to' :ws_rep '(explain)'
SELECT x->>'rule' AS rule, x->>'outcome' AS outcome
  FROM jsonb_array_elements(allocation.explain('crm.customer', (SELECT max(id)::text FROM crm.customer))->'rules') x
 WHERE x->>'outcome' <> 'no match';

\echo '-- a retailer whose distributor sits in the public pool falls through to the next rule'
SELECT c.id AS pool_ws FROM crm.customer c WHERE c.owner_id IS NULL AND c.tier IN ('wholesaler', 'key_distributor')
 ORDER BY c.id LIMIT 1 \gset
INSERT INTO crm.customer (name, tier, crop, business_type, location, parent_id)
SELECT '公海经销商的零售点', 'retailer', 'rice', 'retail', ST_Translate(location, 0.002, 0.002), :pool_ws
  FROM crm.customer WHERE id = :pool_ws
RETURNING id AS pool_child \gset
SELECT x->>'rule' AS rule, x->>'outcome' AS outcome, x->>'why' AS why
  FROM jsonb_array_elements(allocation.explain('crm.customer', :'pool_child')->'rules') x
 WHERE x->>'rule' = 'network members follow their distributor';
SELECT c.id, r.code AS owner, a.reason FROM crm.customer c LEFT JOIN allocation.rep r ON r.id = c.owner_id
  LEFT JOIN allocation.current_owner a ON a.tbl = 'crm.customer'::regclass AND a.key = c.id::text
 WHERE c.id = :pool_child;

\echo '-- BI: every dealer network (allocation.dealer_network)'
SELECT root_key, root_name, rep_code, customers, levels, retailers_other_owner FROM allocation.dealer_network;
