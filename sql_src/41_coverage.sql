-------------------------------------------------------------------------------
-- Coverage gaps (边缘市场无人管): where nobody sells
-------------------------------------------------------------------------------
-- Two kinds of gap, in the subtree of parent_code (NULL = every territory):
--   uncovered: the part of a territory with children that none of its children
--              covers (pieces under 0.01 km² are dropped: slivers left by two
--              GIS layers that do not share their borders exactly);
--   unowned:   a leaf territory with no owner rep or team, on itself or on any
--              ancestor (the territory_owner policy looks up the tree).
-- With the customers located there: each managed table with a location column
-- that the caller may read, read with the caller's own rights (row-level
-- security applies: a rep's login sees its own customers only).
-- SECURITY INVOKER: it reads allocation.territory and the customer tables as
-- the caller; PostGIS is on its search_path (set at the end of this file).
CREATE FUNCTION allocation.coverage_gaps(parent_code text DEFAULT NULL)
RETURNS TABLE (kind text, parent text, code text, name text, area_km2 double precision,
               customers bigint, keys jsonb, geom geometry)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off   -- PostGIS functions are costed high: JIT would compile for seconds to save nothing
AS $$
DECLARE
    v_root   bigint;
    m        record;
    v_srid   integer;
    v_gaps   geometry[];
    v_ids    integer[];
    v_counts bigint[];
    v_keys   jsonb[];
    r        record;
BEGIN
    IF parent_code IS NOT NULL THEN
        SELECT t.id INTO v_root FROM allocation.territory t WHERE t.code = coverage_gaps.parent_code;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'territory % does not exist', parent_code
                USING ERRCODE = 'LA0I2',
                      DETAIL = format('No row of allocation.territory has the code %s.', parent_code),
                      HINT = 'Pass the code of a stored territory, or NULL for every territory: SELECT code, name FROM allocation.territory WHERE parent_id IS NULL;';
        END IF;
    END IF;

    -- the gaps, in a stable order (kind, then territory code)
    WITH RECURSIVE scope AS (
        SELECT t.id FROM allocation.territory t
         WHERE (v_root IS NULL AND t.parent_id IS NULL) OR t.id = v_root
        UNION
        SELECT c.id FROM allocation.territory c JOIN scope s ON c.parent_id = s.id),
    owned AS (   -- territories with an owner on themselves or an ancestor
        SELECT t.id FROM allocation.territory t WHERE t.owner_rep_id IS NOT NULL OR t.owner_team_id IS NOT NULL
        UNION
        SELECT c.id FROM allocation.territory c JOIN owned o ON c.parent_id = o.id),
    uncovered AS (
        SELECT 'uncovered'::text AS kind, p.code AS parent, NULL::text AS code, p.name,
               (SELECT ST_Multi(ST_Collect(d.geom ORDER BY d.path))
                  FROM ST_Dump(ST_CollectionExtract(ST_Difference(p.geom, u.geom), 3)) d
                 WHERE ST_Area(d.geom::geography) >= 1e4) AS geom
          FROM allocation.territory p
          JOIN LATERAL (SELECT ST_Union(c.geom) AS geom FROM allocation.territory c
                         WHERE c.parent_id = p.id AND c.geom IS NOT NULL) u ON u.geom IS NOT NULL
         WHERE p.id IN (SELECT id FROM scope) AND p.geom IS NOT NULL),
    unowned AS (
        SELECT 'unowned'::text, p.code, t.code, t.name, t.geom
          FROM allocation.territory t
          LEFT JOIN allocation.territory p ON p.id = t.parent_id
         WHERE t.id IN (SELECT id FROM scope) AND t.id NOT IN (SELECT id FROM owned)
           AND NOT EXISTS (SELECT 1 FROM allocation.territory c WHERE c.parent_id = t.id)
           AND t.geom IS NOT NULL)
    SELECT array_agg(g.geom ORDER BY g.kind, g.parent, g.code),
           array_agg(jsonb_build_object('kind', g.kind, 'parent', g.parent, 'code', g.code, 'name', g.name) ORDER BY g.kind, g.parent, g.code)
      INTO v_gaps, v_keys
      FROM (SELECT * FROM uncovered x WHERE x.geom IS NOT NULL UNION ALL SELECT * FROM unowned) g;
    IF v_gaps IS NULL THEN
        RETURN;
    END IF;
    v_ids := ARRAY(SELECT generate_series(1, cardinality(v_gaps)));
    v_counts := array_fill(0::bigint, ARRAY[cardinality(v_gaps)]);
    -- v_keys holds each gap's row for now; its customers go into .keys
    FOR i IN 1 .. cardinality(v_keys) LOOP
        v_keys[i] := v_keys[i] || '{"keys": {}}';
    END LOOP;

    -- the customers sitting in each gap: one pass per readable customer table
    FOR m IN SELECT mt.tbl, mt.table_name, mt.key_column, mt.location_column, mt.location_datum
               FROM allocation.managed_table mt
              WHERE mt.active AND mt.location_column IS NOT NULL
                AND has_table_privilege(mt.tbl, 'SELECT')
              ORDER BY mt.table_name LOOP
        SELECT postgis_typmod_srid(a.atttypmod) INTO v_srid FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = m.tbl AND a.attname = m.location_column AND a.atttypmod >= 0;
        FOR r IN EXECUTE format(
            'SELECT g.i, count(*) AS n, jsonb_agg(c.k ORDER BY c.k) FILTER (WHERE c.rn <= 1000) AS keys
               FROM unnest($1, $2) g(gap, i)
               JOIN LATERAL (SELECT x.%1$I::text AS k, row_number() OVER (ORDER BY x.%1$I::text) AS rn
                               FROM %2$s x
                              WHERE %3$s) c ON true
              GROUP BY g.i',
            m.key_column, m.tbl,
            -- a GCJ-02 / BD-09 column: the position the engine decides with (converted to WGS 84,
            -- up to ~700 m away: the index probe takes a margin of 0.02 degree)
            CASE WHEN m.location_datum <> 'wgs84'
                 THEN CASE WHEN coalesce(v_srid, 0) > 0
                           THEN format('x.%1$I && ST_Transform(ST_Expand(g.gap, 0.02), %2$s) AND ', m.location_column, v_srid)
                           ELSE '' END
                      || format('ST_Covers(g.gap, (SELECT CASE WHEN abs(ST_X(w.p)) <= 180 AND abs(ST_Y(w.p)) <= 90
                                                              THEN (SELECT ST_SetSRID(ST_MakePoint(d.lon, d.lat), 4326)
                                                                      FROM allocation.datum_convert(ST_X(w.p), ST_Y(w.p), %2$L, ''wgs84'') d)
                                                              ELSE w.p END
                                                    FROM (SELECT ST_Transform(x.%1$I, 4326) AS p) w))',
                                m.location_column, m.location_datum)
                 WHEN coalesce(v_srid, 0) > 0
                 THEN format('x.%1$I && ST_Transform(g.gap, %2$s) AND ST_Covers(ST_Transform(g.gap, %2$s), x.%1$I)',
                             m.location_column, v_srid)
                 ELSE format('ST_Covers(g.gap, ST_Transform(x.%1$I, 4326))', m.location_column) END)
            USING v_gaps, v_ids LOOP
            v_counts[r.i] := v_counts[r.i] + r.n;
            v_keys[r.i] := jsonb_set(v_keys[r.i], ARRAY['keys', m.table_name], r.keys);
        END LOOP;
    END LOOP;

    FOR i IN 1 .. cardinality(v_gaps) LOOP
        kind := v_keys[i]->>'kind';
        parent := v_keys[i]->>'parent';
        code := v_keys[i]->>'code';
        name := v_keys[i]->>'name';
        geom := v_gaps[i];
        area_km2 := ST_Area(geom::geography) / 1e6;
        customers := v_counts[i];
        keys := v_keys[i]->'keys';
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation.coverage_gaps(text) IS
'Where nobody sells (边缘市场无人管), under parent_code or everywhere: uncovered = the part of a parent territory no child covers (pieces from 0.01 km²), unowned = a leaf territory without owner rep or team on itself or any ancestor; with the area, the customers located there and their keys per table ({"table": [first 1,000 keys]}) from the customer tables the caller may read (with its rights, row-level security included); LA0I2 for an unknown parent_code';

