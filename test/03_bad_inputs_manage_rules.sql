-- pgTAP: bad calls of manage() / unmanage() / set_reevaluate() / grant_role()
-- and bad rules.  Each error has its SQLSTATE, registers nothing, installs no
-- trigger, and leaves the rule table as it was.
\set ECHO none
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
\set ON_ERROR_STOP 1

BEGIN;
CREATE EXTENSION allocation;
SET LOCAL client_min_messages = warning;

SELECT plan(230);

-------------------------------------------------------------------------------
-- Fixtures
-------------------------------------------------------------------------------
INSERT INTO allocation.team (code, name) VALUES ('tm', 'Team');
INSERT INTO allocation.rep (code, name, team_id, capacity)
SELECT 'r1', 'Rep One', id, 10 FROM allocation.team WHERE code = 'tm';
SELECT allocation.import_territories('{"type":"FeatureCollection","features":[
  {"type":"Feature","properties":{"code":"T"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,10],[0,0]]]}}]}') AS n_imported \gset

CREATE SCHEMA tap03;
-- a table with every kind of column the mapping checks look at
CREATE TABLE tap03.c (
    id        bigint PRIMARY KEY,
    code      text,
    loc       geometry(Point, 4326),
    owner     bigint,
    tier      text,
    crop      text,
    tags      text[],
    tags_int  integer[],
    stage     text,
    volume    numeric,
    owner_txt text,
    owner_num numeric,
    line      geometry(LineString, 4326),
    poly      geometry(Polygon, 4326),
    mpt       geometry(MultiPoint, 4326),
    geog      geography(Point, 4326),
    loc_txt   text
);
INSERT INTO tap03.c (id, code, loc, tier) VALUES (1, 'c1', 'SRID=4326;POINT(1 1)', 'retailer'), (2, 'c2', NULL, NULL);
CREATE VIEW tap03.v AS SELECT * FROM tap03.c;
CREATE MATERIALIZED VIEW tap03.mv AS SELECT * FROM tap03.c;
-- (a partitioned table is managed when its key leads a unique index: not this one's)
CREATE TABLE tap03.p (id bigint, region int, loc geometry(Point, 4326), owner bigint, PRIMARY KEY (region, id)) PARTITION BY RANGE (region);
CREATE TABLE tap03.p1 PARTITION OF tap03.p FOR VALUES FROM (0) TO (1000);
CREATE TABLE tap03.no_index (id bigint NOT NULL, loc geometry(Point, 4326), owner bigint);
CREATE TABLE tap03.plain_index (id bigint NOT NULL, loc geometry(Point, 4326), owner bigint);
CREATE INDEX ON tap03.plain_index (id);
CREATE TABLE tap03.partial_uniq (id bigint NOT NULL, loc geometry(Point, 4326), owner bigint);
CREATE UNIQUE INDEX ON tap03.partial_uniq (id) WHERE id > 0;
CREATE TABLE tap03.multi_uniq (id bigint NOT NULL, region text NOT NULL, loc geometry(Point, 4326), owner bigint,
                               UNIQUE (id, region));
CREATE TABLE tap03.expr_uniq (code text NOT NULL, loc geometry(Point, 4326), owner bigint);
CREATE UNIQUE INDEX ON tap03.expr_uniq (lower(code));
CREATE TABLE tap03.bad_owners (id bigint PRIMARY KEY, loc geometry(Point, 4326), owner bigint);
INSERT INTO tap03.bad_owners SELECT 1, NULL, id FROM allocation.rep WHERE code = 'r1';
INSERT INTO tap03.bad_owners VALUES (2, NULL, 999999), (3, NULL, 999998);
CREATE TABLE tap03.null_keys (code text UNIQUE, loc geometry(Point, 4326), owner bigint);
INSERT INTO tap03.null_keys VALUES ('k1', NULL, NULL), (NULL, NULL, NULL);
CREATE TABLE tap03.managed (id bigint PRIMARY KEY, loc geometry(Point, 4326), owner bigint, tier text, volume numeric);
INSERT INTO tap03.managed VALUES (1, 'SRID=4326;POINT(5 5)', NULL, 'retailer', 10);
SELECT allocation.manage('tap03.managed', 'id', 'loc', 'owner', '{"tier":"tier"}') AS managed \gset
CREATE SEQUENCE tap03.seq;

-- Registration state, with self-healing: if a bad manage() was wrongly
-- accepted, the table is unmanaged again and the extra rows are discounted,
-- so one engine bug fails only its own tests.
CREATE TEMP TABLE meta (n_managed bigint, n_assign bigint, n_event bigint,
                        off_managed bigint DEFAULT 0, off_assign bigint DEFAULT 0, off_event bigint DEFAULT 0);
INSERT INTO meta (n_managed, n_assign, n_event)
SELECT (SELECT count(*) FROM allocation.managed_table), (SELECT count(*) FROM allocation.assignment),
       (SELECT count(*) FROM allocation.event);
CREATE FUNCTION pg_temp.user_triggers(t regclass) RETURNS bigint LANGUAGE sql AS
$$ SELECT count(*) FROM pg_trigger WHERE tgrelid = t AND NOT tgisinternal $$;
CREATE FUNCTION pg_temp.reg_state() RETURNS text LANGUAGE sql AS $$
    SELECT format('managed_table=%s assignment=%s event=%s',
                  (SELECT count(*) FROM allocation.managed_table) - off_managed,
                  (SELECT count(*) FROM allocation.assignment) - off_assign,
                  (SELECT count(*) FROM allocation.event) - off_event) FROM meta $$;
CREATE FUNCTION pg_temp.base_state() RETURNS text LANGUAGE sql AS $$
    SELECT format('managed_table=%s assignment=%s event=%s', n_managed, n_assign, n_event) FROM meta $$;
-- state of a table that must not have been registered; heals if it was
CREATE FUNCTION pg_temp.unregistered(t regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text := pg_temp.reg_state() || format(' triggers=%s', pg_temp.user_triggers(t));
BEGIN
    IF EXISTS (SELECT 1 FROM allocation.managed_table WHERE tbl = t AND active) THEN
        PERFORM allocation.unmanage(t);
    END IF;
    UPDATE meta SET off_managed = (SELECT count(*) FROM allocation.managed_table) - n_managed,
                    off_assign = (SELECT count(*) FROM allocation.assignment) - n_assign,
                    off_event = (SELECT count(*) FROM allocation.event) - n_event;
    RETURN st;
END $$;
CREATE FUNCTION pg_temp.sqlstate_of(sql text) RETURNS text LANGUAGE plpgsql AS
$$ BEGIN EXECUTE sql; RETURN NULL; EXCEPTION WHEN others THEN RETURN SQLSTATE; END $$;

SELECT pg_temp.base_state() || ' triggers=0' AS clean \gset

SELECT is(pg_temp.user_triggers('tap03.managed'), 4::bigint, 'fixture: manage() installed 4 triggers on tap03.managed');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'fixture: tap03.c starts unregistered, without triggers');

-------------------------------------------------------------------------------
-- 22004: NULL required arguments
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.manage(NULL, 'id', 'loc', 'owner')$$, '22004',
                 'table, key column and owner column are required', 'manage(NULL table): 22004');
