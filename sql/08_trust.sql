-- 08_trust: who runs what.  User code runs only as the managed table's owner;
-- internal functions only for the extension owner; what the engine records
-- cannot be steered by a setting; reps change owners only through claims.
CREATE EXTENSION allocation;
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_t_admin;
DROP ROLE IF EXISTS regress_t_other_admin;
DROP ROLE IF EXISTS regress_t_rep;
DROP ROLE IF EXISTS regress_t_rep2;
DROP ROLE IF EXISTS regress_t_mgr;
DROP ROLE IF EXISTS regress_t_app;
RESET client_min_messages;
CREATE ROLE regress_t_admin;
CREATE ROLE regress_t_other_admin;
CREATE ROLE regress_t_rep;
CREATE ROLE regress_t_rep2;
CREATE ROLE regress_t_mgr;
CREATE ROLE regress_t_app;
SELECT allocation.grant_role('regress_t_admin', 'admin');
SELECT allocation.grant_role('regress_t_other_admin', 'admin');
SELECT allocation.grant_role('regress_t_rep', 'rep');
SELECT allocation.grant_role('regress_t_rep2', 'rep');
SELECT allocation.grant_role('regress_t_mgr', 'manager');
CREATE SCHEMA t_crm AUTHORIZATION regress_t_admin;
GRANT USAGE ON SCHEMA t_crm TO regress_t_rep, regress_t_rep2, regress_t_mgr, regress_t_app, regress_t_other_admin;
INSERT INTO allocation.team (code, name) VALUES ('t', 'Team');
INSERT INTO allocation.rep (code, name, team_id, login)
     VALUES ('a', 'A', 1, 'regress_t_rep'), ('b', 'B', 1, 'regress_t_rep2');
