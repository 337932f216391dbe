-- demo/03_org_rules.sql — the sales organisation, territory owners, the rule set, and attaching
-- the engine to the existing crm.customer table.

\set ON_ERROR_STOP on
SET client_min_messages = warning;

-------------------------------------------------------------------------------
-- Teams: three departments, with sub-teams
-------------------------------------------------------------------------------
INSERT INTO allocation.team (code, name) VALUES
 ('ka',    '大客户部 Key-account department'),
 ('local', '区域销售 Local sales'),
 ('crop',  '作物专家 Crop specialists');
INSERT INTO allocation.team (code, name, parent_id)
SELECT x.code, x.name, p.id
  FROM (VALUES ('local_n', '湘北组 Local sales north', 'local'),
               ('local_c', '湘中组 Local sales central', 'local'),
               ('local_s', '湘南组 Local sales south', 'local'),
               ('crop_rice', '水稻组 Rice specialists', 'crop'),
               ('crop_fruit', '果树组 Citrus specialists', 'crop'),
               ('crop_cotton', '棉花组 Cotton specialists', 'crop')) AS x(code, name, parent)
  JOIN allocation.team p ON p.code = x.parent
 ORDER BY x.code;

-------------------------------------------------------------------------------
-- Local sales: each of the 30 local reps gets a contiguous group of ~3 counties of one prefecture
-------------------------------------------------------------------------------
CREATE TABLE gis.county_owner AS
WITH pref AS (
    SELECT c.prefecture, count(*) AS n, 30.0 * count(*) / sum(count(*)) OVER () AS share
      FROM gis.county c GROUP BY c.prefecture
), alloc AS (   -- largest remainder: reps per prefecture, 30 in total
    SELECT prefecture, n, floor(share)::int
           + CASE WHEN row_number() OVER (ORDER BY share - floor(share) DESC, prefecture)
                       <= 30 - sum(floor(share)::int) OVER () THEN 1 ELSE 0 END AS reps
      FROM pref
), grouped AS (   -- counties ordered by bearing around the prefecture seat, cut into sectors
    SELECT c.code, c.prefecture,
           ntile(a.reps) OVER (PARTITION BY c.prefecture
                               ORDER BY atan2(ST_Y(c.centroid) - ST_Y(p.seat), ST_X(c.centroid) - ST_X(p.seat)), c.code) AS grp
      FROM gis.county c JOIN alloc a USING (prefecture) JOIN gis.prefecture p ON p.code = c.prefecture
)
SELECT g.code, g.prefecture, 16 + dense_rank() OVER (ORDER BY g.prefecture, g.grp) AS rep_id,
       CASE WHEN ST_Y(p.seat) > 28.8 THEN 'local_n' WHEN ST_Y(p.seat) < 27.0 THEN 'local_s' ELSE 'local_c' END AS team
  FROM grouped g JOIN gis.prefecture p ON p.code = g.prefecture;

-------------------------------------------------------------------------------
-- Reps: the CRM's sales users, with the SAME ids (so crm.customer.owner_id keeps its meaning)
-------------------------------------------------------------------------------
INSERT INTO allocation.rep (id, code, name, team_id, capacity, crops, active)
SELECT u.id, u.login, u.name,
       (SELECT t.id FROM allocation.team t WHERE t.code =
            CASE WHEN u.login LIKE 'ka%' THEN 'ka'
                 WHEN u.login LIKE 'rice%' THEN 'crop_rice'
                 WHEN u.login LIKE 'fruit%' THEN 'crop_fruit'
                 WHEN u.login LIKE 'cotton%' THEN 'crop_cotton'
                 ELSE (SELECT DISTINCT o.team FROM gis.county_owner o WHERE o.rep_id = u.id) END),
       CASE WHEN u.login LIKE 'ka%' THEN 36
            WHEN u.login LIKE 'rice%' THEN 240
            WHEN u.login LIKE 'fruit%' THEN 160
            WHEN u.login LIKE 'cotton%' THEN 120
            WHEN u.login IN ('loc05', 'loc12', 'loc19', 'loc26') THEN 200   -- hired this year: smaller book
            ELSE 420 END,
       CASE WHEN u.login LIKE 'rice%' THEN '{rice}'
            WHEN u.login = 'fruit03' THEN '{citrus,vegetable}'
            WHEN u.login LIKE 'fruit%' THEN '{citrus}'
            WHEN u.login = 'cotton02' THEN '{cotton,wheat}'
            WHEN u.login LIKE 'cotton%' THEN '{cotton}'
            ELSE '{}' END::text[],
       u.login <> 'loc23'                                                    -- on long leave
  FROM crm.sales_user u
 ORDER BY u.id;
-- hiring dates: the four hired this year are still in their ramp-up (new_rep_policy, 07f_loop)
UPDATE allocation.rep SET created_at = CASE WHEN code IN ('loc05', 'loc12', 'loc19', 'loc26')
                                            THEN timestamptz '2026-10-15 09:00+08' ELSE timestamptz '2023-03-01 09:00+08' END;

-- county owners = local reps
UPDATE allocation.territory t SET owner_rep_id = o.rep_id
  FROM gis.county_owner o WHERE o.code = t.code;

-- one county is vacant (its rep left): the prefecture's sub-team covers it (owner team on the prefecture)
UPDATE allocation.territory SET owner_rep_id = NULL
 WHERE code = (SELECT min(code) FROM gis.county WHERE prefecture = '4309');
