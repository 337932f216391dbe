-------------------------------------------------------------------------------
-- Partitioned customer tables
-------------------------------------------------------------------------------
-- manage() puts the row triggers on the partitioned table (PostgreSQL clones
-- them to every partition, present and future) and the statement triggers on
-- the table and on every partition (statement triggers are not cloned: a
-- statement naming a partition fires that partition's own).  The event
-- trigger below gives a new partition its statement triggers, refuses to
-- attach a table that already holds rows (they were never registered), and
-- detaching or dropping a partition closes the ownerships of the customers
-- that leave the table.  The C side is src/partition.c.

-- Ends the current ownerships of some customers (a truncated, detached or
-- dropped partition): one closing event per customer, like _close_all.
CREATE FUNCTION allocation._close_keys(p_managed integer, p_keys text[], p_why text, p_actor text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    n bigint;
BEGIN
    WITH t AS (SELECT clock_timestamp() AS at),
    closing AS (
        SELECT a.key, a.rep_id FROM allocation.assignment a
         WHERE a.managed_id = p_managed AND a.valid_to IS NULL AND a.key = ANY (p_keys)),
    gone AS (
        DELETE FROM allocation.customer_state s WHERE s.managed_id = p_managed AND s.key = ANY (p_keys) RETURNING 1)
    INSERT INTO allocation.event (at, actor, kind, managed_id, table_name, key, from_rep, reason, period)
    SELECT t.at, p_actor, p_why, p_managed, m.table_name, c.key, c.rep_id,
           CASE p_why WHEN 'truncate' THEN 'partition truncated' ELSE 'partition left the table' END, 'close'
      FROM closing c CROSS JOIN allocation.managed_table m CROSS JOIN t
     WHERE m.id = p_managed
     ORDER BY c.key;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE allocation.suggestion SET status = 'superseded', decided_at = now(), decided_by = p_actor,
           decision_reason = p_why
     WHERE managed_id = p_managed AND status = 'pending' AND key = ANY (p_keys);
    DELETE FROM allocation.identity WHERE managed_id = p_managed AND key = ANY (p_keys);
    DELETE FROM allocation.identity_key WHERE managed_id = p_managed AND key = ANY (p_keys);
    DELETE FROM allocation.protection WHERE managed_id = p_managed AND key = ANY (p_keys);
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation._close_keys(integer, text[], text, text) IS 'internal: closes the current ownerships of the given customers of a managed table (a partition truncated, detached or dropped)';

-- BEFORE TRUNCATE of one partition (src/partition.c): its customers' ownerships close.
CREATE FUNCTION allocation._record_truncate_partition(p_managed integer, p_part regclass, p_actor text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table := allocation._managed_by_id(p_managed);
    v_keys text[];
    v_key name;
BEGIN
    -- the key column as the partition names it (column names are the table's)
    v_key := m.key_column;
    -- (the key as its type's output function writes it: a cast to text could be a function
    -- the table's owner wrote, run here as whoever truncates)
    EXECUTE format('SELECT array_agg(pg_catalog.format(''%%s'', c.%I)) FROM %s c', v_key, p_part) INTO v_keys;
    IF v_keys IS NOT NULL THEN
        PERFORM allocation._close_keys(p_managed, v_keys, 'truncate', p_actor);
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._record_truncate_partition(integer, regclass, text) IS 'internal: TRUNCATE of one partition of a managed table closes the ownerships of its customers';

-- The statement triggers of every partition (and sub-partition) of a managed table.
CREATE FUNCTION allocation._partition_triggers(p_tbl regclass) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p regclass;
    n integer := 0;
BEGIN
    FOR p IN SELECT t.relid FROM pg_catalog.pg_partition_tree(p_tbl) t
              WHERE t.relid <> p_tbl
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
                                 WHERE g.tgrelid = t.relid AND g.tgname = 'zz_allocation_stmt_before')
              ORDER BY t.level, t.relid::oid LOOP
        EXECUTE format('CREATE TRIGGER zz_allocation_stmt_before BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s
                        FOR EACH STATEMENT EXECUTE FUNCTION allocation._stmt_trigger()', p);
        EXECUTE format('CREATE TRIGGER zz_allocation_stmt_after AFTER INSERT OR UPDATE OR DELETE ON %s
                        FOR EACH STATEMENT EXECUTE FUNCTION allocation._stmt_trigger()', p);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation._partition_triggers(regclass) IS 'internal: gives every partition of a managed partitioned table the engine''s statement triggers (row triggers are cloned by PostgreSQL)';

-- Drops the statement triggers from the partitions (unmanage, a detached partition).
CREATE FUNCTION allocation._drop_partition_triggers(p_rel regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p regclass;
BEGIN
    -- (pg_partition_tree() of a table that is no longer partitioned nor a partition is empty)
    FOR p IN SELECT DISTINCT g.tgrelid::regclass FROM pg_catalog.pg_trigger g
              WHERE g.tgname IN ('zz_allocation_stmt_before', 'zz_allocation_stmt_after') AND NOT g.tgisinternal
                AND g.tgrelid IN (SELECT p_rel UNION ALL SELECT t.relid FROM pg_catalog.pg_partition_tree(p_rel) t) LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_stmt_before ON %s', p);
        EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_stmt_after ON %s', p);
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._drop_partition_triggers(regclass) IS 'internal: removes the engine''s statement triggers from a table and its partitions';

-- After CREATE TABLE / ALTER TABLE: new partitions get the statement triggers;
-- an attached table holding rows is refused (its customers were never
-- registered); a detached partition's customers leave the table (their
-- ownerships close) and it loses the triggers.
CREATE FUNCTION allocation._on_partition_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m record;
    d record;
    v_keys text[];
    v_rows boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM allocation.managed_table mt JOIN pg_catalog.pg_class c ON c.oid = mt.tbl
                    WHERE mt.active AND c.relkind = 'p') THEN
        RETURN;     -- no partitioned table is managed: one small query per CREATE/ALTER TABLE
    END IF;
    -- detached: a table with the engine's statement triggers that no managed table contains any more
    -- (anyone may create a trigger of that name, even on allocation._stmt_trigger(), on a table of
    -- its own: such a table's rows are read as the extension owner below, so its keys are read
    -- through their type's output function, never a cast, which its owner could have written,
    -- and only keys the managed table no longer holds are closed)
    FOR d IN SELECT g.tgrelid::regclass AS rel FROM pg_catalog.pg_trigger g
              WHERE g.tgname = 'zz_allocation_stmt_before' AND NOT g.tgisinternal
                AND g.tgfoid = 'allocation._stmt_trigger()'::pg_catalog.regprocedure
                AND NOT EXISTS (SELECT 1 FROM allocation.managed_table mt
                                 WHERE mt.active AND (mt.tbl = g.tgrelid
                                       OR mt.tbl IN (SELECT a FROM pg_catalog.pg_partition_ancestors(g.tgrelid) a))) LOOP
        -- the table it was detached from: the command's, or one of its ancestors
        FOR m IN SELECT DISTINCT mt.id, mt.tbl, mt.key_column FROM allocation.managed_table mt, pg_catalog.pg_event_trigger_ddl_commands() x
                  WHERE mt.active AND (mt.tbl = x.objid OR mt.tbl IN (SELECT a FROM pg_catalog.pg_partition_ancestors(x.objid) a)) LOOP
            EXECUTE format('SELECT array_agg(d.k) FROM (SELECT pg_catalog.format(''%%s'', c.%1$I) AS k FROM %2$s c) d
                             WHERE NOT EXISTS (SELECT 1 FROM %3$s x WHERE pg_catalog.format(''%%s'', x.%1$I) = d.k)',
                           m.key_column, d.rel, m.tbl) INTO v_keys;
            IF v_keys IS NOT NULL THEN
                PERFORM allocation._close_keys(m.id, v_keys, 'partition_detached', allocation._actor());
            END IF;
        END LOOP;
        PERFORM allocation._drop_partition_triggers(d.rel);
    END LOOP;
    FOR m IN SELECT mt.tbl, mt.table_name FROM allocation.managed_table mt JOIN pg_catalog.pg_class c ON c.oid = mt.tbl
              WHERE mt.active AND c.relkind = 'p' LOOP
        FOR d IN SELECT t.relid AS rel, c.relkind FROM pg_catalog.pg_partition_tree(m.tbl) t
                   JOIN pg_catalog.pg_class c ON c.oid = t.relid
                  WHERE t.relid <> m.tbl
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
                                     WHERE g.tgrelid = t.relid AND g.tgname = 'zz_allocation_stmt_before') LOOP
            IF d.relkind NOT IN ('r', 'p') THEN
                RAISE EXCEPTION 'partition % of managed table % is not an ordinary table', d.rel, m.table_name
                    USING ERRCODE = 'LA010',
                          DETAIL = format('Relation %s has relkind %s; the engine''s triggers need ordinary tables.', d.rel, d.relkind),
                          HINT = 'Use an ordinary table as the partition.';
            END IF;
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', d.rel) INTO v_rows;
            IF v_rows THEN
                RAISE EXCEPTION 'table % holds rows and cannot become a partition of managed table %', d.rel, m.table_name
                    USING ERRCODE = 'LA064',
                          DETAIL = 'Its customers were never registered by the allocation engine (no owner decision, no history).',
                          HINT = format('Attach it empty, then INSERT INTO %s SELECT * FROM the old table (the rules decide each row).', m.table_name);
            END IF;
        END LOOP;
        PERFORM allocation._partition_triggers(m.tbl);
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._on_partition_ddl() IS 'internal: new partitions of managed tables get the statement triggers; attaching a table with rows is refused; a detached partition''s customers leave the registry';
CREATE EVENT TRIGGER allocation_partition_ddl ON ddl_command_end WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
    EXECUTE FUNCTION allocation._on_partition_ddl();
COMMENT ON EVENT TRIGGER allocation_partition_ddl IS 'allocation: partitions of managed tables, present and future, carry the engine''s statement triggers';

-- DROP of a partition: its customers left the table; their ownerships close.
CREATE FUNCTION allocation._on_partition_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m record;
    v_keys text[];
BEGIN
    -- a partition of a managed table carried the engine's statement trigger
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_dropped_objects() o
                    WHERE o.object_type = 'trigger' AND o.object_identity LIKE 'zz_allocation_stmt_before on %')
       OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_dropped_objects() o WHERE o.object_type = 'table') THEN
        RETURN;
    END IF;
    FOR m IN SELECT mt.* FROM allocation.managed_table mt JOIN pg_catalog.pg_class c ON c.oid = mt.tbl
              WHERE mt.active AND c.relkind = 'p' LOOP
        -- the open ownerships whose customer is no longer in the table
        EXECUTE format('SELECT array_agg(a.key) FROM allocation.assignment a
                         WHERE a.managed_id = $1 AND a.valid_to IS NULL
                           AND NOT EXISTS (SELECT 1 FROM %s c WHERE pg_catalog.format(''%%s'', c.%I) = a.key)', m.tbl, m.key_column)
           INTO v_keys USING m.id;
        IF v_keys IS NOT NULL THEN
            PERFORM allocation._close_keys(m.id, v_keys, 'partition_dropped', allocation._actor());
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._on_partition_drop() IS 'internal: dropping a partition of a managed table closes the ownerships of the customers it held';
CREATE EVENT TRIGGER allocation_partition_drop ON sql_drop EXECUTE FUNCTION allocation._on_partition_drop();
COMMENT ON EVENT TRIGGER allocation_partition_drop IS 'allocation: a dropped partition''s customers leave the registry (their ownerships close)';
