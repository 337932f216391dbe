-- pgTAP: the public contract of the allocation extension
-- (signatures, return types, objects, comments, privileges, pg_dump
--  registration, append-only audit, search_path pinning).
\set ECHO none
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
\set ON_ERROR_STOP 1

BEGIN;
CREATE EXTENSION allocation;

SELECT plan(142);

-------------------------------------------------------------------------------
-- Extension and schema
-------------------------------------------------------------------------------
SELECT has_extension('allocation', 'extension allocation is installed');
SELECT has_schema('allocation', 'schema allocation exists');
SELECT is((SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'allocation'),
          'allocation', 'the extension lives in schema allocation');
SELECT is((SELECT extrelocatable FROM pg_extension WHERE extname = 'allocation'),
          false, 'the extension is not relocatable');
SELECT is((SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'allocation'),
          (SELECT e.extowner FROM pg_extension e WHERE e.extname = 'allocation'),
          'schema allocation is owned by the extension owner');
SELECT ok(EXISTS (SELECT 1 FROM pg_depend d
                   JOIN pg_extension a ON a.oid = d.objid AND a.extname = 'allocation'
                   JOIN pg_extension p ON p.oid = d.refobjid AND p.extname = 'postgis'
                  WHERE d.classid = 'pg_extension'::regclass AND d.refclassid = 'pg_extension'::regclass),
          'the extension requires postgis');

-------------------------------------------------------------------------------
-- Public functions: exact signatures (argument names and defaults) and results
-------------------------------------------------------------------------------
SELECT has_function('allocation', 'import_territories', ARRAY['jsonb', 'text', 'text', 'text', 'text'], 'import_territories(jsonb, text, text, text, text) exists');
SELECT function_returns('allocation', 'import_territories', ARRAY['jsonb', 'text', 'text', 'text', 'text'], 'integer', 'import_territories returns integer');
SELECT has_function('allocation', 'import_territories', ARRAY['text', 'text', 'text', 'text', 'text'], 'import_territories(text, text, text, text, text) exists (files above jsonb''s limit)');
SELECT hasnt_function('allocation', 'import_territories', ARRAY['jsonb', 'text', 'text', 'text'], 'the 1.0 signature import_territories(jsonb, text, text, text) is gone');
SELECT function_returns('allocation', 'import_report', ARRAY[]::text[], 'setof record', 'import_report returns a set of rows');
SELECT function_returns('allocation', 'coverage_gaps', ARRAY['text'], 'setof record', 'coverage_gaps returns a set of rows');
SELECT function_returns('allocation', 'coverage_gaps_geojson', ARRAY['text'], 'jsonb', 'coverage_gaps_geojson returns jsonb');
SELECT has_function('allocation', 'territory_at', ARRAY['geometry'], 'territory_at(geometry) exists');
SELECT function_returns('allocation', 'territory_at', ARRAY['geometry'], 'bigint', 'territory_at returns bigint');
SELECT has_function('allocation', 'manage', ARRAY['regclass', 'name', 'name', 'name', 'jsonb'], 'manage(regclass, name, name, name, jsonb) exists');
SELECT function_returns('allocation', 'manage', ARRAY['regclass', 'name', 'name', 'name', 'jsonb'], 'void', 'manage returns void');
SELECT has_function('allocation', 'unmanage', ARRAY['regclass'], 'unmanage(regclass) exists');
SELECT function_returns('allocation', 'unmanage', ARRAY['regclass'], 'void', 'unmanage returns void');
SELECT has_function('allocation', 'set_reevaluate', ARRAY['regclass', 'text'], 'set_reevaluate(regclass, text) exists');
SELECT function_returns('allocation', 'set_reevaluate', ARRAY['regclass', 'text'], 'void', 'set_reevaluate returns void');
SELECT has_function('allocation', 'assign', ARRAY['regclass', 'text', 'bigint', 'text'], 'assign(regclass, text, bigint, text) exists');
SELECT function_returns('allocation', 'assign', ARRAY['regclass', 'text', 'bigint', 'text'], 'void', 'assign returns void');
SELECT has_function('allocation', 'accept_suggestion', ARRAY['bigint'], 'accept_suggestion(bigint) exists');
SELECT function_returns('allocation', 'accept_suggestion', ARRAY['bigint'], 'void', 'accept_suggestion returns void');
SELECT has_function('allocation', 'reject_suggestion', ARRAY['bigint', 'text'], 'reject_suggestion(bigint, text) exists');
SELECT function_returns('allocation', 'reject_suggestion', ARRAY['bigint', 'text'], 'void', 'reject_suggestion returns void');
SELECT has_function('allocation', 'owner_at', ARRAY['regclass', 'text', 'timestamp with time zone'], 'owner_at(regclass, text, timestamptz) exists');
SELECT function_returns('allocation', 'owner_at', ARRAY['regclass', 'text', 'timestamp with time zone'], 'bigint', 'owner_at returns bigint');
SELECT has_function('allocation', 'explain', ARRAY['regclass', 'text'], 'explain(regclass, text) exists');
SELECT function_returns('allocation', 'explain', ARRAY['regclass', 'text'], 'jsonb', 'explain(regclass, text) returns jsonb');
SELECT has_function('allocation', 'explain', ARRAY['regclass', 'jsonb'], 'explain(regclass, jsonb) exists');
SELECT function_returns('allocation', 'explain', ARRAY['regclass', 'jsonb'], 'jsonb', 'explain(regclass, jsonb) returns jsonb');
SELECT has_function('allocation', 'check_consistency', ARRAY[]::text[], 'check_consistency() exists');
SELECT function_returns('allocation', 'check_consistency', ARRAY[]::text[], 'setof record', 'check_consistency returns a set of rows');
SELECT has_function('allocation', 'territory_geojson', ARRAY[]::text[], 'territory_geojson() exists');
SELECT function_returns('allocation', 'territory_geojson', ARRAY[]::text[], 'jsonb', 'territory_geojson returns jsonb');
SELECT has_function('allocation', 'grant_role', ARRAY['regrole', 'text'], 'grant_role(regrole, text) exists');
SELECT function_returns('allocation', 'grant_role', ARRAY['regrole', 'text'], 'void', 'grant_role returns void');
SELECT has_function('allocation', 'cache_stats', ARRAY[]::text[], 'cache_stats() exists');
SELECT function_returns('allocation', 'cache_stats', ARRAY[]::text[], 'jsonb', 'cache_stats returns jsonb');

