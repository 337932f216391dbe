-- pgTAP: the contract of claims, duplicate detection and the public pool
-- (signatures, who may call what, what nobody may call, dump registration).
\set ECHO none
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
\set ON_ERROR_STOP 1

BEGIN;
CREATE EXTENSION allocation;

SELECT plan(77);

-------------------------------------------------------------------------------
-- Signatures and results
-------------------------------------------------------------------------------
SELECT function_returns('allocation', 'claim', ARRAY['regclass', 'text'], 'void', 'claim(regclass, text) returns void');
SELECT function_returns('allocation', 'claim', ARRAY['regclass', 'text', 'bigint'], 'void', 'claim(regclass, text, bigint) returns void');
SELECT function_returns('allocation', 'release', ARRAY['regclass', 'text', 'text'], 'void', 'release(regclass, text, text) returns void');
SELECT function_returns('allocation', 'explain_claim', ARRAY['regclass', 'text', 'bigint'], 'jsonb', 'explain_claim returns jsonb');
SELECT function_returns('allocation', 'claim_limits', ARRAY['bigint', 'text'], 'setof record', 'claim_limits returns rows');
SELECT function_returns('allocation', 'claimable', ARRAY['bigint'], 'setof record', 'claimable returns rows');
SELECT function_returns('allocation', 'claim_today', ARRAY[]::text[], 'date', 'claim_today returns date');
SELECT function_returns('allocation', 'set_duplicate_policy', ARRAY['regclass', 'text', 'text', 'real', 'double precision'], 'integer',
                        'set_duplicate_policy returns integer');
SELECT function_returns('allocation', 'lock_customer', ARRAY['regclass', 'text', 'text'], 'void', 'lock_customer returns void');
SELECT function_returns('allocation', 'unlock_customer', ARRAY['regclass', 'text', 'text'], 'boolean', 'unlock_customer returns boolean');
SELECT function_returns('allocation', 'log_followup', ARRAY['regclass', 'text', 'text', 'text', 'text', 'boolean', 'timestamp with time zone'],
                        'bigint', 'log_followup returns the follow-up id');
SELECT function_returns('allocation', 'recycle', ARRAY['timestamp with time zone'], 'setof record', 'recycle returns what it did');
SELECT function_returns('allocation', 'resolve_dispute', ARRAY['bigint', 'bigint', 'text'], 'void', 'resolve_dispute returns void');
SELECT function_returns('allocation', 'dismiss_dispute', ARRAY['bigint', 'text'], 'void', 'dismiss_dispute returns void');
SELECT is((SELECT pg_get_function_arguments('allocation.set_duplicate_policy(regclass,text,text,real,double precision)'::regprocedure)),
          'tbl regclass, exact text, fuzzy text DEFAULT ''off''::text, name_similarity real DEFAULT 0.6, within_m double precision DEFAULT NULL::double precision',
          'set_duplicate_policy argument names and defaults');
SELECT is((SELECT pg_get_function_arguments('allocation.recycle(timestamptz)'::regprocedure)),
          'now timestamp with time zone DEFAULT now()', 'recycle(now) defaults to now()');
SELECT has_view('allocation', 'claimable_now', 'view claimable_now exists');
SELECT has_view('allocation', 'dispute_queue', 'view dispute_queue exists');
SELECT has_view('allocation', 'upcoming_recycle', 'view upcoming_recycle exists');
SELECT has_table('allocation', t, 'table ' || t || ' exists')
  FROM unnest(ARRAY['claim_policy', 'claim_day', 'customer_lock', 'protection', 'followup', 'recycle_policy',
                    'identity', 'identity_key', 'duplicate']) t;
SELECT col_is_pk('allocation', 'identity_key', ARRAY['managed_id', 'kind', 'value'],
                 'identity_key is keyed by table, kind and value (the arbiter of concurrent writers)');
SELECT col_is_pk('allocation', 'customer_state', ARRAY['managed_id', 'key'],
                 'one current state row at most per customer (primary key)');

-------------------------------------------------------------------------------
-- Who may call what (grant_role kinds)
-------------------------------------------------------------------------------
CREATE ROLE tap_rep; CREATE ROLE tap_manager; CREATE ROLE tap_analyst; CREATE ROLE tap_admin;
SELECT allocation.grant_role('tap_rep', 'rep'), allocation.grant_role('tap_manager', 'manager'),
       allocation.grant_role('tap_analyst', 'analyst'), allocation.grant_role('tap_admin', 'admin');

CREATE TEMP TABLE matrix (fn text, rep boolean, manager boolean, analyst boolean, admin boolean);
INSERT INTO matrix VALUES
    ('allocation.claim(regclass,text)',                               true,  true,  false, true),
    ('allocation.claim(regclass,text,bigint)',                        false, true,  false, true),
    ('allocation.release(regclass,text,text)',                        true,  true,  false, true),
    ('allocation.explain_claim(regclass,text,bigint)',                true,  true,  true,  true),
    ('allocation.log_followup(regclass,text,text,text,text,boolean,timestamptz)', true, true, false, true),
    ('allocation.lock_customer(regclass,text,text)',                  false, true,  false, true),
    ('allocation.recycle(timestamptz)',                               false, true,  false, true),
    ('allocation.resolve_dispute(bigint,bigint,text)',                false, true,  false, true),
    ('allocation.set_duplicate_policy(regclass,text,text,real,double precision)', false, false, false, true),
    ('allocation.request_resource(bigint,regclass,text,numeric,text,tstzrange,bigint)', true, true, false, true),
    ('allocation.approve_request(bigint)',                             false, true,  false, true),
    ('allocation.grant_resource(bigint,regclass,text,numeric,text,tstzrange,bigint)', false, true, false, true);