SELECT is(pg_temp.reg_state() || ' triggers=0', :'clean', 'manage(NULL table): nothing registered');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', NULL, 'loc', 'owner')$$, '22004',
                 'table, key column and owner column are required', 'manage(NULL key column): 22004');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'manage(NULL key column): nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', NULL)$$, '22004',
                 'table, key column and owner column are required', 'manage(NULL owner column): 22004');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'manage(NULL owner column): nothing registered, no trigger');

-------------------------------------------------------------------------------
-- LA010: not an ordinary table
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.manage('tap03.v', 'id', 'loc', 'owner')$$, 'LA010',
                 'tap03.v is not a table', 'manage(view): LA010');
SELECT is(pg_temp.unregistered('tap03.v'), :'clean', 'manage(view): nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.mv', 'id', 'loc', 'owner')$$, 'LA010',
                 'tap03.mv is not a table', 'manage(materialized view): LA010');
SELECT is(pg_temp.unregistered('tap03.mv'), :'clean', 'manage(materialized view): nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.p', 'id', 'loc', 'owner')$$, 'LA013',
                 'key column "id" of tap03.p is not unique', 'manage(partitioned table, key not leading a unique index): LA013');
SELECT is(pg_temp.unregistered('tap03.p'), :'clean', 'manage(partitioned table): nothing registered, no trigger');
SELECT is(pg_temp.user_triggers('tap03.p1'), 0::bigint, 'manage(partitioned table): no trigger on its partition');
SELECT throws_ok($$SELECT allocation.manage('tap03.seq', 'id', 'loc', 'owner')$$, 'LA010',
                 NULL, 'manage(sequence): LA010');
SELECT is(pg_temp.reg_state() || ' triggers=0', :'clean', 'manage(sequence): nothing registered');
SELECT throws_ok($$SELECT allocation.manage('allocation.rep', 'id', NULL, 'team_id')$$, 'LA010',
                 'the extension''s own tables cannot be managed', 'manage(allocation.rep): LA010');
