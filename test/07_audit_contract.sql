-- pgTAP: the contract of the tamper-evident audit (seal_audit, verify_audit,
-- audit_head, allocation.audit_seal) and of configuration auditing:
-- signatures, who may call what, NULL inputs, append-only seals, no hashing on
-- the insert path, pg_dump registration, the config_change triggers.
\set ECHO none
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
\set ON_ERROR_STOP 1

BEGIN;
CREATE EXTENSION allocation;

SELECT plan(49);

-------------------------------------------------------------------------------
-- Signatures
-------------------------------------------------------------------------------
SELECT function_returns('allocation', 'seal_audit', ARRAY[]::text[], 'integer', 'seal_audit() returns integer');
SELECT function_returns('allocation', 'verify_audit', ARRAY['text'], 'setof record', 'verify_audit(text) returns rows');
SELECT function_returns('allocation', 'audit_head', ARRAY[]::text[], 'setof record', 'audit_head() returns rows');
SELECT is(pg_get_function_arguments('allocation.verify_audit(text)'::regprocedure),
          'expected_head text DEFAULT NULL::text', 'verify_audit(expected_head) defaults to NULL');
SELECT is(pg_get_function_result('allocation.verify_audit(text)'::regprocedure),
          'TABLE(event_id bigint, seal_id bigint, problem text, detail text)', 'verify_audit result columns');
SELECT is(pg_get_function_result('allocation.audit_head()'::regprocedure),
          'TABLE(seal_id bigint, hash text, sealed_at timestamp with time zone, last_event_id bigint, events_sealed bigint)',
          'audit_head result columns');
SELECT is((SELECT prosecdef FROM pg_proc WHERE oid = 'allocation.seal_audit()'::regprocedure), true,
          'seal_audit runs as the extension owner (SECURITY DEFINER)');
SELECT is((SELECT prosecdef FROM pg_proc WHERE oid = 'allocation.verify_audit(text)'::regprocedure), true,
          'verify_audit sees every event and seal whoever calls it (SECURITY DEFINER)');
SELECT isnt((SELECT provolatile::text FROM pg_proc WHERE oid = 'allocation.verify_audit(text)'::regprocedure), 'v',
            'verify_audit is read-only (not VOLATILE)');

-------------------------------------------------------------------------------
-- The seal table
-------------------------------------------------------------------------------
SELECT has_table('allocation', 'audit_seal', 'table audit_seal exists');
SELECT col_is_pk('allocation', 'audit_seal', 'id', 'audit_seal is keyed by id');
SELECT col_is_unique('allocation', 'audit_seal', 'prev_hash', 'one successor per seal: the chain cannot fork');
SELECT col_type_is('allocation', 'audit_seal', 'events', 'int8multirange', 'audit_seal.events is an int8multirange');
SELECT col_type_is('allocation', 'audit_seal', 'digests', 'bytea[]', 'audit_seal.digests is bytea[]');
SELECT ok('allocation.audit_seal'::regclass IN (SELECT unnest(extconfig) FROM pg_extension WHERE extname = 'allocation'),
          'audit_seal is registered with pg_extension_config_dump');
SELECT ok(pg_get_serial_sequence('allocation.audit_seal', 'id')::regclass
            IN (SELECT unnest(extconfig) FROM pg_extension WHERE extname = 'allocation'),
          'the audit_seal id sequence is registered with pg_extension_config_dump');
SELECT trigger_is('allocation', 'audit_seal', 'audit_seal_no_update', 'allocation', '_event_append_only',
                  'audit_seal refuses UPDATE and DELETE (_event_append_only)');
SELECT trigger_is('allocation', 'audit_seal', 'audit_seal_no_truncate', 'allocation', '_event_append_only',
                  'audit_seal refuses TRUNCATE (_event_append_only)');
SELECT throws_ok('TRUNCATE allocation.audit_seal', 'LA050', NULL, 'TRUNCATE of the seals is refused with LA050');

-- the insert path pays no hashing: the only triggers on event are the append-only ones
-- and the recount after ownership events loaded outside the engine (restore)
SELECT set_eq($$SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'allocation.event'::regclass AND NOT tgisinternal$$,
              ARRAY['event_no_update', 'event_no_truncate', 'ownership_loaded'],
              'allocation.event has no trigger but the append-only ones and the recount (sealing is batched)');

-------------------------------------------------------------------------------
-- NULL and odd inputs
-------------------------------------------------------------------------------
SELECT is_empty('SELECT * FROM allocation.verify_audit(NULL)', 'verify_audit(NULL) on an empty log reports nothing');
SELECT is_empty('SELECT * FROM allocation.verify_audit()', 'verify_audit() on an empty log reports nothing');
SELECT is_empty('SELECT * FROM allocation.audit_head()', 'audit_head() has no row before the first seal');
SELECT is(allocation.seal_audit(), 0, 'seal_audit() on an empty log seals nothing');
SELECT results_eq($$SELECT problem FROM allocation.verify_audit('')$$, ARRAY['head_not_found'],
                  'an empty expected head is not in the chain');