-- argument names and defaults are part of the API (named notation, omitted args)
SELECT is(pg_get_function_arguments('allocation.import_territories(jsonb,text,text,text,text)'::regprocedure),
          'fc jsonb, code_property text DEFAULT ''code''::text, name_property text DEFAULT ''name''::text, parent_property text DEFAULT NULL::text, on_invalid text DEFAULT ''error''::text',
          'import_territories argument names and defaults');
SELECT is(pg_get_function_arguments('allocation.import_territories(text,text,text,text,text)'::regprocedure),
          'fc text, code_property text DEFAULT ''code''::text, name_property text DEFAULT ''name''::text, parent_property text DEFAULT NULL::text, on_invalid text DEFAULT ''error''::text',
          'import_territories(text) argument names and defaults');
SELECT is(pg_get_function_arguments('allocation.coverage_gaps(text)'::regprocedure),
          'parent_code text DEFAULT NULL::text', 'coverage_gaps argument names and defaults');
SELECT is(pg_get_function_result('allocation.import_report()'::regprocedure),
          'TABLE(feature integer, code text, action text, sqlstate text, reason text)', 'import_report result columns');
SELECT is(pg_get_function_arguments('allocation.manage(regclass,name,name,name,jsonb)'::regprocedure),
          'tbl regclass, key_column name, location_column name, owner_column name, attributes jsonb DEFAULT ''{}''::jsonb',
          'manage argument names and defaults');
SELECT is(pg_get_function_arguments('allocation.assign(regclass,text,bigint,text)'::regprocedure),
          'tbl regclass, key text, rep bigint, reason text', 'assign argument names');
SELECT is(pg_get_function_arguments('allocation.set_reevaluate(regclass,text)'::regprocedure),
          'tbl regclass, mode text', 'set_reevaluate argument names');
SELECT is(pg_get_function_arguments('allocation.owner_at(regclass,text,timestamptz)'::regprocedure),
          'tbl regclass, key text, at timestamp with time zone', 'owner_at argument names');
