-- pgTAP: refused writes on a managed table, on the audit log, and bad calls of
-- assign() / accept_suggestion() / reject_suggestion() / explain() / owner_at().
-- Each refusal has its SQLSTATE and leaves the customer tables, the registry
-- (allocation.assignment), the suggestions, the audit log and the holdings
-- counters exactly as they were.
\set ECHO none
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
\set ON_ERROR_STOP 1

BEGIN;
CREATE EXTENSION allocation;
SET LOCAL client_min_messages = warning;

SELECT plan(154);

-------------------------------------------------------------------------------
-- Fixtures
-------------------------------------------------------------------------------
INSERT INTO allocation.team (code, name) VALUES ('tm', 'Team');
INSERT INTO allocation.rep (code, name, team_id, capacity, active)
SELECT v.code, v.name, t.id, v.capacity, v.active
  FROM allocation.team t,
       (VALUES ('r_ok',   'Available', 10, true),
               ('r_off',  'Inactive',  10, false),
               ('r_full', 'Full',       1, true),
               ('r_one',  'One slot',   1, true),
               ('r_excl', 'Exclusive', 10, true),
               ('r_sug',  'Suggested',  3, true)) v(code, name, capacity, active)
 WHERE t.code = 'tm';
SELECT id AS r_ok FROM allocation.rep WHERE code = 'r_ok' \gset
SELECT id AS r_off FROM allocation.rep WHERE code = 'r_off' \gset
SELECT id AS r_full FROM allocation.rep WHERE code = 'r_full' \gset
SELECT id AS r_one FROM allocation.rep WHERE code = 'r_one' \gset
SELECT id AS r_excl FROM allocation.rep WHERE code = 'r_excl' \gset
SELECT id AS r_sug FROM allocation.rep WHERE code = 'r_sug' \gset

