--
-- 39_realign: realignment plans (issue 15): staging, preview (the trigger's
-- decision code, nothing changed, caches back to the committed configuration),
-- apply in committed batches (one realign event per move naming the plan),
-- every "stays, because" reason, preview == apply, an interrupted apply resumed
-- == an uninterrupted one, bad inputs with their SQLSTATEs, the NOTICE of a
-- direct territory-owner change, the GeoJSON.
--
\pset null '(null)'
\set SHOW_CONTEXT never

DO $$
BEGIN
    CREATE ROLE regress_r33_a;
    CREATE ROLE regress_r33_b;
    CREATE ROLE regress_r33_c;
    CREATE ROLE regress_r33_mgr;
    CREATE ROLE regress_r33_nobody;
END $$;

-- The scenario, built twice (once applied without interruption, once interrupted and resumed)
CREATE FUNCTION r33_setup() RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    CREATE EXTENSION allocation;
    INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
    INSERT INTO allocation.rep (id, code, name, team_id, capacity, login) VALUES
        (1, 'a', 'Rep A', 1, 100, 'regress_r33_a'),
        (2, 'b', 'Rep B', 1, 100, 'regress_r33_b'),
        (3, 'c', 'Rep C', 1, 100, 'regress_r33_c');
    PERFORM allocation.grant_role('regress_r33_a', 'rep'), allocation.grant_role('regress_r33_b', 'rep'),
            allocation.grant_role('regress_r33_c', 'rep'), allocation.grant_role('regress_r33_mgr', 'manager');
    -- (grant_role() grants them too; explicit here so the test reads on its own)
    GRANT EXECUTE ON FUNCTION allocation.realign_create(text, text, interval),
          allocation.realign_stage_territory(bigint, text, geometry, bigint, bigint, integer, boolean, boolean),
          allocation.realign_stage_rule(bigint, bigint, jsonb), allocation.realign_stage_rep(bigint, bigint, integer, boolean, boolean),
          allocation.realign_cancel(bigint, text), allocation.realign_preview(bigint), allocation.realign_preview_reps(bigint),
          allocation.realign_apply_step(bigint, text, integer), allocation.realign_in_block(),
          allocation.realign_geojson(bigint) TO regress_r33_mgr;
    GRANT EXECUTE ON PROCEDURE allocation.realign_apply(bigint, text, integer) TO regress_r33_mgr;
    GRANT EXECUTE ON FUNCTION allocation.realign_preview(bigint) TO regress_r33_b;   -- a mis-grant: still refused
    INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id) VALUES
        (1, 'west', 'West county', ST_Multi(ST_MakeEnvelope(0, 0, 10, 10, 4326)), 1),
        (2, 'east', 'East county', ST_Multi(ST_MakeEnvelope(10, 0, 20, 10, 4326)), 2);
    INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES
        ('owner of the territory', 10, 'team', 1, 'territory_owner'),
        ('least loaded', 0, 'team', 1, 'least_loaded');
    CREATE TABLE r33_customer (id integer PRIMARY KEY, name text, tier text, loc geometry(Point, 4326), owner bigint);
    PERFORM allocation.manage('r33_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
    -- 1..10 in the west (rep a), 11..24 in the east (rep b)
    INSERT INTO r33_customer (id, name, tier, loc)
    SELECT g, 'dealer ' || g, 'A', ST_SetSRID(ST_MakePoint(CASE WHEN g <= 10 THEN 5 ELSE 15 END, g * 0.3), 4326)
      FROM generate_series(1, 24) g;
    -- a flag the interrupted run uses to fail a batch half-way (as a crash or a cancel would)
    CREATE TABLE r33_fail (key integer PRIMARY KEY);
    CREATE FUNCTION r33_fail_check() RETURNS trigger LANGUAGE plpgsql AS $t$
    BEGIN
        IF EXISTS (SELECT 1 FROM public.r33_fail f WHERE f.key = NEW.id) THEN
            RAISE EXCEPTION 'simulated crash at customer %', NEW.id;
        END IF;
        RETURN NEW;
    END $t$;
    CREATE TRIGGER a_fail BEFORE UPDATE ON r33_customer FOR EACH ROW EXECUTE FUNCTION r33_fail_check();
    GRANT SELECT, UPDATE ON r33_customer TO PUBLIC;
    GRANT SELECT ON r33_fail TO PUBLIC;
END $f$;

-- The customers that stay whatever the rules say (one per reason), in the east
CREATE FUNCTION r33_exceptions() RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    SET LOCAL ROLE regress_r33_mgr;
    PERFORM allocation.assign('r33_customer', '12', 2, 'key account: stays with b');       -- pinned
    PERFORM allocation.lock_customer('r33_customer', '13', 'contract renegotiation');     -- locked
    PERFORM allocation.release('r33_customer', '14', 'back to the pool');
    PERFORM allocation.claim('r33_customer', '14', 2);                                    -- claimed just now
    RESET ROLE;
    INSERT INTO allocation.virtual_team (id, name, valid, created_by)
    VALUES (1, 'rice belt tiger team', tstzrange(now() - interval '1 day', NULL), 'regress_r33_mgr');
    INSERT INTO allocation.virtual_team_customer (team_id, managed_id, tbl, key, valid_from, added_by)
    VALUES (1, 1, 'r33_customer', '15', now() - interval '1 day', 'regress_r33_mgr');   -- virtual team
    INSERT INTO allocation.protection (managed_id, key, rep_id, until)
    VALUES (1, '16', 2, now() + interval '30 days');                                     -- protected
    INSERT INTO allocation.ownership_dispute (managed_id, key, holder_rep, claimant_rep, claim, opened_by, opened_at)
    VALUES (1, '17', 2, 3, 'I visited them first', 'regress_r33_c', now());             -- ownership dispute
    INSERT INTO allocation.duplicate (managed_id, key, other_key, match, value, action, opened_by)
    VALUES (1, '18', '3', 'phone', '13800000000', 'dispute', 'regress_r33_mgr');          -- duplicate dispute
    SET LOCAL ROLE regress_r33_b;
    PERFORM allocation.request_transfer('r33_customer', '19', 1, 'a covers this dealer''s cooperative'); -- pending transfer
    RESET ROLE;
END $f$;

SELECT r33_setup();
SELECT r33_exceptions();
CREATE FUNCTION r33_try(sql text) RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE sql;
    code := '00000';
    RETURN NEXT;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    detail := regexp_replace(detail, '\w{3} \w{3} \d+ [0-9:.]+ \d{4} \w+', '<time>', 'g');
    RETURN NEXT;
END $f$;
GRANT EXECUTE ON FUNCTION r33_try(text) TO PUBLIC;
CREATE VIEW r33_owners AS
SELECT c.id, r.code AS owner FROM r33_customer c LEFT JOIN allocation.rep r ON r.id = c.owner;
CREATE VIEW r33_stored AS   -- what a refused call must leave as it was
SELECT (SELECT count(*) FROM allocation.realign_plan) AS plans,
       (SELECT count(*) FROM allocation.realign_territory) + (SELECT count(*) FROM allocation.realign_rule)
       + (SELECT count(*) FROM allocation.realign_rep) AS staged,
       (SELECT count(*) FROM allocation.realign_item) AS items,
       (SELECT count(*) FROM allocation.event) AS events,
       (SELECT string_agg(owner_rep_id::text || '/' || priority, ',' ORDER BY id) FROM allocation.territory) AS territories,
       (SELECT string_agg(coalesce(owner, 0)::text, ',' ORDER BY id) FROM r33_customer) AS owners;
SELECT * FROM r33_owners ORDER BY id;

-------------------------------------------------------------------------------
-- A direct UPDATE of a territory's owner: today's behaviour (nobody moves), said out loud
-------------------------------------------------------------------------------
BEGIN;
UPDATE allocation.territory SET owner_rep_id = 3 WHERE code = 'east';
SELECT count(*) AS moved FROM r33_customer WHERE owner = 3;
UPDATE allocation.territory SET priority = 1 WHERE code = 'east';   -- not the owner: no NOTICE
ROLLBACK;

-------------------------------------------------------------------------------
-- Staging: the east county goes to rep c (capacity 4: the rest falls to the least-loaded
-- rule; b's capacity drops to 5, below what it keeps: the reps' table shows the conflict)
-------------------------------------------------------------------------------
SET ROLE regress_r33_mgr;
SELECT allocation.realign_create('east county to c', 'c takes over the east belt') AS plan \gset
SELECT allocation.realign_stage_territory(:plan, 'east', owner_rep => 3);
SELECT allocation.realign_stage_rep(:plan, 3, capacity => 4);
SELECT allocation.realign_stage_rep(:plan, 2, capacity => 5);
SELECT allocation.realign_stage_rule(:plan, NULL, '{"name": "tier Z to the pool", "priority": 20, "tiers": ["Z"], "target_kind": "pool"}');
SELECT id, name, created_by, status, claim_grace FROM allocation.realign_plan;
SELECT territory_id, set_owner, new_owner_rep_id, old_owner_rep_id, old_priority FROM allocation.realign_territory;
RESET ROLE;

-------------------------------------------------------------------------------
-- Preview: every move and every "stays, because ..."; nothing changed
-------------------------------------------------------------------------------
SELECT * FROM r33_stored \gset before_
SET ROLE regress_r33_mgr;
SELECT key, outcome, from_rep_code, to_rep_code, rule_name, territory_code,
       regexp_replace(reason, '\d{4}-\d\d-\d\d', '<date>') AS reason
  FROM allocation.realign_preview(:plan) ORDER BY key::integer;
SELECT * FROM allocation.realign_preview_reps(:plan);
RESET ROLE;
SELECT (SELECT row(r.*)::text FROM r33_stored r) = row(:'before_plans', :'before_staged', :'before_items', :'before_events',
       :'before_territories', :'before_owners')::text AS nothing_changed;
-- the configuration the engine uses is the committed one: an insert after the preview, explain()
INSERT INTO r33_customer (id, name, tier, loc) VALUES (25, 'new in the east', 'A', 'SRID=4326;POINT(15 8)');
SELECT * FROM r33_owners WHERE id = 25;
SELECT allocation.explain('r33_customer', '{"id": 26, "tier": "A", "loc": "SRID=4326;POINT(15 8)"}'::jsonb)->'result'->>'rep' AS explained_rep;
SELECT owner_rep_id, (SELECT capacity FROM allocation.rep WHERE id = 3) AS c_capacity,
       (SELECT count(*) FROM allocation.rule) AS rules
  FROM allocation.territory WHERE code = 'east';
-- same in a transaction that previewed (its private territory index is read again)
BEGIN;
SELECT count(*) AS previewed FROM allocation.realign_preview(:plan);
INSERT INTO r33_customer (id, name, tier, loc) VALUES (26, 'also new in the east', 'A', 'SRID=4326;POINT(15 7)');
SELECT * FROM r33_owners WHERE id = 26;
ROLLBACK;
-- a new rep in its ramp-up keeps its customers (preview only, the policy is removed again)
BEGIN;
UPDATE allocation.rep SET created_at = now() - interval '1 day' WHERE id = 2;
INSERT INTO allocation.new_rep_policy (team_id, ramp_up, max_recycled) VALUES (NULL, interval '90 days', 0);
SELECT outcome, count(*), min(reason) FROM allocation.realign_preview(:plan) WHERE from_rep_code = 'b' GROUP BY 1;
ROLLBACK;

-------------------------------------------------------------------------------
-- Bad inputs: each refused with its SQLSTATE, nothing stored changes
-------------------------------------------------------------------------------
SELECT * FROM r33_stored \gset before_
SET ROLE regress_r33_mgr;
SELECT * FROM r33_try('SELECT * FROM allocation.realign_preview(NULL)');
SELECT * FROM r33_try('SELECT * FROM allocation.realign_preview(999)');
SELECT * FROM r33_try('SELECT allocation.realign_create(NULL)');
SELECT * FROM r33_try('SELECT allocation.realign_create(''x'', NULL, interval ''-1 day'')');
SELECT * FROM r33_try(format('SELECT allocation.realign_stage_territory(%s, ''north'', owner_rep => 3)', :plan));
SELECT * FROM r33_try(format('SELECT allocation.realign_stage_territory(%s, ''east'', owner_rep => 3, owner_team => 1)', :plan));
SELECT * FROM r33_try(format('SELECT allocation.realign_stage_territory(%s, ''east'', geom => ''SRID=3857;POLYGON((0 0,1 0,1 1,0 0))'')', :plan));
SELECT * FROM r33_try(format('SELECT allocation.realign_stage_territory(%s, ''east'')', :plan));
SELECT * FROM r33_try(format('SELECT allocation.realign_stage_rep(%s, 99, capacity => 1)', :plan));
SELECT * FROM r33_try(format('SELECT allocation.realign_stage_rule(%s, NULL, ''{"name": "x", "colour": "red"}'')', :plan));
SELECT * FROM r33_try(format('SELECT allocation.realign_stage_rule(%s, NULL, ''{"name": "x", "target_kind": "rep"}'')', :plan));
SELECT * FROM r33_try(format('SELECT allocation.realign_stage_rule(%s, 77, ''{"enabled": false}'')', :plan));
SELECT * FROM r33_try(format('SELECT allocation.realign_apply_step(%s, NULL)', :plan));
SELECT * FROM r33_try(format('SELECT allocation.realign_apply_step(%s, ''x'', 0)', :plan));
SET ROLE regress_r33_b;
-- (a rep granted EXECUTE by mistake is still refused: the manager check is inside)
SELECT * FROM r33_try(format('SELECT * FROM allocation.realign_preview(%s)', :plan));
SELECT * FROM r33_try(format('SELECT allocation.realign_apply_step(%s, ''mine now'')', :plan));
SELECT * FROM r33_try('SELECT allocation.realign_create(''my own plan'')');
SET ROLE regress_r33_nobody;
SELECT * FROM r33_try(format('SELECT * FROM allocation.realign_preview(%s)', :plan));
RESET ROLE;
SELECT (SELECT row(r.*)::text FROM r33_stored r) = row(:'before_plans', :'before_staged', :'before_items', :'before_events',
       :'before_territories', :'before_owners')::text AS nothing_changed;
-- inside a transaction block the procedure refuses (it commits between batches)
BEGIN;
SET ROLE regress_r33_mgr;
CALL allocation.realign_apply(:plan, 'in a block');
ROLLBACK;
-- a staged territory changed since: the apply refuses, nothing written
BEGIN;
UPDATE allocation.territory SET priority = 5 WHERE code = 'east';
UPDATE allocation.territory SET owner_rep_id = 1 WHERE code = 'east';
SET ROLE regress_r33_mgr;
SELECT * FROM r33_try(format('SELECT allocation.realign_apply_step(%s, ''go'')', :plan));
ROLLBACK;

-------------------------------------------------------------------------------
-- Apply, uninterrupted: preview == apply
-------------------------------------------------------------------------------
DELETE FROM r33_customer WHERE id = 25;
CREATE TABLE r33_preview AS SELECT * FROM allocation.realign_preview(:plan);
SET client_min_messages = warning;   -- the NOTICEs carry an ETA (timing)
SET ROLE regress_r33_mgr;
CALL allocation.realign_apply(:plan, 'c takes over the east belt', 4);
RESET ROLE;
RESET client_min_messages;
SELECT plan_id, status, total, done, moved, stayed, unchanged, pending, eta FROM allocation.realign_progress;
SELECT * FROM r33_owners ORDER BY id;
-- the moves are the preview's moves; what stays stayed for the preview's reason
SELECT count(*) AS preview_moves,
       count(*) FILTER (WHERE i.status = 'moved' AND i.result_rep IS NOT DISTINCT FROM p.to_rep) AS applied_alike
  FROM r33_preview p JOIN allocation.realign_item i ON i.key = p.key AND i.plan_id = :plan
 WHERE p.outcome = 'moves';
SELECT count(*) AS differences FROM (
    (SELECT key, to_rep::text FROM r33_preview WHERE outcome = 'moves'
     EXCEPT SELECT key, result_rep::text FROM allocation.realign_item WHERE status = 'moved')
    UNION ALL
    (SELECT key, result_rep::text FROM allocation.realign_item WHERE status = 'moved'
     EXCEPT SELECT key, to_rep::text FROM r33_preview WHERE outcome = 'moves')
    UNION ALL
    (SELECT key, 'stays, because ' || reason FROM allocation.realign_item WHERE status = 'stayed'
     EXCEPT SELECT key, reason FROM r33_preview WHERE outcome = 'stays')) d;
SELECT kind, key, from_rep, to_rep, rule_id, source, pinned, reason, detail
  FROM allocation.event WHERE kind LIKE 'realign%' ORDER BY id;
SELECT * FROM allocation.check_consistency();
SELECT rep_id, held FROM allocation.rep_load ORDER BY rep_id;
-- the configuration is the plan's
SELECT code, owner_rep_id FROM allocation.territory ORDER BY id;
SELECT id, capacity FROM allocation.rep ORDER BY id;
SELECT name, priority, tiers, target_kind FROM allocation.rule ORDER BY id;
-- an applied plan is never applied, staged or previewed again
SET ROLE regress_r33_mgr;
SELECT * FROM r33_try(format('SELECT allocation.realign_apply_step(%s, ''again'')', :plan));
SELECT * FROM r33_try(format('SELECT * FROM allocation.realign_preview(%s)', :plan));
SELECT * FROM r33_try(format('SELECT allocation.realign_stage_rep(%s, 1, capacity => 1)', :plan));
-- the map's FeatureCollection (applied: from the list)
SELECT jsonb_array_length(g->'features') AS features, g->'properties' AS properties,
       g->'features'->0->'properties' AS territory, g->'features'->1->'properties' AS customer,
       g->'features'->1->'geometry' AS customer_geometry
  FROM allocation.realign_geojson(:plan) g;
RESET ROLE;
CREATE TABLE r33_run1 AS
SELECT key, from_rep, to_rep, rule_id, source, pinned, reason, detail FROM allocation.event WHERE kind = 'realign';
CREATE TABLE r33_owners1 AS SELECT * FROM r33_owners;

-------------------------------------------------------------------------------
-- The same, interrupted half-way (a batch fails: as a crash or a cancel) and resumed
-------------------------------------------------------------------------------
DROP TABLE r33_preview;
DROP VIEW r33_owners, r33_stored;
DROP TABLE r33_customer, r33_fail;
DROP FUNCTION r33_fail_check();
DROP EXTENSION allocation CASCADE;
SELECT r33_setup();
SELECT r33_exceptions();
CREATE VIEW r33_owners AS
SELECT c.id, r.code AS owner FROM r33_customer c LEFT JOIN allocation.rep r ON r.id = c.owner;
SET ROLE regress_r33_mgr;
SELECT allocation.realign_create('east county to c', 'c takes over the east belt') AS plan \gset
SELECT allocation.realign_stage_territory(:plan, 'east', owner_rep => 3);
SELECT allocation.realign_stage_rep(:plan, 3, capacity => 4);
SELECT allocation.realign_stage_rep(:plan, 2, capacity => 5);
SELECT allocation.realign_stage_rule(:plan, NULL, '{"name": "tier Z to the pool", "priority": 20, "tiers": ["Z"], "target_kind": "pool"}');
SELECT * FROM allocation.realign_apply_step(:plan, 'c takes over the east belt', 4);   -- configuration + list
SELECT * FROM allocation.realign_apply_step(:plan, 'c takes over the east belt', 4);   -- first batch
RESET ROLE;
INSERT INTO r33_fail VALUES (24);   -- the second batch (23, 24) fails at 24: 23's move is undone too
SET ROLE regress_r33_mgr;
SET client_min_messages = debug1;   -- the set-based batch fails, then one customer at a time fails at 24
SELECT * FROM r33_try(format('SELECT allocation.realign_apply_step(%s, ''c takes over the east belt'', 4)', :plan));
RESET client_min_messages;
SELECT status, total, done, moved, pending FROM allocation.realign_progress;
RESET ROLE;
DELETE FROM r33_fail;
SET client_min_messages = warning;
SET ROLE regress_r33_mgr;
CALL allocation.realign_apply(:plan, 'c takes over the east belt', 4);
RESET ROLE;
RESET client_min_messages;
SELECT status, total, done, moved, pending FROM allocation.realign_progress;
SELECT count(*) AS owner_differences FROM ((SELECT * FROM r33_owners EXCEPT SELECT * FROM r33_owners1)
                                           UNION ALL (SELECT * FROM r33_owners1 EXCEPT SELECT * FROM r33_owners)) d;
SELECT count(*) AS event_differences FROM (
    (SELECT key, from_rep, to_rep, rule_id, source, pinned, reason, detail FROM allocation.event WHERE kind = 'realign'
     EXCEPT ALL SELECT * FROM r33_run1)
    UNION ALL
    (SELECT * FROM r33_run1 EXCEPT ALL
     SELECT key, from_rep, to_rep, rule_id, source, pinned, reason, detail FROM allocation.event WHERE kind = 'realign')) d;
SELECT * FROM allocation.check_consistency();

-------------------------------------------------------------------------------
-- A draft's GeoJSON (previewed: changed territory before/after, moves) and a cancelled plan
-------------------------------------------------------------------------------
SET ROLE regress_r33_mgr;
SELECT allocation.realign_create('west back to b') AS plan2 \gset
SELECT allocation.realign_stage_territory(:plan2, 'west', geom => 'SRID=4326;POLYGON((0 0,12 0,12 10,0 10,0 0))', owner_rep => 2);
SELECT jsonb_array_length(g->'features') AS features,
       g->'features'->0->'properties'->>'before_owner_rep' AS before_owner,
       g->'features'->0->'properties'->>'after_owner_rep' AS after_owner,
       g->'features'->0->'properties'->'shape_changed' AS shape_changed,
       (SELECT count(*) FROM jsonb_array_elements(g->'features') f WHERE f->'properties'->>'kind' = 'customer') AS customers
  FROM allocation.realign_geojson(:plan2) g;
SELECT allocation.realign_cancel(:plan2, 'not this year');
SELECT * FROM r33_try(format('SELECT * FROM allocation.realign_preview(%s)', :plan2));
RESET ROLE;

-------------------------------------------------------------------------------
-- Set-based batches (issue 15: seconds, not minutes): a batch's rows are locked in one
-- statement, every listed customer re-checked under its lock at once, and the others moved
-- by ONE engine UPDATE in list order.  After the list was made, one listed customer is
-- deleted, one locked and one released (changed hands): gone, stayed, stayed; the others
-- move as the preview said, one realign event each.  DEBUG shows no fallback to one
-- customer at a time (the failing batch above showed one).
-------------------------------------------------------------------------------
SET ROLE regress_r33_mgr;
SELECT allocation.realign_create('east back to b', 'b takes the east again') AS plan3 \gset
SELECT allocation.realign_stage_territory(:plan3, 'east', owner_rep => 2);
SELECT allocation.realign_stage_rep(:plan3, 2, unlimited => true);
RESET ROLE;
CREATE TABLE r33_preview3 AS SELECT * FROM allocation.realign_preview(:plan3);
SET ROLE regress_r33_mgr;
SELECT status, total, pending FROM allocation.realign_apply_step(:plan3, 'b takes the east again', 100);
RESET ROLE;
SELECT key AS k_deleted FROM allocation.realign_item WHERE plan_id = :plan3 AND status = 'pending' ORDER BY ord LIMIT 1 \gset
SELECT key AS k_locked FROM allocation.realign_item WHERE plan_id = :plan3 AND status = 'pending' ORDER BY ord OFFSET 1 LIMIT 1 \gset
SELECT key AS k_released FROM allocation.realign_item WHERE plan_id = :plan3 AND status = 'pending' ORDER BY ord OFFSET 2 LIMIT 1 \gset
DELETE FROM r33_customer WHERE id = :k_deleted;
SET ROLE regress_r33_mgr;
SELECT allocation.lock_customer('r33_customer', :'k_locked', 'audit');
SELECT allocation.release('r33_customer', :'k_released', 'back to the pool');
SET client_min_messages = debug1;
SELECT status, moved, stayed, unchanged, pending FROM allocation.realign_apply_step(:plan3, 'b takes the east again', 100);
RESET client_min_messages;
RESET ROLE;
SELECT i.key, f.code AS from_rep, i.status, r.code AS result_rep, i.reason
  FROM allocation.realign_item i LEFT JOIN allocation.rep f ON f.id = i.from_rep LEFT JOIN allocation.rep r ON r.id = i.result_rep
 WHERE i.plan_id = :plan3 ORDER BY i.ord;
SELECT count(*) AS differences FROM (
    (SELECT key, to_rep FROM r33_preview3 WHERE outcome = 'moves' AND key NOT IN (:'k_deleted', :'k_locked', :'k_released')
     EXCEPT SELECT key, result_rep FROM allocation.realign_item WHERE plan_id = :plan3 AND status = 'moved')
    UNION ALL
    (SELECT key, result_rep FROM allocation.realign_item WHERE plan_id = :plan3 AND status = 'moved'
     EXCEPT SELECT key, to_rep FROM r33_preview3 WHERE outcome = 'moves')) d;
SELECT count(*) AS realign_events, count(DISTINCT key) AS customers,
       (SELECT count(*) FROM allocation.realign_item WHERE plan_id = :plan3 AND status = 'moved') AS moved,
       string_agg(DISTINCT actor, ',') AS actors, string_agg(DISTINCT source, ',') AS sources, bool_or(pinned) AS pinned,
       min(reason) AS reason
  FROM allocation.event WHERE kind = 'realign' AND (detail->>'realign_plan')::bigint = :plan3;
SELECT * FROM allocation.check_consistency();

DROP VIEW r33_owners;
DROP TABLE r33_customer, r33_fail, r33_run1, r33_owners1, r33_preview3;
DROP FUNCTION r33_fail_check(), r33_setup(), r33_exceptions(), r33_try(text);
DROP EXTENSION allocation CASCADE;
DROP OWNED BY regress_r33_a, regress_r33_b, regress_r33_c, regress_r33_mgr, regress_r33_nobody;
DROP ROLE regress_r33_a, regress_r33_b, regress_r33_c, regress_r33_mgr, regress_r33_nobody;
