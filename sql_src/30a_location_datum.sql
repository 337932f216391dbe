-------------------------------------------------------------------------------
-- Location datum: customer positions captured on Chinese map SDKs
-------------------------------------------------------------------------------
-- Locations from Amap/Gaode or Tencent are GCJ-02, from Baidu BD-09: 100-700 m
-- off WGS 84, enough to put a border dealer in the neighbouring county.  The
-- table declares its column's datum; the engine (src/datum.c, on the write
-- path, no SPI) converts to WGS 84 before the territory lookup.

CREATE FUNCTION allocation.datum_convert(lon double precision, lat double precision,
                                         from_datum text, to_datum text,
                                         OUT lon double precision, OUT lat double precision)
AS 'MODULE_PATHNAME', 'allocation_datum_convert'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION allocation.datum_convert(double precision, double precision, text, text) IS
'Converts a longitude/latitude between the datums wgs84, gcj02 and bd09 exactly as the engine does for a managed table''s locations (the GCJ-02 and BD-09 inverses are iterative: round trip within 1e-6 m over China; GCJ-02 = WGS 84 outside the mainland box)';

CREATE FUNCTION allocation._set_location_datum(tbl regclass, datum text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old allocation.managed_table;
    v_rows bigint;
BEGIN
    IF tbl IS NULL OR datum IS NULL THEN
        RAISE EXCEPTION 'table and datum are required'
            USING ERRCODE = '22004',
                  DETAIL = format('allocation.set_location_datum() was called with a NULL %s.', CASE WHEN tbl IS NULL THEN 'table' ELSE 'datum' END),
                  HINT = 'Call allocation.set_location_datum(''crm.customer'', ''gcj02''); the default datum is wgs84.';
    END IF;
    PERFORM allocation._require_owner(tbl, 'set the location datum of');
    IF datum NOT IN ('wgs84', 'gcj02', 'bd09') THEN
        RAISE EXCEPTION 'unknown location datum "%"', datum
            USING ERRCODE = 'LA017',
                  DETAIL = 'The datum says which map the coordinates of the location column come from.',
                  HINT = 'Use wgs84 (GPS, the default), gcj02 (Amap/Gaode, Tencent, other licensed maps of China) or bd09 (Baidu).';
    END IF;
    SELECT * INTO v_old FROM allocation.managed_table m WHERE m.tbl = _set_location_datum.tbl AND m.active FOR UPDATE;
    IF v_old.id IS NULL THEN
        RAISE EXCEPTION 'table % is not managed', tbl
            USING ERRCODE = 'LA012', DETAIL = 'There is no active allocation.manage() registration for this table.',
                  HINT = 'Call allocation.manage() first.';
    END IF;
    IF v_old.location_column IS NULL THEN
        RAISE EXCEPTION 'table % has no location column', tbl
            USING ERRCODE = 'LA019',
                  DETAIL = 'It was managed without a location column, so there are no coordinates to convert.',
                  HINT = 'Call allocation.unmanage(), then allocation.manage() with the location column, then this function.';
    END IF;
    IF v_old.location_datum = datum THEN
        RETURN;
    END IF;
    UPDATE allocation.managed_table m SET location_datum = datum WHERE m.id = v_old.id;
    EXECUTE format('SELECT count(*) FROM %s c WHERE c.%I IS NOT NULL', tbl, v_old.location_column) INTO v_rows;
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
    VALUES (allocation._actor(), 'config_change', v_old.id, v_old.table_name, 'location datum set',
            jsonb_build_object('table', 'managed_table', 'op', 'update', 'id', v_old.id,
                               'before', jsonb_build_object('location_datum', v_old.location_datum),
                               'after', jsonb_build_object('location_datum', datum),
                               'stored_locations_not_reevaluated', v_rows));
END
$$;
COMMENT ON FUNCTION allocation._set_location_datum(regclass, text) IS 'internal: implementation of allocation.set_location_datum(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.set_location_datum(tbl regclass, datum text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.set_location_datum(regclass, text) IS
'Declares the datum of a managed table''s location column: wgs84 (default), gcj02 (Amap/Gaode, Tencent), bd09 (Baidu); new writes are converted to WGS 84 before the territory lookup, stored customers keep their owners';