-- (the user's functions below say in a NOTICE which role runs them)

-------------------------------------------------------------------------------
-- 1. admin -> superuser through a rule condition (the reproduction of issue 10)
-------------------------------------------------------------------------------
SET ROLE regress_t_admin;
CREATE TABLE t_crm.customer (id int PRIMARY KEY, volume numeric, loc geometry(Point, 4326), owner bigint);
GRANT SELECT, INSERT, UPDATE ON t_crm.customer TO regress_t_rep, regress_t_rep2, regress_t_mgr, regress_t_app;
SELECT allocation.manage('t_crm.customer', 'id', 'loc', 'owner', '{}');
CREATE FUNCTION t_crm.escalate() RETURNS boolean LANGUAGE plpgsql VOLATILE AS
$$
BEGIN
    RAISE NOTICE 'escalate() runs as %', current_user;
    EXECUTE 'ALTER ROLE regress_t_admin SUPERUSER';
    RAISE NOTICE 'ALTER ROLE ... SUPERUSER succeeded';
    RETURN true;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'ALTER ROLE ... SUPERUSER refused';
    RETURN true;
END
$$;
-- IMMUTABLE with a constant argument: expression_planner() folds it when the rule cache is built
CREATE FUNCTION t_crm.wrap(int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS
$$ BEGIN RETURN t_crm.escalate(); END $$;
-- per row: the condition's function sees the customer's column
CREATE FUNCTION t_crm.big(numeric) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS
$$ BEGIN RAISE NOTICE 'big(%) runs as %', $1, current_user; RETURN $1 > 100; END $$;
INSERT INTO allocation.rule (name, priority, target_kind, tbl, condition)
     VALUES ('evil', 99, 'pool', 't_crm.customer', 't_crm.wrap(1) AND t_crm.big(volume)');
RESET ROLE;
-- the next decisions rebuild the rule cache: as a superuser's session, a rep's, the app's
INSERT INTO t_crm.customer (id, volume) VALUES (1, 500);
SET ROLE regress_t_rep;
INSERT INTO t_crm.customer (id, volume) VALUES (2, 5);
SELECT allocation.claim('t_crm.customer', '2');
RESET ROLE;
UPDATE allocation.team SET name = 'Team ';   -- rebuild again
SET ROLE regress_t_admin;
INSERT INTO t_crm.customer (id, volume) VALUES (3, 500);
SET ROLE regress_t_rep;
SELECT allocation.explain('t_crm.customer', '3') -> 'result' ->> 'outcome' AS explained;
RESET ROLE;
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_t_admin';
SELECT id, owner FROM t_crm.customer ORDER BY id;

-------------------------------------------------------------------------------
-- 2. no setting changes what the engine records
-------------------------------------------------------------------------------
SET ROLE regress_t_app;
SET allocation.change_source = 'suggestion';
SET allocation.change_reason = 'the boss said so';
SET allocation.in_batch = on;
UPDATE t_crm.customer SET owner = 2 WHERE id = 1;
RESET ROLE;
SELECT kind, actor, to_rep, reason, source
  FROM allocation.event WHERE key = '1' ORDER BY id DESC LIMIT 1;
-- (settings fixed at server start, defined only when the library is preloaded, are left out)
SELECT name FROM pg_settings WHERE name LIKE 'allocation.%' AND context <> 'postmaster' ORDER BY 1;

-------------------------------------------------------------------------------
-- 3. the audit log and the registry are written by the engine only
-------------------------------------------------------------------------------
SET ROLE regress_t_admin;
INSERT INTO allocation.event (actor, kind, reason, at) VALUES ('someone_else', 'manual_assign', 'forged', now() - interval '1 year');
\echo sqlstate :SQLSTATE
UPDATE allocation.customer_state SET rep_id = 1 WHERE key = '1';
\echo sqlstate :SQLSTATE
INSERT INTO allocation.suggestion (managed_id, key, rep_id) VALUES (1, '3', 1);
\echo sqlstate :SQLSTATE
UPDATE allocation.rep_load SET held = 0;
\echo sqlstate :SQLSTATE
INSERT INTO allocation.customer_lock (managed_id, key, reason, locked_by) VALUES (1, '3', 'x', 'y');
\echo sqlstate :SQLSTATE
-- internal functions: the extension owner's alone (they skip the public function's checks)
SELECT allocation._apply_duplicate_policy(1, 'block', 'off', 0.6, NULL, 'public');
\echo sqlstate :SQLSTATE
SELECT allocation._identity_drop(1);
\echo sqlstate :SQLSTATE
SELECT allocation._set_owner('t_crm.customer', '3', 1, 'suggestion', 'forged');
\echo sqlstate :SQLSTATE
SELECT allocation._close_duplicate(1, true, 'forged', 1);
\echo sqlstate :SQLSTATE
RESET ROLE;
SELECT count(*) AS forged_events FROM allocation.event WHERE reason = 'forged' OR actor = 'someone_else';
-- no role but the extension owner holds a right on an internal function
SELECT count(*) AS internal_grants
  FROM pg_proc p, aclexplode(p.proacl) a
 WHERE p.pronamespace = 'allocation'::regnamespace AND p.proname LIKE '\_%'
   AND a.grantee <> p.proowner;
-- ... nor INSERT/UPDATE/DELETE on an engine-maintained table
SELECT c.relname, a.privilege_type
  FROM pg_class c, aclexplode(c.relacl) a
 WHERE c.relnamespace = 'allocation'::regnamespace AND c.relkind = 'r' AND a.grantee <> c.relowner
   AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
   AND c.relname NOT IN ('team', 'rep', 'territory', 'rule', 'claim_policy', 'recycle_policy', 'resource_pool', 'name_term',
                         'transfer_policy', 'reward_rule', 'new_rep_policy', 'alert_rule')
 ORDER BY 1, 2;

-- an admin that does not own a table cannot attach, detach or reconfigure it
SET ROLE regress_t_other_admin;
SELECT allocation.unmanage('t_crm.customer');
\echo sqlstate :SQLSTATE
SELECT allocation.set_reevaluate('t_crm.customer', 'never');
\echo sqlstate :SQLSTATE
SELECT allocation.enable_rep_security('t_crm.customer');
\echo sqlstate :SQLSTATE
SELECT allocation.set_duplicate_policy('t_crm.customer', 'off');
\echo sqlstate :SQLSTATE
RESET ROLE;
SELECT tbl, active, reevaluate FROM allocation.managed_table;

-------------------------------------------------------------------------------
-- 4. reps change owners only through claim()/release(); RLS set up by a non-superuser admin
-------------------------------------------------------------------------------
SET ROLE regress_t_admin;
SELECT allocation.enable_rep_security('t_crm.customer');
RESET ROLE;
SELECT allocation.assign('t_crm.customer', '3', 1, 'for the test');
SELECT allocation.lock_customer('t_crm.customer', '3', 'key account');
SET ROLE regress_t_app;          -- not a rep: sees every row (current_rep_id() is granted)
SELECT count(*) AS app_sees FROM t_crm.customer;
SET ROLE regress_t_rep;
SELECT id, owner FROM t_crm.customer ORDER BY id;
UPDATE t_crm.customer SET owner = NULL;
\echo sqlstate :SQLSTATE
UPDATE t_crm.customer SET owner = 2 WHERE id = 3;
\echo sqlstate :SQLSTATE
UPDATE t_crm.customer SET volume = 1 WHERE id = 3;   -- other columns: fine
RESET ROLE;
SELECT id, owner FROM t_crm.customer ORDER BY id;
SELECT key, reason FROM allocation.customer_lock;
SELECT a.key, a.rep_id FROM allocation.assignment a WHERE a.valid_to IS NULL ORDER BY a.key;
-- the manager's channel and the lock's events name the manager's role as actor
SET ROLE regress_t_mgr;
SELECT allocation.unlock_customer('t_crm.customer', '3', 'done');
SELECT allocation.assign('t_crm.customer', '3', 2, 'moved by the manager');
RESET ROLE;
SELECT kind, CASE WHEN actor = current_user THEN '(superuser)' ELSE actor END AS actor, to_rep, reason
  FROM allocation.event WHERE key = '3' AND kind IN ('lock', 'unlock', 'reassign', 'manual_assign') ORDER BY id;

-------------------------------------------------------------------------------
-- 5. every function survives NULL arguments and a wrong table (no crash, no internal error)
-------------------------------------------------------------------------------
SELECT allocation._owner_update('allocation.event'::regclass, NULL::text, -1, 'x', '1');
\echo sqlstate :SQLSTATE
SELECT allocation._owner_update('allocation.event'::regclass, '1', -1, 'x', '1');
\echo sqlstate :SQLSTATE
CREATE TEMP TABLE t_calls (fn text, args text, sqlstate text);
DO $$
DECLARE
    f record;
    v_args text;
    v_state text;
    v_try integer;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS sig, p.proname, p.proargtypes::oid[] AS types, p.proretset
               FROM pg_proc p
              WHERE p.pronamespace = 'allocation'::regnamespace
                AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
              ORDER BY 1::text LOOP
        FOR v_try IN 1 .. 3 LOOP
            -- 1: every argument NULL; 2: a table that is not managed; 3: a relation OID that does not exist
            IF v_try > 1 AND NOT 'regclass'::regtype::oid = ANY (f.types) THEN
                CONTINUE;
            END IF;
            SELECT coalesce(string_agg(CASE
                       WHEN v_try = 1 THEN format('NULL::%s', t::regtype)
                       WHEN t = 'regclass'::regtype THEN CASE v_try WHEN 2 THEN '''pg_catalog.pg_class''::regclass' ELSE '4000000000::oid::regclass' END
                       WHEN t IN ('text'::regtype, 'name'::regtype) THEN format('''1''::%s', t::regtype)
                       WHEN t IN ('bigint'::regtype, 'integer'::regtype) THEN format('1::%s', t::regtype)
                       ELSE format('NULL::%s', t::regtype) END, ', ' ORDER BY o), '')
              INTO v_args
              FROM unnest(f.types) WITH ORDINALITY AS u(t, o);
            BEGIN
                EXECUTE format('SELECT %s allocation.%I(%s)', CASE WHEN f.proretset THEN 'count(*) FROM' ELSE '' END,
                               f.proname, v_args);
                v_state := '00000';
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
            END;
            INSERT INTO t_calls VALUES (f.sig::text, v_args, v_state);
        END LOOP;
    END LOOP;
END
$$;
SELECT count(DISTINCT fn) > 80 AS many_functions_called, count(*) > 100 AS many_calls FROM t_calls;
-- internal errors (XX000: "can't happen") would mean an unchecked input
SELECT fn, args, sqlstate FROM t_calls WHERE sqlstate LIKE 'XX%' ORDER BY fn, args;
-- the backend is still here, and nothing stored was lost
SELECT id, owner FROM t_crm.customer ORDER BY id;
SELECT count(*) AS open_rows FROM allocation.assignment WHERE valid_to IS NULL;

-------------------------------------------------------------------------------
-- 6. what an adversarial review tried (each ran as a superuser or as the rep before the fix)
-------------------------------------------------------------------------------
DROP TABLE t_calls;   -- (claims refuse sessions with temporary tables)
SET ROLE regress_t_admin;
CREATE FUNCTION t_crm.chk(int) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'domain check runs as %', current_user; RETURN true; END $$;
CREATE DOMAIN t_crm.dom AS int CHECK (t_crm.chk(VALUE));
-- a) parsing a condition runs code (a literal cast to a domain checks it): also when DDL re-parses it
INSERT INTO allocation.rule (name, priority, target_kind, tbl, condition)
     VALUES ('dom literal', 1, 'pool', 't_crm.customer', $c$'{1}'::t_crm.dom[] IS NOT NULL$c$);