UPDATE allocation.territory p SET owner_team_id = (SELECT t.id FROM allocation.team t WHERE t.code = o.team)
  FROM (SELECT DISTINCT prefecture, team FROM gis.county_owner) o
 WHERE p.code = o.prefecture;

-- one county is locked (锁区): a sole-agency agreement, only its owner may hold customers there
UPDATE allocation.territory SET exclusive = true
 WHERE code = (SELECT min(code) FROM gis.county WHERE prefecture = '4301');

-------------------------------------------------------------------------------
-- The rule set (evaluated by priority, highest first)
-------------------------------------------------------------------------------
INSERT INTO allocation.rule (name, priority, tags, target_kind, description)
VALUES ('credit hold -> public pool', 200, '{credit_hold}', 'pool',
        '信用冻结: finance put the customer on hold; it waits in the public pool until cleared');

INSERT INTO allocation.rule (name, priority, tiers, target_kind, target_team_id, policy, description)
SELECT 'key distributors -> key accounts', 100, '{key_distributor}', 'team', id, 'least_loaded',
       '核心经销商交由大客户部统一维护 (least-loaded key-account manager)'
  FROM allocation.team WHERE code = 'ka';

INSERT INTO allocation.rule (name, priority, mode, tbl, condition, target_kind, target_team_id, policy, description)
SELECT 'big independent buyers -> key-account review', 90, 'suggest', 'crm.customer',
       'annual_volume > 500000 AND NOT is_cooperative', 'team', id, 'least_loaded',
       'big buyers outside the dealer tier: a key-account manager is suggested, the department head decides'
  FROM allocation.team WHERE code = 'ka';

INSERT INTO allocation.rule (name, priority, territory_id, tiers, target_kind, target_team_id, policy, description)
SELECT 'rice-belt growers -> crop specialists', 80,
       (SELECT id FROM allocation.territory WHERE code = 'BELT-RICE'), '{grower}', 'team', t.id, 'skill',
       '水稻区的种植大户优先分配给懂病虫草害的作物专家 (the specialist for the grower''s crop)'
  FROM allocation.team t WHERE t.code = 'crop';

INSERT INTO allocation.rule (name, priority, crops, tiers, target_kind, target_team_id, policy, description)
SELECT 'rice growers elsewhere -> rice specialists', 70, '{rice}', '{grower}', 'team', id, 'round_robin',
       'rice growers outside the belt, shared in turn among the rice specialists'
  FROM allocation.team WHERE code = 'crop_rice';

INSERT INTO allocation.rule (name, priority, crops, tiers, target_kind, target_team_id, policy, description)
SELECT 'citrus growers -> citrus specialists', 60, '{citrus}', '{grower}', 'team', id, 'weighted',
       'orchards: the citrus specialist with the most free capacity (relative)'
  FROM allocation.team WHERE code = 'crop_fruit';

INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy, description)
SELECT 'everyone else -> territory owner', 10, 'team', id, 'territory_owner',
       '散户由属地销售负责: the owner of the county (or the prefecture''s sub-team for a vacant county)'
  FROM allocation.team WHERE code = 'local';
-- (no rule decides -> the engine sends the customer to the public pool 公海 with the reason)

-------------------------------------------------------------------------------
-- Attach the engine to the CRM's own table: no migration, existing rows enter the registry
-------------------------------------------------------------------------------
SELECT allocation.manage('crm.customer', 'id', 'location', 'owner_id',
       '{"tier":"tier","crop":"crop","business_type":"business_type","tags":"tags",
         "name":"name","phone":"phone","credit_code":"credit_code","parent":"parent_id"}');

\echo
\echo '== Organisation =='
SELECT coalesce(p.name || ' / ', '') || t.name AS team, count(r.id) AS reps,
       sum(r.capacity) AS capacity, string_agg(DISTINCT array_to_string(r.crops, ','), ' ') FILTER (WHERE r.crops <> '{}') AS skills,
       count(r.id) FILTER (WHERE NOT r.active) AS inactive
  FROM allocation.team t LEFT JOIN allocation.team p ON p.id = t.parent_id
  LEFT JOIN allocation.rep r ON r.team_id = t.id
 GROUP BY t.id, p.name, t.name HAVING count(r.id) > 0 ORDER BY t.id;

\echo '== Rules =='
SELECT r.priority, r.name, r.mode,
       concat_ws(' ', 'tiers=' || array_to_string(r.tiers, ','), 'crops=' || array_to_string(r.crops, ','),
                 'tags=' || array_to_string(r.tags, ','), 'territory=' || t.code, 'if ' || r.condition) AS match,
       r.target_kind || coalesce(' ' || tm.code, '') || coalesce(' (' || r.policy || ')', '') AS target
  FROM allocation.rule r LEFT JOIN allocation.territory t ON t.id = r.territory_id
  LEFT JOIN allocation.team tm ON tm.id = r.target_team_id
 ORDER BY r.priority DESC, r.id;

SELECT format('crm.customer attached: %s existing rows registered (%s with their CRM owner, pinned; %s in the pool)',
              count(*), count(rep_id), count(*) - count(rep_id)) AS manage
  FROM allocation.current_owner WHERE table_name = 'crm.customer';
