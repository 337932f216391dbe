-------------------------------------------------------------------------------
-- Maintenance: everything time-driven, in one call a scheduler runs (issue 14)
-------------------------------------------------------------------------------
-- The order (each step sees what the earlier ones did):
--   1 recycle              customers due go back to the public pool (warnings first)
--   2 expire_grants        grants of ended pool seasons return their units; waitlists served
--   3 expire_transfers     pending transfers past their time expire
--   4 dissolve_virtual_teams  virtual teams whose period ended dissolve
--   5 auto_settle_disputes ownership disputes whose team presets agree are settled
--   6 evaluate_alerts      alerts open / resolve on the state the steps above left
--   7 evaluate_performance rewards (when installed)
--   8 refresh_scorecards   scorecards (when installed)
--   9 seal_audit           the audit chain seals the events committed before this run
-- Each step runs in its own subtransaction: one that fails is rolled back alone and
-- reported (outcome failed, its SQLSTATE and message); the others go on.  None of the
-- steps waits for a busy customer: recycle and expire_grants skip what another open
-- transaction holds and report it; the next run takes it.
CREATE FUNCTION allocation._run_maintenance(at timestamptz)
RETURNS TABLE (step text, outcome text, result text, code text, message text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._actor();
    v_at timestamptz := _run_maintenance.at;
    v_steps constant text[] := ARRAY['recycle', 'expire_grants', 'expire_transfers', 'dissolve_virtual_teams',
                                     'auto_settle_disputes', 'evaluate_alerts', 'evaluate_performance',
                                     'refresh_scorecards', 'seal_audit'];
    v_proc regprocedure;
    v_arg text;
    v_step text;
BEGIN
    PERFORM allocation._refuse_read_only('allocation.run_maintenance()');   -- 25006 on a standby, before anything else
    IF v_at IS NULL THEN
        RAISE EXCEPTION 'the time must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.run_maintenance() runs every time-driven step as of this time.',
              HINT = 'SELECT * FROM allocation.run_maintenance();';
    END IF;
    IF NOT allocation._is_manager(v_actor)
       AND NOT coalesce((SELECT ro.rolsuper FROM pg_catalog.pg_roles ro WHERE ro.rolname = v_actor), false) THEN
        RAISE EXCEPTION 'role % may not run maintenance', v_actor USING ERRCODE = 'LA0A5',
              DETAIL = 'allocation.run_maintenance() is run by managers, admins and the scheduler''s role.',
              HINT = 'Schedule it with pg_cron as a superuser or a role granted allocation.grant_role(..., ''manager'').';
    END IF;
    -- one run at a time: a second run while one is in progress does nothing and says so
    -- (a scheduler's next run comes soon; a run never waits behind a long one)
    PERFORM allocation._require_read_committed('run_maintenance');
    IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('allocation.run_maintenance')) THEN
        step := 'run_maintenance'; outcome := 'skipped'; result := NULL; code := NULL;
        message := 'another run_maintenance() is in progress';
        RETURN NEXT;
        RETURN;
    END IF;
    FOREACH v_step IN ARRAY v_steps LOOP
        step := v_step; outcome := 'ok'; result := NULL; code := NULL; message := NULL;
        BEGIN
            CASE v_step
            WHEN 'recycle' THEN
                SELECT pg_catalog.format('%s recycled, %s warned, %s skipped',
                                         count(*) FILTER (WHERE x.action = 'recycled'),
                                         count(*) FILTER (WHERE x.action = 'warned'),
                                         count(*) FILTER (WHERE x.action = 'skipped'))
                  INTO result FROM allocation.recycle(v_at) x;
            WHEN 'expire_grants' THEN
                result := allocation.expire_grants(v_at) || ' expired';
            WHEN 'expire_transfers' THEN
                result := allocation._expire_transfers(v_at) || ' expired';
            WHEN 'dissolve_virtual_teams' THEN
                result := allocation._dissolve_virtual_teams(v_at) || ' dissolved';
            WHEN 'auto_settle_disputes' THEN
                result := allocation._auto_settle_disputes(v_at) || ' settled';
            WHEN 'evaluate_alerts' THEN
                SELECT pg_catalog.format('%s opened, %s kept, %s resolved', x.opened, x.kept, x.resolved)
                  INTO result FROM allocation._evaluate_alerts(v_at) x;
            WHEN 'evaluate_performance', 'refresh_scorecards' THEN
                -- written by the measures module: run when installed.  evaluate_performance
                -- takes the time, or a period: the last complete calendar month before it
                v_proc := pg_catalog.to_regprocedure(pg_catalog.format('allocation.%I(timestamptz)', v_step));
                v_arg := '$1';
                IF v_proc IS NULL THEN
                    v_proc := pg_catalog.to_regprocedure(pg_catalog.format('allocation.%I(tstzrange)', v_step));
                    -- the last complete month before `at`, in the claim time zone (allocation.month_of)
                    v_arg := 'allocation.month_of(lower(allocation.month_of($1)) - interval ''1 second'')';
                END IF;
                IF v_proc IS NULL THEN
                    outcome := 'skipped'; message := pg_catalog.format('allocation.%s() is not installed', v_step);
                ELSE
                    EXECUTE pg_catalog.format('SELECT pg_catalog.left(pg_catalog.string_agg(x::text, ''; ''), 200) FROM allocation.%I(%s) x',
                                              v_step, v_arg)
                       INTO result USING v_at;
                END IF;
            WHEN 'seal_audit' THEN
                result := allocation.seal_audit() || ' events sealed';
            END CASE;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
            outcome := 'failed'; result := NULL;
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._run_maintenance(timestamptz) IS 'internal: implementation of allocation.run_maintenance(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.run_maintenance(at timestamptz DEFAULT now())
RETURNS TABLE (step text, outcome text, result text, code text, message text)
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.run_maintenance(timestamptz) IS
'Runs every time-driven step as of a time, in this order: recycle, expire_grants, expire_transfers, dissolve_virtual_teams, auto_settle_disputes, evaluate_alerts, evaluate_performance and refresh_scorecards (when installed), seal_audit; each step in its own subtransaction (one failing is reported, the others run); never waits for a busy customer; one run at a time (a second concurrent run is skipped); idempotent at the same time. For pg_cron: SELECT cron.schedule(''allocation-maintenance'', ''* * * * *'', ''SELECT * FROM allocation.run_maintenance()'')';