SELECT is(pg_get_function_arguments('allocation.explain(regclass,jsonb)'::regprocedure),
          'tbl regclass, "row" jsonb', 'explain(row) argument names');
SELECT is(pg_get_function_arguments('allocation.reject_suggestion(bigint,text)'::regprocedure),
          'id bigint, reason text', 'reject_suggestion argument names');
SELECT is(pg_get_function_arguments('allocation.grant_role(regrole,text)'::regprocedure),
          'role regrole, kind text', 'grant_role argument names');
SELECT is(pg_get_function_result('allocation.check_consistency()'::regprocedure),
          'TABLE(problem text, rep_id bigint, managed_id integer, key text, expected bigint, actual bigint)',
          'check_consistency result columns');
SELECT is(pg_get_function_result('allocation.explain(regclass,text)'::regprocedure), 'jsonb',
          'explain(key) result type via the catalog');

-- calling with named arguments and defaults works (proves the names are usable)
SELECT lives_ok($$SELECT allocation.import_territories(fc => '{"type":"FeatureCollection","features":[]}'::jsonb)$$,
                'import_territories can be called with named fc and default properties');

-------------------------------------------------------------------------------
-- Volatility of read-only functions (explain has no side effects)
-------------------------------------------------------------------------------
SELECT isnt((SELECT provolatile::text FROM pg_proc WHERE oid = 'allocation.explain(regclass,text)'::regprocedure),
            'v', 'explain(regclass, text) is not VOLATILE');
SELECT isnt((SELECT provolatile::text FROM pg_proc WHERE oid = 'allocation.explain(regclass,jsonb)'::regprocedure),
            'v', 'explain(regclass, jsonb) is not VOLATILE');
SELECT isnt((SELECT provolatile::text FROM pg_proc WHERE oid = 'allocation.owner_at(regclass,text,timestamptz)'::regprocedure),
            'v', 'owner_at is not VOLATILE');
SELECT isnt((SELECT provolatile::text FROM pg_proc WHERE oid = 'allocation.territory_at(geometry)'::regprocedure),
            'v', 'territory_at is not VOLATILE');
SELECT isnt((SELECT provolatile::text FROM pg_proc WHERE oid = 'allocation.check_consistency()'::regprocedure),
            'v', 'check_consistency is not VOLATILE');
SELECT isnt((SELECT provolatile::text FROM pg_proc WHERE oid = 'allocation.territory_geojson()'::regprocedure),
            'v', 'territory_geojson is not VOLATILE');
SELECT isnt((SELECT provolatile::text FROM pg_proc WHERE oid = 'allocation.explain(regclass,text)'::regprocedure),
            'i', 'explain(regclass, text) is not IMMUTABLE (it reads configuration)');

-------------------------------------------------------------------------------
-- Tables and columns
-------------------------------------------------------------------------------
SELECT has_table('allocation', 'team', 'table team exists');
SELECT has_table('allocation', 'rep', 'table rep exists');
SELECT has_table('allocation', 'rep_load', 'table rep_load exists');
SELECT has_table('allocation', 'rr_cursor', 'table rr_cursor exists');
SELECT has_table('allocation', 'territory', 'table territory exists');
SELECT has_table('allocation', 'rule', 'table rule exists');
SELECT has_table('allocation', 'managed_table', 'table managed_table exists');
SELECT has_view('allocation', 'assignment', 'view assignment (the ownership history) exists');
SELECT has_table('allocation', 'customer_state', 'table customer_state exists');
SELECT has_table('allocation', 'suggestion', 'table suggestion exists');
SELECT has_table('allocation', 'event', 'table event exists');

