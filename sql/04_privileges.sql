--
-- 04_privileges: nothing for PUBLIC, grant_role() for the four kinds of
-- roles, what each role can and cannot do (42501), an application role with
-- only INSERT on the customer table still gets auto-assignment, SECURITY
-- DEFINER functions pin search_path
--
\set SHOW_CONTEXT never
CREATE EXTENSION allocation;

-------------------------------------------------------------------------------
-- nothing is granted to PUBLIC
-------------------------------------------------------------------------------
SELECT has_schema_privilege('public', 'allocation', 'USAGE') AS public_usage,
       has_schema_privilege('public', 'allocation', 'CREATE') AS public_create;
SELECT c.relname, c.relkind
  FROM pg_class c
 WHERE c.relnamespace = 'allocation'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
   AND has_table_privilege('public', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
 ORDER BY 1;
SELECT c.relname
  FROM pg_class c
 WHERE c.relnamespace = 'allocation'::regnamespace AND c.relkind = 'S'
   AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege('public', c.oid, 'USAGE, SELECT, UPDATE') END
 ORDER BY 1;
SELECT p.oid::regprocedure AS executable_by_public
  FROM pg_proc p
 WHERE p.pronamespace = 'allocation'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY 1::text;
-- ... and the ACLs do not mention PUBLIC at all
SELECT count(*) AS public_acl_entries
  FROM (SELECT (aclexplode(relacl)).grantee FROM pg_class WHERE relnamespace = 'allocation'::regnamespace
        UNION ALL
        SELECT (aclexplode(proacl)).grantee FROM pg_proc WHERE pronamespace = 'allocation'::regnamespace
        UNION ALL
        SELECT (aclexplode(nspacl)).grantee FROM pg_namespace WHERE nspname = 'allocation') a
 WHERE a.grantee = 0;

-------------------------------------------------------------------------------
-- SECURITY DEFINER functions pin search_path (and so does every SQL or
-- PL/pgSQL function of the extension)
-------------------------------------------------------------------------------
SELECT count(*) AS definer_without_pinned_search_path
  FROM pg_proc p
 WHERE p.pronamespace = 'allocation'::regnamespace AND p.prosecdef
   AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) AS c(setting)
                    WHERE c.setting ~ '^search_path=pg_catalog(, .*)?, pg_temp$');
-- (procedures excepted: one that commits cannot have a SET clause; they run as the caller,
-- SECURITY INVOKER, naming everything with its schema -- listed below)
SELECT p.oid::regprocedure AS sql_function_without_search_path
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace = 'allocation'::regnamespace AND l.lanname IN ('sql', 'plpgsql') AND p.prokind <> 'p'
   AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) AS c(setting)
                    WHERE c.setting ~ '^search_path=pg_catalog(, .*)?, pg_temp$')
 ORDER BY 1::text;
SELECT p.oid::regprocedure AS procedure, p.prosecdef AS security_definer
  FROM pg_proc p WHERE p.pronamespace = 'allocation'::regnamespace AND p.prokind = 'p' ORDER BY 1::text;

-------------------------------------------------------------------------------
-- roles
-------------------------------------------------------------------------------
CREATE ROLE regress_alloc_admin;
CREATE ROLE regress_alloc_manager;
CREATE ROLE regress_alloc_rep;
CREATE ROLE regress_alloc_analyst;
CREATE ROLE regress_alloc_app;
SELECT allocation.grant_role('regress_alloc_admin', 'admin');
SELECT allocation.grant_role('regress_alloc_manager', 'manager');
SELECT allocation.grant_role('regress_alloc_rep', 'rep');
SELECT allocation.grant_role('regress_alloc_analyst', 'analyst');
SELECT allocation.grant_role('regress_alloc_analyst', 'boss');
\echo sqlstate :SQLSTATE
SELECT allocation.grant_role('regress_nobody', 'rep');
\echo sqlstate :SQLSTATE

-- which API functions each role may call
SELECT f.fn,
       has_function_privilege('regress_alloc_admin', f.fn, 'EXECUTE') AS admin,
       has_function_privilege('regress_alloc_manager', f.fn, 'EXECUTE') AS manager,
       has_function_privilege('regress_alloc_rep', f.fn, 'EXECUTE') AS rep,
       has_function_privilege('regress_alloc_analyst', f.fn, 'EXECUTE') AS analyst,
       has_function_privilege('regress_alloc_app', f.fn, 'EXECUTE') AS app
  FROM unnest(ARRAY[
        'allocation.import_territories(jsonb,text,text,text,text)', 'allocation.import_territories(text,text,text,text,text)', 'allocation.territory_at(geometry)',
        'allocation.manage(regclass,name,name,name,jsonb)', 'allocation.unmanage(regclass)',
        'allocation.set_reevaluate(regclass,text)', 'allocation.assign(regclass,text,bigint,text)',
        'allocation.accept_suggestion(bigint)', 'allocation.reject_suggestion(bigint,text)',
        'allocation.owner_at(regclass,text,timestamptz)', 'allocation.explain(regclass,text)',
        'allocation.explain(regclass,jsonb)', 'allocation.check_consistency()',
        'allocation.territory_geojson()', 'allocation.grant_role(regrole,text)',
        'allocation.cache_stats()']) WITH ORDINALITY AS f(fn, ord)
 ORDER BY f.ord;