SELECT is(pg_temp.unregistered('allocation.rep'), pg_temp.base_state() || format(' triggers=%s', pg_temp.user_triggers('allocation.rep')),
          'manage(allocation.rep): nothing registered');
SELECT is(pg_temp.user_triggers('allocation.rep'), 8::bigint,
          'manage(allocation.rep): allocation.rep keeps only its own eight triggers (cache, counter, delete check, capacity warning, four config audit)');
SELECT throws_ok($$SELECT allocation.manage('allocation.territory', 'id', NULL, 'owner_rep_id')$$, 'LA010',
                 'the extension''s own tables cannot be managed', 'manage(allocation.territory): LA010');
SELECT is(pg_temp.reg_state(), pg_temp.base_state(), 'manage(allocation.territory): nothing registered');

-------------------------------------------------------------------------------
-- LA011: already managed
-------------------------------------------------------------------------------
SELECT md5(m::text) AS managed_row FROM allocation.managed_table m WHERE tbl = 'tap03.managed'::regclass \gset
SELECT throws_ok($$SELECT allocation.manage('tap03.managed', 'id', 'loc', 'owner')$$, 'LA011',
                 'table tap03.managed is already managed', 'manage() twice: LA011');
SELECT is(pg_temp.reg_state(), pg_temp.base_state(), 'manage() twice: nothing registered');
SELECT is(pg_temp.user_triggers('tap03.managed'), 4::bigint, 'manage() twice: still exactly 4 triggers');
SELECT is((SELECT md5(m::text) FROM allocation.managed_table m WHERE tbl = 'tap03.managed'::regclass), :'managed_row',
          'manage() twice: the existing registration is unchanged');
SELECT throws_ok($$SELECT allocation.manage('tap03.managed', 'id', NULL, 'owner', '{"tier":"tier"}')$$, 'LA011',
                 NULL, 'manage() twice with another mapping: LA011');
SELECT is((SELECT md5(m::text) FROM allocation.managed_table m WHERE tbl = 'tap03.managed'::regclass), :'managed_row',
          'manage() twice with another mapping: the registration keeps its mapping');

-------------------------------------------------------------------------------
-- LA013: key not unique
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.manage('tap03.no_index', 'id', 'loc', 'owner')$$, 'LA013',
                 'key column "id" of tap03.no_index is not unique', 'key without any index: LA013');
SELECT is(pg_temp.unregistered('tap03.no_index'), :'clean', 'key without index: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.plain_index', 'id', 'loc', 'owner')$$, 'LA013',
                 'key column "id" of tap03.plain_index is not unique', 'key with a non-unique index: LA013');
SELECT is(pg_temp.unregistered('tap03.plain_index'), :'clean', 'non-unique index: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.partial_uniq', 'id', 'loc', 'owner')$$, 'LA013',
                 'key column "id" of tap03.partial_uniq is not unique', 'key with only a partial unique index: LA013');
SELECT is(pg_temp.unregistered('tap03.partial_uniq'), :'clean', 'partial unique index: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.multi_uniq', 'id', 'loc', 'owner')$$, 'LA013',
                 'key column "id" of tap03.multi_uniq is not unique', 'key first column of a two-column unique: LA013');
SELECT is(pg_temp.unregistered('tap03.multi_uniq'), :'clean', 'two-column unique (first column): nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.multi_uniq', 'region', 'loc', 'owner')$$, 'LA013',
                 'key column "region" of tap03.multi_uniq is not unique', 'key second column of a two-column unique: LA013');
SELECT is(pg_temp.unregistered('tap03.multi_uniq'), :'clean', 'two-column unique (second column): nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.expr_uniq', 'code', 'loc', 'owner')$$, 'LA013',
                 'key column "code" of tap03.expr_uniq is not unique', 'key with only a unique index on lower(key): LA013');
SELECT is(pg_temp.unregistered('tap03.expr_uniq'), :'clean', 'expression unique index: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'code', 'loc', 'owner')$$, 'LA013',
                 'key column "code" of tap03.c is not unique', 'key on a column without index while the table has a pk: LA013');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'non-key column as key: nothing registered, no trigger');

-------------------------------------------------------------------------------
-- 42703: mapped column missing
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'nokey', 'loc', 'owner')$$, '42703',
                 'column "nokey" of table tap03.c does not exist', 'missing key column: 42703');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'missing key column: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'noloc', 'owner')$$, '42703',
                 'column "noloc" of table tap03.c does not exist', 'missing location column: 42703');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'missing location column: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'noowner')$$, '42703',
                 'column "noowner" of table tap03.c does not exist', 'missing owner column: 42703');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'missing owner column: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner', '{"tier":"notier"}')$$, '42703',
                 'column "notier" of table tap03.c does not exist', 'missing attribute column: 42703');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'missing attribute column: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'ID', 'loc', 'owner')$$, '42703',
                 'column "ID" of table tap03.c does not exist', 'column names are case-sensitive ("ID"): 42703');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'case-sensitive key name: nothing registered, no trigger');