-- documented columns (ENGINE-NOTES), checked per table as a set
SELECT is_empty($$
    SELECT t || '.' || c FROM (VALUES
        ('team', ARRAY['id','code','name','parent_id']),
        ('rep', ARRAY['id','code','name','team_id','capacity','crops','active','login']),
        ('rep_load', ARRAY['rep_id','held']),
        ('rr_cursor', ARRAY['team_id']),
        ('territory', ARRAY['id','code','name','parent_id','geom','crop_zones','owner_rep_id','owner_team_id','exclusive','priority','properties']),
        ('rule', ARRAY['id','name','priority','enabled','mode','tbl','territory_id','crops','tiers','business_types','tags',
                       'condition','target_kind','target_rep_id','target_team_id','policy']),
        ('managed_table', ARRAY['id','tbl','active','key_column','location_column','owner_column','attributes','reevaluate','table_name']),
        ('assignment', ARRAY['id','managed_id','key','rep_id','team_id','territory_id','rule_id','source','pinned','reason',
                             'tier','crop','business_type','valid_from','valid_to','closed_reason']),
        ('customer_state', ARRAY['managed_id','key','rep_id','team_id','territory_id','rule_id','source','pinned','reason',
                                 'tier','crop','business_type','stage','stage_since','valid_from']),
        ('suggestion', ARRAY['id','managed_id','key','rep_id','rule_id','territory_id','reason','status']),
        ('event', ARRAY['id','at','actor','kind','managed_id','table_name','key','from_rep','to_rep','rule_id','reason','detail',
                        'period','tier','crop','business_type','stage'])
    ) v(t, cols), unnest(cols) c
    WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                       WHERE a.attrelid = ('allocation.' || t)::regclass AND a.attname = c
                         AND a.attnum > 0 AND NOT a.attisdropped)
$$, 'every documented column exists');

SELECT col_type_is('allocation', 'territory', 'geom', 'geometry(MultiPolygon,4326)', 'territory.geom is geometry(MultiPolygon,4326)');
SELECT col_type_is('allocation', 'managed_table', 'tbl', 'regclass', 'managed_table.tbl is regclass');
SELECT col_type_is('allocation', 'rule', 'tbl', 'regclass', 'rule.tbl is regclass');
SELECT col_type_is('allocation', 'rep', 'crops', 'text[]', 'rep.crops is text[]');
SELECT col_type_is('allocation', 'rule', 'tags', 'text[]', 'rule.tags is text[]');
SELECT col_type_is('allocation', 'event', 'detail', 'jsonb', 'event.detail is jsonb');
SELECT col_type_is('allocation', 'territory', 'properties', 'jsonb', 'territory.properties is jsonb');
SELECT col_type_is('allocation', 'rep', 'id', 'bigint', 'rep.id is bigint');
SELECT col_type_is('allocation', 'assignment', 'valid_to', 'timestamp with time zone', 'assignment.valid_to is timestamptz');
SELECT col_is_pk('allocation', 'rep_load', 'rep_id', 'rep_load is keyed by rep_id');
SELECT col_is_unique('allocation', 'territory', 'code', 'territory.code is unique');
SELECT col_is_unique('allocation', 'rule', 'name', 'rule.name is unique');
SELECT col_is_null('allocation', 'rep', 'capacity', 'rep.capacity is nullable (NULL = unlimited)');
SELECT col_is_null('allocation', 'assignment', 'rep_id', 'assignment.rep_id is nullable (NULL = pool)');
SELECT col_not_null('allocation', 'event', 'kind', 'event.kind is NOT NULL');
SELECT fk_ok('allocation', 'rule', 'target_rep_id', 'allocation', 'rep', 'id', 'rule.target_rep_id references rep');
SELECT fk_ok('allocation', 'rule', 'target_team_id', 'allocation', 'team', 'id', 'rule.target_team_id references team');
SELECT fk_ok('allocation', 'territory', 'parent_id', 'allocation', 'territory', 'id', 'territory.parent_id references territory');
SELECT fk_ok('allocation', 'team', 'parent_id', 'allocation', 'team', 'id', 'team.parent_id references team');
SELECT col_is_pk('allocation', 'customer_state', ARRAY['managed_id', 'key'],
                 'customer_state has at most one row per customer (its current state)');

