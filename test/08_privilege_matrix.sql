-- pgTAP: the complete privilege matrix.  Every function of the extension is
-- listed here with the kinds (grant_role) that may execute it; a function
-- missing from the list fails the test, so a new function cannot ship
-- without a decision.  Internal functions ("_" names) are the extension
-- owner's alone.  Tables: only configuration is writable, by admins only.
\set ECHO none
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
\set ON_ERROR_STOP 1

BEGIN;
CREATE EXTENSION allocation;

CREATE ROLE tapm_rep; CREATE ROLE tapm_manager; CREATE ROLE tapm_analyst; CREATE ROLE tapm_admin; CREATE ROLE tapm_app;
SELECT allocation.grant_role('tapm_rep', 'rep'), allocation.grant_role('tapm_manager', 'manager'),
       allocation.grant_role('tapm_analyst', 'analyst'), allocation.grant_role('tapm_admin', 'admin');

-- fn: regprocedure text; kinds that may execute it (r = rep, m = manager, a = analyst, A = admin)
CREATE TEMP TABLE matrix (fn text PRIMARY KEY, kinds text NOT NULL);
INSERT INTO matrix VALUES
    -- everyone: read, explain, normalize
    ('allocation.explain(regclass,text)',                                    'rmaA'),
    ('allocation.explain(regclass,jsonb)',                                   'rmaA'),
    ('allocation.owner_at(regclass,text,timestamp with time zone)',          'rmaA'),
    ('allocation.rep_measures(tstzrange,integer)',                           'rmaA'),
    ('allocation.manage_outcomes(regclass,text,name,jsonb)',                 'A'),
    ('allocation.unmanage_outcomes(regclass)',                               'A'),
    ('allocation.set_potential(regclass,text,jsonb)',                        'A'),
    ('allocation.customer_potential(regclass,text)',                         'maA'),
    ('allocation.evaluate_alerts(timestamp with time zone)',                 'mA'),
    ('allocation.resolve_alert(bigint,text)',                                'mA'),
    ('allocation.run_maintenance(timestamp with time zone)',                 'mA'),
    ('allocation.scorecard(tstzrange,integer)',                              'rmaA'),
    ('allocation.month_of(timestamp with time zone)',                        'rmaA'),
    ('allocation.strategy_effectiveness(tstzrange,integer)',                 'maA'),
    ('allocation.refresh_scorecards(timestamp with time zone)',              'mA'),
    ('allocation.evaluate_performance(tstzrange)',                           'mA'),
    ('allocation.open_dispute(regclass,text,bigint,text)',                   'rmA'),
    ('allocation.dispute_evidence(bigint)',                                  'rmaA'),
    ('allocation.dismiss_ownership_dispute(bigint,text)',                    'rmA'),
    ('allocation.settle_dispute(bigint,bigint,text)',                        'mA'),
    ('allocation.auto_settle_disputes(timestamp with time zone)',            'mA'),
    ('allocation.dispute_policy(bigint,boolean,text[])',                     'A'),
    ('allocation.explain_event(bigint)',                                     'maA'),
    ('allocation.split_revenue(regclass,text,numeric,timestamp with time zone)', 'rmaA'),
    ('allocation.team_shares_at(bigint,timestamp with time zone)',           'rmaA'),
    ('allocation.record_deal(regclass,text,numeric,timestamp with time zone,text)', 'rmA'),
    ('allocation.create_virtual_team(text,text,tstzrange,jsonb,regclass,text[])', 'mA'),
    ('allocation.set_team_shares(bigint,jsonb)',                             'mA'),
    ('allocation.add_team_customer(bigint,regclass,text)',                   'mA'),
    ('allocation.remove_team_customer(bigint,regclass,text)',                'mA'),
    ('allocation.dissolve_virtual_team(bigint,text)',                        'mA'),
    ('allocation.dissolve_virtual_teams(timestamp with time zone)',          'mA'),
    ('allocation.territory_at(geometry)',                                    'rmaA'),
    ('allocation.territory_geojson()',                                       'rmaA'),
    ('allocation.territory_map_html(text,bigint,integer,integer,double precision)', 'rmaA'),
    ('allocation.map_layers()',                                              'rmaA'),
    ('allocation.datum_convert(double precision,double precision,text,text)', 'rmaA'),
    ('allocation.set_location_datum(regclass,text)',                         'A'),
    ('allocation.territory_holdings()',                                      'rmaA'),
    ('allocation.normalize_name(text)',                                      'rmaA'),
    ('allocation.normalize_name(text,text[])',                               'rmaA'),
    ('allocation.normalize_phone(text)',                                     'rmaA'),
    ('allocation.credit_code_is_valid(text)',                                'rmaA'),
    ('allocation.explain_claim(regclass,text,bigint)',                       'rmaA'),
    ('allocation.claim_limits(bigint,text)',                                 'rmaA'),
    ('allocation.claimable(bigint)',                                         'rmaA'),
    ('allocation.claimable_page(regclass,geometry,integer,integer,boolean,bigint)', 'rmaA'),
    ('allocation.claimable_count(regclass,bigint)',                          'rmaA'),
    ('allocation.current_rep_id()',                                          'rmaA'),
    ('allocation.claim_today()',                                             'rmaA'),
    -- reps (and managers, admins): act for themselves
    ('allocation.claim(regclass,text)',                                      'rmA'),
    ('allocation.release(regclass,text,text)',                               'rmA'),
    ('allocation.log_followup(regclass,text,text,text,text,boolean,timestamp with time zone)', 'rmA'),
    ('allocation.request_resource(bigint,regclass,text,numeric,text,tstzrange,bigint)', 'rmA'),
    ('allocation.match_resources(regclass,text)',                            'rmA'),
    ('allocation.request_transfer(regclass,text,bigint,text)',               'rmA'),
    ('allocation.approve_transfer(bigint,text)',                             'rmA'),
    ('allocation.reject_transfer(bigint,text)',                              'rmA'),
    ('allocation.cancel_transfer(bigint)',                                   'rmA'),
    ('allocation.share_customer(regclass,text,bigint,text,tstzrange)',       'rmA'),
    ('allocation.unshare_customer(regclass,text,bigint,text)',               'rmA'),
    ('allocation.shared_with_me(regclass,boolean)',                          'rmaA'),
    ('allocation.team_manager(bigint)',                                      'rmaA'),
    ('allocation.customer_network(regclass,text)',                           'rmaA'),
    ('allocation.network_summary(regclass)',                                 'rmaA'),
    ('allocation.network_mapping(regclass)',                                 'rmaA'),
    -- readers of the whole picture
    ('allocation.upcoming_recycles(timestamp with time zone)',               'maA'),
    ('allocation.check_consistency()',                                       'maA'),
    ('allocation.verify_audit(text)',                                        'maA'),
    ('allocation.audit_head()',                                              'maA'),
    ('allocation.stat()',                                                    'maA'),
    ('allocation.stat_index()',                                              'maA'),
    -- managers: decisions
    ('allocation.assign(regclass,text,bigint,text)',                         'mA'),
    ('allocation.accept_suggestion(bigint)',                                 'mA'),
    ('allocation.reject_suggestion(bigint,text)',                            'mA'),
    ('allocation.claim(regclass,text,bigint)',                               'mA'),
    ('allocation.lock_customer(regclass,text,text)',                         'mA'),
    ('allocation.unlock_customer(regclass,text,text)',                       'mA'),
    ('allocation.resolve_dispute(bigint,bigint,text)',                       'mA'),
    ('allocation.dismiss_dispute(bigint,text)',                              'mA'),
    ('allocation.recycle(timestamp with time zone)',                         'mA'),
    ('allocation.approve_request(bigint)',                                   'mA'),
    ('allocation.reject_request(bigint,text)',                               'mA'),
    ('allocation.release_grant(bigint,text)',                                'mA'),
    ('allocation.expire_grants(timestamp with time zone)',                   'mA'),
    ('allocation.grant_resource(bigint,regclass,text,numeric,text,tstzrange,bigint)', 'mA'),
    ('allocation.expire_transfers(timestamp with time zone)',                'mA'),
    ('allocation.transfer_all(bigint,bigint[],text,boolean)',                'mA'),
    ('allocation.realign_create(text,text,interval)',                        'mA'),
    ('allocation.realign_stage_territory(bigint,text,geometry,bigint,bigint,integer,boolean,boolean)', 'mA'),
    ('allocation.realign_stage_rule(bigint,bigint,jsonb)',                   'mA'),
    ('allocation.realign_stage_rep(bigint,bigint,integer,boolean,boolean)',  'mA'),
    ('allocation.realign_cancel(bigint,text)',                               'mA'),
    ('allocation.realign_preview(bigint)',                                   'mA'),
    ('allocation.realign_preview_reps(bigint)',                              'mA'),
    ('allocation.realign_apply_step(bigint,text,integer)',                   'mA'),
    ('allocation.realign_in_block()',                                        'mA'),
    ('allocation.realign_geojson(bigint)',                                   'mA'),
    ('allocation.realign_apply(bigint,text,integer)',                        'mA'),
    -- analysts, managers, admins: where nobody sells (read with the caller's rights on customer tables)
    ('allocation.coverage_gaps(text)',                                       'maA'),
    ('allocation.coverage_gaps_geojson(text)',                               'maA'),
    -- admins: configuration
    ('allocation.import_territories(jsonb,text,text,text,text)',             'A'),
    ('allocation.import_territories(text,text,text,text,text)',              'A'),
    ('allocation.import_report()',                                           'A'),
    ('allocation.geojson_features(text)',                                    'A'),
    ('allocation.manage(regclass,name,name,name,jsonb)',                     'A'),
    ('allocation.unmanage(regclass)',                                        'A'),
    ('allocation.set_reevaluate(regclass,text)',                             'A'),
    ('allocation.grant_role(regrole,text)',                                  'A'),
    ('allocation.enable_rep_security(regclass)',                             'A'),
    ('allocation.disable_rep_security(regclass)',                            'A'),
    ('allocation.cache_stats()',                                             'A'),
    ('allocation.seal_audit()',                                              'A'),
    ('allocation.stat_reset(regclass)',                                      'A'),
    ('allocation.set_duplicate_policy(regclass,text,text,real,double precision)', 'A'),
    -- nobody (read by the engine's own views and functions)
    ('allocation.customer_history_score(integer,text)',                      '');

SELECT plan((SELECT count(*)::int * 5 FROM matrix) + 23);

-- every public function of the extension is in the matrix, and every listed one exists
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'allocation'::regnamespace AND p.proname !~ '^_'
       AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
    EXCEPT SELECT fn FROM matrix
$$, 'every public function has a row in the privilege matrix');
SELECT is_empty($$ SELECT fn FROM matrix WHERE to_regprocedure(fn) IS NULL $$,
                'every function of the matrix exists');

-- who may execute what
SELECT is(has_function_privilege('tapm_' || k.kind, m.fn, 'EXECUTE'), strpos(m.kinds, k.letter) > 0,
          format('%s %s execute %s', k.kind, CASE WHEN strpos(m.kinds, k.letter) > 0 THEN 'may' ELSE 'may not' END, m.fn))
  FROM matrix m,
       (VALUES ('rep', 'r'), ('manager', 'm'), ('analyst', 'a'), ('admin', 'A')) k(kind, letter)
 ORDER BY m.fn, k.kind;
SELECT is(has_function_privilege('tapm_app', m.fn, 'EXECUTE'), false, format('a role of no kind may not execute %s', m.fn))
  FROM matrix m ORDER BY m.fn;

-- internals: the extension owner's alone (also no PUBLIC, no kind)
SELECT is_empty($$
    SELECT p.oid::regprocedure::text || ' -> ' || CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
      FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
     WHERE p.pronamespace = 'allocation'::regnamespace AND p.proname ~ '^_' AND a.grantee <> p.proowner
$$, 'every internal function is executable by the extension owner only');
-- a SECURITY DEFINER function is a public entry point with its own checks, or an internal one
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'allocation'::regnamespace AND p.prosecdef
       AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)