-- the audit log: readable by admin, manager and analyst; never changeable
SELECT r.rolname,
       has_table_privilege(r.rolname, 'allocation.event', 'SELECT') AS sel,
       has_table_privilege(r.rolname, 'allocation.event', 'INSERT') AS ins,
       has_table_privilege(r.rolname, 'allocation.event', 'UPDATE') AS upd,
       has_table_privilege(r.rolname, 'allocation.event', 'DELETE') AS del,
       has_table_privilege(r.rolname, 'allocation.event', 'TRUNCATE') AS trunc
  FROM pg_roles r WHERE r.rolname LIKE 'regress_alloc_%' ORDER BY 1;

-------------------------------------------------------------------------------
-- configuration (as the installing superuser) and a CRM table
-------------------------------------------------------------------------------
INSERT INTO allocation.team (code, name) VALUES ('local', 'Local sales');
INSERT INTO allocation.rep (code, name, team_id, login) VALUES
    ('r1', 'Rep One', 1, 'regress_alloc_rep'), ('r2', 'Rep Two', 1, NULL);
INSERT INTO allocation.rule (name, priority, mode, target_kind, target_rep_id, tiers)
    VALUES ('review seeds', 50, 'suggest', 'rep', 2, '{seed}');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
    VALUES ('everyone else', 1, 'team', 1, 'least_loaded');
