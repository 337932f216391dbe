-- Row-level security for reps: enable_rep_security() / current_rep_id()
CREATE EXTENSION allocation;
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_rls_app;
DROP ROLE IF EXISTS regress_rls_wang;
DROP ROLE IF EXISTS regress_rls_li;
RESET client_min_messages;
CREATE ROLE regress_rls_app;
CREATE ROLE regress_rls_wang;
CREATE ROLE regress_rls_li;
INSERT INTO allocation.team (code, name) VALUES ('local', 'Local sales');
INSERT INTO allocation.rep (code, name, team_id, login) VALUES
    ('wang', 'Wang', 1, 'regress_rls_wang'), ('li', 'Li', 1, 'regress_rls_li');
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "W"}, "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "L"}, "geometry": {"type": "Polygon", "coordinates": [[[10,0],[20,0],[20,10],[10,10],[10,0]]]}}]}');
UPDATE allocation.territory SET owner_rep_id = CASE code WHEN 'W' THEN 1 ELSE 2 END;
INSERT INTO allocation.rule (name, target_kind, target_team_id, policy) VALUES ('owner', 'team', 1, 'territory_owner');
CREATE TABLE s_customer (id int PRIMARY KEY, name text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('s_customer', 'id', 'loc', 'owner');
INSERT INTO s_customer (id, name, loc) VALUES
    (1, 'in W', 'SRID=4326;POINT(5 5)'), (2, 'in L', 'SRID=4326;POINT(15 5)'), (3, 'outside', 'SRID=4326;POINT(50 5)');
GRANT SELECT, INSERT, UPDATE, DELETE ON s_customer TO regress_rls_app, regress_rls_wang, regress_rls_li;

-- not yet enabled: every role sees every row
SET ROLE regress_rls_wang;
SELECT id, owner FROM s_customer ORDER BY id;
RESET ROLE;

SELECT allocation.enable_rep_security('s_customer');
SELECT polname, polcmd FROM pg_policy WHERE polrelid = 's_customer'::regclass ORDER BY polname;

-- a rep's login: only its own customers
SET ROLE regress_rls_wang;
SELECT allocation.current_rep_id();
SELECT id, owner FROM s_customer ORDER BY id;
-- it may register a customer that the rules give to someone else ...
INSERT INTO s_customer (id, name, loc) VALUES (4, 'registered by wang, lies in L', 'SRID=4326;POINT(16 6)');
-- ... which it then cannot see
SELECT id, owner FROM s_customer ORDER BY id;
-- it cannot change or delete another rep's customer (0 rows)
UPDATE s_customer SET name = 'hijacked' WHERE id = 2;
DELETE FROM s_customer WHERE id = 2;
-- it may edit its own customer ...
UPDATE s_customer SET name = 'in W, renamed by wang' WHERE id = 1;
-- ... but not so that the rules hand it to Li: the new row must stay visible (42501)
UPDATE s_customer SET loc = 'SRID=4326;POINT(12 2)' WHERE id = 1;
\echo sqlstate :SQLSTATE
SELECT id, name, owner FROM s_customer ORDER BY id;
RESET ROLE;

SET ROLE regress_rls_li;
SELECT allocation.current_rep_id();
SELECT id, name, owner FROM s_customer ORDER BY id;
RESET ROLE;

-- a role that is no rep's login (the application) sees everything
SET ROLE regress_rls_app;
SELECT allocation.current_rep_id();
SELECT id, owner FROM s_customer ORDER BY id;
RESET ROLE;

-- an inactive rep's login is still a rep's login: only its own customers (none now)
UPDATE allocation.rep SET active = false WHERE code = 'li';
SET ROLE regress_rls_li;
SELECT allocation.current_rep_id();
SELECT count(*) AS visible FROM s_customer;
RESET ROLE;

-- errors
SELECT allocation.enable_rep_security('pg_class');
\echo sqlstate :SQLSTATE

SELECT allocation.disable_rep_security('s_customer');
SELECT count(*) AS policies, (SELECT relrowsecurity FROM pg_class WHERE oid = 's_customer'::regclass) AS rls
  FROM pg_policy WHERE polrelid = 's_customer'::regclass;
SELECT * FROM allocation.check_consistency();

DROP TABLE s_customer;
DROP EXTENSION allocation CASCADE;
REVOKE ALL ON SCHEMA allocation FROM PUBLIC;
DROP SCHEMA allocation;
DROP ROLE regress_rls_app;
DROP ROLE regress_rls_wang;
DROP ROLE regress_rls_li;
