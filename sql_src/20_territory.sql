-------------------------------------------------------------------------------
-- Territory import and inspection
-------------------------------------------------------------------------------

CREATE FUNCTION allocation.import_territories(
    fc jsonb,
    code_property text DEFAULT 'code',
    name_property text DEFAULT 'name',
    parent_property text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f          jsonb;
    n          integer := 0;
    i          integer := 0;
    v_code     text;
    v_name     text;
    v_parent   text;
    v_geom     geometry;
    v_fixed    geometry;
    v_crs      text;
    v_gtype    text;
    v_reason   text;
    v_repaired text[] := '{}';
BEGIN
    IF fc IS NULL OR jsonb_typeof(fc) <> 'object' OR fc->>'type' IS DISTINCT FROM 'FeatureCollection'
       OR jsonb_typeof(fc->'features') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'input is not a GeoJSON FeatureCollection'
            USING ERRCODE = 'LA001',
                  DETAIL = format('Expected an object with "type": "FeatureCollection" and a "features" array, got %s.',
                                  coalesce(left(fc::text, 80), 'NULL')),
                  HINT = 'Export the layer from your GIS as GeoJSON (QGIS: Export > Save Features As > GeoJSON).';
    END IF;

    IF code_property IS NULL OR name_property IS NULL THEN
        RAISE EXCEPTION 'code_property and name_property must not be NULL'
            USING ERRCODE = '22004',
                  DETAIL = 'They name the feature properties holding the territory code and name.',
                  HINT = 'Leave them out to use the defaults ''code'' and ''name''.';
    END IF;

    -- named CRS (GeoJSON 2008 style); absent means WGS 84 (RFC 7946)
    v_crs := fc #>> '{crs,properties,name}';
    IF v_crs IS NOT NULL AND v_crs !~* '(EPSG:+4326|CRS84)$' THEN
        RAISE EXCEPTION 'GeoJSON coordinate reference system % is not WGS 84', v_crs
            USING ERRCODE = 'LA005',
                  DETAIL = 'Territories are stored in EPSG:4326 (longitude/latitude, WGS 84).',
                  HINT = 'Reproject the layer to EPSG:4326 before exporting it.';
    END IF;

    CREATE TEMP TABLE IF NOT EXISTS pg_temp.allocation_import (
        ord int, code text, name text, parent_code text, geom geometry, props jsonb) ON COMMIT DROP;
    TRUNCATE pg_temp.allocation_import;

    FOR f IN SELECT value FROM jsonb_array_elements(fc->'features') LOOP
        i := i + 1;
        IF jsonb_typeof(f) <> 'object' OR f->>'type' IS DISTINCT FROM 'Feature' THEN
            RAISE EXCEPTION 'feature % is not a GeoJSON Feature', i
                USING ERRCODE = 'LA001',
                      DETAIL = format('Feature %s is %s.', i, left(f::text, 80)),
                      HINT = 'Every element of "features" must be an object with "type": "Feature".';
        END IF;
        v_code := f #>> ARRAY['properties', code_property];
        IF v_code IS NULL OR btrim(v_code) = '' THEN
            RAISE EXCEPTION 'feature % has no territory code', i
                USING ERRCODE = 'LA002',
                      DETAIL = format('Property "%s" is missing or empty in feature %s.', code_property, i),
                      HINT = 'Give every feature a unique code, or name the property holding it with code_property.';
        END IF;
        IF f->'geometry' IS NULL OR jsonb_typeof(f->'geometry') = 'null' THEN
            RAISE EXCEPTION 'feature % (%) has no geometry', i, v_code
                USING ERRCODE = 'LA003',
                      DETAIL = format('Feature %s with code %s has a null or missing geometry.', i, v_code),
                      HINT = 'Draw the territory polygon, or remove the feature from the file.';
        END IF;
        v_gtype := f #>> '{geometry,type}';
        IF v_gtype IS NULL OR v_gtype NOT IN ('Polygon', 'MultiPolygon') THEN
            RAISE EXCEPTION 'feature % (%) has a % geometry, not a polygon', i, v_code, coalesce(v_gtype, 'untyped')
                USING ERRCODE = 'LA004',
                      DETAIL = 'Territories must be Polygon or MultiPolygon geometries.',
                      HINT = 'Convert lines or points to polygons in your GIS before exporting.';
        END IF;
        -- PostGIS reads a non-number ordinate as 0: refuse it here
        IF jsonb_path_exists(f->'geometry'->'coordinates',
                             'strict $.** ? (@.type() != "array" && @.type() != "number")') THEN
            RAISE EXCEPTION 'feature % (%) has a malformed geometry', i, v_code
                USING ERRCODE = 'LA001',
                      DETAIL = 'A coordinate is not a number.',
                      HINT = 'Check the coordinates arrays of the feature.';
        END IF;
        BEGIN
            v_geom := ST_Force2D(ST_GeomFromGeoJSON(f->'geometry'));
        EXCEPTION WHEN others THEN
            RAISE EXCEPTION 'feature % (%) has a malformed geometry', i, v_code
                USING ERRCODE = 'LA001', DETAIL = SQLERRM,
                      HINT = 'Check the coordinates arrays of the feature.';
        END;
        IF ST_SRID(v_geom) NOT IN (0, 4326) THEN
            RAISE EXCEPTION 'feature % (%) is in SRID %, not 4326', i, v_code, ST_SRID(v_geom)
                USING ERRCODE = 'LA005',
                      DETAIL = 'Territories are stored in EPSG:4326 (longitude/latitude, WGS 84).',
                      HINT = 'Reproject the layer to EPSG:4326 before exporting it.';
        END IF;
        v_geom := ST_SetSRID(v_geom, 4326);
        IF ST_XMin(v_geom) < -180 OR ST_XMax(v_geom) > 180 OR ST_YMin(v_geom) < -90 OR ST_YMax(v_geom) > 90 THEN
            RAISE EXCEPTION 'feature % (%) has coordinates outside longitude/latitude range', i, v_code
                USING ERRCODE = 'LA005',
                      DETAIL = format('Its extent is %s; EPSG:4326 longitudes lie in [-180, 180] and latitudes in [-90, 90].',
                                      ST_AsText(ST_Envelope(v_geom))),
                      HINT = 'The layer is probably in a projected CRS: reproject it to EPSG:4326 before exporting.';
        END IF;
        IF NOT ST_IsValid(v_geom) THEN
            v_reason := ST_IsValidReason(v_geom);
            v_fixed := ST_CollectionExtract(ST_MakeValid(v_geom), 3);
            IF v_fixed IS NULL OR ST_IsEmpty(v_fixed) OR NOT ST_IsValid(v_fixed) THEN
                RAISE EXCEPTION 'feature % (%) has an invalid polygon that cannot be repaired', i, v_code
                    USING ERRCODE = 'LA008',
                          DETAIL = format('PostGIS reports: %s. ST_MakeValid does not yield a polygon.', v_reason),
                          HINT = 'Fix the geometry in your GIS (QGIS: Vector > Geometry Tools > Check Validity).';
            END IF;
            RAISE NOTICE 'feature % (%) had an invalid polygon and was repaired: %', i, v_code, v_reason;
            v_repaired := v_repaired || v_code;
            v_geom := v_fixed;
        END IF;
        IF ST_IsEmpty(v_geom) THEN
            RAISE EXCEPTION 'feature % (%) has an empty geometry', i, v_code
                USING ERRCODE = 'LA003',
                      DETAIL = format('Feature %s with code %s has an empty polygon.', i, v_code),
                      HINT = 'Draw the territory polygon, or remove the feature from the file.';
        END IF;
        v_name := coalesce(f #>> ARRAY['properties', name_property], v_code);
        v_parent := CASE WHEN parent_property IS NULL THEN NULL
                         ELSE nullif(btrim(f #>> ARRAY['properties', parent_property]), '') END;
        INSERT INTO pg_temp.allocation_import
        VALUES (i, v_code, v_name, v_parent, ST_Multi(v_geom), coalesce(f->'properties', '{}'));
    END LOOP;

    SELECT code INTO v_code FROM pg_temp.allocation_import GROUP BY code HAVING count(*) > 1 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'territory code % appears more than once in the file', v_code
            USING ERRCODE = 'LA007',
                  DETAIL = format('Features %s share the code %s.',
                                  (SELECT string_agg(ord::text, ', ' ORDER BY ord) FROM pg_temp.allocation_import WHERE code = v_code), v_code),
                  HINT = 'Territory codes must be unique; fix the duplicates in the source layer.';
    END IF;

    SELECT i2.parent_code, i2.code INTO v_parent, v_code
      FROM pg_temp.allocation_import i2
     WHERE i2.parent_code IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_temp.allocation_import p WHERE p.code = i2.parent_code)
       AND NOT EXISTS (SELECT 1 FROM allocation.territory t WHERE t.code = i2.parent_code)
     ORDER BY i2.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'territory % names unknown parent %', v_code, v_parent
            USING ERRCODE = 'LA006',
                  DETAIL = format('No territory with code %s exists in the database or in the file.', v_parent),
                  HINT = 'Import the parent territories first, or include them in the same file.';
    END IF;

    -- upsert geometry and names; parents second, so any order in the file works
    INSERT INTO allocation.territory AS t (code, name, geom, properties)
    SELECT code, name, geom, props FROM pg_temp.allocation_import ORDER BY ord
    ON CONFLICT (code) DO UPDATE
       SET name = EXCLUDED.name, geom = EXCLUDED.geom, properties = EXCLUDED.properties;
    GET DIAGNOSTICS n = ROW_COUNT;

    IF parent_property IS NOT NULL THEN
        UPDATE allocation.territory t
           SET parent_id = p.id
          FROM pg_temp.allocation_import i2
          LEFT JOIN allocation.territory p ON p.code = i2.parent_code
         WHERE t.code = i2.code AND t.parent_id IS DISTINCT FROM p.id;
    END IF;

    -- (each territory written is audited by the configuration triggers of allocation.territory)
    DROP TABLE pg_temp.allocation_import;
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation.import_territories(jsonb, text, text, text) IS
'Loads a GeoJSON FeatureCollection into allocation.territory, upserting by code; returns the number of features loaded. All-or-nothing: bad input raises a specific SQLSTATE (LA001-LA008) and leaves existing territories untouched';

-- Territories that overlap each other (a manager's clean-up list).
CREATE VIEW allocation.territory_overlap AS
SELECT a.id AS territory_a, a.code AS code_a, b.id AS territory_b, b.code AS code_b,
       ST_Area(ST_Intersection(a.geom, b.geom)::geography) / 1e6 AS overlap_km2,
       CASE WHEN a.priority > b.priority OR (a.priority = b.priority AND a.id < b.id)
            THEN a.code ELSE b.code END AS wins
  FROM allocation.territory a
  JOIN allocation.territory b ON a.id < b.id AND a.geom && b.geom
 WHERE ST_Relate(a.geom, b.geom, '2********')
   AND NOT EXISTS (  -- a parent and its descendants are expected to overlap
        WITH RECURSIVE up AS (
            SELECT t.id, t.parent_id FROM allocation.territory t WHERE t.id = b.id
            UNION SELECT t.id, t.parent_id FROM allocation.territory t JOIN up ON t.id = up.parent_id)
        SELECT 1 FROM up WHERE up.parent_id = a.id)
   AND NOT EXISTS (
        WITH RECURSIVE up AS (
            SELECT t.id, t.parent_id FROM allocation.territory t WHERE t.id = a.id
            UNION SELECT t.id, t.parent_id FROM allocation.territory t JOIN up ON t.id = up.parent_id)
        SELECT 1 FROM up WHERE up.parent_id = b.id);
COMMENT ON VIEW allocation.territory_overlap IS 'Pairs of territories (not ancestor/descendant) whose interiors overlap, with the overlap area and which one wins (priority, then lowest id)';

-- The territory a point falls in (the same answer as the C index): ST_Covers, priority, lowest id.
CREATE FUNCTION allocation.territory_at(pt geometry)
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.id FROM allocation.territory t
     WHERE t.geom && ST_Transform(pt, 4326) AND ST_Covers(t.geom, ST_Transform(pt, 4326))
     ORDER BY t.priority DESC, t.id LIMIT 1
$$;
COMMENT ON FUNCTION allocation.territory_at(geometry) IS 'The territory covering a point (border points are inside): highest priority, then lowest id; NULL outside every territory';
