--
-- 20_insert_path: a statement that only inserts customers has its registry,
-- audit and identity rows written directly by the engine (src/writer.c) rather
-- than by the PL/pgSQL batch writer.  Both paths must store exactly the same
-- thing; a trigger a DBA adds to an engine table must still fire (the engine
-- then takes the SQL path); a rep deleted under the statement is a foreign-key
-- error, not a dangling registry row.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, capacity) VALUES
    (1, 'a', 'Rep A', 1, 100), (2, 'b', 'Rep B', 1, 100), (3, 'c', 'Rep C', 1, 1);
INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id) VALUES
    (10, 'west', 'West', ST_Multi(ST_MakeEnvelope(0, 0, 10, 10, 4326)), 1),
    (20, 'east', 'East', ST_Multi(ST_MakeEnvelope(10, 0, 20, 10, 4326)), 2);
INSERT INTO allocation.rule (name, priority, tiers, target_kind, target_rep_id) VALUES ('vip', 20, '{vip}', 'rep', 3);
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES ('owner', 10, 'team', 1, 'territory_owner');

CREATE TABLE dealer (
    id    text PRIMARY KEY,
    tier  text,
    tel   text,
    loc   geometry(Point, 4326),
    owner bigint
);
SELECT allocation.manage('dealer', 'id', 'loc', 'owner', '{"tier": "tier", "phone": "tel"}');
SELECT allocation.set_duplicate_policy('dealer', exact => 'warn');

-- what a path stored for a set of keys, without ids and times
CREATE VIEW stored AS
SELECT a.key, a.rep_id, a.team_id, a.territory_id, r.name AS rule, a.source, a.pinned, a.reason, a.tier,
       a.valid_to IS NULL AS open, e.kind, e.actor, e.table_name, e.from_rep, e.to_rep, e.reason AS event_reason,
       e.team_id AS event_team, e.territory_id AS event_territory, e.source AS event_source, e.pinned AS event_pinned,
       e.detail, i.phone, k.key AS phone_holder
  FROM allocation.assignment a
  LEFT JOIN allocation.rule r ON r.id = a.rule_id
  LEFT JOIN allocation.event e ON e.managed_id = a.managed_id AND e.key = a.key AND e.kind <> 'duplicate_warning'
  LEFT JOIN allocation.identity i ON i.managed_id = a.managed_id AND i.key = a.key
  LEFT JOIN allocation.identity_key k ON k.managed_id = a.managed_id AND k.kind = 'phone' AND k.value = i.phone;

-------------------------------------------------------------------------------
-- direct path: a plain multi-row INSERT (vip, territory owners, the pool when
-- the vip rep is full, no location, a duplicate phone within the statement)
-------------------------------------------------------------------------------
INSERT INTO dealer (id, tier, tel, loc) VALUES
    ('d1', 'vip',  '138-0000-0001', 'SRID=4326;POINT(5 5)'),
    ('d2', 'vip',  '138-0000-0002', 'SRID=4326;POINT(15 5)'),
    ('d3', NULL,   '138-0000-0003', 'SRID=4326;POINT(15 5)'),
    ('d4', NULL,   NULL,            NULL),
    ('d5', NULL,   '13800000003',   'SRID=4326;POINT(1 1)');
SELECT * FROM stored WHERE key LIKE 'd%' ORDER BY key;
SELECT key, other_key, match, value, action FROM allocation.duplicate ORDER BY id;
SELECT rep_id, held FROM allocation.rep_load ORDER BY rep_id;

-------------------------------------------------------------------------------
-- the same customers through the SQL path: a DBA's AFTER INSERT trigger on the
-- audit table makes the engine write through allocation._record_batch, and the
-- trigger fires for every event
-------------------------------------------------------------------------------
CREATE TABLE audit_copy (kind text, key text);
CREATE FUNCTION copy_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.audit_copy VALUES (NEW.kind, NEW.key);   -- engine writes run with search_path pg_catalog, pg_temp
    RETURN NULL;
END $$;
CREATE TRIGGER copy_event AFTER INSERT ON allocation.event FOR EACH ROW EXECUTE FUNCTION copy_event();
-- and one on the identity holders: their registration takes the SQL path too
CREATE TABLE holder_copy (value text, key text);
CREATE FUNCTION copy_holder() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.holder_copy VALUES (NEW.value, NEW.key);
    RETURN NULL;
