-- demo/06_map.sql — map output, made in SQL from the extension's own views:
--   :outdir/territories.geojson  allocation.territory_geojson() (open it in QGIS, geojson.io, a BI tool)
--   :outdir/map.svg              counties coloured by owner rep, prefecture borders, crop belts,
--                                customers coloured by outcome, legend (ST_AsSVG; open it in a browser)
-- Run with: psql -v outdir=demo/out -f demo/06_map.sql

\set ON_ERROR_STOP on
SET client_min_messages = warning;

\pset format unaligned
\pset tuples_only on
\o :outdir/territories.geojson
SELECT allocation.territory_geojson()::text;
\o

-------------------------------------------------------------------------------
-- Map frame: lon/lat -> pixels (equirectangular, x scaled by cos(mid latitude)); ST_AsSVG writes -y
-------------------------------------------------------------------------------
CREATE TEMP TABLE frame AS
WITH e AS (
    SELECT ST_Expand(ST_Extent(g)::geometry, 0.12) AS box
      FROM (SELECT geom AS g FROM allocation.territory WHERE properties->>'level' = 'county'
            UNION ALL SELECT location FROM crm.customer WHERE location IS NOT NULL) s
), s AS (
    SELECT ST_XMin(box) AS x0, ST_YMax(box) AS y1, ST_XMax(box) - ST_XMin(box) AS dx, ST_YMax(box) - ST_YMin(box) AS dy,
           cos(radians((ST_YMin(box) + ST_YMax(box)) / 2)) AS c
      FROM e
)
SELECT x0, y1, c, 880.0 / (dx * c) AS k, 20.0 AS ml, 78.0 AS mt,
       ceil(20 + 880 + 350)::int AS width, ceil(78 + dy * 880.0 / (dx * c) + 20)::int AS height
  FROM s;

CREATE FUNCTION pg_temp.px(g geometry) RETURNS geometry LANGUAGE sql STABLE AS $$
    SELECT ST_Affine(g, f.k * f.c, 0, 0, f.k, f.ml - f.k * f.c * f.x0, -f.k * f.y1 - f.mt) FROM frame f
$$;

CREATE TEMP TABLE cust_pt AS
SELECT c.id, c.location,
       CASE WHEN o.rep_id IS NULL AND EXISTS (SELECT 1 FROM allocation.pending_suggestion s
                                             WHERE s.table_name = 'crm.customer' AND s.key = c.id::text) THEN 'suggested'
            WHEN o.rep_id IS NULL THEN 'pool'
            WHEN o.source IN ('manual', 'suggestion') THEN 'manual'
            WHEN tm.code = 'ka' OR pt.code = 'ka' THEN 'ka'
            WHEN tm.code = 'crop' OR pt.code = 'crop' THEN 'crop'
            ELSE 'local' END AS cat
  FROM crm.customer c
  JOIN allocation.current_owner o ON o.table_name = 'crm.customer' AND o.key = c.id::text
  LEFT JOIN allocation.team tm ON tm.id = o.team_id
  LEFT JOIN allocation.team pt ON pt.id = tm.parent_id
 WHERE c.location IS NOT NULL;

CREATE TEMP TABLE style (cat text PRIMARY KEY, ord int, fill text, r numeric, stroke text, label text);
INSERT INTO style VALUES
 ('local',     1, '#424242', 1.1, 'none',    'local rep: territory owner (区域销售)'),
 ('crop',      2, '#1b7f3b', 1.6, 'none',    'crop specialist (作物专家)'),
 ('manual',    3, '#8e24aa', 2.0, 'none',    'set by hand (legacy owner, rep, manager)'),
 ('ka',        4, '#0d47a1', 3.0, '#ffffff', 'key-account manager (大客户部)'),
 ('suggested', 5, '#ff8f00', 3.0, '#ffffff', 'suggested, pending review (待审核)'),
 ('pool',      6, '#d50000', 2.6, '#ffffff', 'public pool (公海)');