-------------------------------------------------------------------------------
-- Views
-------------------------------------------------------------------------------
SELECT has_view('allocation', 'current_owner', 'view current_owner exists');
SELECT has_view('allocation', 'rep_portfolio', 'view rep_portfolio exists');
SELECT has_view('allocation', 'pool', 'view pool exists');
SELECT has_view('allocation', 'pending_suggestion', 'view pending_suggestion exists');
SELECT has_view('allocation', 'territory_overlap', 'view territory_overlap exists');
SELECT has_column('allocation', 'current_owner', 'rep_id', 'current_owner.rep_id exists');
SELECT has_column('allocation', 'current_owner', 'key', 'current_owner.key exists');
SELECT has_column('allocation', 'rep_portfolio', 'held', 'rep_portfolio.held exists');
SELECT has_column('allocation', 'rep_portfolio', 'capacity', 'rep_portfolio.capacity exists');
SELECT has_column('allocation', 'pool', 'reason', 'pool.reason exists');
SELECT has_column('allocation', 'pending_suggestion', 'id', 'pending_suggestion.id exists');
SELECT has_column('allocation', 'territory_overlap', 'wins', 'territory_overlap.wins exists');
SELECT lives_ok('SELECT * FROM allocation.current_owner, allocation.rep_portfolio, allocation.pool,
                        allocation.pending_suggestion, allocation.territory_overlap LIMIT 1',
                'every view can be queried');

-------------------------------------------------------------------------------
-- Comments on every public object
-------------------------------------------------------------------------------
SELECT is_empty($$
    SELECT c.relname FROM pg_class c
     WHERE c.relnamespace = 'allocation'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
       AND c.relname !~ '^_' AND obj_description(c.oid, 'pg_class') IS NULL
$$, 'every public table and view has a COMMENT');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'allocation'::regnamespace
       AND p.proname !~ '^_' AND obj_description(p.oid, 'pg_proc') IS NULL
$$, 'every public function has a COMMENT');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'allocation'::regnamespace
       AND obj_description(p.oid, 'pg_proc') IS NOT NULL
       AND length(btrim(obj_description(p.oid, 'pg_proc'))) < 10
$$, 'no function COMMENT is a placeholder (shorter than 10 characters)');
SELECT cmp_ok((SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'allocation'::regnamespace
                 AND c.relkind IN ('r', 'v') AND c.relname !~ '^_'), '>=', 15::bigint,
              'the comment check covered the 10 tables and 5 views');
-- \dx+ allocation lists only intended objects: every member documented, none left behind
SELECT is_empty($$
    SELECT pg_describe_object(d.classid, d.objid, 0) FROM pg_depend d
     WHERE d.refclassid = 'pg_extension'::regclass
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'allocation') AND d.deptype = 'e'
       AND d.classid IN ('pg_proc'::regclass, 'pg_class'::regclass, 'pg_type'::regclass, 'pg_event_trigger'::regclass)
       AND obj_description(d.objid, d.classid::regclass::name) IS NULL
       AND NOT (d.classid = 'pg_class'::regclass AND (SELECT relkind FROM pg_class WHERE oid = d.objid) IN ('S', 'i'))
       AND NOT (d.classid = 'pg_type'::regclass AND EXISTS (SELECT 1 FROM pg_type t WHERE t.oid = d.objid
                                                             AND (t.typrelid <> 0 OR t.typelem <> 0)))
$$, 'every function, table, view, composite type and event trigger of the extension has a COMMENT (no leftover helper)');
SELECT is_empty($$
    SELECT pg_describe_object(d.classid, d.objid, 0) FROM pg_depend d
      JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'allocation')
       AND p.pronamespace <> 'allocation'::regnamespace
$$, 'every function of the extension lives in schema allocation');

-------------------------------------------------------------------------------
-- search_path pinning
-------------------------------------------------------------------------------
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'allocation'::regnamespace AND p.prosecdef
       AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')
$$, 'every SECURITY DEFINER function sets search_path');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p, unnest(p.proconfig) c
     WHERE p.pronamespace = 'allocation'::regnamespace AND p.prosecdef AND c LIKE 'search_path=%'
       AND btrim(split_part(c, ',', array_length(string_to_array(c, ','), 1))) <> 'pg_temp'
