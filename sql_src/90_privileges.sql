-------------------------------------------------------------------------------
-- Roles and privileges
-------------------------------------------------------------------------------
CREATE FUNCTION allocation._grant_role(role regrole, kind text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    r text := role::text;
BEGIN
    IF role IS NULL OR role = 0 THEN
        RAISE EXCEPTION 'role must name an existing role'
            USING ERRCODE = '22004', DETAIL = 'allocation.grant_role() was called with a NULL or invalid role.',
                  HINT = 'SELECT allocation.grant_role(''crm_manager'', ''manager'');';
    END IF;
    IF kind IS NULL OR kind NOT IN ('admin', 'manager', 'rep', 'analyst') THEN
        RAISE EXCEPTION 'unknown allocation role kind "%"', kind
            USING ERRCODE = '22023',
                  DETAIL = 'The kinds are admin (configures), manager (decides), rep (sells) and analyst (reads).',
                  HINT = 'SELECT allocation.grant_role(''crm_manager'', ''manager'');';
    END IF;
    -- Only public functions are granted: every internal function (name starting with
    -- "_") is executable by the extension owner alone; the public functions that change
    -- state are C gateways running their internal implementation for the caller.
    EXECUTE format('GRANT USAGE ON SCHEMA allocation TO %s', r);
    -- everyone: read the organisation, territories and rules; explain decisions
    EXECUTE format('GRANT SELECT ON allocation.team, allocation.rep, allocation.territory, allocation.rule TO %s', r);
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.explain(regclass, text), allocation.explain(regclass, jsonb),
                    allocation.owner_at(regclass, text, timestamptz), %s,
                    allocation.territory_geojson(), allocation.territory_holdings(),
                    allocation.territory_map_html(text, bigint, integer, integer, double precision), allocation.map_layers(),
                    allocation.datum_convert(double precision, double precision, text, text),
                    allocation.normalize_name(text), allocation.normalize_name(text, text[]),
                    allocation.normalize_phone(text), allocation.credit_code_is_valid(text),
                    allocation.explain_claim(regclass, text, bigint), allocation.claim_limits(bigint, text),
                    allocation.claimable(bigint), allocation.current_rep_id(),
                    allocation.claim_today() TO %s',
                   'allocation.territory_at'::regproc::regprocedure, r);
    EXECUTE format('GRANT SELECT ON allocation.claimable_now, allocation.claim_policy, allocation.recycle_policy TO %s', r);
    EXECUTE format('GRANT SELECT ON allocation.transfer_policy, allocation.pending_transfer TO %s', r);
    -- sharing: each role reads the shares it has a part in (active_share) and its own shared keys
    EXECUTE format('GRANT SELECT ON allocation.active_share TO %s', r);
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.shared_with_me(regclass, boolean), allocation.team_manager(bigint) TO %s', r);
    -- dealer networks (read with the caller's own rights on the customer table)
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.customer_network(regclass, text),
                    allocation.network_summary(regclass), allocation.network_mapping(regclass) TO %s', r);
    EXECUTE format('GRANT SELECT ON allocation.dealer_network TO %s', r);
    -- virtual teams: how a deal is split, a team's shares at a time, the credit (a rep: its own rows)
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.split_revenue(regclass, text, numeric, timestamptz),
                    allocation.team_shares_at(bigint, timestamptz) TO %s', r);
    EXECUTE format('GRANT SELECT ON allocation.revenue_credit TO %s', r);
    -- the loop's measures: everyone, a rep sees its own rows (checked inside)
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.rep_measures(tstzrange, integer), allocation.scorecard(tstzrange, integer),
                    allocation.month_of(timestamptz) TO %s', r);
    EXECUTE format('GRANT SELECT ON allocation.scorecard_monthly, allocation.active_reward, allocation.reward_rule,
                    allocation.new_rep_policy, allocation.my_alert, allocation.alert_rule TO %s', r);
    -- the rep's pool screen (its point argument is a PostGIS type: named by its function)
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s, allocation.claimable_count(regclass, bigint) TO %s',
                   'allocation.claimable_page'::regproc::regprocedure, r);
    IF kind IN ('rep', 'manager', 'admin') THEN
        -- claims, releases and follow-ups (a rep acts for itself: the rep is taken from its login)
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.claim(regclass, text), allocation.release(regclass, text, text),
                        allocation.log_followup(regclass, text, text, text, text, boolean, timestamptz) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.request_resource(bigint, regclass, text, numeric, text, tstzrange, bigint),
                        allocation.match_resources(regclass, text) TO %s', r);
        -- transfers: the holder hands over, the receiver asks, the approver its policy names decides
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.request_transfer(regclass, text, bigint, text),
                        allocation.approve_transfer(bigint, text), allocation.reject_transfer(bigint, text),
                        allocation.cancel_transfer(bigint) TO %s', r);
        -- sharing: the holder (or a manager) shares, the holder, a manager or the shared rep ends it
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.share_customer(regclass, text, bigint, text, tstzrange),
                        allocation.unshare_customer(regclass, text, bigint, text) TO %s', r);
        -- deals: a rep records those of customers it holds or shares in a virtual team
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.record_deal(regclass, text, numeric, timestamptz, text) TO %s', r);
        -- ownership disputes: a rep opens one for itself, reads the evidence of its own, withdraws its own claim
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.open_dispute(regclass, text, bigint, text),
                        allocation.dispute_evidence(bigint), allocation.dismiss_ownership_dispute(bigint, text) TO %s', r);
    END IF;
    IF kind IN ('analyst', 'manager', 'admin') THEN
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA allocation TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.upcoming_recycles(timestamptz) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.check_consistency() TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.verify_audit(text), allocation.audit_head() TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.stat(), allocation.stat_index() TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.dispute_evidence(bigint), allocation.explain_event(bigint) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.coverage_gaps(text), allocation.coverage_gaps_geojson(text) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.strategy_effectiveness(tstzrange, integer),
                        allocation.customer_potential(regclass, text) TO %s', r);
    END IF;
    IF kind IN ('manager', 'admin') THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.assign(regclass, text, bigint, text),
                        allocation.accept_suggestion(bigint), allocation.reject_suggestion(bigint, text),
                        allocation.claim(regclass, text, bigint), allocation.lock_customer(regclass, text, text),
                        allocation.unlock_customer(regclass, text, text), allocation.resolve_dispute(bigint, bigint, text),
                        allocation.dismiss_dispute(bigint, text), allocation.recycle(timestamptz),
                        allocation.approve_request(bigint), allocation.reject_request(bigint, text),
                        allocation.release_grant(bigint, text), allocation.expire_grants(timestamptz),
                        allocation.grant_resource(bigint, regclass, text, numeric, text, tstzrange, bigint),
                        allocation.expire_transfers(timestamptz), allocation.transfer_all(bigint, bigint[], text, boolean) TO %s', r);
        -- realignment (issue 15): plans, preview, apply (a procedure: it commits between batches)
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.realign_create(text, text, interval), %s,
                        allocation.realign_stage_rule(bigint, bigint, jsonb),
                        allocation.realign_stage_rep(bigint, bigint, integer, boolean, boolean),
                        allocation.realign_cancel(bigint, text), allocation.realign_preview(bigint),
                        allocation.realign_preview_reps(bigint), allocation.realign_apply_step(bigint, text, integer),
                        allocation.realign_in_block(), allocation.realign_geojson(bigint) TO %s',
                       'allocation.realign_stage_territory'::regproc::regprocedure, r);   -- its geometry: PostGIS's schema
        EXECUTE format('GRANT EXECUTE ON PROCEDURE allocation.realign_apply(bigint, text, integer) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.create_virtual_team(text, text, tstzrange, jsonb, regclass, text[]),
                        allocation.set_team_shares(bigint, jsonb), allocation.add_team_customer(bigint, regclass, text),
                        allocation.remove_team_customer(bigint, regclass, text), allocation.dissolve_virtual_team(bigint, text),
                        allocation.dissolve_virtual_teams(timestamptz) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.settle_dispute(bigint, bigint, text),
                        allocation.auto_settle_disputes(timestamptz) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.refresh_scorecards(timestamptz),
                        allocation.evaluate_performance(tstzrange) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.evaluate_alerts(timestamptz), allocation.resolve_alert(bigint, text),
                        allocation.run_maintenance(timestamptz) TO %s', r);
    END IF;
    IF kind = 'admin' THEN
        -- configuration only: the registry, counters, suggestions, locks, follow-ups and the
        -- audit log are written by the engine alone (actor and time set by it)
        EXECUTE format('GRANT INSERT, UPDATE, DELETE ON allocation.team, allocation.rep, allocation.territory,
                        allocation.rule, allocation.claim_policy, allocation.recycle_policy,
                        allocation.resource_pool, allocation.transfer_policy, allocation.reward_rule,
                        allocation.new_rep_policy, allocation.alert_rule TO %s', r);
        EXECUTE format('GRANT USAGE ON SEQUENCE allocation.team_id_seq, allocation.rep_id_seq, allocation.territory_id_seq,
                        allocation.rule_id_seq, allocation.claim_policy_id_seq, allocation.recycle_policy_id_seq,
                        allocation.resource_pool_id_seq, allocation.transfer_policy_id_seq, allocation.reward_rule_id_seq,
                        allocation.new_rep_policy_id_seq, allocation.alert_rule_id_seq TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.import_territories(jsonb, text, text, text, text),
                        allocation.import_territories(text, text, text, text, text), allocation.import_report(),
                        allocation.geojson_features(text),
                        allocation.manage(regclass, name, name, name, jsonb), allocation.unmanage(regclass),
                        allocation.set_reevaluate(regclass, text), allocation.set_location_datum(regclass, text), allocation.grant_role(regrole, text),
                        allocation.enable_rep_security(regclass), allocation.disable_rep_security(regclass),
                        allocation.cache_stats(), allocation.set_duplicate_policy(regclass, text, text, real, double precision) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.seal_audit() TO %s', r);
        -- outcomes from the CRM's own tables, the customers' potential (the table's owner, checked inside)
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.manage_outcomes(regclass, text, name, jsonb),
                        allocation.unmanage_outcomes(regclass), allocation.set_potential(regclass, text, jsonb) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.dispute_policy(bigint, boolean, text[]) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.stat_reset(regclass) TO %s', r);
        EXECUTE format('GRANT INSERT, UPDATE, DELETE ON allocation.name_term TO %s', r);
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._grant_role(regrole, text) IS 'internal: implementation of allocation.grant_role(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.grant_role(role regrole, kind text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.grant_role(regrole, text) IS
'Grants what an existing role needs to act as an allocation admin, manager, rep or analyst (nothing is granted to PUBLIC)';

-- Nothing for PUBLIC: revoke first, then grant through allocation.grant_role().
REVOKE ALL ON SCHEMA allocation FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA allocation FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA allocation FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA allocation FROM PUBLIC;

-- (Trigger functions need no EXECUTE at fire time; manage() callers get it via grant_role('admin').)

-------------------------------------------------------------------------------
-- pg_dump: configuration and history are user data
-------------------------------------------------------------------------------
SELECT pg_catalog.pg_extension_config_dump('allocation.team', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.rep', '');
-- rep_load is derived: recounted when ownership events are restored (trigger ownership_loaded)
SELECT pg_catalog.pg_extension_config_dump('allocation.rr_cursor', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.rr_share', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.territory', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.managed_table', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.rule', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.customer_state', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.suggestion', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.event', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.claim_policy', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.transfer_policy', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.transfer', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.customer_share', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.reward_rule', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.reward', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.new_rep_policy', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.claim_day', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.customer_lock', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.protection', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.followup', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.recycle_policy', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.duplicate', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.resource_pool', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.resource_request', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.resource_customer_use', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.resource_rep_use', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.expert_booking', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.audit_seal', '');
-- identities are derived but dumped, so duplicate detection works right after a restore
-- (the pg_trgm index of fuzzy matching is created again by trigger trgm_index when
-- the restore loads managed_table)
SELECT pg_catalog.pg_extension_config_dump('allocation.identity', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.identity_key', '');
-- the DBA's name terms (the built-in ones come with CREATE EXTENSION)
SELECT pg_catalog.pg_extension_config_dump('allocation.name_term', 'WHERE NOT builtin');
DO $$
DECLARE
    s regclass;
BEGIN
    -- identity sequences, one command each (each call updates pg_extension)
    FOR s IN SELECT c.oid FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'allocation'::regnamespace AND c.relkind = 'S' LOOP
        PERFORM pg_catalog.pg_extension_config_dump(s, '');
    END LOOP;
END
$$;

-------------------------------------------------------------------------------
-- search_path: every function is pinned to pg_catalog, pg_temp (set in its
-- definition).  The few SECURITY INVOKER functions that call PostGIS get
-- PostGIS's schema too; it is known only now.  SECURITY DEFINER functions and
-- everything the engine runs as the extension owner never search it: a role
-- with CREATE there could otherwise plant operators or functions that run
-- with the owner's rights.
-------------------------------------------------------------------------------
DO $$
DECLARE
    f regprocedure;
    postgis_schema name;
BEGIN
    SELECT n.nspname INTO postgis_schema FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis';
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'allocation'::regnamespace AND NOT p.prosecdef
                AND p.prolang <> (SELECT l.oid FROM pg_catalog.pg_language l WHERE l.lanname = 'c')
                AND p.proname IN ('import_territories', 'territory_at', 'territory_geojson') LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', f, postgis_schema);
    END LOOP;
END
$$;
