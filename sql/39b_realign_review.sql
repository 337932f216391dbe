--
-- 39b_realign_review: review 15b of the set-based realignment apply.
-- (1) a plan that lists nobody applies (its realign_applied event had a NULL detail);
-- (2) a table trigger that updates another customer of the same batch: the batch (LA0R8)
--     falls back to one customer at a time, every customer moves once, one event each;
-- (3) a character(n) key: the batch matched its locked rows by the key cast to text
--     (padding dropped), so every listed customer was marked gone and none moved;
-- (4) a step in a REPEATABLE READ transaction is refused (its snapshot would miss stay
--     reasons committed after it began); nothing changes.
--
CREATE EXTENSION allocation;
\set SHOW_CONTEXT never
INSERT INTO allocation.team (id, code, name) VALUES (1, 't', 'Team');
INSERT INTO allocation.rep (id, code, name, team_id) VALUES (1, 'a', 'Rep A', 1), (2, 'b', 'Rep B', 1), (3, 'c', 'Rep C', 1);
INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id) VALUES
     (1, 'west', 'West', ST_Multi(ST_MakeEnvelope(0, 0, 10, 10, 4326)), 1),
     (2, 'east', 'East', ST_Multi(ST_MakeEnvelope(10, 0, 20, 10, 4326)), 2);
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES ('terr', 10, 'team', 1, 'territory_owner');
CREATE TABLE r39b_customer (id integer PRIMARY KEY, loc geometry(Point, 4326), owner bigint, touched integer NOT NULL DEFAULT 0);
SELECT count(*) AS managed FROM (SELECT allocation.manage('r39b_customer', 'id', 'loc', 'owner')) x;
INSERT INTO r39b_customer (id, loc) SELECT g, format('SRID=4326;POINT(15 %s)', g)::geometry FROM generate_series(1, 5) g;

-- (1) nothing to move: the plan is applied, its event counts nothing
SELECT allocation.realign_create('nothing', 'changes nobody') AS p0 \gset
SELECT count(*) AS staged FROM (SELECT allocation.realign_stage_rep(:p0, 1, capacity => 100)) x;
CALL allocation.realign_apply(:p0, 'rename only', 10);
SELECT status, total FROM allocation.realign_plan WHERE id = :p0;
SELECT kind, detail - 'realign_plan' AS detail FROM allocation.event WHERE kind LIKE 'realign%' ORDER BY id;

-- (2) a table trigger touches the next customer whenever one is updated
CREATE FUNCTION r39b_touch() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN
     IF pg_trigger_depth() = 1 THEN
         UPDATE r39b_customer SET touched = touched + 1 WHERE id = NEW.id + 1;
     END IF;
     RETURN NULL;
   END $$;
CREATE TRIGGER r39b_touch AFTER UPDATE ON r39b_customer FOR EACH ROW EXECUTE FUNCTION r39b_touch();
SELECT allocation.realign_create('east to c', 'c takes the east') AS p \gset
SELECT count(*) AS staged FROM (SELECT allocation.realign_stage_territory(:p, 'east', owner_rep => 3)) x;
SELECT key, outcome, from_rep_code, to_rep_code FROM allocation.realign_preview(:p) ORDER BY key;
SELECT status, total, pending FROM allocation.realign_apply_step(:p, 'c takes the east', 100);
SELECT status, moved, stayed, pending FROM allocation.realign_apply_step(:p, 'c takes the east', 100);
SELECT c.id, r.code, c.touched FROM r39b_customer c LEFT JOIN allocation.rep r ON r.id = c.owner ORDER BY 1;
SELECT key, status, result_rep FROM allocation.realign_item WHERE plan_id = :p ORDER BY ord;
SELECT key, count(*) AS realign_events FROM allocation.event WHERE kind = 'realign' GROUP BY key ORDER BY key;
SELECT count(*) AS other_owner_events FROM allocation.event
 WHERE key IS NOT NULL AND kind NOT IN ('realign', 'assign') ;
SELECT * FROM allocation.check_consistency();


-- (3) character(n) keys
CREATE TABLE r39b_char (id character(6) PRIMARY KEY, loc geometry(Point, 4326), owner bigint);
SELECT count(*) AS managed FROM (SELECT allocation.manage('r39b_char', 'id', 'loc', 'owner')) x;
INSERT INTO r39b_char (id, loc) SELECT 'C' || g, format('SRID=4326;POINT(16 %s)', g)::geometry FROM generate_series(1, 3) g;
SELECT c.id, r.code FROM r39b_char c LEFT JOIN allocation.rep r ON r.id = c.owner ORDER BY 1;
SELECT allocation.realign_create('east back to b', 'b takes the east again') AS p2 \gset
SELECT count(*) AS staged FROM (SELECT allocation.realign_stage_territory(:p2, 'east', owner_rep => 2)) x;
SELECT key, outcome, from_rep_code, to_rep_code FROM allocation.realign_preview(:p2) WHERE table_name::regclass = 'r39b_char'::regclass ORDER BY key;
CALL allocation.realign_apply(:p2, 'b takes the east again', 100);
SELECT '"' || key || '"' AS key, status, reason FROM allocation.realign_item i JOIN allocation.managed_table m ON m.id = i.managed_id
 WHERE plan_id = :p2 AND m.tbl = 'r39b_char'::regclass ORDER BY ord;
SELECT c.id, r.code FROM r39b_char c LEFT JOIN allocation.rep r ON r.id = c.owner ORDER BY 1;
SELECT * FROM allocation.check_consistency();

-- (4) REPEATABLE READ: refused, nothing changed
SELECT allocation.realign_create('west to c', 'c takes the west') AS p3 \gset
SELECT count(*) AS staged FROM (SELECT allocation.realign_stage_territory(:p3, 'west', owner_rep => 3)) x;
BEGIN ISOLATION LEVEL REPEATABLE READ;
\set VERBOSITY default
SELECT * FROM allocation.realign_apply_step(:p3, 'c takes the west', 10);
\set VERBOSITY terse
ROLLBACK;
SET default_transaction_isolation = 'repeatable read';
CALL allocation.realign_apply(:p3, 'c takes the west', 10);
RESET default_transaction_isolation;
SELECT status, total FROM allocation.realign_plan WHERE id = :p3;
SELECT count(*) AS items FROM allocation.realign_item WHERE plan_id = :p3;

DROP TABLE r39b_customer, r39b_char;
DROP FUNCTION r39b_touch();
DROP EXTENSION allocation CASCADE;