$$, 'every SECURITY DEFINER function puts pg_temp last in its search_path');
SELECT is_empty($$
    WITH pg AS (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                 WHERE e.extname = 'postgis')
    SELECT p.oid::regprocedure::text || ': ' || c FROM pg_proc p, unnest(p.proconfig) c
     WHERE p.pronamespace = 'allocation'::regnamespace AND c LIKE 'search_path=%'
       AND EXISTS (SELECT 1 FROM unnest(string_to_array(substr(c, length('search_path=') + 1), ',')) s
                    WHERE btrim(s) = 'public' AND (SELECT nspname FROM pg) <> 'public')
$$, 'no pinned search_path includes public unless public is the PostGIS schema');
SELECT is_empty($$
    WITH pg AS (SELECT quote_ident(n.nspname) AS nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                 WHERE e.extname = 'postgis')
    SELECT p.oid::regprocedure::text || ': ' || btrim(s) FROM pg_proc p, unnest(p.proconfig) c,
           unnest(string_to_array(substr(c, length('search_path=') + 1), ',')) s
     WHERE p.pronamespace = 'allocation'::regnamespace AND c LIKE 'search_path=%'
       AND btrim(s) NOT IN ('pg_catalog', 'pg_temp', 'allocation', (SELECT nspname FROM pg))
$$, 'pinned search_paths hold only pg_catalog, the PostGIS schema, allocation and pg_temp (no "$user", no user schemas)');
-- (a procedure that COMMITs cannot have a SET clause: realign_apply is SECURITY INVOKER and
-- names everything with its schema; it counts here only if it were SECURITY DEFINER)
SELECT cmp_ok((SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'allocation'::regnamespace
                 AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql')
                 AND (p.prokind <> 'p' OR p.prosecdef)
                 AND p.proconfig IS NULL), '=', 0::bigint,
              'every PL/pgSQL function pins its search_path (procedures: SECURITY INVOKER)');

-------------------------------------------------------------------------------
-- Nothing granted to PUBLIC
-------------------------------------------------------------------------------
SELECT is_empty($$
    SELECT 'schema' FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
     WHERE n.nspname = 'allocation' AND a.grantee = 0
$$, 'nothing on schema allocation is granted to PUBLIC');
SELECT is_empty($$
    SELECT c.relname || ' ' || a.privilege_type FROM pg_class c,
           aclexplode(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) a
     WHERE c.relnamespace = 'allocation'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
       AND a.grantee = 0
$$, 'no table, view or sequence of allocation grants anything to PUBLIC');
SELECT is_empty($$
    SELECT c.relname || '.' || att.attname FROM pg_class c JOIN pg_attribute att ON att.attrelid = c.oid,
           aclexplode(att.attacl) a
     WHERE c.relnamespace = 'allocation'::regnamespace AND att.attacl IS NOT NULL AND a.grantee = 0
$$, 'no column of allocation grants anything to PUBLIC');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
     WHERE p.pronamespace = 'allocation'::regnamespace AND a.grantee = 0
$$, 'no function of allocation is executable by PUBLIC');
SELECT is(has_function_privilege('public', 'allocation.manage(regclass,name,name,name,jsonb)', 'EXECUTE'),
          false, 'PUBLIC cannot execute manage()');
SELECT is(has_table_privilege('public', 'allocation.event', 'SELECT'), false, 'PUBLIC cannot read the audit log');
SELECT is(has_schema_privilege('public', 'allocation', 'USAGE'), false, 'PUBLIC has no USAGE on schema allocation');

-------------------------------------------------------------------------------
-- pg_dump registration of configuration tables and their sequences
-------------------------------------------------------------------------------
SELECT set_has($$
    SELECT unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'allocation'
$$, $$
    SELECT ('allocation.' || t) FROM unnest(ARRAY['team','rep','rr_cursor','territory','managed_table',
                                                  'rule','customer_state','suggestion','event']) t
$$, 'every configuration table is registered with pg_extension_config_dump');
SELECT set_has($$
    SELECT unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'allocation'
$$, $$
    SELECT pg_get_serial_sequence('allocation.' || t, 'id')::regclass::text
      FROM unnest(ARRAY['team','rep','territory','managed_table','rule','suggestion','event']) t
$$, 'the id sequences of the configuration tables are registered with pg_extension_config_dump');
SELECT is_empty($$
    SELECT c.oid::regclass::text FROM pg_class c
     WHERE c.relnamespace = 'allocation'::regnamespace AND c.relkind IN ('r', 'p', 'S')
       AND c.oid NOT IN (SELECT unnest(extconfig) FROM pg_extension WHERE extname = 'allocation')
       AND c.oid <> 'allocation.rep_load'::regclass   -- derived: recounted when the registry is restored
       AND c.oid <> 'allocation.scorecard_month'::regclass   -- derived: refresh_scorecards() rebuilds it
$$, 'no table or sequence of the extension is left out of pg_dump (rep_load and scorecard_month are derived)');
SELECT is((SELECT count(*) FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY x(c, i)
            WHERE e.extname = 'allocation'),
          (SELECT count(DISTINCT c) FROM pg_extension e, unnest(e.extconfig) c WHERE e.extname = 'allocation'),
          'no relation is registered twice');
