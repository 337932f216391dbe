-- demo/04_customers.sql — ~10,000 customers arrive through plain INSERTs, the way an import job
-- and the field app write them.  Nobody calls the engine: the triggers on crm.customer decide
-- the owner of every row (or suggest one, or send it to the public pool) as it is written.

\set ON_ERROR_STOP on
SET client_min_messages = warning;
SELECT setseed(0.7311) \gset

-------------------------------------------------------------------------------
-- The raw material: a deterministic list of leads (what the import file / the app would send)
-------------------------------------------------------------------------------
CREATE TABLE demo.lead_point AS
WITH w AS (   -- more customers in the plains and orchards than in the hills
    SELECT c.code, c.name, c.geom, c.crop_zones,
           1.0 + CASE WHEN 'rice' = ANY (c.crop_zones) THEN 1.3 ELSE 0 END
               + CASE WHEN 'cotton' = ANY (c.crop_zones) THEN 0.5 ELSE 0 END
               + CASE WHEN 'citrus' = ANY (c.crop_zones) THEN 0.6 ELSE 0 END AS weight
      FROM gis.county c
), n AS (
    SELECT w.*, round(9850 * weight / sum(weight) OVER ())::int AS n FROM w
)
SELECT row_number() OVER (ORDER BY n.code, d.path[1]) AS n, n.code AS county_code,
       replace(n.name, '县', '') AS county_short, n.crop_zones, d.geom AS location
  FROM n CROSS JOIN LATERAL ST_Dump(ST_GeneratePoints(n.geom, n.n, ('x' || substr(md5(n.code), 1, 6))::bit(24)::int)) d
 ORDER BY 1;

CREATE TABLE demo.lead AS
WITH r AS (
    SELECT p.*, x.*
      FROM demo.lead_point p
     CROSS JOIN LATERAL (SELECT random() + 0 * p.n AS u_tier, random() AS u_crop, random() AS u_crop2, random() AS u_bt,
                                random() AS u_vol, random() AS u_n1, random() AS u_n2, random() AS u_n3,
                                random() AS u_p1, random() AS u_p2, random() AS u_cc, random() AS u_tag, random() AS u_tag2) x
     ORDER BY p.n
), t AS (
    SELECT r.*,
           CASE WHEN u_tier < 0.02 THEN 'key_distributor' WHEN u_tier < 0.10 THEN 'wholesaler'
                WHEN u_tier < 0.62 THEN 'retailer' ELSE 'grower' END AS tier,
           CASE WHEN u_crop < 0.8 THEN demo.pick(crop_zones, u_crop2)
                ELSE demo.pick('{rice,rice,rice,vegetable,vegetable,citrus,cotton,wheat,tea}'::text[], u_crop2) END AS crop
      FROM r
), b AS (
    SELECT t.*,
           CASE WHEN tier IN ('key_distributor', 'wholesaler') THEN 'distribution'
                WHEN tier = 'retailer' THEN CASE WHEN u_bt < 0.7 THEN 'retail_shop' ELSE 'plant_protection_station' END
                ELSE CASE WHEN u_bt < 0.25 THEN 'cooperative' WHEN u_bt < 0.7 THEN 'large_grower' ELSE 'family_farm' END
           END AS business_type
      FROM t
)
SELECT n, county_code, location, tier, crop, business_type,
       CASE tier
           WHEN 'key_distributor' THEN county_short || demo.pick('{丰收,绿源,金穗,禾丰,惠农,沃土,田园,神农,隆平,兴农}'::text[], u_n1)
                                   || demo.pick('{农资有限公司,农化贸易有限公司,农业生产资料有限公司}'::text[], u_n2)
           WHEN 'wholesaler' THEN county_short || demo.pick('{丰收,绿源,金穗,禾丰,惠农,沃土,田园,神农,兴农,春雨}'::text[], u_n1)
                                   || demo.pick('{农资批发部,农药经营部,植保农资商行}'::text[], u_n2)
           WHEN 'retailer' THEN demo.pick('{桥,塘,坪,湾,铺,冲,市,岭,洲,港,口,湖}'::text[], u_n3)
                                   || demo.pick('{东,西,南,北,新,老,大,小,上,下}'::text[], u_n1) || '镇'
                                   || CASE WHEN business_type = 'retail_shop'
                                           THEN substr(demo.person(u_n2, u_n3), 1, 1) || '记农资店'
                                           ELSE '植保服务站' END
           ELSE CASE business_type
                    WHEN 'cooperative' THEN county_short || demo.pick('{丰收,绿源,金穗,禾丰,惠农,沃土,田园,兴旺}'::text[], u_n1)
                                   || CASE crop WHEN 'rice' THEN '水稻' WHEN 'cotton' THEN '棉花' WHEN 'citrus' THEN '柑橘'
                                                WHEN 'wheat' THEN '小麦' WHEN 'tea' THEN '茶叶' ELSE '蔬菜' END || '种植专业合作社'
                    WHEN 'large_grower' THEN demo.person(u_n2, u_n3) || '（种植大户）'
                    ELSE demo.person(u_n2, u_n3) || '家庭农场' END
       END AS name,
       demo.phone(u_p1, u_p2) AS phone,
       CASE WHEN tier IN ('key_distributor', 'wholesaler') THEN demo.credit_code('91', county_code, u_cc)
            WHEN business_type = 'cooperative' THEN demo.credit_code('93', county_code, u_cc)
            WHEN tier = 'retailer' THEN demo.credit_code('92', county_code, u_cc) END AS credit_code,
       ARRAY(SELECT tg FROM unnest(ARRAY[
                 CASE WHEN u_tag < 0.012 THEN 'credit_hold' END,
                 CASE WHEN tier = 'grower' AND u_tag2 < 0.08 THEN 'drone_service' END,
                 CASE WHEN tier <> 'grower' AND u_tag2 < 0.05 THEN 'new_product_pilot' END,
                 CASE WHEN u_tag > 0.8 THEN 'wechat_group' END]) tg WHERE tg IS NOT NULL) AS tags,
       round(CASE tier WHEN 'key_distributor' THEN 600000 + 4000000 * u_vol ^ 2
                       WHEN 'wholesaler' THEN 100000 + 500000 * u_vol ^ 2
                       WHEN 'retailer' THEN 15000 + 120000 * u_vol ^ 2
                       ELSE 8000 + 600000 * u_vol ^ 6 END::numeric, -2) AS annual_volume,
       business_type = 'cooperative' AS is_cooperative,
       CASE WHEN ST_Y(location) > 28.6 THEN 'north' WHEN ST_Y(location) < 26.8 THEN 'south' ELSE 'central' END AS region
  FROM b
 ORDER BY n;
