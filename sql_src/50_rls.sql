-------------------------------------------------------------------------------
-- Row-level security for reps: a rep's login sees only its own customers
-------------------------------------------------------------------------------

-- The rep whose login is the given role (SECURITY DEFINER: reading
-- allocation.rep needs no grant).
CREATE FUNCTION allocation._rep_of(p_role name)
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    SELECT r.id FROM allocation.rep r WHERE r.login = p_role
$$;
COMMENT ON FUNCTION allocation._rep_of(name) IS 'internal: the rep (active or not) whose login is the given role';

CREATE FUNCTION allocation.current_rep_id()
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS
$$
    SELECT allocation._rep_of(current_user)
$$;
COMMENT ON FUNCTION allocation.current_rep_id() IS 'The rep whose login is the current role, active or not (NULL when the current role is no rep''s login)';

CREATE FUNCTION allocation._drop_rep_policies(tbl regclass)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p name;
BEGIN
    FOR p IN SELECT polname FROM pg_catalog.pg_policy
              WHERE polrelid = tbl AND polname LIKE 'allocation\_rep\_%' LOOP
        EXECUTE format('DROP POLICY %I ON %s', p, tbl);
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._drop_rep_policies(regclass) IS 'internal: drops the policies of enable_rep_security()';

CREATE FUNCTION allocation.enable_rep_security(tbl regclass)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
BEGIN
    m := allocation._managed(tbl);
    PERFORM allocation._drop_rep_policies(tbl);
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    -- roles that are no rep's login (the application, managers, analysts) keep seeing every row
    EXECUTE format('CREATE POLICY allocation_rep_read ON %s FOR SELECT
                    USING (allocation.current_rep_id() IS NULL OR %I = allocation.current_rep_id())',
                   tbl, m.owner_column);
    -- a rep may register a customer; the rules decide who gets it
    EXECUTE format('CREATE POLICY allocation_rep_insert ON %s FOR INSERT WITH CHECK (true)', tbl);
    -- a rep may edit its own customers (an edit whose re-evaluation would hand the customer to
    -- another rep is refused by PostgreSQL: the new row must stay visible to the rep)
    EXECUTE format('CREATE POLICY allocation_rep_update ON %s FOR UPDATE
                    USING (allocation.current_rep_id() IS NULL OR %I = allocation.current_rep_id())
                    WITH CHECK (true)', tbl, m.owner_column);
    EXECUTE format('CREATE POLICY allocation_rep_delete ON %s FOR DELETE
                    USING (allocation.current_rep_id() IS NULL OR %I = allocation.current_rep_id())',
                   tbl, m.owner_column);
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.current_rep_id(), allocation._rep_of(name) TO PUBLIC');
    EXECUTE format('GRANT USAGE ON SCHEMA allocation TO PUBLIC');
END
$$;
COMMENT ON FUNCTION allocation.enable_rep_security(regclass) IS
'Row-level security on a managed table: a role that is a rep''s login sees, updates and deletes only the customers it owns (and may insert new ones); other roles are unaffected';

CREATE FUNCTION allocation.disable_rep_security(tbl regclass)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    PERFORM allocation._drop_rep_policies(tbl);
    EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', tbl);
END
$$;
COMMENT ON FUNCTION allocation.disable_rep_security(regclass) IS 'Removes the policies enable_rep_security() created and disables row-level security on the table';