SELECT is((SELECT array_length(extconfig, 1) FROM pg_extension WHERE extname = 'allocation'),
          (SELECT array_length(extcondition, 1) FROM pg_extension WHERE extname = 'allocation'),
          'extconfig and extcondition have the same length');

-------------------------------------------------------------------------------
-- Append-only audit log
-------------------------------------------------------------------------------
SELECT ok(EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = 'allocation.event'::regclass AND NOT t.tgisinternal
                     AND t.tgenabled IN ('O', 'A') AND (t.tgtype & 2) <> 0 AND (t.tgtype & 1) <> 0
                     AND (t.tgtype & 16) <> 0),
          'event has an enabled BEFORE UPDATE row trigger');
SELECT ok(EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = 'allocation.event'::regclass AND NOT t.tgisinternal
                     AND t.tgenabled IN ('O', 'A') AND (t.tgtype & 2) <> 0 AND (t.tgtype & 1) <> 0
                     AND (t.tgtype & 8) <> 0),
          'event has an enabled BEFORE DELETE row trigger');
SELECT ok(EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = 'allocation.event'::regclass AND NOT t.tgisinternal
                     AND t.tgenabled IN ('O', 'A') AND (t.tgtype & 2) <> 0 AND (t.tgtype & 32) <> 0),
          'event has an enabled BEFORE TRUNCATE trigger');
SELECT has_trigger('allocation', 'event', 'event_no_update', 'trigger event_no_update exists');
SELECT has_trigger('allocation', 'event', 'event_no_truncate', 'trigger event_no_truncate exists');
SELECT trigger_is('allocation', 'event', 'event_no_update', 'allocation', '_event_append_only',
                  'event_no_update calls _event_append_only()');
SELECT trigger_is('allocation', 'event', 'event_no_truncate', 'allocation', '_event_append_only',
                  'event_no_truncate calls _event_append_only()');
SELECT is_empty($$
    SELECT tgname FROM pg_trigger t WHERE t.tgrelid = 'allocation.event'::regclass AND NOT t.tgisinternal
       AND t.tgenabled = 'D'
$$, 'no trigger on event is disabled');

-------------------------------------------------------------------------------
-- Configuration tables invalidate the backend caches
-------------------------------------------------------------------------------
SELECT is_empty($$
    SELECT t FROM unnest(ARRAY['team','rep','territory','rule','managed_table']) t
     WHERE NOT EXISTS (SELECT 1 FROM pg_trigger g
                        WHERE g.tgrelid = ('allocation.' || t)::regclass AND NOT g.tgisinternal
                          AND g.tgfoid = 'allocation._invalidate()'::regprocedure
                          AND (g.tgtype & (4 | 8 | 16 | 32)) = (4 | 8 | 16 | 32))
$$, 'team, rep, territory, rule and managed_table invalidate caches on INSERT, UPDATE, DELETE and TRUNCATE');

-------------------------------------------------------------------------------
-- Objects belong to the extension (so DROP EXTENSION removes them)
-------------------------------------------------------------------------------
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'allocation'::regnamespace
       AND NOT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'allocation'
                        WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
$$, 'every function in schema allocation is a member of the extension');
SELECT is_empty($$
    SELECT c.relname FROM pg_class c
     WHERE c.relnamespace = 'allocation'::regnamespace AND c.relkind IN ('r', 'v', 'S')
       AND NOT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'allocation'
                        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                          AND d.deptype IN ('a', 'i'))
$$, 'every table, view and sequence in schema allocation is a member of the extension');
SELECT ok(EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtevent = 'sql_drop'
                     AND evtfoid = 'allocation._on_sql_drop()'::regprocedure AND evtenabled <> 'D'),
          'an enabled sql_drop event trigger watches dropped managed tables');

SELECT * FROM finish();
ROLLBACK;
