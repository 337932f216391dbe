--
-- 27_sharing: share_customer() / unshare_customer(), row-level security for
-- shared reps (viewer reads, collaborator reads and edits, only while valid),
-- active_share per role, every bad input with its SQLSTATE, nothing stored
-- changed by a refusal.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

DO $$
BEGIN
    CREATE ROLE regress_s27_a;
    CREATE ROLE regress_s27_b;
    CREATE ROLE regress_s27_c;
    CREATE ROLE regress_s27_mgr;
    CREATE ROLE regress_s27_app;
END $$;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login) VALUES
    (1, 'a', 'Rep A', 1, 100, 'regress_s27_a'),
    (2, 'b', 'Rep B', 1, 100, 'regress_s27_b'),
    (3, 'c', 'Rep C', 1, 100, 'regress_s27_c');
INSERT INTO allocation.rep (id, code, name, team_id, active) VALUES (4, 'gone', 'Rep who left', 1, false);
SELECT allocation.grant_role('regress_s27_a', 'rep'), allocation.grant_role('regress_s27_b', 'rep'),
       allocation.grant_role('regress_s27_c', 'rep'), allocation.grant_role('regress_s27_mgr', 'manager');
CREATE TABLE s27_customer (id integer PRIMARY KEY, name text, note text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('s27_customer', 'id', 'loc', 'owner');
INSERT INTO s27_customer (id, name, owner) VALUES (1, 'A''s dealer', 1), (2, 'A''s grower', 1), (3, 'B''s dealer', 2);
INSERT INTO s27_customer (id, name) VALUES (9, 'in the pool');
GRANT SELECT, INSERT, UPDATE, DELETE ON s27_customer TO regress_s27_a, regress_s27_b, regress_s27_c, regress_s27_app;
SELECT allocation.enable_rep_security('s27_customer');
CREATE TABLE s27_unmanaged (id integer);

CREATE FUNCTION s27_try(sql text) RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE sql;
    code := '00000';
    RETURN NEXT;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN NEXT;
END $f$;
GRANT EXECUTE ON FUNCTION s27_try(text) TO PUBLIC;
CREATE VIEW s27_shares AS
SELECT s.id, s.key, r.code AS rep, s.role, s.shared_by, s.ended_by, s.end_reason, upper_inf(s.valid) AS open_ended
  FROM allocation.customer_share s JOIN allocation.rep r ON r.id = s.rep_id ORDER BY s.id;
CREATE FUNCTION s27_fingerprint() RETURNS text LANGUAGE sql AS $$
    SELECT md5(concat((SELECT string_agg(s::text, ';' ORDER BY s.id) FROM allocation.customer_share s),
                      (SELECT count(*) FROM allocation.event),
                      (SELECT string_agg(c::text, ';' ORDER BY c.id) FROM s27_customer c)))
$$;

-------------------------------------------------------------------------------
-- Before any share: B sees only its own customer
-------------------------------------------------------------------------------
SET ROLE regress_s27_b;
SELECT id, name FROM s27_customer ORDER BY id;
RESET ROLE;

-------------------------------------------------------------------------------
-- The holder shares: B as viewer, C as collaborator
-------------------------------------------------------------------------------
SET ROLE regress_s27_a;
SELECT allocation.share_customer('s27_customer', '1', 2, 'viewer') > 0 AS shared_b;
SELECT allocation.share_customer('s27_customer', '1', 3, 'collaborator',
                                 tstzrange(now(), now() + interval '30 days')) > 0 AS shared_c;
SELECT key, rep_code, role, in_force FROM allocation.active_share ORDER BY id;
RESET ROLE;
SELECT kind, key, actor, to_rep, reason, detail->>'role' AS role FROM allocation.event
 WHERE kind LIKE 'customer_%shared' ORDER BY id;

-- the viewer reads it, cannot edit it; the collaborator reads and edits it; neither deletes it
SET ROLE regress_s27_b;
SELECT id, name FROM s27_customer ORDER BY id;
SELECT allocation.shared_with_me('s27_customer') AS b_shared_keys;
UPDATE s27_customer SET note = 'B was here' WHERE id = 1;
SELECT key, rep_code, role FROM allocation.active_share ORDER BY id;
SET ROLE regress_s27_c;
SELECT id, name FROM s27_customer ORDER BY id;
UPDATE s27_customer SET note = 'C visited with the crop specialist' WHERE id = 1;
DELETE FROM s27_customer WHERE id = 1;
-- the owner column stays the engine's: a collaborator cannot take the customer
SELECT code, message FROM s27_try('UPDATE s27_customer SET owner = 3 WHERE id = 1');
SELECT allocation.shared_with_me('s27_customer', true) AS c_write_keys;
RESET ROLE;
SELECT id, name, note, owner FROM s27_customer ORDER BY id;

-- a role that is no rep's login has no shared keys and still sees every row
SET ROLE regress_s27_app;
SELECT count(*) AS app_sees, (SELECT count(*) FROM allocation.shared_with_me('s27_customer')) AS app_shared FROM s27_customer;
RESET ROLE;

-------------------------------------------------------------------------------
-- Only while valid: a share that starts later does not count yet; one that
-- ended no longer does
-------------------------------------------------------------------------------
SET ROLE regress_s27_a;
SELECT allocation.share_customer('s27_customer', '2', 2, 'viewer', tstzrange(now() + interval '1 day', NULL)) > 0 AS later;
SET ROLE regress_s27_b;
SELECT id FROM s27_customer ORDER BY id;
SELECT key, in_force FROM allocation.active_share ORDER BY id;
RESET ROLE;

-- a new share of the same customer with the same rep replaces the old one (history kept)
SET ROLE regress_s27_mgr;
SELECT allocation.share_customer('s27_customer', '1', 2, 'collaborator') > 0 AS upgraded;
RESET ROLE;
SELECT key, rep, role, shared_by, ended_by, end_reason FROM s27_shares WHERE key = '1';
SET ROLE regress_s27_b;
UPDATE s27_customer SET note = 'B now edits too' WHERE id = 1;
RESET ROLE;
SELECT note FROM s27_customer WHERE id = 1;

-- the shared rep leaves the share itself; the holder takes another back
SET ROLE regress_s27_c;
SELECT allocation.unshare_customer('s27_customer', '1', 3, 'done with the visit');
SELECT id FROM s27_customer ORDER BY id;
SET ROLE regress_s27_a;
SELECT allocation.unshare_customer('s27_customer', '1', 2);
RESET ROLE;
SELECT key, rep, role, ended_by, end_reason FROM s27_shares WHERE key = '1' ORDER BY id;
SET ROLE regress_s27_b;
SELECT id FROM s27_customer ORDER BY id;
RESET ROLE;
SELECT kind, key, actor, to_rep, reason FROM allocation.event WHERE kind = 'customer_unshared' ORDER BY id;

-------------------------------------------------------------------------------
-- A virtual team's members read the team's customers while they are members
-------------------------------------------------------------------------------
SET ROLE regress_s27_mgr;
SELECT allocation.create_virtual_team('A+B program', 'joint program around customer 2', tstzrange(now(), NULL),
         '[{"rep_id": 1, "share": 60}, {"rep_id": 2, "share": 40}]', 's27_customer', ARRAY['2']) AS vt \gset
SET ROLE regress_s27_b;
SELECT id FROM s27_customer ORDER BY id;
UPDATE s27_customer SET note = 'members read, they do not edit' WHERE id = 2;
SET ROLE regress_s27_mgr;
SELECT allocation.set_team_shares(:vt, '[{"rep_id": 1, "share": 100}]');
SET ROLE regress_s27_b;
SELECT id FROM s27_customer ORDER BY id;
RESET ROLE;
SELECT note FROM s27_customer WHERE id = 2;

-------------------------------------------------------------------------------
-- A collaborator's edit never moves the customer by re-evaluation; the
-- application's edit does, as before.  A key is recorded in the key column's own form.
-------------------------------------------------------------------------------
CREATE TABLE s27_ruled (id integer PRIMARY KEY, tier text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('s27_ruled', 'id', 'loc', 'owner', '{"tier": "tier"}');
SELECT allocation.set_reevaluate('s27_ruled', 'always');
INSERT INTO allocation.rule (name, priority, tbl, tiers, target_kind, target_rep_id) VALUES
    ('s27 A to a', 10, 's27_ruled', '{A}', 'rep', 1), ('s27 Z to c', 10, 's27_ruled', '{Z}', 'rep', 3);
GRANT SELECT, UPDATE ON s27_ruled TO regress_s27_a, regress_s27_c;
SELECT allocation.enable_rep_security('s27_ruled');
INSERT INTO s27_ruled (id, tier) VALUES (4, 'A'), (5, 'A');
SET ROLE regress_s27_a;
SELECT allocation.share_customer('s27_ruled', '04', 3, 'collaborator') > 0 AS shared_as_04;
SELECT allocation.share_customer('s27_ruled', ' 4', 3, 'collaborator') > 0 AS shared_again;
RESET ROLE;
SELECT key, role, end_reason FROM allocation.customer_share
 WHERE managed_id = (SELECT id FROM allocation.managed_table WHERE tbl = 's27_ruled'::regclass) ORDER BY id;
SET ROLE regress_s27_c;
UPDATE s27_ruled SET tier = 'Z' WHERE id = 4;
RESET ROLE;
-- the application (no rep) edits the other one: re-evaluated, it moves to c
UPDATE s27_ruled SET tier = 'Z' WHERE id = 5;
SELECT c.id, c.tier, r.code AS owner FROM s27_ruled c JOIN allocation.rep r ON r.id = c.owner ORDER BY c.id;
SET ROLE regress_s27_a;
SELECT allocation.unshare_customer('s27_ruled', '004', 3, 'normalised key too');
RESET ROLE;
SELECT count(*) AS open_shares_of_4 FROM allocation.customer_share
 WHERE managed_id = (SELECT id FROM allocation.managed_table WHERE tbl = 's27_ruled'::regclass) AND ended_at IS NULL;
DROP TABLE s27_ruled;

-------------------------------------------------------------------------------
-- Bad inputs: each its SQLSTATE, nothing stored changed
-------------------------------------------------------------------------------
SELECT s27_fingerprint() AS before \gset
SET ROLE regress_s27_a;
SELECT * FROM s27_try($$SELECT allocation.share_customer(NULL, '1', 2, 'viewer')$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', NULL, 2, 'viewer')$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', '1', NULL, 'viewer')$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', '1', 2, NULL)$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', '1', 2, 'viewer', NULL)$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', '1', 2, 'owner')$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', '1', 2, 'viewer', 'empty')$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', '1', 2, 'viewer', tstzrange(NULL, '2030-01-01 00:00+08'))$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', '1', 2, 'viewer', tstzrange('2020-01-01 00:00+08', '2020-02-01 00:00+08'))$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_unmanaged', '1', 2, 'viewer')$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer(0, '1', 2, 'viewer')$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', '1', 42, 'viewer')$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', '1', 4, 'viewer')$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', '404', 2, 'viewer')$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', '1', 1, 'viewer')$$);
SET ROLE regress_s27_mgr;
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', '404', 2, 'viewer')$$);
SET ROLE regress_s27_a;
-- not the holder: B may not share A's customer, nor a pool customer
SET ROLE regress_s27_b;
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', '1', 3, 'viewer')$$);
SELECT * FROM s27_try($$SELECT allocation.share_customer('s27_customer', '9', 3, 'viewer')$$);
-- unsharing what is not shared, or someone else's share
SELECT * FROM s27_try($$SELECT allocation.unshare_customer('s27_customer', '1', 2)$$);
SELECT * FROM s27_try($$SELECT allocation.unshare_customer(NULL, '1', 2)$$);
SELECT * FROM s27_try($$SELECT allocation.unshare_customer('s27_customer', '1', NULL)$$);
SELECT * FROM s27_try($$SELECT allocation.unshare_customer('s27_unmanaged', '1', 2)$$);
SET ROLE regress_s27_a;
SELECT * FROM s27_try($$SELECT allocation.unshare_customer('s27_customer', '1', 2)$$);
SELECT * FROM s27_try($$SELECT allocation.unshare_customer('s27_customer', '3', 2)$$);
-- a role of no kind may not call them at all; nobody writes the table directly
SET ROLE regress_s27_app;
SELECT code FROM s27_try($$SELECT allocation.share_customer('s27_customer', '1', 2, 'viewer')$$);
SELECT code FROM s27_try($$INSERT INTO allocation.customer_share (managed_id, key, rep_id, role, valid, shared_by) VALUES (1, '1', 2, 'viewer', tstzrange(now(), NULL), 'x')$$);
RESET ROLE;
SELECT s27_fingerprint() = :'before' AS nothing_changed;

-- the shares and the policies survive a rename of the table and of its key column
ALTER TABLE s27_customer RENAME TO s27_client;
ALTER TABLE s27_client RENAME COLUMN id TO client_id;
SET ROLE regress_s27_a;
SELECT allocation.share_customer('s27_client', '2', 3, 'viewer') > 0 AS shared_after_rename;
SET ROLE regress_s27_c;
SELECT client_id FROM s27_client ORDER BY client_id;
RESET ROLE;

DROP TABLE s27_client, s27_unmanaged;
DROP EXTENSION allocation CASCADE;
DROP FUNCTION s27_try(text);
DROP OWNED BY regress_s27_a, regress_s27_b, regress_s27_c, regress_s27_mgr, regress_s27_app;
DROP ROLE regress_s27_a, regress_s27_b, regress_s27_c, regress_s27_mgr, regress_s27_app;