$$, 'every SECURITY DEFINER function pins search_path to pg_catalog, pg_temp');
-- the C gateways: SECURITY INVOKER (they record the caller), each with an internal implementation
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'allocation'::regnamespace AND p.prosrc = 'allocation_gateway'
       AND (p.prosecdef OR to_regprocedure('allocation._' || p.proname || '(' ||
                           coalesce((SELECT string_agg(format_type(t, NULL), ',' ORDER BY o)
                                       FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY u(t, o)), '') || ')') IS NULL)
$$, 'every gateway is SECURITY INVOKER and has its internal implementation');
SELECT cmp_ok((SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'allocation'::regnamespace
                 AND p.prosrc = 'allocation_gateway'), '>=', 15::bigint, 'the state-changing public functions are gateways');

-- tables: only configuration is writable, and only by admins; the log and the registry by nobody
SELECT is_empty($$
    SELECT c.relname || ' ' || a.privilege_type || ' -> ' || a.grantee::regrole::text
      FROM pg_class c, aclexplode(c.relacl) a
     WHERE c.relnamespace = 'allocation'::regnamespace AND c.relkind = 'r' AND a.grantee <> c.relowner
       AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
       AND NOT (c.relname IN ('team', 'rep', 'territory', 'rule', 'claim_policy', 'recycle_policy', 'resource_pool', 'name_term',
                              'transfer_policy', 'reward_rule', 'new_rep_policy', 'alert_rule')
                AND a.grantee = 'tapm_admin'::regrole AND a.privilege_type <> 'TRUNCATE')
$$, 'no role writes an engine-maintained table; admins write configuration only');
SELECT is(has_table_privilege('tapm_admin', 'allocation.event', 'INSERT'), false, 'not even an admin inserts into the audit log');
SELECT is(has_table_privilege('tapm_admin', 'allocation.customer_state', 'UPDATE'), false, 'not even an admin edits the ownership state');
SELECT is(has_table_privilege('tapm_admin', 'allocation.transfer', 'UPDATE'), false, 'not even an admin edits a transfer request');
SELECT is(has_table_privilege('tapm_rep', 'allocation.transfer', 'SELECT'), false, 'a rep reads transfers only through pending_transfer (its own)');
SELECT is(has_table_privilege('tapm_rep', 'allocation.pending_transfer', 'SELECT'), true, 'a rep reads pending_transfer');
SELECT is(has_table_privilege('tapm_rep', 'allocation.my_alert', 'SELECT'), true, 'a rep reads my_alert (its own alerts)');
SELECT is(has_table_privilege('tapm_rep', 'allocation.alert', 'SELECT'), false, 'a rep does not read allocation.alert');
SELECT is(has_table_privilege('tapm_rep', 'allocation.scorecard_month', 'SELECT'), false, 'a rep reads scorecards only through scorecard_monthly (its own)');
SELECT is(has_table_privilege('tapm_rep', 'allocation.reward', 'SELECT'), false, 'a rep reads rewards only through active_reward (its own)');
SELECT is(has_table_privilege('tapm_admin', 'allocation.alert', 'INSERT'), false, 'nobody writes alerts directly');
SELECT is(has_table_privilege('tapm_rep', 'allocation.revenue_credit', 'SELECT'), true, 'a rep reads revenue_credit (its own rows)');
SELECT is(has_table_privilege('tapm_rep', 'allocation.deal', 'SELECT'), false, 'a rep reads deals only through revenue_credit');
SELECT is(has_table_privilege('tapm_admin', 'allocation.virtual_team_member', 'UPDATE'), false, 'not even an admin edits team shares (set_team_shares() does)');
SELECT is(has_table_privilege('tapm_rep', 'allocation.customer_share', 'SELECT'), false, 'a rep reads shares only through active_share (its own)');
SELECT is(has_table_privilege('tapm_rep', 'allocation.active_share', 'SELECT'), true, 'a rep reads active_share');
SELECT is(has_table_privilege('tapm_admin', 'allocation.customer_share', 'INSERT'), false, 'not even an admin writes a share directly');

SELECT * FROM finish();
ROLLBACK;