-- (the extension's ddl_command_end event trigger runs on every ALTER TABLE)
SELECT lives_ok('ALTER TABLE tap03.c ADD COLUMN gone text', 'ALTER TABLE ADD COLUMN on an unmanaged table works with the extension installed');
SELECT lives_ok('ALTER TABLE tap03.c DROP COLUMN gone', 'ALTER TABLE DROP COLUMN on an unmanaged table works with the extension installed');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner', '{"stage":"gone"}')$$, '42703',
                 NULL, 'dropped column as attribute: 42703');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'dropped column: nothing registered, no trigger');

-------------------------------------------------------------------------------
-- LA014: location not a PostGIS point column
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc_txt', 'owner')$$, 'LA014',
                 'location column "loc_txt" of tap03.c is not a PostGIS point column', 'text location: LA014');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'text location: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'line', 'owner')$$, 'LA014',
                 'location column "line" of tap03.c is not a PostGIS point column', 'geometry(LineString) location: LA014');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'LineString location: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'poly', 'owner')$$, 'LA014',
                 'location column "poly" of tap03.c is not a PostGIS point column', 'geometry(Polygon) location: LA014');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'Polygon location: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'mpt', 'owner')$$, 'LA014',
                 'location column "mpt" of tap03.c is not a PostGIS point column', 'geometry(MultiPoint) location: LA014');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'MultiPoint location: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'geog', 'owner')$$, 'LA014',
                 'location column "geog" of tap03.c is not a PostGIS point column', 'geography location: LA014');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'geography location: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'volume', 'owner')$$, 'LA014',
                 NULL, 'numeric location: LA014');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'numeric location: nothing registered, no trigger');

-------------------------------------------------------------------------------
-- LA015: owner column cannot hold a rep id
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner_txt')$$, 'LA015',
                 'owner column "owner_txt" of tap03.c cannot hold a rep id', 'text owner column: LA015');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'text owner: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner_num')$$, 'LA015',
                 'owner column "owner_num" of tap03.c cannot hold a rep id', 'numeric owner column: LA015');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'numeric owner: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'loc')$$, 'LA015',
                 NULL, 'location column used as owner: LA015');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'geometry owner: nothing registered, no trigger');

-------------------------------------------------------------------------------
-- LA016: bad attributes
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner', '["tier"]')$$, 'LA016',
                 'attributes must be a JSON object', 'attributes is an array: LA016');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'attributes array: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner', '"tier"')$$, 'LA016',
                 'attributes must be a JSON object', 'attributes is a string: LA016');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'attributes string: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner', 'null')$$, 'LA016',
                 'attributes must be a JSON object', 'attributes is JSON null: LA016');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'attributes JSON null: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner', NULL)$$, 'LA016',
                 'attributes must be a JSON object', 'attributes is SQL NULL: LA016');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'attributes SQL NULL: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner', '{"tier":"tier","colour":"crop"}')$$, 'LA016',
                 'unknown attribute "colour"', 'unknown attribute: LA016');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'unknown attribute: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner', '{"Tier":"tier"}')$$, 'LA016',
                 'unknown attribute "Tier"', 'attribute names are case-sensitive ("Tier"): LA016');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'attribute "Tier": nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner', '{"tier":5}')$$, 'LA016',
                 'attribute "tier" must name a column', 'attribute value is a number: LA016');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'attribute number: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner', '{"tier":null}')$$, 'LA016',
                 'attribute "tier" must name a column', 'attribute value is JSON null: LA016');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'attribute null: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner', '{"crop":["crop"]}')$$, 'LA016',
                 'attribute "crop" must name a column', 'attribute value is an array: LA016');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'attribute array: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner', '{"tier":true}')$$, 'LA016',
                 'attribute "tier" must name a column', 'attribute value is a boolean: LA016');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'attribute boolean: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner', '{"tags":"tier"}')$$, 'LA016',
                 'tags column "tier" of tap03.c is not a text array', 'tags mapped to a text column: LA016');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'tags text: nothing registered, no trigger');
SELECT throws_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner', '{"tags":"tags_int"}')$$, 'LA016',
                 'tags column "tags_int" of tap03.c is not a text array', 'tags mapped to an integer[] column: LA016');
SELECT is(pg_temp.unregistered('tap03.c'), :'clean', 'tags integer[]: nothing registered, no trigger');