CREATE FUNCTION allocation.coverage_gaps_geojson(parent_code text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('type', 'FeatureCollection', 'features', coalesce(jsonb_agg(jsonb_build_object(
               'type', 'Feature',
               'geometry', ST_AsGeoJSON(g.geom, 6)::jsonb,
               'properties', jsonb_build_object('kind', g.kind, 'parent', g.parent, 'code', g.code, 'name', g.name,
                                                'area_km2', round(g.area_km2::numeric, 3), 'customers', g.customers,
                                                'keys', g.keys)) ORDER BY g.ord), '[]'))
      FROM (SELECT x.*, row_number() OVER () AS ord FROM allocation.coverage_gaps(parent_code) x) g
$$;
COMMENT ON FUNCTION allocation.coverage_gaps_geojson(text) IS
'coverage_gaps() as a GeoJSON FeatureCollection (kind, parent, code, name, area_km2, customers, keys per feature) for QGIS, a BI map or territory_map_html()';

-- these two run as the caller and call PostGIS: its schema goes on their search_path
-- (known only at CREATE EXTENSION time, as for import_territories in 90_privileges.sql)
DO $$
DECLARE
    v_pg name;
BEGIN
    SELECT n.nspname INTO v_pg FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis';
    EXECUTE format('ALTER FUNCTION allocation.coverage_gaps(text) SET search_path = pg_catalog, %I, pg_temp', v_pg);
    EXECUTE format('ALTER FUNCTION allocation.coverage_gaps_geojson(text) SET search_path = pg_catalog, %I, pg_temp', v_pg);
END
$$;