RESET ROLE;
ALTER TABLE t_crm.customer ADD COLUMN extra int;   -- the event trigger (extension owner) re-parses it
DELETE FROM allocation.rule WHERE name = 'dom literal';
-- b) explain() casts into the table's domains as the table's owner, also when a superuser asks
SET ROLE regress_t_admin;
ALTER TABLE t_crm.customer ADD COLUMN note t_crm.dom;
RESET ROLE;
SELECT allocation.explain('t_crm.customer', '{"id": 9, "note": 1}'::jsonb) -> 'result' ->> 'outcome' AS explained;
-- ... and shows a stored customer only to a role that may read it (rep b cannot see customer 2 under RLS)
SET ROLE regress_t_rep2;
SELECT allocation.explain('t_crm.customer', '2');
\echo sqlstate :SQLSTATE
RESET ROLE;
-- c) a trigger that sorts after zz_allocation_before cannot change the owner the engine decided
SET ROLE regress_t_admin;
CREATE FUNCTION t_crm.swap() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN IF NEW.owner IS NOT NULL THEN NEW.owner := 3 - NEW.owner; END IF; RETURN NEW; END $$;
CREATE TRIGGER zzzz_swap BEFORE INSERT OR UPDATE ON t_crm.customer FOR EACH ROW EXECUTE FUNCTION t_crm.swap();
RESET ROLE;
SELECT allocation.assign('t_crm.customer', '1', 1, 'swap test');
\echo sqlstate :SQLSTATE
UPDATE t_crm.customer SET volume = volume + 1 WHERE id = 1;   -- nothing the engine reads: the owner may not move either
\echo sqlstate :SQLSTATE
SET ROLE regress_t_admin;
DROP TRIGGER zzzz_swap ON t_crm.customer;
-- d) the owner's trigger that changes another customer during a claim acts in its own name
CREATE FUNCTION t_crm.side() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN IF NEW.id = 1 AND NEW.owner IS NOT NULL THEN UPDATE t_crm.customer SET owner = NULL WHERE id = 3; END IF; RETURN NEW; END $$;
CREATE TRIGGER side AFTER UPDATE ON t_crm.customer FOR EACH ROW EXECUTE FUNCTION t_crm.side();
RESET ROLE;
SELECT allocation.release('t_crm.customer', '1', 'back to the pool');
SET ROLE regress_t_rep;
SELECT allocation.claim('t_crm.customer', '1');
RESET ROLE;
SELECT key, kind, actor FROM allocation.event WHERE key IN ('1', '3') AND kind IN ('claim', 'release') ORDER BY id DESC LIMIT 2;
DROP TRIGGER side ON t_crm.customer;
-- e) a rep gives a new customer to another rep: refused; for itself (registration): kept
SET ROLE regress_t_rep;
INSERT INTO t_crm.customer (id, volume, owner) VALUES (20, 1, 2);
\echo sqlstate :SQLSTATE
RESET ROLE;
-- f) a rep's login that SET ROLE to a group role is still that rep
CREATE ROLE regress_t_sales;
GRANT USAGE ON SCHEMA t_crm TO regress_t_sales;
GRANT SELECT, UPDATE ON t_crm.customer TO regress_t_sales;
GRANT regress_t_sales TO regress_t_rep;
SET SESSION AUTHORIZATION regress_t_rep;
SET ROLE regress_t_sales;
UPDATE t_crm.customer SET owner = 2 WHERE id = 1;
\echo sqlstate :SQLSTATE
RESET SESSION AUTHORIZATION;
DROP OWNED BY regress_t_sales;
DROP ROLE regress_t_sales;
SELECT id, owner FROM t_crm.customer ORDER BY id;
-- h) a condition answers as the table's owner: CURRENT_USER is the owner, whoever inserts
SET ROLE regress_t_admin;
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl, condition)
     VALUES ('owner view', 50, 'rep', 2, 't_crm.customer', $c$current_user = 'regress_t_admin'$c$);