-------------------------------------------------------------------------------
-- LA020: existing owners that are not reps
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.manage('tap03.bad_owners', 'id', 'loc', 'owner')$$, 'LA020',
                 '2 row(s) of tap03.bad_owners have an owner that is not a rep', 'existing owners not reps: LA020');
SELECT is(pg_temp.unregistered('tap03.bad_owners'), :'clean', 'existing owners not reps: nothing registered, no trigger');
SELECT is((SELECT held FROM allocation.rep_load l JOIN allocation.rep r ON r.id = l.rep_id WHERE r.code = 'r1'), 0,
          'existing owners not reps: the valid owner r1 got no holding');
SELECT is((SELECT count(*) FROM tap03.bad_owners WHERE owner IS NOT NULL), 3::bigint,
          'existing owners not reps: the table itself is unchanged');

-------------------------------------------------------------------------------
-- LA063: existing rows with a NULL key cannot enter the registry
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.manage('tap03.null_keys', 'code', 'loc', 'owner')$$, 'LA063',
                 NULL, 'existing row with a NULL key (nullable unique key): LA063');
SELECT is(pg_temp.unregistered('tap03.null_keys'), :'clean', 'existing NULL key: nothing registered, no trigger');

-- the positive case proves the checks above can see a registration
SELECT lives_ok($$SELECT allocation.manage('tap03.c', 'id', 'loc', 'owner',
                  '{"tier":"tier","crop":"crop","tags":"tags","stage":"stage"}')$$, 'a correct manage() of tap03.c works');
SELECT isnt(pg_temp.reg_state() || format(' triggers=%s', pg_temp.user_triggers('tap03.c')), :'clean',
            'a correct manage() is visible to the state check');
SELECT is(pg_temp.user_triggers('tap03.c'), 4::bigint, 'a correct manage() installs 4 triggers');

-------------------------------------------------------------------------------
-- LA012 / 22023: unmanage() and set_reevaluate()
-------------------------------------------------------------------------------
SELECT format('%s|%s', (SELECT count(*) FROM allocation.managed_table WHERE active),
                       (SELECT count(*) FROM allocation.event)) AS act \gset
SELECT throws_ok($$SELECT allocation.unmanage('tap03.no_index')$$, 'LA012',
                 'table tap03.no_index is not managed', 'unmanage() of a never-managed table: LA012');
SELECT throws_ok($$SELECT allocation.set_reevaluate('tap03.no_index', 'always')$$, 'LA012',
                 'table tap03.no_index is not managed', 'set_reevaluate() of a never-managed table: LA012');
SELECT throws_ok($$SELECT allocation.unmanage('tap03.v')$$, 'LA012', NULL, 'unmanage() of a view: LA012');
SELECT is(format('%s|%s', (SELECT count(*) FROM allocation.managed_table WHERE active),
                          (SELECT count(*) FROM allocation.event)), :'act',
          'unmanage()/set_reevaluate() errors changed no registration and logged nothing');

SELECT lives_ok($$SELECT allocation.unmanage('tap03.c')$$, 'unmanage() of a managed table works');
SELECT is(pg_temp.user_triggers('tap03.c'), 0::bigint, 'unmanage() removed the triggers');
SELECT throws_ok($$SELECT allocation.unmanage('tap03.c')$$, 'LA012',
                 'table tap03.c is not managed', 'unmanage() twice: LA012');
SELECT throws_ok($$SELECT allocation.set_reevaluate('tap03.c', 'never')$$, 'LA012',
                 'table tap03.c is not managed', 'set_reevaluate() after unmanage(): LA012');
SELECT is((SELECT reevaluate FROM allocation.managed_table WHERE tbl = 'tap03.c'::regclass), 'unless_pinned',
          'set_reevaluate() after unmanage(): the inactive registration is unchanged');

SELECT throws_ok($$SELECT allocation.set_reevaluate('tap03.managed', 'sometimes')$$, '22023',
                 'unknown re-evaluation mode "sometimes"', 'set_reevaluate(bad mode): 22023');
SELECT throws_ok($$SELECT allocation.set_reevaluate('tap03.managed', 'ALWAYS')$$, '22023',
                 'unknown re-evaluation mode "ALWAYS"', 'set_reevaluate(mode in capitals): 22023');
SELECT throws_ok($$SELECT allocation.set_reevaluate('tap03.managed', NULL)$$, '22023',
                 NULL, 'set_reevaluate(NULL mode): 22023');
SELECT throws_ok($$SELECT allocation.set_reevaluate('tap03.no_index', 'sometimes')$$, '22023',
                 NULL, 'set_reevaluate(unmanaged table, bad mode): 22023 (mode checked first)');