SELECT allocation.import_territories('{"type":"FeatureCollection","features":[
  {"type":"Feature","properties":{"code":"X","name":"Exclusive county"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type":"Feature","properties":{"code":"F","name":"Free county"},"geometry":{"type":"Polygon","coordinates":[[[20,0],[30,0],[30,10],[20,10],[20,0]]]}}]}')
  AS n_imported \gset
UPDATE allocation.territory SET exclusive = true, owner_rep_id = :r_excl WHERE code = 'X';

CREATE SCHEMA tap04;
CREATE TABLE tap04.cust (id bigint PRIMARY KEY, name text, tier text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('tap04.cust', 'id', 'loc', 'owner', '{"tier":"tier","name":"name"}') AS m1 \gset
CREATE TABLE tap04.cust_geo (id integer PRIMARY KEY, loc geometry, owner bigint);
SELECT allocation.manage('tap04.cust_geo', 'id', 'loc', 'owner') AS m2 \gset
CREATE TABLE tap04.cust_nk (code text UNIQUE, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('tap04.cust_nk', 'code', 'loc', 'owner') AS m3 \gset
CREATE TABLE tap04.plain (id integer PRIMARY KEY, loc geometry(Point, 4326), owner bigint);
INSERT INTO tap04.plain VALUES (1, NULL, NULL);

-- suggest-mode rule for leads
INSERT INTO allocation.rule (name, priority, mode, tiers, target_kind, target_rep_id)
VALUES ('leads', 10, 'suggest', '{lead}', 'rep', :r_sug);

INSERT INTO tap04.cust (id, name, tier, loc, owner) VALUES
    (1, 'held by r_full', 'retailer', 'SRID=4326;POINT(25 5)', :r_full),
    (2, 'pool customer',  'retailer', 'SRID=4326;POINT(25 5)', NULL),
    (3, 'in X, r_excl',   'retailer', 'SRID=4326;POINT(5 5)',  :r_excl),
    (4, 'lead pending',   'lead',     'SRID=4326;POINT(25 5)', NULL),
    (5, 'lead rejected',  'lead',     'SRID=4326;POINT(25 5)', NULL),
    (6, 'lead accepted',  'lead',     'SRID=4326;POINT(25 5)', NULL),
    (7, 'no location',    'retailer', NULL, NULL);
INSERT INTO tap04.cust_geo VALUES (1, 'SRID=4326;POINT(25 5)', NULL), (2, 'SRID=3857;POINT(2800000 550000)', NULL);
INSERT INTO tap04.cust_nk VALUES ('k1', 'SRID=4326;POINT(25 5)', NULL);

SELECT id AS s_pending FROM allocation.suggestion WHERE key = '4' \gset
SELECT id AS s_rejected FROM allocation.suggestion WHERE key = '5' \gset
SELECT id AS s_accepted FROM allocation.suggestion WHERE key = '6' \gset
SELECT lives_ok(format($$SELECT allocation.reject_suggestion(%s, 'not now')$$, :s_rejected),
                'fixture: reject_suggestion() of a pending suggestion works');
-- (fallback so the tests below still have a rejected suggestion if it did not)
UPDATE allocation.suggestion SET status = 'rejected', decided_at = now(), decided_by = current_user
 WHERE id = :s_rejected AND status = 'pending';
SELECT allocation.accept_suggestion(:s_accepted) AS x \gset

-- everything a write may change
CREATE FUNCTION pg_temp.wstate() RETURNS text LANGUAGE sql AS $$
SELECT format('cust=%s cust_geo=%s cust_nk=%s assignment=%s suggestion=%s event=%s rep_load=%s rr=%s',
    (SELECT md5(coalesce(string_agg(c::text, ',' ORDER BY id), '')) FROM tap04.cust c),
    (SELECT md5(coalesce(string_agg(c::text, ',' ORDER BY id), '')) FROM tap04.cust_geo c),
    (SELECT md5(coalesce(string_agg(c::text, ',' ORDER BY code), '')) FROM tap04.cust_nk c),
    (SELECT count(*) || '/' || md5(coalesce(string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s', a.id, a.managed_id, a.key, a.rep_id,
                                                              a.source, a.pinned, a.valid_to IS NULL, a.reason), ',' ORDER BY a.id), ''))
       FROM allocation.assignment a),
    (SELECT count(*) || '/' || md5(coalesce(string_agg(format('%s|%s|%s|%s', s.id, s.key, s.rep_id, s.status), ',' ORDER BY s.id), ''))
       FROM allocation.suggestion s),
    (SELECT count(*) || '/' || coalesce(max(id), 0) FROM allocation.event),
    (SELECT md5(string_agg(l.rep_id || '=' || l.held, ',' ORDER BY l.rep_id)) FROM allocation.rep_load l),
    (SELECT md5(coalesce(string_agg(team_id || '=' || last_rep_id, ',' ORDER BY team_id), '')) FROM allocation.rr_cursor))
$$;
CREATE FUNCTION pg_temp.held(p_code text) RETURNS integer LANGUAGE sql AS
$$ SELECT l.held FROM allocation.rep_load l JOIN allocation.rep r ON r.id = l.rep_id WHERE r.code = p_code $$;
CREATE FUNCTION pg_temp.sqlstate_of(sql text) RETURNS text LANGUAGE plpgsql AS
$$ BEGIN EXECUTE sql; RETURN NULL; EXCEPTION WHEN others THEN RETURN SQLSTATE; END $$;

-- the fixture is what the tests below assume
SELECT is((SELECT owner FROM tap04.cust WHERE id = 1), :r_full::bigint, 'fixture: customer 1 held by r_full');
SELECT is(pg_temp.held('r_full'), 1, 'fixture: r_full is at capacity (1 of 1)');
SELECT is((SELECT owner FROM tap04.cust WHERE id = 2), NULL::bigint, 'fixture: customer 2 is in the pool');
SELECT is((SELECT status FROM allocation.suggestion WHERE id = :s_pending), 'pending', 'fixture: suggestion for 4 is pending');
SELECT is((SELECT status FROM allocation.suggestion WHERE id = :s_rejected), 'rejected', 'fixture: suggestion for 5 is rejected');
SELECT is((SELECT status FROM allocation.suggestion WHERE id = :s_accepted), 'accepted', 'fixture: suggestion for 6 is accepted');
SELECT is(pg_temp.held('r_sug'), 1, 'fixture: r_sug holds the customer of the accepted suggestion');
SELECT is_empty('SELECT * FROM allocation.check_consistency()', 'fixture: registry and counters agree');

-------------------------------------------------------------------------------
-- LA020: unknown rep
-------------------------------------------------------------------------------
SELECT pg_temp.wstate() AS base \gset
SELECT throws_ok($$INSERT INTO tap04.cust (id, tier, loc, owner) VALUES (100, 'retailer', 'SRID=4326;POINT(25 5)', 999999)$$,
                 'LA020', 'rep 999999 does not exist', 'INSERT with an unknown owner: LA020');
SELECT is(pg_temp.wstate(), :'base', 'INSERT unknown owner: nothing changed');
SELECT throws_ok($$UPDATE tap04.cust SET owner = 999999 WHERE id = 2$$,
                 'LA020', 'rep 999999 does not exist', 'UPDATE to an unknown owner: LA020');
SELECT is(pg_temp.wstate(), :'base', 'UPDATE unknown owner: nothing changed');
SELECT throws_ok($$UPDATE tap04.cust SET owner = -1 WHERE id = 1$$,
                 'LA020', 'rep -1 does not exist', 'UPDATE of a held customer to owner -1: LA020');
SELECT is(pg_temp.wstate(), :'base', 'UPDATE owner -1: nothing changed');
SELECT throws_ok(format($$INSERT INTO tap04.cust (id, tier, loc, owner) VALUES (100, 'retailer', NULL, %s), (101, 'retailer', NULL, 999999)$$, :r_ok),
                 'LA020', 'rep 999999 does not exist', 'two-row INSERT, second owner unknown: LA020');
SELECT is(pg_temp.wstate(), :'base', 'two-row INSERT: the first row and r_ok''s reserved slot are rolled back too');
SELECT is(pg_temp.held('r_ok'), 0, 'r_ok holds nothing after the failed two-row INSERT');

-------------------------------------------------------------------------------
-- LA021: inactive rep
-------------------------------------------------------------------------------
SELECT throws_ok(format($$INSERT INTO tap04.cust (id, tier, loc, owner) VALUES (100, 'retailer', 'SRID=4326;POINT(25 5)', %s)$$, :r_off),
                 'LA021', 'rep r_off is inactive', 'INSERT with an inactive owner: LA021');
SELECT is(pg_temp.wstate(), :'base', 'INSERT inactive owner: nothing changed');
SELECT throws_ok(format($$UPDATE tap04.cust SET owner = %s WHERE id = 2$$, :r_off),
                 'LA021', 'rep r_off is inactive', 'UPDATE to an inactive owner: LA021');
SELECT is(pg_temp.wstate(), :'base', 'UPDATE inactive owner: nothing changed');

-------------------------------------------------------------------------------
-- LA022: rep at capacity
-------------------------------------------------------------------------------
SELECT throws_ok(format($$INSERT INTO tap04.cust (id, tier, loc, owner) VALUES (100, 'retailer', 'SRID=4326;POINT(25 5)', %s)$$, :r_full),
                 'LA022', 'rep r_full is at capacity', 'INSERT with a full owner: LA022');
SELECT is(pg_temp.wstate(), :'base', 'INSERT full owner: nothing changed');
SELECT throws_ok(format($$UPDATE tap04.cust SET owner = %s WHERE id = 2$$, :r_full),
                 'LA022', 'rep r_full is at capacity', 'UPDATE to a full owner: LA022');
SELECT is(pg_temp.wstate(), :'base', 'UPDATE full owner: nothing changed');
SELECT throws_ok(format($$INSERT INTO tap04.cust (id, tier, loc, owner) VALUES (100, 'retailer', NULL, %1$s), (101, 'retailer', NULL, %1$s)$$, :r_one),
                 'LA022', 'rep r_one is at capacity', 'two-row INSERT for a rep with one free slot: LA022 on the second row');
SELECT is(pg_temp.wstate(), :'base', 'two-row INSERT over capacity: nothing changed');
SELECT is(pg_temp.held('r_one'), 0, 'r_one''s slot reserved by the first row was given back');
SELECT throws_ok(format($$UPDATE tap04.cust SET owner = %s WHERE id IN (2, 7)$$, :r_one),
                 'LA022', 'rep r_one is at capacity', 'UPDATE of two customers to a rep with one free slot: LA022');
SELECT is(pg_temp.wstate(), :'base', 'two-row UPDATE over capacity: nothing changed');
SELECT is(pg_temp.held('r_one'), 0, 'r_one still holds nothing');

-------------------------------------------------------------------------------
-- LA023: exclusive territory
-------------------------------------------------------------------------------
SELECT throws_ok(format($$INSERT INTO tap04.cust (id, tier, loc, owner) VALUES (100, 'retailer', 'SRID=4326;POINT(5 5)', %s)$$, :r_ok),
                 'LA023', 'territory X is exclusive', 'INSERT in an exclusive territory with another owner: LA023');
SELECT is(pg_temp.wstate(), :'base', 'INSERT exclusive: nothing changed');
SELECT throws_ok(format($$INSERT INTO tap04.cust (id, tier, loc, owner) VALUES (100, 'retailer', 'SRID=4326;POINT(10 5)', %s)$$, :r_ok),
                 'LA023', 'territory X is exclusive', 'INSERT on the border of an exclusive territory (covered): LA023');
SELECT is(pg_temp.wstate(), :'base', 'INSERT on exclusive border: nothing changed');
SELECT throws_ok(format($$UPDATE tap04.cust SET owner = %s WHERE id = 3$$, :r_ok),
                 'LA023', 'territory X is exclusive', 'UPDATE owner of a customer in an exclusive territory: LA023');
SELECT is(pg_temp.wstate(), :'base', 'UPDATE exclusive: nothing changed');
SELECT throws_ok(format($$UPDATE tap04.cust SET loc = 'SRID=4326;POINT(5 5)', owner = %s WHERE id = 2$$, :r_ok),
                 'LA023', 'territory X is exclusive', 'UPDATE moving a customer into an exclusive territory with another owner: LA023');
SELECT is(pg_temp.wstate(), :'base', 'UPDATE move + owner into exclusive: nothing changed');

-- not errors: keeping the owner of a full rep is no capacity problem
SELECT lives_ok(format($$UPDATE tap04.cust SET owner = %s, name = 'still r_full' WHERE id = 1$$, :r_full),
                'UPDATE that repeats the current owner of a full rep is accepted');
SELECT is(pg_temp.held('r_full'), 1, 'r_full still holds exactly 1');
SELECT is_empty('SELECT * FROM allocation.check_consistency()', 'no over-capacity or counter drift after the no-op owner UPDATE');
SELECT pg_temp.wstate() AS base \gset

-------------------------------------------------------------------------------
-- LA024: key change
-------------------------------------------------------------------------------
SELECT throws_ok($$UPDATE tap04.cust SET id = 200 WHERE id = 2$$,
                 'LA024', 'the key of a managed customer cannot change', 'UPDATE of the key: LA024');
SELECT is(pg_temp.wstate(), :'base', 'key change: nothing changed');
SELECT throws_ok($$UPDATE tap04.cust SET id = id + 1000$$,
                 'LA024', 'the key of a managed customer cannot change', 'UPDATE of every key: LA024');
SELECT is(pg_temp.wstate(), :'base', 'every key changed: nothing changed');
SELECT throws_ok($$UPDATE tap04.cust_nk SET code = 'k2' WHERE code = 'k1'$$,
                 'LA024', 'the key of a managed customer cannot change', 'UPDATE of a text key: LA024');
SELECT is(pg_temp.wstate(), :'base', 'text key change: nothing changed');
SELECT throws_ok($$UPDATE tap04.cust_nk SET code = NULL WHERE code = 'k1'$$,
                 NULL, NULL, 'UPDATE of a key to NULL is refused');
SELECT ok(pg_temp.sqlstate_of($$UPDATE tap04.cust_nk SET code = NULL WHERE code = 'k1'$$) IN ('LA024', 'LA063'),
          'UPDATE of a key to NULL: LA024 or LA063');
SELECT is(pg_temp.wstate(), :'base', 'key to NULL: nothing changed');

-------------------------------------------------------------------------------
-- duplicate keys and ON CONFLICT: rows that are not stored leave no trace
-------------------------------------------------------------------------------
SELECT throws_ok(format($$INSERT INTO tap04.cust (id, tier, loc, owner) VALUES (2, 'retailer', 'SRID=4326;POINT(25 5)', %s)$$, :r_one),
                 '23505', NULL, 'INSERT of an existing key with an owner: 23505');
SELECT is(pg_temp.wstate(), :'base', 'duplicate key: nothing changed (no slot kept, no registry row, no event)');
SELECT lives_ok(format($$INSERT INTO tap04.cust (id, tier, loc, owner) VALUES (2, 'retailer', 'SRID=4326;POINT(25 5)', %s)
                         ON CONFLICT (id) DO NOTHING$$, :r_one),
                'INSERT ... ON CONFLICT DO NOTHING of an existing key with an owner');
SELECT is(pg_temp.held('r_one'), 0, 'ON CONFLICT DO NOTHING: r_one''s reserved slot was given back');
SELECT is(pg_temp.wstate(), :'base', 'ON CONFLICT DO NOTHING: nothing changed (no registry row, no event)');
SELECT lives_ok($$INSERT INTO tap04.cust (id, tier, loc) VALUES (2, 'retailer', 'SRID=4326;POINT(25 5)')
                  ON CONFLICT (id) DO NOTHING$$,
                'INSERT ... ON CONFLICT DO NOTHING of an existing key without an owner');
SELECT is(pg_temp.wstate(), :'base', 'ON CONFLICT DO NOTHING without owner: nothing changed');
SELECT throws_ok($$INSERT INTO tap04.cust (id, tier, loc) VALUES (2, 'retailer', 'SRID=4326;POINT(25 5)')
                   ON CONFLICT (id) DO UPDATE SET owner = 999999$$,
                 'LA020', 'rep 999999 does not exist', 'INSERT ... ON CONFLICT DO UPDATE to an unknown owner: LA020');
SELECT is(pg_temp.wstate(), :'base', 'ON CONFLICT DO UPDATE unknown owner: nothing changed');

-------------------------------------------------------------------------------
-- LA063: NULL key
-------------------------------------------------------------------------------
SELECT throws_ok($$INSERT INTO tap04.cust_nk (code, loc) VALUES (NULL, 'SRID=4326;POINT(25 5)')$$,
                 'LA063', 'customer key must not be NULL', 'INSERT with a NULL key: LA063');
SELECT is(pg_temp.wstate(), :'base', 'NULL key: nothing changed');
SELECT throws_ok($$INSERT INTO tap04.cust_nk (code, loc) VALUES ('k9', NULL), (NULL, NULL)$$,
                 'LA063', 'customer key must not be NULL', 'two-row INSERT, second key NULL: LA063');
SELECT is(pg_temp.wstate(), :'base', 'two-row INSERT with NULL key: nothing changed');

-------------------------------------------------------------------------------
-- LA040: SRID 0 / unknown SRID
-------------------------------------------------------------------------------
SELECT throws_ok($$INSERT INTO tap04.cust_geo VALUES (100, 'POINT(25 5)', NULL)$$,
                 'LA040', 'customer location has no SRID', 'INSERT of a point with SRID 0: LA040');
SELECT is(pg_temp.wstate(), :'base', 'SRID 0: nothing changed');
SELECT throws_ok($$INSERT INTO tap04.cust_geo VALUES (100, 'SRID=990001;POINT(25 5)', NULL)$$,
                 'LA040', 'customer location has unknown SRID 990001', 'INSERT of a point with an SRID unknown to spatial_ref_sys: LA040');
SELECT is(pg_temp.wstate(), :'base', 'unknown SRID: nothing changed');
SELECT throws_ok($$UPDATE tap04.cust_geo SET loc = 'POINT(25 5)' WHERE id = 1$$,
                 'LA040', 'customer location has no SRID', 'UPDATE to a point with SRID 0: LA040');
SELECT is(pg_temp.wstate(), :'base', 'UPDATE SRID 0: nothing changed');
SELECT throws_ok($$UPDATE tap04.cust_geo SET loc = ST_SetSRID(loc, 990002) WHERE id = 1$$,
                 'LA040', 'customer location has unknown SRID 990002', 'UPDATE to an unknown SRID: LA040');
SELECT is(pg_temp.wstate(), :'base', 'UPDATE unknown SRID: nothing changed');
SELECT throws_ok($$SELECT allocation.explain('tap04.cust_geo', '{"id": 9, "loc": "POINT(25 5)"}'::jsonb)$$,
                 'LA040', 'customer location has no SRID', 'explain() of a hypothetical row with SRID 0: LA040');
SELECT is((SELECT territory_id FROM allocation.assignment a JOIN allocation.managed_table m ON m.id = a.managed_id
            WHERE m.tbl = 'tap04.cust_geo'::regclass AND a.key = '2' AND a.valid_to IS NULL),
          (SELECT id FROM allocation.territory WHERE code = 'F'),
          'a point in a known SRID (3857) is transformed: customer 2 of cust_geo is in F');

-------------------------------------------------------------------------------
-- LA041: not a point
-------------------------------------------------------------------------------
SELECT throws_ok($$INSERT INTO tap04.cust_geo VALUES (100, 'SRID=4326;LINESTRING(25 5, 26 6)', NULL)$$,
                 'LA041', 'customer location must be a point', 'INSERT of a LineString location: LA041');
SELECT is(pg_temp.wstate(), :'base', 'LineString: nothing changed');
SELECT throws_ok($$INSERT INTO tap04.cust_geo VALUES (100, 'SRID=4326;POLYGON((25 5, 26 5, 26 6, 25 5))', NULL)$$,
                 'LA041', 'customer location must be a point', 'INSERT of a Polygon location: LA041');
SELECT is(pg_temp.wstate(), :'base', 'Polygon: nothing changed');
SELECT throws_ok($$INSERT INTO tap04.cust_geo VALUES (100, 'SRID=4326;MULTIPOINT((25 5), (26 6))', NULL)$$,
                 'LA041', 'customer location must be a point', 'INSERT of a MultiPoint location: LA041');
SELECT is(pg_temp.wstate(), :'base', 'MultiPoint: nothing changed');
SELECT throws_ok($$INSERT INTO tap04.cust_geo VALUES (100, 'SRID=4326;GEOMETRYCOLLECTION(POINT(25 5))', NULL)$$,
                 'LA041', 'customer location must be a point', 'INSERT of a GeometryCollection holding a point: LA041');
SELECT is(pg_temp.wstate(), :'base', 'GeometryCollection: nothing changed');
SELECT throws_ok($$UPDATE tap04.cust_geo SET loc = 'SRID=4326;LINESTRING(25 5, 26 6)' WHERE id = 1$$,
                 'LA041', 'customer location must be a point', 'UPDATE to a LineString location: LA041');
SELECT is(pg_temp.wstate(), :'base', 'UPDATE LineString: nothing changed');
SELECT throws_ok($$INSERT INTO tap04.cust_geo VALUES (100, 'LINESTRING(25 5, 26 6)', NULL)$$,
                 'LA041', 'customer location must be a point', 'LineString without SRID: LA041 (shape checked first)');
SELECT is(pg_temp.wstate(), :'base', 'LineString SRID 0: nothing changed');

-------------------------------------------------------------------------------
-- LA050: the audit log is append-only
-------------------------------------------------------------------------------
SELECT md5(string_agg(e::text, ',' ORDER BY id)) AS events, count(*) AS n_events FROM allocation.event e \gset
SELECT cmp_ok(:n_events::bigint, '>', 5::bigint, 'the audit log has rows (so row triggers would fire)');
SELECT throws_ok($$UPDATE allocation.event SET reason = 'edited'$$,
                 'LA050', 'allocation.event is append-only', 'UPDATE of the audit log: LA050');
SELECT throws_ok($$UPDATE allocation.event SET kind = 'assign' WHERE id = (SELECT max(id) FROM allocation.event)$$,
                 'LA050', 'allocation.event is append-only', 'UPDATE of one audit row: LA050');
SELECT throws_ok($$DELETE FROM allocation.event$$,
                 'LA050', 'allocation.event is append-only', 'DELETE of the audit log: LA050');
SELECT throws_ok($$DELETE FROM allocation.event WHERE id = (SELECT min(id) FROM allocation.event)$$,
                 'LA050', 'allocation.event is append-only', 'DELETE of one audit row: LA050');
SELECT throws_ok($$TRUNCATE allocation.event$$,
                 'LA050', 'allocation.event is append-only', 'TRUNCATE of the audit log: LA050');
SELECT throws_ok($$WITH d AS (DELETE FROM allocation.event RETURNING 1) SELECT count(*) FROM d$$,
                 'LA050', 'allocation.event is append-only', 'DELETE in a CTE: LA050');
SELECT is((SELECT md5(string_agg(e::text, ',' ORDER BY id)) FROM allocation.event e), :'events',
          'every audit row is unchanged');
SELECT is((SELECT count(*) FROM allocation.event), :n_events::bigint, 'no audit row was removed');

-------------------------------------------------------------------------------
-- assign()
-------------------------------------------------------------------------------
SELECT pg_temp.wstate() AS base \gset
SELECT throws_ok(format($$SELECT allocation.assign('tap04.cust', '99999', %s, 'visited last season')$$, :r_ok),
                 'LA062', 'customer 99999 not found in tap04.cust', 'assign() of an unknown key: LA062');
SELECT is(pg_temp.wstate(), :'base', 'assign unknown key: nothing changed');
SELECT throws_ok(format($$SELECT allocation.assign('tap04.cust', 'abc', %s, 'visited last season')$$, :r_ok),
                 'LA062', NULL, 'assign() of a key that cannot be a bigint: LA062 (customer not found)');
SELECT is(pg_temp.wstate(), :'base', 'assign non-numeric key: nothing changed');
SELECT throws_ok(format($$SELECT allocation.assign('tap04.cust', '2', %s, NULL)$$, :r_ok),
                 '22004', 'a manual assignment needs a reason', 'assign() without reason: 22004');
SELECT is(pg_temp.wstate(), :'base', 'assign NULL reason: nothing changed');
SELECT throws_ok(format($$SELECT allocation.assign('tap04.cust', '2', %s, '   ')$$, :r_ok),
                 '22004', 'a manual assignment needs a reason', 'assign() with a blank reason: 22004');
SELECT is(pg_temp.wstate(), :'base', 'assign blank reason: nothing changed');
SELECT throws_ok(format($$SELECT allocation.assign('tap04.plain', '1', %s, 'visited last season')$$, :r_ok),
                 'LA012', 'table tap04.plain is not managed', 'assign() on an unmanaged table: LA012');
SELECT is(pg_temp.wstate(), :'base', 'assign unmanaged: nothing changed');
SELECT is((SELECT owner FROM tap04.plain WHERE id = 1), NULL::bigint, 'assign unmanaged: the unmanaged row is untouched');
SELECT throws_ok($$SELECT allocation.assign('tap04.cust', '2', 999999, 'visited last season')$$,
                 'LA020', 'rep 999999 does not exist', 'assign() to an unknown rep: LA020');
SELECT is(pg_temp.wstate(), :'base', 'assign unknown rep: nothing changed');
SELECT throws_ok(format($$SELECT allocation.assign('tap04.cust', '2', %s, 'visited last season')$$, :r_off),
                 'LA021', 'rep r_off is inactive', 'assign() to an inactive rep: LA021');
SELECT is(pg_temp.wstate(), :'base', 'assign inactive rep: nothing changed');
SELECT throws_ok(format($$SELECT allocation.assign('tap04.cust', '2', %s, 'visited last season')$$, :r_full),
                 'LA022', 'rep r_full is at capacity', 'assign() to a full rep: LA022');
SELECT is(pg_temp.wstate(), :'base', 'assign full rep: nothing changed');
SELECT throws_ok(format($$SELECT allocation.assign('tap04.cust', '3', %s, 'visited last season')$$, :r_ok),
                 'LA023', 'territory X is exclusive', 'assign() inside an exclusive territory: LA023');
SELECT is(pg_temp.wstate(), :'base', 'assign exclusive: nothing changed');
SELECT is(current_setting('allocation.change_source', true), NULL, 'no change_source setting exists (the change context lives in C)');
SELECT throws_ok(format($$UPDATE tap04.cust SET owner = %s WHERE id = 1$$, 999999),
                 'LA020', NULL, 'after failed assign() calls, a plain UPDATE is still validated');

-------------------------------------------------------------------------------
-- accept_suggestion() / reject_suggestion()
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.accept_suggestion(999999)$$,
                 'LA060', 'suggestion 999999 does not exist', 'accept_suggestion(unknown id): LA060');
SELECT is(pg_temp.wstate(), :'base', 'accept unknown: nothing changed');
SELECT throws_ok($$SELECT allocation.reject_suggestion(999999, 'no')$$,
                 'LA060', 'suggestion 999999 does not exist', 'reject_suggestion(unknown id): LA060');
SELECT is(pg_temp.wstate(), :'base', 'reject unknown: nothing changed');
SELECT throws_ok(format($$SELECT allocation.accept_suggestion(%s)$$, :s_rejected),
                 'LA061', format('suggestion %s is rejected, not pending', :s_rejected), 'accept_suggestion(rejected): LA061');
SELECT is(pg_temp.wstate(), :'base', 'accept rejected: nothing changed');
SELECT throws_ok(format($$SELECT allocation.reject_suggestion(%s, 'again')$$, :s_rejected),
                 'LA061', format('suggestion %s is rejected, not pending', :s_rejected), 'reject_suggestion(rejected): LA061');
SELECT is(pg_temp.wstate(), :'base', 'reject rejected: nothing changed');
SELECT throws_ok(format($$SELECT allocation.accept_suggestion(%s)$$, :s_accepted),
                 'LA061', format('suggestion %s is accepted, not pending', :s_accepted), 'accept_suggestion(accepted): LA061');
SELECT is(pg_temp.wstate(), :'base', 'accept accepted: nothing changed');
SELECT throws_ok(format($$SELECT allocation.reject_suggestion(%s, 'too late')$$, :s_accepted),
                 'LA061', format('suggestion %s is accepted, not pending', :s_accepted), 'reject_suggestion(accepted): LA061');
SELECT is(pg_temp.wstate(), :'base', 'reject accepted: nothing changed');
-- (a pending suggestion reserved its slot; only a capacity lowered below what the rep holds since refuses it)
-- (lowering and restoring the capacity are audited configuration changes: the base moves with them)
SET client_min_messages = error;
UPDATE allocation.rep SET capacity = 1 WHERE code = 'r_sug';
RESET client_min_messages;
SELECT pg_temp.wstate() AS base_lowered \gset
SELECT throws_ok(format($$SELECT allocation.accept_suggestion(%s)$$, :s_pending),
                 'LA022', 'rep r_sug is at capacity', 'accept_suggestion() whose rep is now full: LA022');
SELECT is(pg_temp.wstate(), :'base_lowered', 'accept with full rep: nothing changed');
SELECT is((SELECT status FROM allocation.suggestion WHERE id = :s_pending), 'pending', 'the suggestion is still pending');
UPDATE allocation.rep SET capacity = 3 WHERE code = 'r_sug';
SELECT pg_temp.wstate() AS base \gset

-------------------------------------------------------------------------------
-- explain(): errors, and no side effects
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.explain('tap04.cust', '99999')$$,
                 'LA062', 'customer 99999 not found in tap04.cust', 'explain() of an unknown key: LA062');
SELECT throws_ok($$SELECT allocation.explain('tap04.cust', 'abc')$$,
                 'LA062', NULL, 'explain() of a key that cannot be a bigint: LA062 (customer not found)');
SELECT throws_ok($$SELECT allocation.explain('tap04.plain', '1')$$,
                 'LA012', NULL, 'explain(key) on an unmanaged table: LA012');
SELECT throws_ok($$SELECT allocation.explain('tap04.plain', '{"id": 1}'::jsonb)$$,
                 'LA012', NULL, 'explain(row) on an unmanaged table: LA012');
SELECT throws_ok($$SELECT allocation.explain('tap04.cust', '[1, 2]'::jsonb)$$,
                 'LA063', 'hypothetical customer must be a JSON object', 'explain(row) with an array: LA063');
SELECT throws_ok($$SELECT allocation.explain('tap04.cust', '"tier=lead"'::jsonb)$$,
                 'LA063', 'hypothetical customer must be a JSON object', 'explain(row) with a string: LA063');
SELECT throws_ok($$SELECT allocation.explain('tap04.cust', 'null'::jsonb)$$,
                 'LA063', 'hypothetical customer must be a JSON object', 'explain(row) with JSON null: LA063');
SELECT throws_ok($$SELECT allocation.explain('tap04.cust', '42'::jsonb)$$,
                 'LA063', 'hypothetical customer must be a JSON object', 'explain(row) with a number: LA063');
SELECT lives_ok($$SELECT allocation.explain('tap04.cust', '2'), allocation.explain('tap04.cust', '4'),
                         allocation.explain('tap04.cust', '{"tier": "lead", "loc": "SRID=4326;POINT(25 5)"}'::jsonb),
                         allocation.explain('tap04.cust', '{"tier": "retailer", "loc": "SRID=4326;POINT(5 5)"}'::jsonb)$$,
                'explain() of stored and hypothetical customers works');
SELECT is(pg_temp.wstate(), :'base', 'explain() calls (failed and successful) changed nothing');

-------------------------------------------------------------------------------
-- owner_at()
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.owner_at('tap04.plain', '1', now())$$,
                 'LA012', 'table tap04.plain is not managed', 'owner_at() on an unmanaged table: LA012');