SET ROLE regress_t_rep;
INSERT INTO t_crm.customer (id, volume) VALUES (30, 0);
RESET ROLE;
SELECT id, owner FROM t_crm.customer WHERE id = 30;
DELETE FROM allocation.rule WHERE name = 'owner view';
-- g) internal functions read node trees only from allocation.rule (the node reader trusts its input)
SELECT allocation._condition_still_means('true', '{CONST', 't_crm.customer', NULL);
\echo sqlstate :SQLSTATE
SELECT allocation._condition_deparse('{OPEXPR :opno 96 :args <> :location 1}', 't_crm.customer');
\echo sqlstate :SQLSTATE
SELECT allocation.grant_role(0::regrole, 'admin');
\echo sqlstate :SQLSTATE

-------------------------------------------------------------------------------
-- clean up
-------------------------------------------------------------------------------
SELECT allocation.disable_rep_security('t_crm.customer');
SELECT allocation.unmanage('t_crm.customer');
DROP SCHEMA t_crm CASCADE;
DROP EXTENSION allocation;
DROP OWNED BY regress_t_admin, regress_t_other_admin, regress_t_rep, regress_t_rep2, regress_t_mgr, regress_t_app;
DROP SCHEMA allocation;
DROP ROLE regress_t_admin, regress_t_other_admin, regress_t_rep, regress_t_rep2, regress_t_mgr, regress_t_app;
