--
-- 21_audit_seal: the tamper-evident audit.  seal_audit() seals the event log
-- into a SHA-256 hash chain (allocation.audit_seal); verify_audit() reports
-- every change a superuser makes with the triggers off (session_replication_role
-- = replica): an edited, deleted, swapped or renumbered event, an event slipped
-- in with a low id, an altered or removed seal; audit_head() is the hash to keep
-- outside the database.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, capacity) VALUES (1, 'a', 'Rep A', 1, 10), (2, 'b', 'Rep B', 1, 10);
INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id) VALUES
    (10, 'west', 'West', ST_Multi(ST_MakeEnvelope(0, 0, 10, 10, 4326)), 1),
    (20, 'east', 'East', ST_Multi(ST_MakeEnvelope(10, 0, 20, 10, 4326)), 2);
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
     VALUES ('owner', 10, 'team', 1, 'territory_owner');
CREATE TABLE r21_customer (id integer PRIMARY KEY, name text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('r21_customer', 'id', 'loc', 'owner');
INSERT INTO r21_customer (id, name, loc) VALUES
    (1, 'west dealer', 'SRID=4326;POINT(5 5)'),
    (2, 'east dealer', 'SRID=4326;POINT(15 5)');
-- a write that rolls back leaves a gap in the event ids (event 10)
BEGIN;
INSERT INTO r21_customer (id, name, loc) VALUES (9, 'rolled back', 'SRID=4326;POINT(5 5)');
ROLLBACK;
INSERT INTO r21_customer (id, name, loc) VALUES (3, 'far away', 'SRID=4326;POINT(50 50)');
SELECT allocation.assign('r21_customer', '3', 1, 'manager decision');

SELECT id, kind, key, to_rep, reason FROM allocation.event ORDER BY id;

-- verify_audit() with times and hashes masked (they differ from run to run)
CREATE FUNCTION r21_verify(head text DEFAULT NULL)
RETURNS TABLE (event_id bigint, seal_id bigint, problem text, detail text) LANGUAGE sql AS $$
    SELECT v.event_id, v.seal_id, v.problem,
           regexp_replace(regexp_replace(v.detail, ' at [0-9-]+ [0-9:]+ UTC', ' at <time>'), '[0-9a-f]{64}', '<hash>')
      FROM allocation.verify_audit(head) v
$$;

-- nothing is sealed yet: no head, nothing to report
SELECT count(*) AS heads FROM allocation.audit_head();
SELECT * FROM r21_verify();

-- the first seal takes every event; a second run in a row seals nothing
SELECT allocation.seal_audit() AS sealed;
SELECT allocation.seal_audit() AS sealed_again;
SELECT id, events, event_count, last_id, complete_below, array_length(digests, 1) AS digests,
       prev_hash = allocation._genesis() AS starts_the_chain, hash = allocation._seal_hash(s) AS hash_ok
  FROM allocation.audit_seal s ORDER BY id;
SELECT seal_id, last_event_id, events_sealed, length(hash) AS hex_digits FROM allocation.audit_head();
SELECT * FROM r21_verify();
-- the DBA keeps the head outside the database
SELECT hash AS head1 FROM allocation.audit_head() \gset

-- more decisions (and another rolled-back one: gap at event 14), then the chain continues
INSERT INTO r21_customer (id, name, loc) VALUES (4, 'west retailer', 'SRID=4326;POINT(6 6)');
BEGIN;
INSERT INTO r21_customer (id, name, loc) VALUES (9, 'rolled back', 'SRID=4326;POINT(5 5)');
ROLLBACK;
UPDATE allocation.rep SET capacity = 20 WHERE id = 2;
SELECT id, kind, key, reason FROM allocation.event WHERE id > 12 ORDER BY id;
SELECT allocation.seal_audit() AS sealed;
SELECT allocation.seal_audit() AS sealed_again;
SELECT s.id, s.events, s.event_count, s.complete_below,
       s.prev_hash = p.hash AS continues_previous, s.hash = allocation._seal_hash(s) AS hash_ok
  FROM allocation.audit_seal s JOIN allocation.audit_seal p ON p.id = s.id - 1 ORDER BY s.id;
SELECT * FROM r21_verify();
-- the old head is still part of the chain
SELECT * FROM r21_verify(:'head1');
SELECT hash AS head2 FROM allocation.audit_head() \gset

-- seals are append-only like the events (for everybody but a superuser with triggers off)
UPDATE allocation.audit_seal SET sealed_by = 'someone else';
DELETE FROM allocation.audit_seal;
TRUNCATE allocation.audit_seal;
UPDATE allocation.event SET reason = 'edited' WHERE id = 12;

-------------------------------------------------------------------------------
-- Tampering by a superuser with the triggers off; each case rolls back
-------------------------------------------------------------------------------
-- 1. a sealed event's reason is rewritten
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE allocation.event SET reason = 'assigned by the manager''s nephew' WHERE id = 12;
SELECT * FROM r21_verify();
ROLLBACK;

-- 2. a sealed event is deleted
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM allocation.event WHERE id = 8;
SELECT * FROM r21_verify();
ROLLBACK;

-- 3. the contents of two events are swapped (the order of decisions rewritten)
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE allocation.event e
   SET at = o.at, actor = o.actor, kind = o.kind, managed_id = o.managed_id, table_name = o.table_name,
       key = o.key, from_rep = o.from_rep, to_rep = o.to_rep, rule_id = o.rule_id, reason = o.reason, detail = o.detail
  FROM allocation.event o
 WHERE (e.id, o.id) IN ((8, 9), (9, 8));
SELECT * FROM r21_verify();
ROLLBACK;

-- 4. ids changed: two events trade ids, another one is renumbered
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE allocation.event SET id = -1 WHERE id = 8;
UPDATE allocation.event SET id = 8 WHERE id = 9;
UPDATE allocation.event SET id = 9 WHERE id = -1;
UPDATE allocation.event SET id = 1000 WHERE id = 11;
SELECT * FROM r21_verify();
ROLLBACK;

-- 5. a backdated event slipped into the gaps of the sealed ids (10 under the
--    first seal, 14 under the second)
BEGIN;
INSERT INTO allocation.event (id, at, actor, kind, managed_id, table_name, key, to_rep, reason)
SELECT 10, '2020-01-01', 'manager', 'manual', m.id, m.table_name, '2', 1, 'assigned long ago'
  FROM allocation.managed_table m;
INSERT INTO allocation.event (id, at, actor, kind, reason) VALUES (14, now() - interval '1 hour', 'admin', 'config_change', 'nothing to see');
SELECT * FROM r21_verify();
ROLLBACK;

-- 6. a seal row is edited
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE allocation.audit_seal SET sealed_by = 'someone else' WHERE id = 1;
SELECT * FROM r21_verify();
ROLLBACK;

-- 7. a cover-up: the event, its digest in the seal, the seal's hash and the next
--    seal's link are all rewritten; only the head kept outside the database shows it
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE allocation.event SET reason = 'assigned by the manager''s nephew' WHERE id = 12;
UPDATE allocation.audit_seal s
   SET digests[array_position(ARRAY(SELECT allocation._seal_ids(s.events)), 12::bigint)] =
       (SELECT allocation._event_digest(e) FROM allocation.event e WHERE e.id = 12)
 WHERE s.id = 1;
SELECT * FROM r21_verify();
UPDATE allocation.audit_seal s SET hash = allocation._seal_hash(s) WHERE s.id = 1;
SELECT * FROM r21_verify();
UPDATE allocation.audit_seal s SET prev_hash = (SELECT p.hash FROM allocation.audit_seal p WHERE p.id = 1) WHERE s.id = 2;
UPDATE allocation.audit_seal s SET hash = allocation._seal_hash(s) WHERE s.id = 2;
SELECT * FROM r21_verify();
SELECT * FROM r21_verify(:'head2');
ROLLBACK;

-- 8. the oldest seal is deleted: the chain no longer starts, its events are unsealed
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM allocation.audit_seal WHERE id = 1;
SELECT * FROM r21_verify();
ROLLBACK;

-- 9. the newest seal is deleted: the rest of the chain is consistent, the
--    outside head is not in it any more
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM allocation.audit_seal WHERE id = 2;
SELECT * FROM r21_verify();
SELECT * FROM r21_verify(:'head2');
ROLLBACK;

-- nothing of the above stayed
SELECT * FROM r21_verify(:'head2');
-- an expected head that was never a seal
SELECT * FROM r21_verify(repeat('0', 64));
SELECT count(*) AS rows_with_null_head FROM allocation.verify_audit(NULL);

-------------------------------------------------------------------------------
-- A backdated event that stays: reported, and never sealed
-------------------------------------------------------------------------------
INSERT INTO allocation.event (id, at, actor, kind, reason) VALUES (14, now() - interval '1 hour', 'admin', 'config_change', 'nothing to see');
SELECT * FROM r21_verify();
SELECT allocation.seal_audit() AS sealed;
INSERT INTO r21_customer (id, name, loc) VALUES (5, 'east retailer', 'SRID=4326;POINT(16 6)');
SELECT allocation.seal_audit() AS sealed;
SELECT id, events, event_count FROM allocation.audit_seal ORDER BY id;
SELECT * FROM r21_verify();

-------------------------------------------------------------------------------
-- Who may seal and verify
-------------------------------------------------------------------------------
CREATE ROLE regress_r21_admin;
CREATE ROLE regress_r21_analyst;
CREATE ROLE regress_r21_rep;
SELECT allocation.grant_role('regress_r21_admin', 'admin'),
       allocation.grant_role('regress_r21_analyst', 'analyst'),
       allocation.grant_role('regress_r21_rep', 'rep');
SET ROLE regress_r21_analyst;
SELECT count(*) AS problems_seen_by_analyst FROM allocation.verify_audit();
SELECT seal_id FROM allocation.audit_head();
SELECT allocation.seal_audit();
RESET ROLE;
SET ROLE regress_r21_rep;
SELECT count(*) FROM allocation.verify_audit();
RESET ROLE;
UPDATE allocation.rep SET capacity = 30 WHERE id = 2;
SET ROLE regress_r21_admin;
SELECT allocation.seal_audit() AS sealed_by_admin;
RESET ROLE;
SELECT id, sealed_by, event_count FROM allocation.audit_seal WHERE id = (SELECT max(id) FROM allocation.audit_seal);

DROP TABLE r21_customer;
DROP FUNCTION r21_verify(text);
DROP EXTENSION allocation CASCADE;
DROP OWNED BY regress_r21_admin, regress_r21_analyst, regress_r21_rep;
DROP ROLE regress_r21_admin, regress_r21_analyst, regress_r21_rep;
