-- allocation 1.0 -> 1.1 (ALTER EXTENSION allocation UPDATE TO '1.1')
-- Frozen once 1.1 is released; each schema change of 1.1 adds its step here in
-- the same commit as its sql_src/ change.  scripts/upgrade_check.sh proves that
-- 1.0 + this script = a fresh 1.1 (pg_dump --binary-upgrade of both, compared).

\echo Use "ALTER EXTENSION allocation UPDATE TO '1.1'" to load this file. \quit

-------------------------------------------------------------------------------
-- Compiled rule conditions are stamped with the server that compiled them: a
-- pg_upgrade'd cluster compiles them again from their text (issue 12)
-------------------------------------------------------------------------------
ALTER TABLE allocation.rule ADD COLUMN condition_stamp text;
COMMENT ON COLUMN allocation.rule.condition_bin IS 'internal: the compiled condition (node tree), maintained by the engine; a cache of condition, valid only under condition_stamp';
COMMENT ON COLUMN allocation.rule.condition_stamp IS 'internal: server version number and system identifier condition_bin was compiled under; on any other server (pg_upgrade, a copied data directory) the engine compiles condition again from its text and search path';

CREATE OR REPLACE FUNCTION allocation._config_json(p_rel regclass, p_alias text)
RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT pg_catalog.format('jsonb_build_object(%s)', pg_catalog.string_agg(
               CASE WHEN a.attname = 'geom' AND a.atttypid = (SELECT t.oid FROM pg_catalog.pg_type t WHERE t.typname = 'geometry'
                                                                 AND t.typnamespace = g.nsp)
                    THEN pg_catalog.format('''geom_sha256'', encode(sha256(%1$I.st_asbinary(%2$I.geom)), ''hex''), '
                                           '''geom_vertices'', %1$I.st_npoints(%2$I.geom)', g.nspname, p_alias)
                    ELSE pg_catalog.format('%L, %I.%I', a.attname, p_alias, a.attname) END,
               ', ' ORDER BY a.attnum))
      FROM pg_catalog.pg_attribute a,
           (SELECT n.oid AS nsp, n.nspname FROM pg_catalog.pg_extension x
              JOIN pg_catalog.pg_namespace n ON n.oid = x.extnamespace WHERE x.extname = 'postgis') g
     WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attname NOT IN ('updated_at', 'condition_bin', 'condition_stamp')
$$;

CREATE FUNCTION allocation._condition_stamp() RETURNS text
AS 'MODULE_PATHNAME', 'allocation_condition_stamp' LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION allocation._condition_stamp() IS 'internal: this server''s stamp for compiled rule conditions (server version number / system identifier)';
REVOKE ALL ON FUNCTION allocation._condition_stamp() FROM PUBLIC;

CREATE FUNCTION allocation._on_ddl_start() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT id, name FROM allocation.rule
              WHERE condition IS NOT NULL AND condition_stamp IS DISTINCT FROM allocation._condition_stamp()
              ORDER BY id LOOP
        BEGIN
            UPDATE allocation.rule SET condition = condition WHERE id = r.id;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'allocation: the condition of rule "%" does not compile on this server: %', r.name, SQLERRM
                USING HINT = 'Fix it with UPDATE allocation.rule SET condition = ... ; until then the rule is skipped.';
        END;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._on_ddl_start() IS 'internal: compiles again, before an ALTER TABLE, the rule conditions another server compiled';
CREATE EVENT TRIGGER allocation_ddl_start ON ddl_command_start WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION allocation._on_ddl_start();
COMMENT ON EVENT TRIGGER allocation_ddl_start IS 'allocation: before ALTER TABLE, rule conditions compiled on another server (pg_upgrade) are compiled again from their text';
REVOKE ALL ON FUNCTION allocation._on_ddl_start() FROM PUBLIC;

-- a rule whose condition cannot follow a rename gets a WARNING instead of blocking the ALTER TABLE
CREATE OR REPLACE FUNCTION allocation._on_ddl_end() RETURNS event_trigger
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

-- every condition compiled again here, and stamped (the rule trigger does it on
-- any UPDATE; no config_change event: nothing recorded changes).  A condition
-- that no longer compiles keeps no stamp: the engine skips its rule with a
-- WARNING, as 1.0 did, until it is fixed.
DO $upgrade$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT id, name FROM allocation.rule WHERE condition IS NOT NULL ORDER BY id LOOP
        BEGIN
            UPDATE allocation.rule SET condition = condition WHERE id = r.id;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'allocation 1.1: the condition of rule "%" does not compile: %', r.name, SQLERRM
                USING HINT = 'Fix it with UPDATE allocation.rule SET condition = ... ; until then the rule is skipped.';
        END;
    END LOOP;
END
$upgrade$;

-------------------------------------------------------------------------------
-- The trigram index of fuzzy duplicate matching comes back by itself after a
-- restore (issue 12)
-------------------------------------------------------------------------------
CREATE FUNCTION allocation._trgm_index(p_trgm name) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF p_trgm IS NULL OR pg_catalog.to_regclass('allocation.identity_name_trgm_idx') IS NOT NULL
       OR NOT EXISTS (SELECT 1 FROM allocation.managed_table mt WHERE mt.duplicate_fuzzy <> 'off') THEN
        RETURN false;
    END IF;
    EXECUTE pg_catalog.format('CREATE INDEX identity_name_trgm_idx ON allocation.identity USING gin (name_norm %I.gin_trgm_ops)', p_trgm);
    RETURN true;
END
$$;
COMMENT ON FUNCTION allocation._trgm_index(name) IS 'internal: creates the trigram index of fuzzy duplicate matching when a table has a fuzzy action and it is missing; true when it did';

CREATE FUNCTION allocation._trgm_index_loaded() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    PERFORM allocation._trgm_index((SELECT n.nspname FROM pg_catalog.pg_extension e
                                      JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                                     WHERE e.extname = 'pg_trgm'));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION allocation._trgm_index_loaded() IS 'internal: after rows arrive in managed_table (a restore), the trigram index of fuzzy matching is created again';
CREATE TRIGGER trgm_index AFTER INSERT ON allocation.managed_table
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._trgm_index_loaded();
REVOKE ALL ON FUNCTION allocation._trgm_index(name) FROM PUBLIC;
REVOKE ALL ON FUNCTION allocation._trgm_index_loaded() FROM PUBLIC;

CREATE OR REPLACE FUNCTION allocation._apply_duplicate_policy(p_managed integer, exact text, fuzzy text, name_similarity real,
                                                   within_m double precision, p_trgm name)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_n integer;
    v_groups integer;
BEGIN
    SELECT * INTO m FROM allocation.managed_table mt WHERE mt.id = p_managed;
    IF m.id IS NULL OR exact IS NULL OR fuzzy IS NULL OR _apply_duplicate_policy.name_similarity IS NULL THEN
        RAISE EXCEPTION 'no managed table % or no policy', p_managed USING ERRCODE = '22004';
    END IF;
    UPDATE allocation.managed_table mt
       SET duplicate_exact = exact, duplicate_fuzzy = fuzzy,
           name_similarity = _apply_duplicate_policy.name_similarity, duplicate_within_m = within_m
     WHERE mt.id = m.id;
    PERFORM allocation._trgm_index(p_trgm);
    IF exact = 'off' AND fuzzy = 'off' THEN
        DELETE FROM allocation.identity WHERE managed_id = m.id;
        DELETE FROM allocation.identity_key WHERE managed_id = m.id;
        INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
        VALUES (allocation._actor(), 'duplicate_policy', m.id, m.table_name, 'duplicate detection turned off',
                jsonb_build_object('before', jsonb_build_object('exact', m.duplicate_exact, 'fuzzy', m.duplicate_fuzzy,
                                                                'name_similarity', m.name_similarity, 'within_m', m.duplicate_within_m),
                                   'exact', exact, 'fuzzy', fuzzy));
        RETURN 0;
    END IF;
    v_n := allocation._identity_rebuild(m.id);
    -- duplicates among the customers already stored go to the queue once
    INSERT INTO allocation.duplicate (managed_id, key, other_key, match, value, action, opened_by)
    SELECT m.id, i.key, k.key, k.kind, k.value, 'existing', allocation._actor()
      FROM allocation.identity i
      JOIN allocation.identity_key k ON k.managed_id = i.managed_id
                                    AND ((k.kind = 'credit_code' AND k.value = i.credit_code)
                                         OR (k.kind = 'phone' AND k.value = i.phone))
     WHERE i.managed_id = m.id AND k.key <> i.key
       AND NOT EXISTS (SELECT 1 FROM allocation.duplicate d
                        WHERE d.managed_id = m.id AND d.key = i.key AND d.other_key = k.key AND d.status = 'open')
       AND NOT allocation._duplicate_decided(m.id, i.key, k.key);
    GET DIAGNOSTICS v_groups = ROW_COUNT;
    IF v_groups > 0 THEN
        RAISE NOTICE '% stored customers of % share a credit code or phone with another one', v_groups, m.table_name
            USING DETAIL = 'They were queued in allocation.dispute_queue with action existing.',
                  HINT = 'Resolve them with allocation.resolve_dispute() or allocation.dismiss_dispute().';
    END IF;
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
    VALUES (allocation._actor(), 'duplicate_policy', m.id, m.table_name, 'duplicate policy set',
            jsonb_build_object('exact', exact, 'fuzzy', fuzzy, 'name_similarity', _apply_duplicate_policy.name_similarity,
                               'within_m', within_m, 'identities', v_n, 'existing_duplicates', v_groups,
                               'before', jsonb_build_object('exact', m.duplicate_exact, 'fuzzy', m.duplicate_fuzzy,
                                                            'name_similarity', m.name_similarity, 'within_m', m.duplicate_within_m)));
    RETURN v_n;
END
$$;

-- a database restored under 1.0 may lack the index
SELECT allocation._trgm_index((SELECT n.nspname FROM pg_catalog.pg_extension e
                                 JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                                WHERE e.extname = 'pg_trgm'));

-- comments on the 1.0 event triggers (\dx+ allocation: every member documented)
COMMENT ON EVENT TRIGGER allocation_sql_drop IS 'allocation: a dropped managed table is detached, its history kept; dropping a column the engine uses is refused';
COMMENT ON EVENT TRIGGER allocation_ddl_end IS 'allocation: after ALTER TABLE, renamed columns of managed tables are followed in the mapping and in rule conditions';