SELECT throws_ok($$SELECT allocation.owner_at('allocation.rep', '1', now())$$,
                 'LA012', NULL, 'owner_at() on an extension table: LA012');
-- (ownership times are the clock at the decision: now(), the start of this
-- transaction, lies before the customer's insert in it)
SELECT is(allocation.owner_at('tap04.cust', '1', clock_timestamp()), :r_full::bigint, 'owner_at() on a managed table answers');
SELECT is(allocation.owner_at('tap04.cust', '1', now()), NULL::bigint, 'owner_at() before the insert: nobody');

-------------------------------------------------------------------------------
-- after all the refusals the engine is consistent and still works
-------------------------------------------------------------------------------
SELECT is_empty('SELECT * FROM allocation.check_consistency()', 'registry and counters still agree');
SELECT lives_ok(format($$INSERT INTO tap04.cust (id, tier, loc, owner) VALUES (100, 'retailer', 'SRID=4326;POINT(25 5)', %s)$$, :r_one),
                'a valid manual INSERT is accepted');
SELECT is(pg_temp.held('r_one'), 1, 'it took r_one''s slot');
SELECT throws_ok(format($$INSERT INTO tap04.cust (id, tier, loc, owner) VALUES (101, 'retailer', 'SRID=4326;POINT(25 5)', %s)$$, :r_one),
                 'LA022', 'rep r_one is at capacity', 'and now r_one is full: LA022');
SELECT lives_ok(format($$SELECT allocation.assign('tap04.cust', '2', %s, 'dealer asked for this rep')$$, :r_ok),
                'a valid assign() is accepted');
SELECT is((SELECT owner FROM tap04.cust WHERE id = 2), :r_ok::bigint, 'assign() set the owner column');
SELECT is((SELECT source || '/' || pinned FROM allocation.assignment a JOIN allocation.managed_table m ON m.id = a.managed_id
            WHERE m.tbl = 'tap04.cust'::regclass AND a.key = '2' AND a.valid_to IS NULL), 'manual/true',
          'assign() recorded a pinned manual assignment');
SELECT is_empty('SELECT * FROM allocation.check_consistency()', 'registry and counters agree at the end');

SELECT * FROM finish();
ROLLBACK;