SELECT is(has_function_privilege('tap_' || k, m.fn, 'EXECUTE'),
          CASE k WHEN 'rep' THEN m.rep WHEN 'manager' THEN m.manager WHEN 'analyst' THEN m.analyst ELSE m.admin END,
          format('%s %s execute %s', k, CASE WHEN CASE k WHEN 'rep' THEN m.rep WHEN 'manager' THEN m.manager
                                                        WHEN 'analyst' THEN m.analyst ELSE m.admin END
                                             THEN 'may' ELSE 'may not' END, m.fn))
  FROM matrix m, unnest(ARRAY['rep', 'manager', 'analyst', 'admin']) k
 WHERE k IN ('rep', 'manager') OR m.fn IN ('allocation.claim(regclass,text,bigint)', 'allocation.set_duplicate_policy(regclass,text,text,real,double precision)');

-- internals that run as the extension owner or the table owner: nobody gets them
SELECT is_empty($$
    SELECT p.oid::regprocedure::text || ' -> ' || a.grantee::regrole::text
      FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
     WHERE p.pronamespace = 'allocation'::regnamespace
       AND p.proname IN ('_owner_update', '_claim', '_release', '_identity_register', '_identity_forget',
                         '_identity_promote', '_record_duplicates', '_identity_rebuild', '_recycle_status',
                         '_identity_holder', '_duplicate_decided', '_lock_customer', '_set_actor', '_lock_counter',
                         '_request_resource', '_take_units', '_return_units', '_serve_waitlist', '_auto_grant',
                         '_table_rows', '_check_caps', '_table_held', '_table_nearest')
       AND a.grantee <> p.proowner
$$, 'the internals of claims, identities and recycling are executable by their owner only');
SELECT is(has_table_privilege('tap_rep', 'allocation.followup', 'INSERT'), false, 'a rep records follow-ups through log_followup() only');
SELECT is(has_table_privilege('tap_rep', 'allocation.followup', 'UPDATE'), false, 'a rep may not rewrite follow-ups');
SELECT is(has_table_privilege('tap_rep', 'allocation.followup', 'SELECT'), false, 'a rep may not read every follow-up');
SELECT is(has_table_privilege('tap_rep', 'allocation.claim_day', 'UPDATE'), false, 'a rep may not reset its claim counter');
SELECT is(has_table_privilege('tap_rep', 'allocation.customer_lock', 'DELETE'), false, 'a rep may not remove a lock');
SELECT is(has_table_privilege('tap_rep', 'allocation.identity', 'SELECT'), false, 'a rep may not read the identity index');
SELECT is(has_table_privilege('tap_manager', 'allocation.claim_policy', 'UPDATE'), false, 'a manager may not change claim limits');
SELECT is(has_table_privilege('tap_admin', 'allocation.claim_policy', 'UPDATE'), true, 'an admin may change claim limits');
SELECT is(has_table_privilege('tap_admin', 'allocation.recycle_policy', 'INSERT'), true, 'an admin may write recycle policies');
SELECT is(has_table_privilege('tap_admin', 'allocation.identity_key', 'DELETE'), false, 'not even an admin edits the identity arbiter');
SELECT is(has_table_privilege('tap_analyst', 'allocation.dispute_queue', 'SELECT'), true, 'an analyst reads the dispute queue');
SELECT is(has_table_privilege('tap_analyst', 'allocation.upcoming_recycle', 'SELECT'), true, 'an analyst reads the warning list');
SELECT is(has_table_privilege('tap_rep', 'allocation.claimable_now', 'SELECT'), true, 'a rep reads what it can claim');

-------------------------------------------------------------------------------
-- Settings and dump registration
-------------------------------------------------------------------------------
SELECT allocation.cache_stats() IS NOT NULL AS loaded \gset
SELECT is((SELECT context FROM pg_settings WHERE name = 'allocation.claim_timezone'), 'superuser',
          'allocation.claim_timezone can only be set by a superuser');
SELECT set_has($$
    SELECT unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'allocation'
$$, $$
    SELECT ('allocation.' || t) FROM unnest(ARRAY['claim_policy', 'claim_day', 'customer_lock', 'protection', 'followup',
                                                  'recycle_policy', 'identity', 'identity_key', 'duplicate']) t
$$, 'the claims, pool and duplicate tables are registered for pg_dump');

-- the tier count behind max_held: NULL inputs count nothing, a table that is not managed is refused
SELECT is(allocation._table_held(NULL, 1, 'A'), 0::bigint, '_table_held() with a NULL table counts nothing');
SELECT is(allocation._table_held('pg_catalog.pg_class'::regclass, NULL, 'A'), 0::bigint, '_table_held() with a NULL rep counts nothing');
SELECT throws_ok($$SELECT allocation._table_held('pg_catalog.pg_class'::regclass, 1, 'A')$$, 'LA012', NULL,
                 '_table_held() refuses a table that is not managed (LA012)');

SELECT * FROM finish();
ROLLBACK;