CREATE UNIQUE INDEX ON demo.lead (n);

-------------------------------------------------------------------------------
-- Batch 1 — the dealer directory from the 2026 distributor conference (an import job)
-------------------------------------------------------------------------------
INSERT INTO crm.customer (name, phone, credit_code, tier, crop, business_type, tags, annual_volume, is_cooperative, location)
SELECT name, phone, credit_code, tier, crop, business_type, tags, annual_volume, is_cooperative, location
  FROM demo.lead WHERE tier IN ('key_distributor', 'wholesaler') ORDER BY n;

-------------------------------------------------------------------------------
-- Batches 2-4 — township retailers synced from the field app, one region at a time
-------------------------------------------------------------------------------
INSERT INTO crm.customer (name, phone, credit_code, tier, crop, business_type, tags, annual_volume, is_cooperative, location)
SELECT name, phone, credit_code, tier, crop, business_type, tags, annual_volume, is_cooperative, location
  FROM demo.lead WHERE tier = 'retailer' AND region = 'north' ORDER BY n;
INSERT INTO crm.customer (name, phone, credit_code, tier, crop, business_type, tags, annual_volume, is_cooperative, location)
SELECT name, phone, credit_code, tier, crop, business_type, tags, annual_volume, is_cooperative, location
  FROM demo.lead WHERE tier = 'retailer' AND region = 'central' ORDER BY n;
INSERT INTO crm.customer (name, phone, credit_code, tier, crop, business_type, tags, annual_volume, is_cooperative, location)
SELECT name, phone, credit_code, tier, crop, business_type, tags, annual_volume, is_cooperative, location
  FROM demo.lead WHERE tier = 'retailer' AND region = 'south' ORDER BY n;

-------------------------------------------------------------------------------
-- Batches 5-6 — grower registrations from the spring field days (农民会)
-------------------------------------------------------------------------------
INSERT INTO crm.customer (name, phone, credit_code, tier, crop, business_type, tags, annual_volume, is_cooperative, location)
SELECT name, phone, credit_code, tier, crop, business_type, tags, annual_volume, is_cooperative, location
  FROM demo.lead WHERE tier = 'grower' AND n % 2 = 0 ORDER BY n;
INSERT INTO crm.customer (name, phone, credit_code, tier, crop, business_type, tags, annual_volume, is_cooperative, location)
SELECT name, phone, credit_code, tier, crop, business_type, tags, annual_volume, is_cooperative, location
  FROM demo.lead WHERE tier = 'grower' AND n % 2 = 1 ORDER BY n;

-------------------------------------------------------------------------------
-- Batch 7 — retailers right ON county borders (a shared border vertex: both counties cover it;
-- the engine picks one deterministically: priority, then lowest territory id)
-------------------------------------------------------------------------------
INSERT INTO crm.customer (name, phone, tier, crop, business_type, annual_volume, location)
SELECT '边界' || demo.pick('{桥,塘,坪,湾,铺}'::text[], random() + 0 * k) || '镇农资店', demo.phone(random(), random()),
       'retailer', 'rice', 'retail_shop', 30000, pt
  FROM (SELECT row_number() OVER (ORDER BY ST_X(pt), ST_Y(pt)) AS k, pt
          FROM (SELECT (ST_DumpPoints(geom)).geom AS pt FROM gis.county) v
         GROUP BY pt HAVING count(*) >= 2) s
 WHERE k % 25 = 0
 ORDER BY k;