SELECT is((SELECT reevaluate FROM allocation.managed_table WHERE tbl = 'tap03.managed'::regclass), 'unless_pinned',
          'bad modes left reevaluate at unless_pinned');
SELECT lives_ok($$SELECT allocation.set_reevaluate('tap03.managed', 'never')$$, 'set_reevaluate(never) works');
SELECT is((SELECT reevaluate FROM allocation.managed_table WHERE tbl = 'tap03.managed'::regclass), 'never',
          'set_reevaluate(never) is stored');
SELECT lives_ok($$SELECT allocation.set_reevaluate('tap03.managed', 'unless_pinned')$$, 'set_reevaluate(unless_pinned) works');

-------------------------------------------------------------------------------
-- Rules
-------------------------------------------------------------------------------
INSERT INTO allocation.rule (name, priority, tbl, condition, target_kind, target_team_id, policy)
SELECT 'big', 50, 'tap03.managed', 'volume > 1000', 'team', id, 'least_loaded' FROM allocation.team WHERE code = 'tm';
INSERT INTO allocation.rule (name, priority, target_kind) VALUES ('rest', 0, 'pool');

CREATE TEMP TABLE rule_snap AS SELECT * FROM allocation.rule;
CREATE TEMP VIEW rule_state AS
SELECT count(*) || ':' || md5(string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', r.id, r.name, r.priority, r.enabled, r.mode, r.tbl,
                                                r.condition, r.condition_bin IS NOT NULL, r.target_kind, r.target_rep_id,
                                                r.target_team_id, r.policy), ',' ORDER BY r.id)) AS s
  FROM allocation.rule r;
SELECT s AS rules FROM rule_state \gset
-- state of the rule table; heals it if a bad rule was wrongly accepted
CREATE FUNCTION pg_temp.rules_unchanged() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text := (SELECT s FROM rule_state);
BEGIN
    DELETE FROM allocation.rule WHERE id NOT IN (SELECT id FROM rule_snap);
    UPDATE allocation.rule r SET name = s.name, priority = s.priority, enabled = s.enabled, mode = s.mode, tbl = s.tbl,
           condition = s.condition, target_kind = s.target_kind, target_rep_id = s.target_rep_id,
           target_team_id = s.target_team_id, policy = s.policy, territory_id = s.territory_id
      FROM rule_snap s WHERE s.id = r.id AND (r.*)::text IS DISTINCT FROM (s.*)::text;
    RETURN st;
END $$;

SELECT is(pg_temp.rules_unchanged(), :'rules', 'fixture: two rules, the rule check is stable');

-- LA030: not a single expression / empty / no table
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'true; DROP TABLE tap03.managed', 'pool')$$,
                 'LA030', 'rule condition is not a single SQL expression', 'condition with a second statement: LA030');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'second statement: rules unchanged');
SELECT has_table('tap03', 'managed', 'second statement: tap03.managed was not dropped');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'volume > 1 FROM tap03.c', 'pool')$$,
                 'LA030', 'rule condition is not a single SQL expression', 'condition with FROM: LA030');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'FROM: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'volume > 1 AS big', 'pool')$$,
                 'LA030', 'rule condition is not a single SQL expression', 'condition with an alias: LA030');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'alias: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'volume > 1, tier = ''a''', 'pool')$$,
                 'LA030', 'rule condition is not a single SQL expression', 'two expressions: LA030');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'two expressions: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'volume > 1 UNION SELECT true', 'pool')$$,
                 'LA030', 'rule condition is not a single SQL expression', 'UNION: LA030');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'UNION: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'volume > 1 ORDER BY 1 LIMIT 1', 'pool')$$,
                 'LA030', 'rule condition is not a single SQL expression', 'ORDER BY / LIMIT: LA030');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'ORDER BY: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', '', 'pool')$$,
                 'LA030', 'rule condition is empty', 'empty condition: LA030');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'empty condition: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', E'  \n\t ', 'pool')$$,
                 'LA030', 'rule condition is empty', 'blank condition: LA030');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'blank condition: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, condition, target_kind) VALUES ('x', 'volume > 1', 'pool')$$,
                 'LA030', 'a rule with a condition must name its table', 'condition without tbl: LA030');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'condition without tbl: rules unchanged');
SELECT throws_ok($$UPDATE allocation.rule SET tbl = NULL WHERE name = 'big'$$,
                 'LA030', 'a rule with a condition must name its table', 'UPDATE removing tbl from a rule with a condition: LA030');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'UPDATE tbl NULL: rules unchanged');

-- 42601: syntax error
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'volume +', 'pool')$$,
                 '42601', NULL, 'incomplete expression: 42601');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'incomplete expression: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'true) OR (true', 'pool')$$,
                 '42601', NULL, 'unbalanced parentheses: 42601');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'unbalanced parentheses: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'volume >>> = 3', 'pool')$$,
                 '42601', NULL, 'garbage operators: 42601');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'garbage operators: rules unchanged');

-- 42703: unknown column
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'nosuch > 1', 'pool')$$,
                 '42703', NULL, 'unknown column: 42703');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'unknown column: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'crop = ''rice''', 'pool')$$,
                 '42703', NULL, 'column of another table (crop is in tap03.c): 42703');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'other table''s column: rules unchanged');