-- county fill: one pastel colour per owner rep (golden-angle hues); grey = owner inactive; beige = vacant
CREATE TEMP TABLE county_fill AS
SELECT t.id, t.code, t.name, t.geom, t.exclusive, r.code AS rep_code, r.name AS rep_name, r.active,
       CASE WHEN r.id IS NULL THEN '#efe6d2'
            WHEN NOT r.active THEN '#c9c9c9'
            ELSE format('hsl(%s,%s%%,%s%%)', round(((dense_rank() OVER (ORDER BY r.id) * 137.508) % 360)::numeric),
                        42 + 10 * (dense_rank() OVER (ORDER BY r.id) % 3), 78 + 3 * (dense_rank() OVER (ORDER BY r.id) % 2)) END AS fill
  FROM allocation.territory t LEFT JOIN allocation.rep r ON r.id = t.owner_rep_id
 WHERE t.properties->>'level' = 'county';

\o :outdir/map.svg
SELECT concat_ws(E'\n',
    format('<svg xmlns="http://www.w3.org/2000/svg" width="%s" height="%s" viewBox="0 0 %s %s" '
           'font-family="''Noto Sans CJK SC'',''WenQuanYi Micro Hei'',''Microsoft YaHei'',''PingFang SC'',sans-serif">',
           f.width, f.height, f.width, f.height),
    '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
      || '<line x1="0" y1="0" x2="0" y2="6" stroke="#b71c1c" stroke-width="1.6"/></pattern></defs>',
    '<rect width="100%" height="100%" fill="#e8eef2"/>',
    format('<text x="%s" y="32" font-size="22" font-weight="bold" fill="#222">allocation demo — who owns which customer</text>', f.ml),
    format('<text x="%s" y="56" font-size="13.5" fill="#444">A generated province (~Hunan, lon 109–114°E, lat 25–30°N): %s counties, %s prefectures, %s reps, %s customers, every owner decided by rules inside PostgreSQL</text>',
           f.ml,
           (SELECT count(*) FROM county_fill), (SELECT count(*) FROM allocation.territory WHERE properties->>'level' = 'prefecture'),
           (SELECT count(*) FROM allocation.rep), to_char((SELECT count(*) FROM crm.customer), 'FM99,999')),
    -- counties
    '<g id="counties" stroke="#ffffff" stroke-width="0.7" stroke-linejoin="round">',
    (SELECT string_agg(format('<path d="%s" fill="%s"><title>%s %s — owner %s</title></path>',
                              ST_AsSVG(pg_temp.px(cf.geom), 0, 1), cf.fill, cf.code, cf.name,
                              coalesce(cf.rep_code || ' ' || cf.rep_name || CASE WHEN cf.active THEN '' ELSE ' (inactive)' END,
                                       'vacant: prefecture sub-team')), E'\n' ORDER BY cf.code)
       FROM county_fill cf),
    '</g>',
    -- the locked county
    (SELECT string_agg(format('<path d="%s" fill="url(#hatch)" stroke="#b71c1c" stroke-width="1.8"/>',
                              ST_AsSVG(pg_temp.px(geom), 0, 1)), E'\n') FROM county_fill WHERE exclusive),
    -- prefecture borders
    '<g id="prefectures" fill="none" stroke="#37474f" stroke-width="1.7" stroke-linejoin="round">',
    (SELECT string_agg(format('<path d="%s"/>', ST_AsSVG(pg_temp.px(geom), 0, 1)), E'\n' ORDER BY code)
       FROM allocation.territory WHERE properties->>'level' = 'prefecture'),
    '</g>',
    -- crop belts
    format('<path d="%s" fill="none" stroke="#2e7d32" stroke-width="3.6" stroke-dasharray="10 5" stroke-linejoin="round"/>',
           (SELECT ST_AsSVG(pg_temp.px(geom), 0, 1) FROM allocation.territory WHERE code = 'BELT-RICE')),
    format('<path d="%s" fill="none" stroke="#ef6c00" stroke-width="3.6" stroke-dasharray="3 4" stroke-linejoin="round"/>',
           (SELECT ST_AsSVG(pg_temp.px(ST_Union(geom)), 0, 1) FROM allocation.territory
             WHERE properties->>'level' = 'county' AND 'citrus' = ANY (crop_zones))),
    -- customers
    '<g id="customers">',
    (SELECT string_agg(format('<circle %s r="%s" fill="%s"%s/>', ST_AsSVG(pg_temp.px(p.location), 0, 1), s.r, s.fill,
                              CASE WHEN s.stroke <> 'none' THEN format(' stroke="%s" stroke-width="0.6"', s.stroke) ELSE '' END),
                       E'\n' ORDER BY s.ord, p.id)
       FROM cust_pt p JOIN style s USING (cat)),
    '</g>',
    -- prefecture names
    '<g id="labels" font-size="13" font-weight="bold" fill="#263238" text-anchor="middle" stroke="#ffffff" stroke-width="3" paint-order="stroke">',
    (SELECT string_agg(format('<text %s>%s</text>', replace(replace(ST_AsSVG(pg_temp.px(ST_PointOnSurface(geom)), 0, 1), 'cx=', 'x='), 'cy=', 'y='), name),
                       E'\n' ORDER BY code)
       FROM allocation.territory WHERE properties->>'level' = 'prefecture'),
    '</g>',
    -- legend
    format('<g id="legend" transform="translate(%s,%s)" font-size="12.5" fill="#222">', f.width - 338, f.mt + 4),
    '<rect x="0" y="0" width="326" height="470" rx="6" fill="#ffffff" fill-opacity="0.93" stroke="#90a4ae"/>',
    '<text x="14" y="24" font-size="14" font-weight="bold">Customers, by outcome</text>',
    (SELECT string_agg(format('<circle cx="24" cy="%s" r="%s" fill="%s"%s/><text x="38" y="%s">%s</text><text x="314" y="%s" text-anchor="end">%s</text>',
                              30 + 22 * s.ord, greatest(s.r, 3.5), s.fill,
                              CASE WHEN s.stroke <> 'none' THEN ' stroke="#555" stroke-width="0.6"' ELSE '' END,
                              34 + 22 * s.ord, s.label, 34 + 22 * s.ord,
                              to_char((SELECT count(*) FROM cust_pt p WHERE p.cat = s.cat), 'FM99,999')), '' ORDER BY s.ord)
       FROM style s),
    format('<text x="14" y="%s" font-size="11" fill="#555">(%s outside the province: red dots beyond the border)</text>', 188,
           (SELECT count(*) FROM crm.customer c WHERE c.location IS NOT NULL AND allocation.territory_at(c.location) IS NULL)),
    '<text x="14" y="222" font-size="14" font-weight="bold">Counties and zones</text>',
    '<rect x="14" y="236" width="22" height="14" fill="hsl(137,52%,78%)" stroke="#fff"/><rect x="24" y="236" width="22" height="14" fill="hsl(275,42%,81%)" stroke="#fff"/>',
    '<text x="54" y="248">fill: the local rep who owns the county</text>',
    '<rect x="14" y="260" width="32" height="14" fill="#c9c9c9"/><text x="54" y="272">owner on leave (customers wait in the pool)</text>',
    '<rect x="14" y="284" width="32" height="14" fill="#efe6d2"/><text x="54" y="296">vacant: the prefecture''s sub-team covers it</text>',
    '<rect x="14" y="308" width="32" height="14" fill="url(#hatch)" stroke="#b71c1c" stroke-width="1.5"/><text x="54" y="320">locked county (锁区, exclusive to its owner)</text>',
    '<line x1="14" y1="339" x2="46" y2="339" stroke="#37474f" stroke-width="1.7"/><text x="54" y="343">prefecture border (地级市)</text>',
    '<line x1="14" y1="362" x2="46" y2="362" stroke="#2e7d32" stroke-width="3.6" stroke-dasharray="10 5"/><text x="54" y="366">rice belt (水稻带): territory of a rule</text>',
    '<line x1="14" y1="385" x2="46" y2="385" stroke="#ef6c00" stroke-width="3.6" stroke-dasharray="3 4"/><text x="54" y="389">citrus orchard zone (柑橘)</text>',
    '<text x="14" y="418" font-size="11" fill="#555">Hover a county for its code, name and owner.</text>',
    '<text x="14" y="436" font-size="11" fill="#555">Data: demo/out/territories.geojson; generated</text>',
    '<text x="14" y="452" font-size="11" fill="#555">deterministically by scripts/demo.sh (setseed).</text>',
    '</g>',
    '</svg>')
  FROM frame f;
\o

\pset tuples_only off
\pset format aligned
