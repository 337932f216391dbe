-------------------------------------------------------------------------------
-- Territory import and inspection
-------------------------------------------------------------------------------

-- The features of a GeoJSON text, one jsonb at a time (src/geojson.c): row 0 is
-- the document without its features, rows 1..n the features. Memory stays at the
-- text plus work_mem (the rows spill to disk beyond it), so a whole country's
-- counties import in one call.
CREATE FUNCTION allocation.geojson_features(geojson text)
RETURNS TABLE (feature integer, value jsonb)
AS 'MODULE_PATHNAME', 'allocation_geojson_features'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION allocation.geojson_features(text) IS
'Splits a GeoJSON text without parsing it whole: row 0 = the document without its features (for a FeatureCollection "features" holds their number), rows 1..n = each element of "features" as jsonb, in file order; not JSON: LA001';

-- The import itself. fc is text so that a file of any size (pg_read_file()
-- returns text) is split feature by feature; the jsonb overload below calls it.
-- Each feature is checked in its own block: with on_invalid => 'skip' a feature
-- that cannot be stored is left out and reported, with 'error' (the default) its
-- error aborts the whole import (all or nothing). The block writes nothing (the
-- staging INSERT follows it), so a skipped feature costs no transaction id.
CREATE FUNCTION allocation.import_territories(
    fc text,
    code_property text DEFAULT 'code',
    name_property text DEFAULT 'name',
    parent_property text DEFAULT NULL,
    on_invalid text DEFAULT 'error')
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET jit = off   -- a few thousand rows at most per statement: JIT compilation would cost more than it saves
AS $$
DECLARE
    f          jsonb;
    n          integer := 0;
    i          integer;
    v_total    integer := 0;
    v_code     text;
    v_name     text;
    v_parent   text;
    v_geom     geometry;
    v_fixed    geometry;
    v_crsj     jsonb;
    v_crsname  text;
    v_srid     integer;
    v_fc_srid  integer := 4326;      -- the collection's CRS (absent = WGS 84, RFC 7946)
    v_fc_crs   text;
    v_gtype    text;
    v_reason   text;
    v_state    text;
    v_msg      text;
    v_ok       boolean;
    v_report   jsonb := '[]';
    v_skipped  integer := 0;
    v_moved    integer := 0;