-- LA031: not boolean
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'volume', 'pool')$$,
                 'LA031', 'rule condition must be boolean, not numeric', 'numeric condition: LA031');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'numeric condition: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'tier', 'pool')$$,
                 'LA031', 'rule condition must be boolean, not text', 'text condition: LA031');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'text condition: rules unchanged');
SELECT throws_ok($$UPDATE allocation.rule SET condition = 'volume * 2' WHERE name = 'big'$$,
                 'LA031', 'rule condition must be boolean, not numeric', 'UPDATE to a numeric condition: LA031');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'UPDATE numeric condition: rules unchanged');

-- LA032: volatile
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'random() > 0.5', 'pool')$$,
                 'LA032', 'rule condition must not call volatile functions', 'random(): LA032');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'random(): rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'clock_timestamp() > now()', 'pool')$$,
                 'LA032', 'rule condition must not call volatile functions', 'clock_timestamp(): LA032');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'clock_timestamp(): rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'nextval(''tap03.seq'') > volume', 'pool')$$,
                 'LA032', 'rule condition must not call volatile functions', 'nextval(): LA032');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'nextval(): rules unchanged');
SELECT is((SELECT last_value FROM tap03.seq), 1::bigint, 'nextval() in a rejected condition was never executed (sequence untouched)');
SELECT is((SELECT is_called FROM tap03.seq), false, 'the sequence was never called');

-- LA033: subquery / aggregate / window / set-returning
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', '(SELECT true)', 'pool')$$,
                 'LA033', 'rule condition must not contain a subquery', 'scalar subquery: LA033');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'scalar subquery: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'EXISTS (SELECT 1 FROM allocation.rep)', 'pool')$$,
                 'LA033', 'rule condition must not contain a subquery', 'EXISTS: LA033');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'EXISTS: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'volume IN (SELECT 1)', 'pool')$$,
                 'LA033', 'rule condition must not contain a subquery', 'IN (subquery): LA033');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'IN subquery: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'count(*) > 1', 'pool')$$,
                 'LA033', 'rule condition must not contain aggregate or window functions', 'aggregate: LA033');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'aggregate: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'row_number() OVER () > 1', 'pool')$$,
                 'LA033', 'rule condition must not contain aggregate or window functions', 'window function: LA033');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'window function: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('x', 'tap03.managed', 'generate_series(1, 2) > 1', 'pool')$$,
                 'LA033', 'rule condition must not return a set', 'set-returning function: LA033');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'set-returning function: rules unchanged');

-- 23514: target CHECK constraints
SELECT throws_ok($$INSERT INTO allocation.rule (name, target_kind) VALUES ('x', 'rep')$$,
                 '23514', NULL, 'target rep without target_rep_id: 23514');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'rep without id: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, target_kind, target_rep_id, policy)
                   SELECT 'x', 'rep', id, 'least_loaded' FROM allocation.rep WHERE code = 'r1'$$,
                 '23514', NULL, 'target rep with a policy: 23514');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'rep with policy: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, target_kind, target_team_id)
                   SELECT 'x', 'team', id FROM allocation.team WHERE code = 'tm'$$,
                 '23514', NULL, 'target team without policy: 23514');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'team without policy: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, target_kind, policy) VALUES ('x', 'team', 'round_robin')$$,
                 '23514', NULL, 'target team without target_team_id: 23514');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'team without id: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, target_kind, target_team_id, target_rep_id, policy)
                   SELECT 'x', 'team', t.id, r.id, 'skill' FROM allocation.team t, allocation.rep r WHERE t.code = 'tm' AND r.code = 'r1'$$,
                 '23514', NULL, 'target team with a rep as well: 23514');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'team with rep: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, target_kind, policy) VALUES ('x', 'pool', 'least_loaded')$$,
                 '23514', NULL, 'target pool with a policy: 23514');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'pool with policy: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, target_kind, target_rep_id)
                   SELECT 'x', 'pool', id FROM allocation.rep WHERE code = 'r1'$$,
                 '23514', NULL, 'target pool with a rep: 23514');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'pool with rep: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, target_kind) VALUES ('x', 'person')$$,
                 '23514', NULL, 'unknown target_kind: 23514');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'unknown target_kind: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, target_kind, target_team_id, policy)
                   SELECT 'x', 'team', id, 'coin_flip' FROM allocation.team WHERE code = 'tm'$$,
                 '23514', NULL, 'unknown policy: 23514');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'unknown policy: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, mode, target_kind) VALUES ('x', 'sometimes', 'pool')$$,
                 '23514', NULL, 'unknown mode: 23514');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'unknown mode: rules unchanged');