END $$;
CREATE TRIGGER copy_holder AFTER INSERT ON allocation.identity_key FOR EACH ROW EXECUTE FUNCTION copy_holder();

UPDATE allocation.rep SET capacity = 2 WHERE id = 3;   -- room for one more vip, as d1 found
INSERT INTO dealer (id, tier, tel, loc) VALUES
    ('s1', 'vip',  '139-0000-0001', 'SRID=4326;POINT(5 5)'),
    ('s2', 'vip',  '139-0000-0002', 'SRID=4326;POINT(15 5)'),
    ('s3', NULL,   '139-0000-0003', 'SRID=4326;POINT(15 5)'),
    ('s4', NULL,   NULL,            NULL),
    ('s5', NULL,   '13900000003',   'SRID=4326;POINT(1 1)');
SELECT * FROM audit_copy ORDER BY key, kind;
SELECT * FROM holder_copy ORDER BY key;
-- row for row, the SQL path stored what the direct path stored (keys d* vs s*,
-- phones 138... vs 139...)
SELECT count(*) AS compared,
       count(*) FILTER (WHERE (d.rep_id, d.team_id, d.territory_id, d.rule, d.source, d.pinned, d.tier, d.open,
                               d.kind, d.actor, d.table_name, d.from_rep, d.to_rep, d.detail,
                               d.event_team, d.event_territory, d.event_source, d.event_pinned,
                               replace(d.reason, d.key, '<key>'), replace(d.event_reason, d.key, '<key>'),
                               replace(d.phone, '138', ''), substr(d.phone_holder, 2))
                        IS DISTINCT FROM
                              (s.rep_id, s.team_id, s.territory_id, s.rule, s.source, s.pinned, s.tier, s.open,
                               s.kind, s.actor, s.table_name, s.from_rep, s.to_rep, s.detail,
                               s.event_team, s.event_territory, s.event_source, s.event_pinned,
                               replace(s.reason, s.key, '<key>'), replace(s.event_reason, s.key, '<key>'),
                               replace(s.phone, '139', ''), substr(s.phone_holder, 2))) AS differ
  FROM stored d JOIN stored s ON s.key = 's' || substr(d.key, 2)
 WHERE d.key LIKE 'd%';
SELECT key, other_key, match, value, action FROM allocation.duplicate ORDER BY id;
DROP TRIGGER copy_event ON allocation.event;
DROP TRIGGER copy_holder ON allocation.identity_key;

-------------------------------------------------------------------------------
-- a rep deleted after the decision, before the statement's rows are written:
-- the registry cannot point at it (23503), nothing of the statement stays
-------------------------------------------------------------------------------
INSERT INTO allocation.rep (id, code, name, team_id) VALUES (4, 'gone', 'Rep Gone', 1);
UPDATE allocation.territory SET owner_rep_id = 4 WHERE code = 'west';
CREATE FUNCTION drop_rep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM allocation.rep WHERE id = NEW.owner;
    RETURN NULL;
END $$;
CREATE TRIGGER drop_rep AFTER INSERT ON dealer FOR EACH ROW WHEN (NEW.owner = 4) EXECUTE FUNCTION drop_rep();
SELECT count(*) AS registry_before FROM allocation.assignment \gset
INSERT INTO dealer (id, loc) VALUES ('g1', 'SRID=4326;POINT(2 2)');
\echo sqlstate :SQLSTATE
SELECT count(*) = :registry_before AS registry_unchanged, (SELECT count(*) FROM dealer WHERE id = 'g1') AS stored,
       (SELECT count(*) FROM allocation.rep WHERE id = 4) AS rep_still_there
  FROM allocation.assignment;
DROP TRIGGER drop_rep ON dealer;

-- the table's own registration removed under the statement: LA012, nothing stored
UPDATE allocation.territory SET owner_rep_id = 1 WHERE code = 'west';
CREATE FUNCTION drop_registration() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM allocation.managed_table WHERE tbl = 'public.dealer'::regclass;
    RETURN NULL;
END $$;
CREATE TRIGGER drop_registration AFTER INSERT ON dealer FOR EACH ROW EXECUTE FUNCTION drop_registration();
INSERT INTO dealer (id, loc) VALUES ('g2', 'SRID=4326;POINT(2 2)');
\echo sqlstate :SQLSTATE
SELECT count(*) = :registry_before AS registry_unchanged, (SELECT count(*) FROM dealer WHERE id = 'g2') AS stored,
       (SELECT count(*) FROM allocation.managed_table WHERE tbl = 'public.dealer'::regclass) AS still_managed
  FROM allocation.assignment;