SELECT results_eq($$SELECT problem FROM allocation.verify_audit('not a hash')$$, ARRAY['head_not_found'],
                  'a malformed expected head is reported, not an error');

-------------------------------------------------------------------------------
-- Who may call what
-------------------------------------------------------------------------------
CREATE ROLE tap_rep; CREATE ROLE tap_manager; CREATE ROLE tap_analyst; CREATE ROLE tap_admin;
SELECT allocation.grant_role('tap_rep', 'rep'), allocation.grant_role('tap_manager', 'manager'),
       allocation.grant_role('tap_analyst', 'analyst'), allocation.grant_role('tap_admin', 'admin');

CREATE TEMP TABLE matrix (fn text, rep boolean, manager boolean, analyst boolean, admin boolean);
INSERT INTO matrix VALUES
    ('allocation.seal_audit()',          false, false, false, true),
    ('allocation.verify_audit(text)',    false, true,  true,  true),
    ('allocation.audit_head()',          false, true,  true,  true);
SELECT is(has_function_privilege('tap_' || k, m.fn, 'EXECUTE'),
          CASE k WHEN 'rep' THEN m.rep WHEN 'manager' THEN m.manager WHEN 'analyst' THEN m.analyst ELSE m.admin END,
          format('%s %s execute %s', k, CASE WHEN CASE k WHEN 'rep' THEN m.rep WHEN 'manager' THEN m.manager
                                                        WHEN 'analyst' THEN m.analyst ELSE m.admin END
                                             THEN 'may' ELSE 'may not' END, m.fn))
  FROM matrix m, unnest(ARRAY['rep', 'manager', 'analyst', 'admin']) k;
SELECT is(has_table_privilege('tap_' || k, 'allocation.audit_seal', p), false,
          format('%s may not %s allocation.audit_seal', k, p))
  FROM unnest(ARRAY['manager', 'admin']) k, unnest(ARRAY['INSERT', 'UPDATE', 'DELETE']) p;
SELECT is_empty($$
    SELECT p.oid::regprocedure::text || ' -> ' || a.grantee::regrole::text
      FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
     WHERE p.pronamespace = 'allocation'::regnamespace
       AND p.proname IN ('_event_canonical', '_event_digest', '_genesis', '_seal_hash', '_seal_ids', '_xid8', '_xid_ref',
                         '_late_ok', '_config_json', '_config_audit')
       AND a.grantee <> p.proowner
$$, 'the internals of sealing and configuration auditing are executable by their owner only');

-------------------------------------------------------------------------------
-- Configuration tables record their changes
-------------------------------------------------------------------------------
SELECT is_empty($$
    SELECT t || ' ' || op FROM unnest(ARRAY['team', 'rep', 'territory', 'rule', 'claim_policy', 'recycle_policy',
                                            'resource_pool']) t,
           (VALUES ('insert', 4), ('delete', 8), ('update', 16), ('truncate', 32)) o(op, bit)
     WHERE NOT EXISTS (SELECT 1 FROM pg_trigger g
                        WHERE g.tgrelid = ('allocation.' || t)::regclass AND NOT g.tgisinternal
                          AND g.tgfoid = 'allocation._config_audit()'::regprocedure
                          AND g.tgenabled IN ('O', 'A') AND (g.tgtype & o.bit) <> 0)
$$, 'every configuration table records INSERT, UPDATE, DELETE and TRUNCATE (_config_audit)');
SELECT is_empty($$
    SELECT g.tgrelid::regclass::text FROM pg_trigger g
     WHERE g.tgfoid = 'allocation._config_audit()'::regprocedure
       AND g.tgrelid IN ('allocation.rep_load'::regclass, 'allocation.rr_cursor'::regclass, 'allocation.event'::regclass,
                         'allocation.audit_seal'::regclass, 'allocation.customer_state'::regclass)
$$, 'engine state (counters, cursor, registry, log, seals) is not audited as configuration');
SELECT is((SELECT prosecdef FROM pg_proc WHERE oid = 'allocation._config_audit()'::regprocedure), true,
          'configuration events are written as the extension owner (an admin needs no INSERT on event)');

SET LOCAL ROLE tap_admin;
INSERT INTO allocation.team (code, name) VALUES ('t', 'Team T');
RESET ROLE;
SELECT results_eq($$SELECT actor, kind, detail->>'table', detail->>'op' FROM allocation.event ORDER BY id DESC LIMIT 1$$,
                  $$VALUES ('tap_admin'::text, 'config_change'::text, 'team'::text, 'insert'::text)$$,
                  'an admin''s change is recorded as config_change with the admin as actor');

SELECT * FROM finish();
ROLLBACK;