CREATE TABLE p_customer (
    id     bigserial PRIMARY KEY,
    name   text,
    tier   text,
    loc    geometry(Point, 4326),
    owner  bigint
);
SELECT allocation.manage('p_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
-- the CRM's own grants: the app writes, managers change owners, reps read
GRANT INSERT ON p_customer TO regress_alloc_app;
GRANT USAGE ON SEQUENCE p_customer_id_seq TO regress_alloc_app;
GRANT SELECT, UPDATE ON p_customer TO regress_alloc_manager;
GRANT SELECT ON p_customer TO regress_alloc_rep;

-------------------------------------------------------------------------------
-- the application role: only INSERT on p_customer, nothing on allocation.*,
-- yet every insert is assigned, validated and audited
-------------------------------------------------------------------------------
SET ROLE regress_alloc_app;
INSERT INTO p_customer (name, tier) VALUES ('app: plain', 'retailer');
INSERT INTO p_customer (name, tier) VALUES ('app: seed 1', 'seed'), ('app: seed 2', 'seed');
INSERT INTO p_customer (name, tier, owner) VALUES ('app: with owner', 'retailer', 2);
-- the engine's validation still applies
INSERT INTO p_customer (name, owner) VALUES ('app: unknown owner', 99);
\echo sqlstate :SQLSTATE
-- but the app cannot look inside
SELECT count(*) FROM allocation.assignment;
\echo sqlstate :SQLSTATE
SELECT count(*) FROM allocation.rep;
\echo sqlstate :SQLSTATE
SELECT allocation.territory_at('SRID=4326;POINT(1 1)');
\echo sqlstate :SQLSTATE
RESET ROLE;
SELECT id, name, owner FROM p_customer ORDER BY id;
SELECT key, rep_code, rule_name, source, pinned FROM allocation.current_owner ORDER BY key::int;
SELECT key, rep_code, rule_name FROM allocation.pending_suggestion ORDER BY key::int;
SELECT actor, kind, key, to_rep FROM allocation.event WHERE key IS NOT NULL ORDER BY id;

-------------------------------------------------------------------------------
-- analyst: reads views and the audit log, changes nothing
-------------------------------------------------------------------------------
SET ROLE regress_alloc_analyst;
SELECT count(*) AS owners FROM allocation.current_owner;
SELECT rep_code, held FROM allocation.rep_portfolio ORDER BY rep_code;
SELECT count(*) AS pooled FROM allocation.pool;
SELECT count(*) AS pending FROM allocation.pending_suggestion;
SELECT count(*) AS events FROM allocation.event;
SELECT * FROM allocation.check_consistency();
SELECT allocation.territory_geojson() ->> 'type' AS geojson;
INSERT INTO allocation.rule (name, target_kind) VALUES ('analyst rule', 'pool');
\echo sqlstate :SQLSTATE
UPDATE allocation.rep SET capacity = 1;
\echo sqlstate :SQLSTATE
SELECT allocation.assign('p_customer', '1', 2, 'analyst tries');
\echo sqlstate :SQLSTATE
SELECT count(*) FROM p_customer;
\echo sqlstate :SQLSTATE
UPDATE allocation.event SET reason = 'edited';
\echo sqlstate :SQLSTATE
RESET ROLE;

-------------------------------------------------------------------------------
-- rep: reads the organisation, territories and rules, explains decisions;
-- no registry, no decisions
-------------------------------------------------------------------------------
SET ROLE regress_alloc_rep;
SELECT code, login FROM allocation.rep ORDER BY code;
SELECT name FROM allocation.rule ORDER BY name;
SELECT count(*) AS territories FROM allocation.territory;
SELECT allocation.explain('p_customer', '1') -> 'result' ->> 'rep' AS explained_rep;
SELECT allocation.explain('p_customer', '{"tier": "seed"}'::jsonb) -> 'result' ->> 'outcome' AS hypothetical;
SELECT allocation.territory_at('SRID=4326;POINT(1 1)') AS territory;
SELECT allocation.owner_at('p_customer', '4', now()) AS owner_of_4;
SELECT allocation.territory_geojson() ->> 'type' AS geojson;
SELECT count(*) FROM allocation.assignment;
\echo sqlstate :SQLSTATE
SELECT count(*) FROM allocation.current_owner;
\echo sqlstate :SQLSTATE
SELECT count(*) FROM allocation.event;
\echo sqlstate :SQLSTATE
SELECT allocation.assign('p_customer', '1', 1, 'rep grabs a customer');
\echo sqlstate :SQLSTATE
SELECT allocation.accept_suggestion(1);
\echo sqlstate :SQLSTATE
UPDATE allocation.territory SET owner_rep_id = 1;
\echo sqlstate :SQLSTATE
RESET ROLE;

-------------------------------------------------------------------------------
-- manager: decides (assign, accept, reject); does not configure
-------------------------------------------------------------------------------
SET ROLE regress_alloc_manager;
SELECT allocation.assign('p_customer', '1', 2, 'dealer asked for Rep Two');
SELECT allocation.accept_suggestion((SELECT id FROM allocation.suggestion WHERE key = '2' AND status = 'pending'));
SELECT allocation.reject_suggestion((SELECT id FROM allocation.suggestion WHERE key = '3' AND status = 'pending'), 'not a seed dealer');
SELECT key, rep_code, source, pinned FROM allocation.current_owner ORDER BY key::int;
SELECT key, status, decision_reason FROM allocation.suggestion ORDER BY key::int, id;
INSERT INTO allocation.rule (name, target_kind) VALUES ('manager rule', 'pool');
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": []}'::jsonb);
\echo sqlstate :SQLSTATE
SELECT allocation.set_reevaluate('p_customer', 'never');
\echo sqlstate :SQLSTATE
DELETE FROM allocation.event;
\echo sqlstate :SQLSTATE
RESET ROLE;
SELECT kind, key, from_rep, to_rep, reason FROM allocation.event
 WHERE kind IN ('reassign', 'manual_assign', 'suggestion_accepted', 'suggestion_rejected') ORDER BY id;

-------------------------------------------------------------------------------
-- admin: configures territories, reps, rules and its own tables; still
-- cannot rewrite the audit log
-------------------------------------------------------------------------------
CREATE TABLE p_admin_customer (id int PRIMARY KEY, tier text, loc geometry(Point, 4326), owner bigint);
ALTER TABLE p_admin_customer OWNER TO regress_alloc_admin;
SET ROLE regress_alloc_admin;
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "County A"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}}]}'::jsonb);
UPDATE allocation.territory SET owner_rep_id = 1 WHERE code = 'A';
INSERT INTO allocation.rep (code, name, team_id, capacity) VALUES ('r3', 'Rep Three', 1, 5);
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
    VALUES ('territory owner', 20, 'team', 1, 'territory_owner');
SELECT allocation.manage('p_admin_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
INSERT INTO p_admin_customer (id, tier, loc) VALUES (1, 'retailer', 'SRID=4326;POINT(5 5)');
SELECT id, owner FROM p_admin_customer;
SELECT allocation.set_reevaluate('p_admin_customer', 'always');
SELECT allocation.unmanage('p_admin_customer');
UPDATE allocation.event SET reason = 'edited';
\echo sqlstate :SQLSTATE
DELETE FROM allocation.event;
\echo sqlstate :SQLSTATE
TRUNCATE allocation.event;
\echo sqlstate :SQLSTATE
RESET ROLE;
SELECT tbl, active FROM allocation.managed_table ORDER BY id;
SELECT * FROM allocation.check_consistency();

-- even the superuser cannot rewrite the audit log (append-only trigger)
UPDATE allocation.event SET reason = 'edited';
\echo sqlstate :SQLSTATE

DROP TABLE p_admin_customer;
DROP TABLE p_customer;
DROP EXTENSION allocation CASCADE;
-- the schema outlives DROP EXTENSION (it was created for it, not by it): drop
-- what the roles were granted on it before dropping the roles
DROP OWNED BY regress_alloc_admin, regress_alloc_manager, regress_alloc_rep, regress_alloc_analyst, regress_alloc_app;
DROP ROLE regress_alloc_admin, regress_alloc_manager, regress_alloc_rep, regress_alloc_analyst, regress_alloc_app;