-------------------------------------------------------------------------------
-- Batch 8 — leads from across the provincial border (neighbouring provinces): no territory there
-------------------------------------------------------------------------------
INSERT INTO crm.customer (name, phone, tier, crop, business_type, annual_volume, location)
SELECT '省外' || demo.person(random() + 0 * g.n, random()) || '农资店', demo.phone(random(), random()),
       'retailer', 'rice', 'retail_shop', 20000, pt
  FROM (SELECT g.n, ST_SetSRID(ST_MakePoint(108.4 + 6.3 * random() + 0 * g.n, 24.4 + 6.2 * random()), 4326) AS pt
          FROM generate_series(1, 400) g(n)) g, gis.province p
 WHERE NOT ST_DWithin(p.geom, g.pt, 0.05)
 ORDER BY g.n LIMIT 25;

-------------------------------------------------------------------------------
-- Single rows from the field app, one at a time (the interesting cases)
-------------------------------------------------------------------------------
-- (a) a county dealer inside the locked county: key accounts may not hold it there
INSERT INTO crm.customer (name, phone, credit_code, tier, crop, business_type, annual_volume, location)
SELECT '锁区龙头农化有限公司', '13807310001', '914301AB12CD34EF5X', 'key_distributor', 'rice', 'distribution', 2600000,
       ST_PointOnSurface(geom)
  FROM allocation.territory WHERE exclusive;

-- (b) a rice-belt grower who grows vegetables: no crop specialist has that skill
INSERT INTO crm.customer (name, phone, tier, crop, business_type, annual_volume, location)
SELECT '谭满秋（种植大户）', '13973120002', 'grower', 'vegetable', 'large_grower', 68000, ST_PointOnSurface(geom)
  FROM allocation.territory
 WHERE code = (SELECT min(code) FROM gis.county WHERE crop_zones = '{rice}');

-- (c) a phone lead without a location: only location-free rules can decide
INSERT INTO crm.customer (name, phone, tier, crop, business_type, annual_volume)
VALUES ('电话线索 陈先生', '18975310003', 'retailer', 'rice', 'retail_shop', 25000);

-- (d) a big private buyer (not a cooperative): a key-account manager is suggested, the head decides
INSERT INTO crm.customer (name, phone, credit_code, tier, crop, business_type, annual_volume, is_cooperative, location)
SELECT '洞庭农业发展有限公司', '13607300004', '914306QW98ER76TY5X', 'grower', 'rice', 'large_grower', 1800000, false,
       ST_PointOnSurface(geom)
  FROM allocation.territory WHERE code = (SELECT min(code) FROM gis.county WHERE prefecture = '4305');

-- (e) the same size, but a cooperative: the SQL condition does not match, normal rules apply
INSERT INTO crm.customer (name, phone, credit_code, tier, crop, business_type, annual_volume, is_cooperative, location)
SELECT '洞庭水稻种植专业合作社', '13607300005', '934306ZX54CV32BN1X', 'grower', 'rice', 'cooperative', 1800000, true,
       ST_PointOnSurface(geom)
  FROM allocation.territory WHERE code = (SELECT min(code) FROM gis.county WHERE prefecture = '4305');

-- (f) a rep registers his own customer (owner given): a manual, pinned assignment, still validated
INSERT INTO crm.customer (name, phone, tier, crop, business_type, annual_volume, location, owner_id)
SELECT '老客户 周记农资店', '13574310006', 'retailer', 'rice', 'retail_shop', 52000, ST_PointOnSurface(t.geom), t.owner_rep_id
  FROM allocation.territory t JOIN allocation.rep_portfolio p ON p.rep_id = t.owner_rep_id
 WHERE t.code IN (SELECT code FROM gis.county WHERE prefecture = '4303')
 ORDER BY p.free DESC, t.code LIMIT 1;

-- (g) ... and one trying it inside the locked county is refused with a clear SQLSTATE
DO $$
BEGIN
    INSERT INTO crm.customer (name, phone, tier, crop, business_type, annual_volume, location, owner_id)
    SELECT '撞单测试 农资店', '13574310007', 'retailer', 'rice', 'retail_shop', 40000, ST_PointOnSurface(t.geom),
           (SELECT id FROM allocation.rep WHERE code = 'loc30')
      FROM allocation.territory t WHERE t.exclusive;
    RAISE EXCEPTION 'the insert into the locked county should have been refused';
EXCEPTION WHEN SQLSTATE 'LA023' THEN
    RAISE WARNING 'refused as expected: % (SQLSTATE LA023)', SQLERRM;
END $$;

\echo
\echo '== Customers written =='
SELECT count(*) AS customers,
       count(*) FILTER (WHERE tier = 'key_distributor') AS key_distributors,
       count(*) FILTER (WHERE tier = 'wholesaler') AS wholesalers,
       count(*) FILTER (WHERE tier = 'retailer') AS retailers,
       count(*) FILTER (WHERE tier = 'grower') AS growers,
       count(owner_id) AS with_owner
  FROM crm.customer;

-- after a bulk load, fresh planner statistics (autovacuum would get there too, later)
ANALYZE crm.customer;
ANALYZE allocation.customer_state;
ANALYZE allocation.suggestion;
ANALYZE allocation.event;
