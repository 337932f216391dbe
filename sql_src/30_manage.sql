-------------------------------------------------------------------------------
-- Attaching the engine to an existing customer table
-------------------------------------------------------------------------------

-- Column checks shared by manage() and the DDL event trigger.
CREATE FUNCTION allocation._column_attnum(tbl regclass, col name, what text)
RETURNS smallint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n smallint;
BEGIN
    SELECT a.attnum INTO n FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
    IF n IS NULL THEN
        RAISE EXCEPTION 'column "%" of table % does not exist', col, tbl
            USING ERRCODE = '42703',
                  DETAIL = format('The %s column was given as "%s".', what, col),
                  HINT = format('Pick one of: %s.', (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                                                      FROM pg_catalog.pg_attribute a
                                                     WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped));
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation._column_attnum(regclass, name, text) IS 'internal: attnum of a column, or a clear error naming the columns that exist';

-- The key and attribute columns must be of built-in types (arrays and domains of them
-- included): the engine evaluates casts and comparisons on them as the extension owner,
-- and only built-in types are safe from user-defined casts and operators.
CREATE FUNCTION allocation._check_column_types(tbl regclass, key_column name, attr_columns text[])
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    c name;
    t oid;
    b oid;
BEGIN
    FOREACH c IN ARRAY array_prepend(key_column::text, coalesce(attr_columns, '{}'))::name[] LOOP
        SELECT a.atttypid INTO t FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = tbl AND a.attname = c AND NOT a.attisdropped;
        CONTINUE WHEN t IS NULL;
        b := t;
        LOOP   -- domains down to their base type, arrays to their element type
            SELECT CASE WHEN ty.typtype = 'd' THEN ty.typbasetype
                        WHEN ty.typcategory = 'A' AND ty.typelem <> 0 THEN ty.typelem END
              INTO t FROM pg_catalog.pg_type ty WHERE ty.oid = b;
            EXIT WHEN t IS NULL;
            b := t;
        END LOOP;
        IF b >= 16384 THEN
            RAISE EXCEPTION 'column "%" of % has the non-built-in type %', c, tbl, format_type(b, NULL)
                USING ERRCODE = 'LA016',
                      DETAIL = 'The key and the mapped attribute columns must be of built-in types (text, varchar, integer, bigint, numeric, timestamptz, ...), arrays or domains of them.',
                      HINT = 'Map a column of a built-in type (for example a text copy of the value).';
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._check_column_types(regclass, name, text[]) IS 'internal: refuses key and attribute columns of types that are not built in';