DROP TRIGGER drop_registration ON dealer;

-------------------------------------------------------------------------------
-- a text key in a collation whose order is not the bytes' (ICU): the engine's
-- probe of the key index must search in the index's order, or INSERT ... ON
-- CONFLICT DO NOTHING of stored keys would take them for new customers
-- (rules run, identities registered and then forgotten)
-------------------------------------------------------------------------------
CREATE TABLE shop (id text COLLATE "und-x-icu" PRIMARY KEY, tel text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('shop', 'id', 'loc', 'owner', '{"phone": "tel"}');
SELECT allocation.set_duplicate_policy('shop', exact => 'warn');
INSERT INTO shop (id, tel)
SELECT k, '137' || lpad(g::text, 8, '0')
  FROM generate_series(1, 40) g, LATERAL (SELECT CASE g % 4 WHEN 0 THEN 'a' WHEN 1 THEN 'B' WHEN 2 THEN 'c' ELSE 'D' END || g AS k) x;
SELECT count(*) AS identities, (SELECT count(*) FROM allocation.identity_key) AS holders,
       (SELECT count(*) FROM allocation.event WHERE table_name = 'public.shop') AS events
  FROM allocation.identity i JOIN allocation.managed_table m ON m.id = i.managed_id WHERE m.table_name = 'public.shop';
INSERT INTO shop (id, tel) SELECT id, tel FROM shop ON CONFLICT DO NOTHING;
SELECT count(*) AS identities, (SELECT count(*) FROM allocation.identity_key) AS holders,
       (SELECT count(*) FROM allocation.event WHERE table_name = 'public.shop') AS events
  FROM allocation.identity i JOIN allocation.managed_table m ON m.id = i.managed_id WHERE m.table_name = 'public.shop';

DROP TABLE shop;

-------------------------------------------------------------------------------
-- the key probe runs only while an INSERT ... ON CONFLICT may be executing
-- (src/onconflict.c counts them).  Rep d has one free slot each time, and a
-- stored key skipped by ON CONFLICT must not take it from the new one: in a
-- data-modifying WITH, in a PL/pgSQL function, and in the first statement of
-- a new session (the library loads during it, before its hook can see it).
-- A plain INSERT of a stored key fails whole.
-------------------------------------------------------------------------------
INSERT INTO allocation.rep (id, code, name, team_id, capacity) VALUES (4, 'd', 'Rep D', 1, 1);
INSERT INTO allocation.rule (name, priority, tiers, target_kind, target_rep_id) VALUES ('gold', 30, '{gold}', 'rep', 4);
INSERT INTO dealer (id, tier, loc) VALUES ('gold1', 'gold', 'SRID=4326;POINT(2 2)');
UPDATE allocation.rep SET capacity = 2 WHERE id = 4;
WITH x AS (INSERT INTO dealer (id, tier, loc) VALUES ('gold1', 'gold', 'SRID=4326;POINT(2 2)'), ('gold2', 'gold', 'SRID=4326;POINT(2 2)')
           ON CONFLICT DO NOTHING RETURNING id, owner)
SELECT * FROM x;
UPDATE allocation.rep SET capacity = 3 WHERE id = 4;
CREATE FUNCTION dealer_reimport() RETURNS void LANGUAGE plpgsql AS
$$ BEGIN
    INSERT INTO dealer (id, tier, loc) SELECT 'gold' || g, 'gold', 'SRID=4326;POINT(2 2)' FROM generate_series(1, 3) g
        ON CONFLICT (id) DO NOTHING;
END $$;
SELECT dealer_reimport();
UPDATE allocation.rep SET capacity = 4 WHERE id = 4;
\c
\pset null '(null)'
INSERT INTO dealer (id, tier, loc) SELECT 'gold' || g, 'gold', 'SRID=4326;POINT(2 2)' FROM generate_series(1, 4) g
    ON CONFLICT DO NOTHING;
INSERT INTO dealer (id, tier, loc) VALUES ('gold4', 'gold', 'SRID=4326;POINT(2 2)');
\echo sqlstate :SQLSTATE
SELECT id, owner FROM dealer WHERE id LIKE 'gold%' ORDER BY id;
SELECT held FROM allocation.rep_load WHERE rep_id = 4;
DROP FUNCTION dealer_reimport();

DROP TABLE dealer;
DROP EXTENSION allocation CASCADE;