BEGIN
    IF on_invalid IS NULL OR on_invalid NOT IN ('error', 'skip') THEN
        RAISE EXCEPTION 'on_invalid must be ''error'' or ''skip'', not %', coalesce('''' || on_invalid || '''', 'NULL')
            USING ERRCODE = 'LA0I0',
                  DETAIL = 'With ''error'' the first feature that cannot be stored refuses the whole file; with ''skip'' such features are left out and reported.',
                  HINT = 'Call import_territories(..., on_invalid => ''skip'') and read allocation.import_report() afterwards.';
    END IF;
    IF fc IS NULL THEN
        RAISE EXCEPTION 'input is not a GeoJSON FeatureCollection'
            USING ERRCODE = 'LA001',
                  DETAIL = 'Expected an object with "type": "FeatureCollection" and a "features" array, got NULL.',
                  HINT = 'Export the layer from your GIS as GeoJSON (QGIS: Export > Save Features As > GeoJSON).';
    END IF;
    IF code_property IS NULL OR name_property IS NULL THEN
        RAISE EXCEPTION 'code_property and name_property must not be NULL'
            USING ERRCODE = '22004',
                  DETAIL = 'They name the feature properties holding the territory code and name.',
                  HINT = 'Leave them out to use the defaults ''code'' and ''name''.';
    END IF;

    CREATE TEMP TABLE IF NOT EXISTS pg_temp.allocation_import (
        ord int, code text, name text, parent_code text, geom geometry, props jsonb) ON COMMIT DROP;
    TRUNCATE pg_temp.allocation_import;
    -- the features, split once into a temporary table (on disk beyond temp_buffers), so
    -- that the loop below holds one feature at a time and the input text only once: a
    -- FOR loop over geojson_features(fc) itself would keep a copy of fc in its cursor's
    -- parameters (and a custom plan another one as a constant; hence force_generic_plan)
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.allocation_import_src (feature int, value jsonb) ON COMMIT DROP;
    ALTER TABLE pg_temp.allocation_import_src ALTER COLUMN value SET STORAGE EXTERNAL;  -- no compression
    TRUNCATE pg_temp.allocation_import_src;
    INSERT INTO pg_temp.allocation_import_src SELECT g.feature, g.value FROM allocation.geojson_features(fc) g;

    FOR i, f IN SELECT s.feature, s.value FROM pg_temp.allocation_import_src s ORDER BY s.feature LOOP
        v_code := NULL;
        BEGIN
            IF i = 0 THEN
                -- the collection: its type, its features, its CRS (errors here end the import)
                IF jsonb_typeof(f) <> 'object' OR f->>'type' IS DISTINCT FROM 'FeatureCollection'
                   OR jsonb_typeof(f->'features') IS DISTINCT FROM 'number' THEN
                    RAISE EXCEPTION 'input is not a GeoJSON FeatureCollection'
                        USING ERRCODE = 'LA001',
                              DETAIL = format('Expected an object with "type": "FeatureCollection" and a "features" array, got %s.',
                                              left(f::text, 80)),
                              HINT = 'Export the layer from your GIS as GeoJSON (QGIS: Export > Save Features As > GeoJSON).';
                END IF;
                v_total := (f->>'features')::integer;
                v_crsj := f->'crs';
            ELSE
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
                v_crsj := f #> '{geometry,crs}';    -- a geometry may name its own CRS (GeoJSON 2008)
            END IF;

            -- a named CRS: any EPSG code PostGIS knows (spatial_ref_sys), or CRS84
            v_srid := NULL;
            IF v_crsj IS NOT NULL THEN
                v_crsname := v_crsj #>> '{properties,name}';
                IF v_crsname ~* '(^|:)CRS:?84$' THEN
                    v_srid := 4326;
                ELSE
                    SELECT s.srid INTO v_srid FROM spatial_ref_sys s
                     WHERE s.auth_name = 'EPSG'
                       AND s.auth_srid = substring(v_crsname FROM '(?i)EPSG[^0-9]*(?:[0-9.]+[^0-9]+)?([0-9]{1,9})$')::integer
                     ORDER BY s.srid LIMIT 1;
                END IF;
                IF v_srid IS NULL THEN
                    RAISE EXCEPTION '%coordinate reference system % is unknown',
                                    CASE WHEN i > 0 THEN format('feature %s (%s): ', i, v_code) ELSE '' END,
                                    coalesce('"' || v_crsname || '"', v_crsj::text)
                        USING ERRCODE = 'LA0I1',
                              DETAIL = 'A GeoJSON "crs" must be named by an EPSG code that PostGIS knows (table spatial_ref_sys), e.g. "urn:ogc:def:crs:EPSG::4490" or "EPSG:3857", or be CRS84.',
                              HINT = 'Export the layer with a known EPSG code (QGIS: Export > Save Features As > CRS), or reproject it to EPSG:4326.';
                END IF;
            END IF;
            IF i = 0 THEN
                v_fc_srid := coalesce(v_srid, 4326);
                v_fc_crs := v_crsname;
                IF v_fc_srid <> 4326 THEN
                    RAISE NOTICE 'the collection is in EPSG:% ("%"): its features are transformed to EPSG:4326',
                                 v_fc_srid, v_fc_crs;
                END IF;
                CONTINUE;
            END IF;
            v_srid := coalesce(v_srid, v_fc_srid);

            -- PostGIS reads a non-number ordinate as 0: refuse it here
            IF jsonb_path_exists(f->'geometry'->'coordinates',
                                 'strict $.** ? (@.type() != "array" && @.type() != "number")') THEN
                RAISE EXCEPTION 'feature % (%) has a malformed geometry', i, v_code
                    USING ERRCODE = 'LA001',
                          DETAIL = 'A coordinate is not a number.',
                          HINT = 'Check the coordinates arrays of the feature.';
            END IF;
            BEGIN
                v_geom := ST_SetSRID(ST_Force2D(ST_GeomFromGeoJSON((f->'geometry') - 'crs')), v_srid);
            EXCEPTION WHEN others THEN
                RAISE EXCEPTION 'feature % (%) has a malformed geometry', i, v_code
                    USING ERRCODE = 'LA001', DETAIL = SQLERRM,
                          HINT = 'Check the coordinates arrays of the feature.';
            END;
            IF v_srid <> 4326 AND NOT ST_IsEmpty(v_geom) THEN
                BEGIN
                    v_geom := ST_Transform(v_geom, 4326);
                EXCEPTION WHEN others THEN
                    RAISE EXCEPTION 'feature % (%) cannot be transformed from EPSG:% to EPSG:4326', i, v_code, v_srid
                        USING ERRCODE = 'LA005', DETAIL = SQLERRM,
                              HINT = 'Check that the coordinates are in the CRS the file names.';
                END;
                IF v_srid <> v_fc_srid THEN
                    v_report := v_report || jsonb_build_object('feature', i, 'code', v_code, 'action', 'transformed',
                                    'reason', format('from EPSG:%s (its geometry''s own CRS) to EPSG:4326', v_srid));
                END IF;
                v_moved := v_moved + 1;
            END IF;
            v_geom := ST_SetSRID(v_geom, 4326);
            IF ST_XMin(v_geom) < -180 OR ST_XMax(v_geom) > 180 OR ST_YMin(v_geom) < -90 OR ST_YMax(v_geom) > 90 THEN
                RAISE EXCEPTION 'feature % (%) has coordinates outside longitude/latitude range', i, v_code
                    USING ERRCODE = 'LA005',
                          DETAIL = format('Its extent is %s; EPSG:4326 longitudes lie in [-180, 180] and latitudes in [-90, 90].',
                                          ST_AsText(ST_Envelope(v_geom))),
                          HINT = 'The layer is probably in a projected CRS: name it in the file''s "crs" member (e.g. "EPSG:3857") or reproject it to EPSG:4326.';
            END IF;
            IF ST_IsEmpty(v_geom) THEN
                RAISE EXCEPTION 'feature % (%) has an empty geometry', i, v_code
                    USING ERRCODE = 'LA003',
                          DETAIL = format('Feature %s with code %s has an empty polygon.', i, v_code),
                          HINT = 'Draw the territory polygon, or remove the feature from the file (or import with on_invalid => ''skip'').';
            END IF;
            BEGIN
                v_ok := ST_IsValid(v_geom);
                IF NOT v_ok THEN
                    v_reason := ST_IsValidReason(v_geom);
                    v_fixed := ST_CollectionExtract(ST_MakeValid(v_geom), 3);
                END IF;
            EXCEPTION WHEN others THEN   -- GEOS gives up on some broken rings
                v_ok := false;
                v_reason := SQLERRM;
                v_fixed := NULL;
            END;
            IF NOT v_ok THEN
                IF v_fixed IS NULL OR ST_IsEmpty(v_fixed) OR NOT ST_IsValid(v_fixed) THEN
                    RAISE EXCEPTION 'feature % (%) has an invalid polygon that cannot be repaired', i, v_code
                        USING ERRCODE = 'LA008',
                              DETAIL = format('PostGIS reports: %s. ST_MakeValid does not yield a polygon.', v_reason),
                              HINT = 'Fix the geometry in your GIS (QGIS: Vector > Geometry Tools > Check Validity).';
                END IF;
                RAISE NOTICE 'feature % (%) had an invalid polygon and was repaired: %', i, v_code, v_reason;
                v_report := v_report || jsonb_build_object('feature', i, 'code', v_code, 'action', 'repaired', 'reason', v_reason);
                v_geom := v_fixed;
            END IF;
        EXCEPTION WHEN others THEN
            IF on_invalid = 'error' OR i = 0 THEN
                RAISE;
            END IF;
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            IF v_state NOT LIKE 'LA%' THEN
                RAISE;   -- not a property of the feature (out of memory, ...): never skipped
            END IF;
            RAISE NOTICE 'feature % skipped (%): %', i, v_state, v_msg;
            v_report := v_report || jsonb_build_object('feature', i, 'code', v_code, 'action', 'skipped',
                                                       'sqlstate', v_state, 'reason', v_msg);
            v_skipped := v_skipped + 1;
            CONTINUE;
        END;
        v_name := coalesce(f #>> ARRAY['properties', name_property], v_code);
        v_parent := CASE WHEN parent_property IS NULL THEN NULL
                         ELSE nullif(btrim(f #>> ARRAY['properties', parent_property]), '') END;
        INSERT INTO pg_temp.allocation_import
        VALUES (i, v_code, v_name, v_parent, ST_Multi(v_geom), coalesce(f->'properties', '{}'));
    END LOOP;

    -- the same code twice: with skip, every feature carrying it is left out (which one is right is unknown)
    FOR v_code, v_msg IN
        SELECT code, string_agg(ord::text, ', ' ORDER BY ord) FROM pg_temp.allocation_import
         GROUP BY code HAVING count(*) > 1 ORDER BY min(ord) LOOP
        IF on_invalid = 'error' THEN
            RAISE EXCEPTION 'territory code % appears more than once in the file', v_code
                USING ERRCODE = 'LA007',
                      DETAIL = format('Features %s share the code %s.', v_msg, v_code),
                      HINT = 'Territory codes must be unique; fix the duplicates in the source layer.';
        END IF;
        SELECT v_report || jsonb_agg(jsonb_build_object('feature', ord, 'code', code, 'action', 'skipped', 'sqlstate', 'LA007',
                                     'reason', format('territory code %s appears more than once in the file (features %s)', code, v_msg))
                                     ORDER BY ord)
          INTO v_report FROM pg_temp.allocation_import WHERE code = v_code;
        DELETE FROM pg_temp.allocation_import WHERE code = v_code;
        GET DIAGNOSTICS n = ROW_COUNT;
        v_skipped := v_skipped + n;
        RAISE NOTICE 'features % skipped (LA007): territory code % appears more than once', v_msg, v_code;
    END LOOP;

    -- parents: in the file or already stored; with skip, a feature whose parent is
    -- unknown (or was skipped) is left out, and so on down the tree
    LOOP
        SELECT i2.ord, i2.parent_code, i2.code INTO i, v_parent, v_code
          FROM pg_temp.allocation_import i2
         WHERE i2.parent_code IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM pg_temp.allocation_import p WHERE p.code = i2.parent_code)
           AND NOT EXISTS (SELECT 1 FROM allocation.territory t WHERE t.code = i2.parent_code)
         ORDER BY i2.ord LIMIT 1;
        EXIT WHEN NOT FOUND;
        IF on_invalid = 'error' THEN
            RAISE EXCEPTION 'territory % names unknown parent %', v_code, v_parent
                USING ERRCODE = 'LA006',
                      DETAIL = format('No territory with code %s exists in the database or in the file.', v_parent),
                      HINT = 'Import the parent territories first, or include them in the same file.';
        END IF;
        v_msg := format('territory %s names unknown parent %s', v_code, v_parent);
        RAISE NOTICE 'feature % skipped (LA006): %', i, v_msg;
        v_report := v_report || jsonb_build_object('feature', i, 'code', v_code, 'action', 'skipped',
                                                   'sqlstate', 'LA006', 'reason', v_msg);
        v_skipped := v_skipped + 1;
        DELETE FROM pg_temp.allocation_import WHERE ord = i;
    END LOOP;

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
    DROP TABLE pg_temp.allocation_import, pg_temp.allocation_import_src;
    IF v_fc_srid <> 4326 THEN
        v_report := jsonb_build_array(jsonb_build_object('feature', NULL, 'code', NULL, 'action', 'transformed',
                        'reason', format('%s features from %s (EPSG:%s) to EPSG:4326', v_moved, v_fc_crs, v_fc_srid)))
                    || v_report;
    END IF;
    IF v_skipped > 0 THEN
        RAISE NOTICE 'imported % of % features, skipped %: SELECT * FROM allocation.import_report()', n, v_total, v_skipped;
    END IF;
    -- the report of this session's last import (a session setting: rolled back with the import)
    PERFORM set_config('allocation_import.report',
                       jsonb_build_object('features', v_total, 'imported', n, 'skipped', v_skipped,
                                          'on_invalid', on_invalid, 'rows', v_report)::text, false);
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation.import_territories(text, text, text, text, text) IS
'Loads a GeoJSON FeatureCollection (text of any size, split feature by feature) into allocation.territory, upserting by code; returns the number of features loaded. Any EPSG CRS PostGIS knows is transformed to EPSG:4326. on_invalid = error (default): all or nothing, bad input raises a specific SQLSTATE (LA001-LA008, LA0I1) and leaves existing territories untouched; skip: features that cannot be stored are left out and listed by allocation.import_report()';

CREATE FUNCTION allocation.import_territories(
    fc jsonb,
    code_property text DEFAULT 'code',
    name_property text DEFAULT 'name',
    parent_property text DEFAULT NULL,
    on_invalid text DEFAULT 'error')
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT allocation.import_territories(fc::text, code_property, name_property, parent_property, on_invalid)
$$;
COMMENT ON FUNCTION allocation.import_territories(jsonb, text, text, text, text) IS
'import_territories() for a jsonb FeatureCollection (the same import: see the text form, which also takes files above jsonb''s 255 MB limit)';

-- What the session's last import_territories() left out, repaired or transformed.
CREATE FUNCTION allocation.import_report()
RETURNS TABLE (feature integer, code text, action text, sqlstate text, reason text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (r->>'feature')::integer, r->>'code', r->>'action', r->>'sqlstate', r->>'reason'
      FROM jsonb_array_elements(coalesce(nullif(current_setting('allocation_import.report', true), ''), '{}')::jsonb -> 'rows') r
$$;
COMMENT ON FUNCTION allocation.import_report() IS
'The report of this session''s last import_territories(): one row per feature skipped (feature index in the file, code, SQLSTATE, reason), repaired or transformed from its own CRS, and a first row (feature NULL) when the collection was transformed to EPSG:4326; empty after an import with nothing to report';

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