CREATE FUNCTION allocation._manage(
    tbl regclass,
    key_column name,
    location_column name,
    owner_column name,
    attributes jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    known constant text[] := ARRAY['tier', 'crop', 'business_type', 'tags', 'stage', 'name', 'phone',
                                   'credit_code', 'last_contact', 'expected_output', 'parent'];
    v_kind   char;
    v_type   oid;
    v_typmod integer;
    v_attnum smallint;
    v_attnums jsonb := '{}';
    v_logical text;
    v_col    text;
    v_id     integer;
    v_name   text;
    v_bad    text;
    v_count  bigint;
    v_postgis name;
    v_ptype  text;
BEGIN
    IF tbl IS NULL OR key_column IS NULL OR owner_column IS NULL THEN
        RAISE EXCEPTION 'table, key column and owner column are required'
            USING ERRCODE = '22004',
                  DETAIL = 'allocation.manage() was called with a NULL table, key column or owner column.',
                  HINT = 'Call allocation.manage(''crm.customer'', ''id'', ''location'', ''owner_id'').';
    END IF;
    PERFORM allocation._require_owner(tbl, 'manage');
    SELECT c.relkind, format('%I.%I', n.nspname, c.relname) INTO v_kind, v_name
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = tbl AND c.relpersistence = 't') THEN
        RAISE EXCEPTION 'temporary table % cannot be managed', tbl
            USING ERRCODE = 'LA010',
                  DETAIL = 'A temporary table disappears at the end of the session without notice, leaving the registry open.',
                  HINT = 'Manage a permanent table.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = tbl AND c.relispartition) THEN
        RAISE EXCEPTION 'partition % cannot be managed', tbl
            USING ERRCODE = 'LA010',
                  DETAIL = 'Rows inserted through the partitioned parent would not find the mapping.',
                  HINT = format('Manage the partitioned table: allocation.manage(%L, ...).',
                                (SELECT a::regclass::text FROM pg_catalog.pg_partition_ancestors(tbl) a
                                  WHERE NOT (SELECT c.relispartition FROM pg_catalog.pg_class c WHERE c.oid = a)));
    END IF;
    IF v_kind = 'p' AND EXISTS (SELECT 1 FROM pg_catalog.pg_partition_tree(tbl) t
                                  JOIN pg_catalog.pg_class c ON c.oid = t.relid WHERE c.relkind NOT IN ('r', 'p')) THEN
        RAISE EXCEPTION 'partitioned table % has a partition that is not an ordinary table', tbl
            USING ERRCODE = 'LA010',
                  DETAIL = format('Partition %s has relkind %s; the engine''s triggers need ordinary tables.',
                                  (SELECT min(t.relid::regclass::text) FROM pg_catalog.pg_partition_tree(tbl) t
                                     JOIN pg_catalog.pg_class c ON c.oid = t.relid WHERE c.relkind NOT IN ('r', 'p')),
                                  (SELECT min(c.relkind::text) FROM pg_catalog.pg_partition_tree(tbl) t
                                     JOIN pg_catalog.pg_class c ON c.oid = t.relid WHERE c.relkind NOT IN ('r', 'p'))),
                  HINT = 'Detach the foreign partitions, or manage an ordinary table.';
    END IF;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', tbl
            USING ERRCODE = 'LA010',
                  DETAIL = format('Relation %s has relkind %s; only ordinary tables can be managed.', tbl, v_kind),
                  HINT = 'Manage the base table behind the view.';
    END IF;
    IF v_name LIKE 'allocation.%' THEN
        RAISE EXCEPTION 'the extension''s own tables cannot be managed'
            USING ERRCODE = 'LA010', DETAIL = format('%s belongs to the allocation extension.', v_name),
                  HINT = 'Manage your customer table.';
    END IF;
    -- no writes slip between registering the existing rows and installing the triggers
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', tbl);
    IF EXISTS (SELECT 1 FROM allocation.managed_table m WHERE m.tbl = _manage.tbl AND m.active) THEN
        RAISE EXCEPTION 'table % is already managed', tbl
            USING ERRCODE = 'LA011',
                  DETAIL = 'allocation.manage() was already called for this table.',
                  HINT = 'Call allocation.unmanage() first to change the mapping.';
    END IF;

    -- key: one column with a unique, non-partial index of its own; a partitioned table's
    -- unique index must also hold the partition columns (PRIMARY KEY (id, province)):
    -- then the key comes first and the engine checks it across partitions (partition.c)
    v_attnum := allocation._column_attnum(tbl, key_column, 'key');
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                    WHERE i.indrelid = tbl AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
                      AND (i.indnkeyatts = 1 OR v_kind = 'p') AND i.indkey[0] = v_attnum) THEN
        RAISE EXCEPTION 'key column "%" of % is not unique', key_column, tbl
            USING ERRCODE = 'LA013',
                  DETAIL = CASE WHEN v_kind = 'p'
                                THEN 'The key of a partitioned table must be the first column of a primary key or unique, non-partial index (which also holds the partition columns).'
                                ELSE 'The key must be a single column with a primary key or a unique, non-partial index.' END,
                  HINT = CASE WHEN v_kind = 'p'
                              THEN format('ALTER TABLE %s ADD PRIMARY KEY (%I, <partition columns>);', tbl, key_column)
                              ELSE format('ALTER TABLE %s ADD UNIQUE (%I);', tbl, key_column) END;
    END IF;
    IF v_kind = 'p' THEN
        -- unique with the partition columns only: one row per key in the whole table first
        EXECUTE format('SELECT min(k), count(*) FROM (SELECT c.%1$I::text AS k FROM %2$s c GROUP BY 1 HAVING count(*) > 1) d',
                       key_column, tbl) INTO v_bad, v_count;
        IF v_count > 0 THEN
            RAISE EXCEPTION '% key(s) of % occur in more than one row', v_count, tbl
                USING ERRCODE = 'LA013',
                      DETAIL = format('For example key %s; the engine needs one row per key across all partitions.', v_bad),
                      HINT = 'Merge or renumber those customers first.';
        END IF;
    END IF;
    v_attnums := v_attnums || jsonb_build_object('key', v_attnum);

    -- location: a PostGIS geometry holding points
    IF location_column IS NOT NULL THEN
        v_attnum := allocation._column_attnum(tbl, location_column, 'location');
        SELECT a.atttypid, a.atttypmod INTO v_type, v_typmod FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = tbl AND a.attnum = v_attnum;
        -- (runs as the extension owner: PostGIS is reached by its schema, never by search_path)
        SELECT n.nspname INTO v_postgis FROM pg_catalog.pg_extension e
          JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis';
        IF v_typmod >= 0 AND v_type = (SELECT t.oid FROM pg_catalog.pg_type t
                                        WHERE t.typname = 'geometry' AND t.typnamespace = v_postgis::regnamespace) THEN
            EXECUTE format('SELECT %I.postgis_typmod_type($1)', v_postgis) INTO v_ptype USING v_typmod;
        END IF;
        IF v_type IS DISTINCT FROM (SELECT t.oid FROM pg_catalog.pg_type t
                                     WHERE t.typname = 'geometry' AND t.typnamespace = v_postgis::regnamespace)
           OR (v_typmod >= 0 AND v_ptype NOT IN ('Point', 'Geometry')) THEN
            RAISE EXCEPTION 'location column "%" of % is not a PostGIS point column', location_column, tbl
                USING ERRCODE = 'LA014',
                      DETAIL = format('Its type is %s.', format_type(v_type, v_typmod)),
                      HINT = 'Use a geometry(Point, 4326) column (ALTER TABLE ... ADD COLUMN location geometry(Point, 4326)).';
        END IF;
        v_attnums := v_attnums || jsonb_build_object('location', v_attnum);
    END IF;

    -- owner: holds a rep id
    v_attnum := allocation._column_attnum(tbl, owner_column, 'owner');
    SELECT a.atttypid INTO v_type FROM pg_catalog.pg_attribute a WHERE a.attrelid = tbl AND a.attnum = v_attnum;
    IF v_type NOT IN ('bigint'::regtype, 'integer'::regtype) THEN
        RAISE EXCEPTION 'owner column "%" of % cannot hold a rep id', owner_column, tbl
            USING ERRCODE = 'LA015',
                  DETAIL = format('Its type is %s; rep ids are bigint.', format_type(v_type, NULL)),
                  HINT = format('ALTER TABLE %s ALTER COLUMN %I TYPE bigint USING ...;', tbl, owner_column);
    END IF;
    v_attnums := v_attnums || jsonb_build_object('owner', v_attnum);

    -- attributes: logical name -> column
    IF attributes IS NULL OR jsonb_typeof(attributes) <> 'object' THEN
        RAISE EXCEPTION 'attributes must be a JSON object'
            USING ERRCODE = 'LA016',
                  DETAIL = format('Got %s.', coalesce(attributes::text, 'NULL')),
                  HINT = 'Map logical names to columns, e.g. {"tier": "customer_tier", "crop": "main_crop"}.';
    END IF;
    FOR v_logical, v_col IN SELECT key, value #>> '{}' FROM jsonb_each(attributes) LOOP
        IF NOT v_logical = ANY (known) THEN
            RAISE EXCEPTION 'unknown attribute "%"', v_logical
                USING ERRCODE = 'LA016',
                      DETAIL = format('The attributes object maps "%s", which the engine does not know.', v_logical),
                      HINT = format('Known attributes: %s.', array_to_string(known, ', '));
        END IF;
        IF v_col IS NULL OR jsonb_typeof(attributes -> v_logical) <> 'string' THEN
            RAISE EXCEPTION 'attribute "%" must name a column', v_logical
                USING ERRCODE = 'LA016', DETAIL = format('Got %s.', attributes -> v_logical),
                      HINT = 'Give the column name as a JSON string.';
        END IF;
        v_attnum := allocation._column_attnum(tbl, v_col::name, format('%s attribute', v_logical));
        IF v_logical = 'tags' THEN
            SELECT a.atttypid INTO v_type FROM pg_catalog.pg_attribute a WHERE a.attrelid = tbl AND a.attnum = v_attnum;
            IF v_type NOT IN ('text[]'::regtype, 'varchar[]'::regtype) THEN
                RAISE EXCEPTION 'tags column "%" of % is not a text array', v_col, tbl
                    USING ERRCODE = 'LA016', DETAIL = format('Its type is %s.', format_type(v_type, NULL)),
                          HINT = 'Map tags to a text[] column.';
            END IF;
        END IF;
        IF v_logical = 'parent' THEN
            -- the parent is found by the key's unique index: it must be a value of the key's type
            SELECT a.atttypid INTO v_type FROM pg_catalog.pg_attribute a WHERE a.attrelid = tbl AND a.attnum = v_attnum;
            IF v_type IS DISTINCT FROM (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                                         WHERE a.attrelid = tbl AND a.attname = key_column AND NOT a.attisdropped) THEN
                RAISE EXCEPTION 'parent column "%" of % does not have the key column''s type', v_col, tbl
                    USING ERRCODE = 'LA016',
                          DETAIL = format('Its type is %s; the key column %I is %s.', format_type(v_type, NULL), key_column,
                                          (SELECT format_type(a.atttypid, NULL) FROM pg_catalog.pg_attribute a
                                            WHERE a.attrelid = tbl AND a.attname = key_column AND NOT a.attisdropped)),
                          HINT = 'The parent column holds the key of the parent customer (a county distributor''s id).';
            END IF;
        END IF;
        v_attnums := v_attnums || jsonb_build_object(v_logical, v_attnum);
    END LOOP;

    -- the engine reads these columns with its owner's rights: only built-in types (no user casts)
    PERFORM allocation._check_column_types(tbl, key_column,
                                           (SELECT array_agg(x.value) FROM jsonb_each_text(attributes) x));

    EXECUTE format('SELECT count(*) FROM %s c WHERE c.%I IS NULL', tbl, key_column) INTO v_count;
    IF v_count > 0 THEN
        RAISE EXCEPTION '% row(s) of % have a NULL key', v_count, tbl
            USING ERRCODE = 'LA063',
                  DETAIL = format('Column %I is the key; every customer needs one to be registered.', key_column),
                  HINT = format('Give those rows a key, then ALTER TABLE %s ALTER COLUMN %I SET NOT NULL.', tbl, key_column);
    END IF;

    -- existing owners must be known reps
    EXECUTE format('SELECT min(%1$I)::text, count(*) FROM %2$s c WHERE %1$I IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM allocation.rep r WHERE r.id = c.%1$I)', owner_column, tbl)
       INTO v_bad, v_count;
    IF v_count > 0 THEN
        RAISE EXCEPTION '% row(s) of % have an owner that is not a rep', v_count, tbl
            USING ERRCODE = 'LA020',
                  DETAIL = format('For example owner %s does not exist in allocation.rep.', v_bad),
                  HINT = 'Create the missing reps (or clear those owners) before calling allocation.manage().';
    END IF;

    UPDATE allocation.managed_table m
       SET active = true, key_column = _manage.key_column, location_column = _manage.location_column,
           owner_column = _manage.owner_column, attributes = _manage.attributes, attnums = v_attnums,
           managed_since = now(), table_name = v_name, location_datum = 'wgs84'
     WHERE m.tbl = _manage.tbl
    RETURNING m.id INTO v_id;
    IF v_id IS NULL THEN
        INSERT INTO allocation.managed_table (tbl, key_column, location_column, owner_column, attributes, attnums, table_name)
        VALUES (tbl, key_column, location_column, owner_column, attributes, v_attnums, v_name)
        RETURNING id INTO v_id;
    END IF;

    -- rows already in the table get their first ownership period (one event
    -- each: owned rows as pinned manual assignments, the rest in the pool) and,
    -- being no rule's decision, a state row; the event trigger recounts holdings
    EXECUTE format($q$
        WITH rows AS (
            SELECT c.%1$I::text AS key, c.%2$I AS rep_id, %3$s AS tier, %4$s AS crop, %5$s AS business_type,
                   CASE WHEN c.%2$I IS NULL THEN 'no owner when the table was attached'
                        ELSE 'owner when the table was attached' END AS reason
              FROM %6$s c),
        state AS (
            INSERT INTO allocation.customer_state (managed_id, key, rep_id, source, pinned, reason, tier, crop,
                                                   business_type, valid_from)
            SELECT $1, r.key, r.rep_id, CASE WHEN r.rep_id IS NULL THEN 'pool' ELSE 'manual' END,
                   r.rep_id IS NOT NULL, r.reason, r.tier, r.crop, r.business_type, $3
              FROM rows r
            RETURNING 1)
        INSERT INTO allocation.event (at, actor, kind, managed_id, table_name, key, to_rep, reason,
                                      source, pinned, period, tier, crop, business_type)
        SELECT $3, allocation._actor(), 'attach', $1, $2, r.key, r.rep_id, r.reason,
               CASE WHEN r.rep_id IS NULL THEN 'pool' ELSE 'manual' END, r.rep_id IS NOT NULL,
               'open', r.tier, r.crop, r.business_type
          FROM rows r$q$,
        key_column, owner_column,
        CASE WHEN attributes ? 'tier' THEN format('c.%I::text', attributes->>'tier') ELSE 'NULL' END,
        CASE WHEN attributes ? 'crop' THEN format('c.%I::text', attributes->>'crop') ELSE 'NULL' END,
        CASE WHEN attributes ? 'business_type' THEN format('c.%I::text', attributes->>'business_type') ELSE 'NULL' END,
        tbl) USING v_id, v_name, clock_timestamp();
    GET DIAGNOSTICS v_count = ROW_COUNT;
    -- (holdings: the attach events moved them, trigger ownership_loaded)
    PERFORM allocation._warn_over_capacity(v_id, NULL);    -- existing owners are kept, even over capacity

    EXECUTE format('CREATE TRIGGER zz_allocation_before BEFORE INSERT OR UPDATE ON %s
                    FOR EACH ROW EXECUTE FUNCTION allocation._row_trigger()', tbl);
    EXECUTE format('CREATE TRIGGER zz_allocation_after AFTER INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH ROW EXECUTE FUNCTION allocation._row_trigger()', tbl);
    EXECUTE format('CREATE TRIGGER zz_allocation_stmt_before BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION allocation._stmt_trigger()', tbl);
    EXECUTE format('CREATE TRIGGER zz_allocation_stmt_after AFTER INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION allocation._stmt_trigger()', tbl);
    IF v_kind = 'p' THEN
        -- row triggers are cloned to every partition; statement triggers are not (30b_partitions.sql)
        PERFORM allocation._partition_triggers(tbl);
    END IF;

    INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
    VALUES (allocation._actor(), 'manage', v_id, v_name, 'table attached',
            jsonb_build_object('key_column', key_column, 'location_column', location_column,
                               'owner_column', owner_column, 'attributes', attributes, 'existing_rows', v_count));
END
$$;
COMMENT ON FUNCTION allocation._manage(regclass, name, name, name, jsonb) IS 'internal: implementation of allocation.manage(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.manage(tbl regclass, key_column name, location_column name, owner_column name, attributes jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.manage(regclass, name, name, name, jsonb) IS
'Attaches the allocation engine to an existing customer table: validates the key (unique), location (PostGIS point), owner (rep id) and mapped attribute columns, registers existing rows, and installs the C triggers';

CREATE FUNCTION allocation._forget_counters() RETURNS void
    AS 'MODULE_PATHNAME', 'allocation_forget_counters' LANGUAGE C;
COMMENT ON FUNCTION allocation._forget_counters() IS 'internal: this backend re-reads the holdings counters it holds after a recount';

CREATE FUNCTION allocation._recount_loads() RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
$$
    UPDATE allocation.rep_load l SET held = coalesce(c.n, 0)
      FROM allocation.rep r
      LEFT JOIN (SELECT a.rep_id, count(*)::integer AS n FROM allocation.assignment a
                  WHERE a.valid_to IS NULL AND a.rep_id IS NOT NULL GROUP BY a.rep_id) c ON c.rep_id = r.id
     WHERE l.rep_id = r.id AND l.held IS DISTINCT FROM coalesce(c.n, 0);
    UPDATE allocation.rep_load l SET reserved = coalesce(c.n, 0)
      FROM allocation.rep r
      LEFT JOIN (SELECT s.rep_id, count(*)::integer AS n FROM allocation.suggestion s
                  WHERE s.status = 'pending' AND s.rep_id IS NOT NULL GROUP BY s.rep_id) c ON c.rep_id = r.id
     WHERE l.rep_id = r.id AND l.reserved IS DISTINCT FROM coalesce(c.n, 0);
    SELECT allocation._forget_counters();
$$;
COMMENT ON FUNCTION allocation._recount_loads() IS 'internal: recomputes rep holdings from the registry and reservations from the pending suggestions (used by manage/unmanage)';

CREATE FUNCTION allocation._unmanage(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id integer;
    v_name text;
BEGIN
    PERFORM allocation._require_owner(tbl, 'unmanage');
    SELECT m.id, m.table_name INTO v_id, v_name FROM allocation.managed_table m WHERE m.tbl = _unmanage.tbl AND m.active;
    IF v_id IS NULL THEN
        RAISE EXCEPTION 'table % is not managed', tbl
            USING ERRCODE = 'LA012',
                  DETAIL = 'There is no active allocation.manage() registration for this table.',
                  HINT = 'See SELECT tbl FROM allocation.managed_table WHERE active.';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_before ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_after ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_stmt_before ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_stmt_after ON %s', tbl);
    IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = tbl) = 'p' THEN
        PERFORM allocation._drop_partition_triggers(tbl);
    END IF;
    PERFORM allocation._detach(v_id, 'unmanaged');
END
$$;
COMMENT ON FUNCTION allocation._unmanage(regclass) IS 'internal: implementation of allocation.unmanage(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.unmanage(tbl regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.unmanage(regclass) IS
'Removes the allocation triggers from a managed table and closes its open ownership records; the history stays queryable';

-- Ends every current ownership of a table (unmanage, DROP TABLE, TRUNCATE): one
-- closing event per customer, the state rows go; the history stays.
CREATE FUNCTION allocation._close_all(p_managed integer, p_why text, p_actor text) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
$$
    WITH t AS (SELECT clock_timestamp() AS at),
    closing AS (
        SELECT a.key, a.rep_id FROM allocation.assignment a
         WHERE a.managed_id = p_managed AND a.valid_to IS NULL),
    gone AS (
        DELETE FROM allocation.customer_state s WHERE s.managed_id = p_managed RETURNING 1)
    INSERT INTO allocation.event (at, actor, kind, managed_id, table_name, key, from_rep, reason, period)
    SELECT t.at, p_actor, p_why, p_managed, m.table_name, c.key, c.rep_id,
           'every ownership of the table closed', 'close'
      FROM closing c CROSS JOIN allocation.managed_table m CROSS JOIN t
     WHERE m.id = p_managed
     ORDER BY c.key;
$$;
COMMENT ON FUNCTION allocation._close_all(integer, text, text) IS 'internal: closes every current ownership of a managed table (one closing event per customer)';

-- Shared by unmanage() and DROP TABLE: close the registry, keep the history.
CREATE FUNCTION allocation._detach(p_managed integer, p_why text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    PERFORM allocation._close_all(p_managed, p_why, allocation._actor());
    UPDATE allocation.suggestion SET status = 'superseded', decided_at = now(), decided_by = allocation._actor(),
           decision_reason = p_why
     WHERE managed_id = p_managed AND status = 'pending';
    UPDATE allocation.managed_table SET active = false WHERE id = p_managed;
    -- (holdings: the closing events moved them; reservations: the suggestions' trigger)
    PERFORM allocation._identity_drop(p_managed);
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason)
    SELECT allocation._actor(), p_why, m.id, m.table_name,
           CASE p_why WHEN 'table_dropped' THEN 'table dropped' ELSE 'table unmanaged' END
      FROM allocation.managed_table m WHERE m.id = p_managed;
END
$$;
COMMENT ON FUNCTION allocation._detach(integer, text) IS 'internal: closes the registry of a table that stops being managed';

CREATE FUNCTION allocation._set_reevaluate(tbl regclass, mode text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old allocation.managed_table;
BEGIN
    PERFORM allocation._require_owner(tbl, 'set the re-evaluation mode of');
    IF mode IS NULL OR mode NOT IN ('unless_pinned', 'always', 'never') THEN
        RAISE EXCEPTION 'unknown re-evaluation mode "%"', mode
            USING ERRCODE = '22023',
                  DETAIL = 'The mode decides what an UPDATE of location or attributes does to the owner.',
                  HINT = 'Use unless_pinned (default), always or never.';
    END IF;
    SELECT * INTO v_old FROM allocation.managed_table m WHERE m.tbl = _set_reevaluate.tbl AND m.active FOR UPDATE;
    IF v_old.id IS NULL THEN
        RAISE EXCEPTION 'table % is not managed', tbl
            USING ERRCODE = 'LA012', DETAIL = 'There is no active allocation.manage() registration for this table.',
                  HINT = 'Call allocation.manage() first.';
    END IF;
    UPDATE allocation.managed_table m SET reevaluate = mode WHERE m.id = v_old.id;
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
    VALUES (allocation._actor(), 'config_change', v_old.id, v_old.table_name, 're-evaluation mode set',
            jsonb_build_object('table', 'managed_table', 'op', 'update', 'id', v_old.id,
                               'before', jsonb_build_object('reevaluate', v_old.reevaluate),
                               'after', jsonb_build_object('reevaluate', mode)));
END
$$;
COMMENT ON FUNCTION allocation._set_reevaluate(regclass, text) IS 'internal: implementation of allocation.set_reevaluate(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.set_reevaluate(tbl regclass, mode text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.set_reevaluate(regclass, text) IS
'What an UPDATE of location or mapped attributes does: unless_pinned (re-run the rules unless the owner was set by hand), always, never';

-- Looks up the managed registration of a table or raises LA012.
CREATE FUNCTION allocation._managed(tbl regclass)
RETURNS allocation.managed_table
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
BEGIN
    SELECT * INTO m FROM allocation.managed_table mt WHERE mt.tbl = _managed.tbl AND mt.active;
    IF m.id IS NULL THEN
        RAISE EXCEPTION 'table % is not managed', tbl
            USING ERRCODE = 'LA012', DETAIL = 'There is no active allocation.manage() registration for this table.',
                  HINT = 'Call allocation.manage() first.';
    END IF;
    RETURN m;
END
$$;
COMMENT ON FUNCTION allocation._managed(regclass) IS 'internal: the active registration of a managed table, or error LA012';

CREATE FUNCTION allocation._managed_by_id(p_id integer)
RETURNS allocation.managed_table
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    SELECT * FROM allocation.managed_table WHERE id = p_id
$$;
COMMENT ON FUNCTION allocation._managed_by_id(integer) IS 'internal: a managed table registration by id';

-------------------------------------------------------------------------------
-- DDL on managed tables: drops and renames must not break the engine
-------------------------------------------------------------------------------
-- Event trigger functions run for every user's DDL: SECURITY DEFINER, so a role
-- without rights on allocation.* can still ALTER or DROP its own tables.
CREATE FUNCTION allocation._on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    o record;
    m record;
BEGIN
    FOR o IN SELECT * FROM pg_catalog.pg_event_trigger_dropped_objects() LOOP
        IF o.object_type = 'table' THEN
            FOR m IN SELECT * FROM allocation.managed_table mt WHERE mt.tbl = o.objid LOOP
                IF m.active THEN
                    PERFORM allocation._detach(m.id, 'table_dropped');
                END IF;
                UPDATE allocation.managed_table SET tbl = NULL, active = false WHERE id = m.id;
            END LOOP;
            INSERT INTO allocation.event (actor, kind, reason, rule_id, detail)
            SELECT allocation._actor(), 'rule_dropped', format('table %s was dropped', o.object_identity), r.id, to_jsonb(r)
              FROM allocation.rule r WHERE r.tbl = o.objid;
            DELETE FROM allocation.rule WHERE tbl = o.objid;
        ELSIF o.object_type = 'table column' THEN
            FOR m IN SELECT * FROM allocation.managed_table mt WHERE mt.tbl = o.objid AND mt.active LOOP
                IF o.address_names[3] IN (m.key_column, m.location_column, m.owner_column)
                   OR o.address_names[3] IN (SELECT value #>> '{}' FROM jsonb_each(m.attributes)) THEN
                    RAISE EXCEPTION 'column % is used by the allocation engine', o.object_identity
                        USING ERRCODE = 'LA018',
                              DETAIL = format('Table %s is managed and maps this column.', m.table_name),
                              HINT = 'Call allocation.unmanage() first (then manage() again without this column).';
                END IF;
            END LOOP;
            IF EXISTS (SELECT 1 FROM allocation.rule r
                        WHERE r.tbl = o.objid AND r.condition_bin IS NOT NULL
                          AND allocation._condition_uses_column(r.condition_bin, o.objsubid)) THEN
                RAISE EXCEPTION 'column % is used by an allocation rule condition', o.object_identity
                    USING ERRCODE = 'LA018',
                          DETAIL = format('Rules using it: %s.', (SELECT string_agg(r.name, ', ') FROM allocation.rule r
                                    WHERE r.tbl = o.objid AND r.condition_bin IS NOT NULL
                                      AND allocation._condition_uses_column(r.condition_bin, o.objsubid))),
                          HINT = 'Change or delete those rules first.';
            END IF;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._on_sql_drop() IS 'internal: closes the registry of dropped managed tables, and refuses to drop columns the engine uses';

CREATE FUNCTION allocation._on_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m record;
    l text;
    v_name name;
    v_attnum smallint;
    v_now name;
    v_names jsonb;
    v_attnums jsonb;
    v_table text;
BEGIN
    FOR m IN SELECT mt.* FROM allocation.managed_table mt
              WHERE mt.active
                AND mt.tbl IN (SELECT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c) LOOP
        -- logical name -> column name, as stored
        v_names := jsonb_strip_nulls(jsonb_build_object('key', m.key_column, 'location', m.location_column,
                                                        'owner', m.owner_column)) || m.attributes;
        v_attnums := '{}';
        FOR l, v_name IN SELECT key, value #>> '{}' FROM jsonb_each(v_names) LOOP
            SELECT a.attnum INTO v_attnum FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = m.tbl AND a.attname = v_name AND a.attnum > 0 AND NOT a.attisdropped;
            IF v_attnum IS NULL THEN
                -- the name is gone: the column was renamed; follow its number
                SELECT a.attname, a.attnum INTO v_now, v_attnum FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = m.tbl AND a.attnum = (m.attnums ->> l)::smallint AND NOT a.attisdropped;
                IF v_now IS NOT NULL THEN
                    v_names := jsonb_set(v_names, ARRAY[l], to_jsonb(v_now::text));
                END IF;
            END IF;
            -- numbers follow the names (they shift after a dump and restore)
            IF v_attnum IS NOT NULL THEN
                v_attnums := v_attnums || jsonb_build_object(l, v_attnum);
            END IF;
            v_now := NULL;
            v_attnum := NULL;
        END LOOP;
        -- a mapped column whose type changed would break the engine: refuse the DDL
        IF (SELECT a.atttypid FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = m.tbl AND a.attname = (v_names ->> 'owner') AND NOT a.attisdropped)
           NOT IN ('pg_catalog.int8'::pg_catalog.regtype, 'pg_catalog.int4'::pg_catalog.regtype)
           OR (v_names ? 'location' AND (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                                          WHERE a.attrelid = m.tbl AND a.attname = (v_names ->> 'location')
                                            AND NOT a.attisdropped)
               IS DISTINCT FROM (SELECT t.oid FROM pg_catalog.pg_type t
                                   JOIN pg_catalog.pg_extension e ON e.extnamespace = t.typnamespace
                                  WHERE e.extname = 'postgis' AND t.typname = 'geometry'))
           OR (v_names ? 'tags' AND (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                                      WHERE a.attrelid = m.tbl AND a.attname = (v_names ->> 'tags')
                                        AND NOT a.attisdropped)
               NOT IN ('pg_catalog._text'::pg_catalog.regtype, 'pg_catalog._varchar'::pg_catalog.regtype)) THEN
            RAISE EXCEPTION 'the type of a column used by the allocation engine cannot change'
                USING ERRCODE = 'LA018',
                      DETAIL = format('Table %s is managed: its owner column must stay integer or bigint, its location a PostGIS geometry, its tags a text array.', m.table_name),
                      HINT = 'Call allocation.unmanage() first, change the column, then allocation.manage() again.';
        END IF;
        -- the key and attribute columns stay of built-in types, as manage() requires: a user
        -- type's cast or output function would run as whoever the engine reads them as
        PERFORM allocation._check_column_types(m.tbl, (v_names ->> 'key')::name,
                    ARRAY(SELECT x.value FROM jsonb_each_text(v_names - 'key' - 'location' - 'owner') x));
        SELECT format('%I.%I', n.nspname, c.relname) INTO v_table
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = m.tbl;
        UPDATE allocation.managed_table mt
           SET key_column = v_names ->> 'key', location_column = v_names ->> 'location',
               owner_column = v_names ->> 'owner',
               attributes = v_names - 'key' - 'location' - 'owner',
               attnums = v_attnums, table_name = v_table
         WHERE mt.id = m.id
           AND (mt.key_column, mt.location_column, mt.owner_column, mt.attributes, mt.attnums, mt.table_name)
               IS DISTINCT FROM (v_names ->> 'key', v_names ->> 'location', v_names ->> 'owner',
                                 v_names - 'key' - 'location' - 'owner', v_attnums, v_table);
    END LOOP;
    -- keep rule condition texts in step with renamed columns
    -- (only when the written text no longer means the stored condition, e.g. after a rename);
    -- a rule whose condition cannot be read any more (it no longer compiles, and is skipped)
    -- does not block the ALTER TABLE: it gets a WARNING
    FOR m IN SELECT r.id, r.name FROM allocation.rule r
              WHERE r.condition_bin IS NOT NULL
                AND r.tbl IN (SELECT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c)
                AND NOT allocation._condition_still_means(r.condition, r.condition_bin, r.tbl, r.condition_search_path)
              ORDER BY r.id LOOP
        BEGIN
            UPDATE allocation.rule r SET condition = allocation._condition_deparse(r.condition_bin, r.tbl)
             WHERE r.id = m.id;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'allocation: the condition of rule "%" could not follow this change: %', m.name, SQLERRM
                USING HINT = 'Fix it with UPDATE allocation.rule SET condition = ... ; until then the rule is skipped.';
        END;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._on_ddl_end() IS 'internal: follows column renames on managed tables (mapping and rule conditions); refuses a mapped column''s change to a type the engine cannot use safely (LA018, LA016)';

CREATE EVENT TRIGGER allocation_sql_drop ON sql_drop EXECUTE FUNCTION allocation._on_sql_drop();
CREATE EVENT TRIGGER allocation_ddl_end ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION allocation._on_ddl_end();
COMMENT ON EVENT TRIGGER allocation_sql_drop IS 'allocation: a dropped managed table is detached, its history kept; dropping a column the engine uses is refused';
COMMENT ON EVENT TRIGGER allocation_ddl_end IS 'allocation: after ALTER TABLE, renamed columns of managed tables are followed in the mapping and in rule conditions';

-- Conditions compiled on another server (pg_upgrade, a copied data directory)
-- or under SQL version 1.0 compiled again from their text and stamped: saving
-- a rule's condition unchanged does it (the rule trigger), with no config_change
-- event (nothing recorded changes).  One that no longer compiles gets a WARNING
-- and keeps no stamp: the engine skips its rule until it is fixed.  Returns how
-- many were compiled again.
CREATE FUNCTION allocation._compile_conditions_here() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN SELECT id, name FROM allocation.rule
              WHERE condition IS NOT NULL AND condition_stamp IS DISTINCT FROM allocation._condition_stamp()
              ORDER BY id LOOP
        BEGIN
            UPDATE allocation.rule SET condition = condition WHERE id = r.id;
            n := n + 1;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'allocation: the condition of rule "%" does not compile on this server: %', r.name, SQLERRM
                USING HINT = 'Fix it with UPDATE allocation.rule SET condition = ... ; until then the rule is skipped.';
        END;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation._compile_conditions_here() IS 'internal: compiles again, and stamps, the rule conditions another server (or SQL version 1.0) compiled';

-- Before an ALTER TABLE: foreign conditions compiled here while the names in
-- their text still resolve; _on_ddl_end and _on_sql_drop then read trees of
-- this server.  Normally there are none and this is one small query.
CREATE FUNCTION allocation._on_ddl_start() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    PERFORM allocation._compile_conditions_here();
END
$$;
COMMENT ON FUNCTION allocation._on_ddl_start() IS 'internal: compiles again, before an ALTER TABLE, the rule conditions another server compiled';
CREATE EVENT TRIGGER allocation_ddl_start ON ddl_command_start WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION allocation._on_ddl_start();
COMMENT ON EVENT TRIGGER allocation_ddl_start IS 'allocation: before ALTER TABLE, rule conditions compiled on another server (pg_upgrade) are compiled again from their text';

-- TRUNCATE of a managed table: close the whole registry of the table.
CREATE FUNCTION allocation._record_truncate(p_managed integer, p_actor text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    PERFORM allocation._close_all(p_managed, 'truncate', p_actor);
    UPDATE allocation.suggestion SET status = 'superseded', decided_at = now(), decided_by = p_actor,
           decision_reason = 'truncate'
     WHERE managed_id = p_managed AND status = 'pending';
    -- (holdings: the closing events moved them; reservations: the suggestions' trigger)
    PERFORM allocation._identity_drop(p_managed);
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason)
    SELECT p_actor, 'truncate', m.id, m.table_name, 'table truncated: every ownership closed'
      FROM allocation.managed_table m WHERE m.id = p_managed;
END
$$;
COMMENT ON FUNCTION allocation._record_truncate(integer, text) IS 'internal: closes the registry of a truncated managed table';
