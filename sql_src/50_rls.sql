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

-- C: the role is read before any switch (inside the engine: the caller), and the
-- answer is cached until allocation.rep changes (row-level security calls it per row)
CREATE FUNCTION allocation.current_rep_id()
RETURNS bigint
AS 'MODULE_PATHNAME', 'allocation_current_rep_id' LANGUAGE C STABLE;
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

CREATE FUNCTION allocation._enable_rep_security(tbl regclass)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
BEGIN
    PERFORM allocation._require_owner(tbl, 'enable row-level security on');
    m := allocation._managed(tbl);
    PERFORM allocation._drop_rep_policies(tbl);
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    -- roles that are no rep's login (the application, managers, analysts) keep seeing every row
    -- ... and the customers shared with it (share_customer()) while the share is valid
    -- (the shared keys are read once per statement: a hashed subplan)
    EXECUTE format('CREATE POLICY allocation_rep_read ON %s FOR SELECT
                    USING (allocation.current_rep_id() IS NULL OR %I = allocation.current_rep_id()
                           OR %I::text IN (SELECT allocation.shared_with_me(%L::regclass, false)))',
                   tbl, m.owner_column, m.key_column, tbl::oid);
    -- a rep may register a customer; the rules decide who gets it
    EXECUTE format('CREATE POLICY allocation_rep_insert ON %s FOR INSERT WITH CHECK (true)', tbl);
    -- a rep may edit its own customers; the owner column itself changes only through
    -- claim()/release() (the engine's trigger refuses it with LA026), while the rules may
    -- still move a customer when an edit re-evaluates it
    -- (and a collaborator the customers shared with it)
    EXECUTE format('CREATE POLICY allocation_rep_update ON %s FOR UPDATE
                    USING (allocation.current_rep_id() IS NULL OR %I = allocation.current_rep_id()
                           OR %I::text IN (SELECT allocation.shared_with_me(%L::regclass, true)))
                    WITH CHECK (true)', tbl, m.owner_column, m.key_column, tbl::oid);
    EXECUTE format('CREATE POLICY allocation_rep_delete ON %s FOR DELETE
                    USING (allocation.current_rep_id() IS NULL OR %I = allocation.current_rep_id())',
                   tbl, m.owner_column);
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.current_rep_id() TO PUBLIC');
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.shared_with_me(regclass, boolean) TO PUBLIC');
    EXECUTE format('GRANT USAGE ON SCHEMA allocation TO PUBLIC');
END
$$;
COMMENT ON FUNCTION allocation._enable_rep_security(regclass) IS 'internal: implementation of allocation.enable_rep_security(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.enable_rep_security(tbl regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.enable_rep_security(regclass) IS
'Row-level security on a managed table: a role that is a rep''s login sees, updates and deletes only the customers it owns (and may insert new ones), and sees (viewer) or sees and updates (collaborator) the customers shared with it while the share is valid; other roles are unaffected';

CREATE FUNCTION allocation._disable_rep_security(tbl regclass)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    PERFORM allocation._require_owner(tbl, 'disable row-level security on');
    PERFORM allocation._drop_rep_policies(tbl);
    EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', tbl);
END
$$;
COMMENT ON FUNCTION allocation._disable_rep_security(regclass) IS 'internal: implementation of allocation.disable_rep_security(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.disable_rep_security(tbl regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.disable_rep_security(regclass) IS
'Removes the policies enable_rep_security() created and disables row-level security on the table';
