-------------------------------------------------------------------------------
-- Read-only servers (a hot standby) and read-only transactions (issue 15)
-------------------------------------------------------------------------------
-- Every read (views, explain, owner_at, territory_geojson, scorecard, the claim
-- screens) works on a hot standby: nothing on the read path writes.  A function
-- whose job is to write fails there with PostgreSQL's own read-only error
-- (25006) at its first write.  The scheduler's entry points and transfer_all()
-- refuse before they start: they catch per-item errors (run_maintenance per
-- step, transfer_all per customer -- its dry run too, which tries each transfer
-- and rolls it back --, evaluate_alerts per rule) or do nothing when
-- nothing is due, so without this check they would report success, or a list
-- of failed items with a misleading hint, on a server that cannot write at all.
CREATE FUNCTION allocation._refuse_read_only(what text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF pg_catalog.current_setting('transaction_read_only')::boolean THEN
        IF pg_catalog.pg_is_in_recovery() THEN
            RAISE EXCEPTION 'cannot execute % in a read-only transaction', what USING ERRCODE = '25006',
                  DETAIL = 'This server is a hot standby (in recovery): it answers reads only.',
                  HINT = 'Run it on the primary server.';
        END IF;
        RAISE EXCEPTION 'cannot execute % in a read-only transaction', what USING ERRCODE = '25006',
              DETAIL = 'The transaction is read-only (BEGIN READ ONLY, SET TRANSACTION READ ONLY or default_transaction_read_only).',
              HINT = 'Run it in a read-write transaction.';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._refuse_read_only(text) IS
    'internal: raises PostgreSQL''s read-only error (25006) for a writing function called in a read-only transaction or on a hot standby; called first by the scheduler''s functions and transfer_all() (its dry run too)';