SELECT throws_ok($$UPDATE allocation.rule SET policy = NULL WHERE name = 'big'$$,
                 '23514', NULL, 'UPDATE removing the policy of a team rule: 23514');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'UPDATE policy NULL: rules unchanged');

-- 23503: unknown rep / team / territory
SELECT throws_ok($$INSERT INTO allocation.rule (name, target_kind, target_rep_id) VALUES ('x', 'rep', 999999)$$,
                 '23503', NULL, 'unknown target rep: 23503');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'unknown rep: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, target_kind, target_team_id, policy) VALUES ('x', 'team', 999999, 'least_loaded')$$,
                 '23503', NULL, 'unknown target team: 23503');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'unknown team: rules unchanged');
SELECT throws_ok($$INSERT INTO allocation.rule (name, territory_id, target_kind) VALUES ('x', 999999, 'pool')$$,
                 '23503', NULL, 'unknown territory scope: 23503');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'unknown territory: rules unchanged');
SELECT throws_ok($$UPDATE allocation.rule SET target_team_id = 999999 WHERE name = 'big'$$,
                 '23503', NULL, 'UPDATE to an unknown team: 23503');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'UPDATE unknown team: rules unchanged');
SELECT throws_ok($$DELETE FROM allocation.team WHERE code = 'tm'$$,
                 '23503', NULL, 'deleting a team a rule targets: 23503');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'team delete refused: rules unchanged');

-- 23505: duplicate name; 22P02/42804 style errors are PostgreSQL's own
SELECT throws_ok($$INSERT INTO allocation.rule (name, target_kind) VALUES ('rest', 'pool')$$,
                 '23505', NULL, 'duplicate rule name: 23505');
SELECT is(pg_temp.rules_unchanged(), :'rules', 'duplicate name: rules unchanged');

-- a good rule is accepted and visible to the check (the check can fail)
SELECT lives_ok($$INSERT INTO allocation.rule (name, tbl, condition, target_kind) VALUES ('ok', 'tap03.managed', 'volume > 5 AND tier IS NOT NULL', 'pool')$$,
                'a valid condition is accepted');
SELECT isnt((SELECT s FROM rule_state), :'rules', 'the accepted rule changes the rule checksum');
SELECT ok((SELECT condition_bin IS NOT NULL FROM allocation.rule WHERE name = 'ok'), 'the accepted condition is compiled');
SELECT is(pg_temp.rules_unchanged(), (SELECT s FROM rule_state), 'rules_unchanged() reports the current state');
SELECT is((SELECT s FROM rule_state), :'rules', 'and heals back to the snapshot');

-------------------------------------------------------------------------------
-- grant_role: bad kind
-------------------------------------------------------------------------------
CREATE ROLE tap03_role NOLOGIN;
SELECT throws_ok($$SELECT allocation.grant_role('tap03_role', 'superuser')$$, '22023',
                 'unknown allocation role kind "superuser"', 'grant_role(bad kind): 22023');
SELECT throws_ok($$SELECT allocation.grant_role('tap03_role', 'Admin')$$, '22023',
                 'unknown allocation role kind "Admin"', 'grant_role(kind in capitals): 22023');
SELECT throws_ok($$SELECT allocation.grant_role('tap03_role', NULL)$$, '22023',
                 NULL, 'grant_role(NULL kind): 22023');
SELECT is(has_schema_privilege('tap03_role', 'allocation', 'USAGE'), false, 'bad kinds granted no USAGE on the schema');
SELECT is(has_table_privilege('tap03_role', 'allocation.rep', 'SELECT'), false, 'bad kinds granted no SELECT');
SELECT throws_ok($$SELECT allocation.grant_role('tap03_no_such_role', 'analyst')$$, '42704',
                 NULL, 'grant_role(unknown role): 42704');
SELECT lives_ok($$SELECT allocation.grant_role('tap03_role', 'analyst')$$, 'grant_role(analyst) works');
SELECT is(has_schema_privilege('tap03_role', 'allocation', 'USAGE'), true, 'analyst got USAGE (the check can fail)');
SELECT is(has_table_privilege('tap03_role', 'allocation.event', 'UPDATE'), false, 'analyst cannot UPDATE the audit log');

SELECT * FROM finish();
ROLLBACK;
