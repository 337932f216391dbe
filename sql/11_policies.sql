--
-- 11_policies: rule targets and team policies (least_loaded, weighted, skill,
-- territory_owner, round_robin), skipped candidates (inactive, at capacity,
-- exclusive territory), fall-through, pool rules and suggest mode.
--
CREATE EXTENSION allocation;
\pset null '(null)'
-- CONTEXT lines name line numbers inside the extension's functions: not part of the contract
\set SHOW_CONTEXT never

-- teams: sales > north > north_a, sales > south, sales > owners; rr, skill, weighted, outsiders stand alone
INSERT INTO allocation.team (id, code, name, parent_id) VALUES
    (1, 'sales',     'Sales',                NULL),
    (2, 'north',     'North',                1),
    (3, 'north_a',   'North, sub-team A',    2),
    (4, 'south',     'South',                1),
    (5, 'owners',    'Territory owners',     1),
    (6, 'rr',        'Round robin',          NULL),
    (7, 'skill',     'Crop specialists',     NULL),
    (8, 'weighted',  'Weighted',             NULL),
    (9, 'outsiders', 'Outsiders',            NULL);
INSERT INTO allocation.rep (id, code, name, team_id, capacity, crops, active) VALUES
    (1,  'n1',      'North one',       2, 10,   '{}',           true),
    (2,  'n2',      'North two',       2, 10,   '{}',           true),
    (3,  'na1',     'North A one',     3, 10,   '{}',           true),
    (4,  's1',      'South one',       4, 1,    '{}',           true),
    (5,  's2',      'South two',       4, 10,   '{}',           false),
    (6,  'rr1',     'Round robin 1',   6, NULL, '{}',           true),
    (7,  'rr2',     'Round robin 2',   6, NULL, '{}',           true),
    (8,  'rr3',     'Round robin 3',   6, NULL, '{}',           true),
    (9,  'sk_rice', 'Rice specialist', 7, 10,   '{rice}',       true),
    (10, 'sk_corn', 'Corn specialist', 7, 10,   '{wheat,corn}', true),
    (11, 'sk_none', 'No speciality',   7, 10,   '{}',           true),
    (12, 'o1',      'Owner one',       5, 10,   '{}',           true),
    (13, 'o2',      'Owner two',       5, 10,   '{}',           true),
    (14, 'x1',      'Outsider',        9, 10,   '{}',           true),
    (15, 'w1',      'Weighted, cap 10', 8, 10,  '{}',           true),
    (16, 'w2',      'Weighted, cap 4',  8, 4,   '{}',           true),
    (17, 'w3',      'Weighted, cap 5',  8, 5,   '{}',           true),
    (18, 'solo',    'Solo rep',        NULL, 1, '{}',           true);

SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "OWN_REP", "name": "Owned by o1"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "OWN_REP_CHILD", "name": "No owner, parent owned by o1", "parent": "OWN_REP"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[5,0],[5,5],[0,5],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "OWN_TEAM", "name": "Owned by team owners"},
   "geometry": {"type": "Polygon", "coordinates": [[[10,0],[20,0],[20,10],[10,10],[10,0]]]}},
  {"type": "Feature", "properties": {"code": "OWN_OUTSIDER", "name": "Owned by x1, not in sales"},
   "geometry": {"type": "Polygon", "coordinates": [[[20,0],[30,0],[30,10],[20,10],[20,0]]]}},
  {"type": "Feature", "properties": {"code": "NO_OWNER", "name": "Nobody owns this"},
   "geometry": {"type": "Polygon", "coordinates": [[[30,0],[40,0],[40,10],[30,10],[30,0]]]}},
  {"type": "Feature", "properties": {"code": "EXCL", "name": "Exclusive to n2"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,20],[10,20],[10,30],[0,30],[0,20]]]}},
  {"type": "Feature", "properties": {"code": "EXCL_TEAM", "name": "Exclusive to team north_a"},
   "geometry": {"type": "Polygon", "coordinates": [[[10,20],[20,20],[20,30],[10,30],[10,20]]]}}
]}'::jsonb, 'code', 'name', 'parent');
UPDATE allocation.territory SET owner_rep_id = 12 WHERE code = 'OWN_REP';
UPDATE allocation.territory SET priority = 1 WHERE code = 'OWN_REP_CHILD';
UPDATE allocation.territory SET owner_team_id = 5 WHERE code = 'OWN_TEAM';
UPDATE allocation.territory SET owner_rep_id = 14 WHERE code = 'OWN_OUTSIDER';
UPDATE allocation.territory SET owner_rep_id = 2, exclusive = true WHERE code = 'EXCL';
UPDATE allocation.territory SET owner_team_id = 3, exclusive = true WHERE code = 'EXCL_TEAM';
SELECT t.id, t.code, p.code AS parent, t.priority, r.code AS owner_rep, tm.code AS owner_team, t.exclusive
  FROM allocation.territory t
  LEFT JOIN allocation.territory p ON p.id = t.parent_id
  LEFT JOIN allocation.rep r ON r.id = t.owner_rep_id
  LEFT JOIN allocation.team tm ON tm.id = t.owner_team_id
 ORDER BY t.id;

CREATE TABLE r11_customer (
    id     integer PRIMARY KEY,
    name   text,
    crop   text,
    loc    geometry(Point, 4326),
    owner  bigint
);
SELECT allocation.manage('r11_customer', 'id', 'loc', 'owner', '{"crop": "crop"}');

CREATE VIEW r11_result AS
SELECT c.id, c.name, r.code AS owner, a.source, ru.name AS rule, a.reason
  FROM r11_customer c
  LEFT JOIN allocation.rep r ON r.id = c.owner
  LEFT JOIN allocation.assignment a ON a.key = c.id::text AND a.valid_to IS NULL
       AND a.managed_id = (SELECT id FROM allocation.managed_table WHERE tbl = 'r11_customer'::regclass)
  LEFT JOIN allocation.rule ru ON ru.id = a.rule_id;
CREATE VIEW r11_load AS
SELECT r.code, r.team_id, r.capacity, r.active, l.held
  FROM allocation.rep r JOIN allocation.rep_load l ON l.rep_id = r.id;

-------------------------------------------------------------------------------
-- Target rep
-------------------------------------------------------------------------------
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id) VALUES ('to_solo', 10, 'rep', 18);
INSERT INTO r11_customer (id, name) VALUES (1, 'goes to solo');
-- solo (capacity 1) is now full: the rule falls through, nothing else matches
INSERT INTO r11_customer (id, name) VALUES (2, 'solo is full');
SELECT * FROM r11_result ORDER BY id;
SELECT * FROM r11_load WHERE code = 'solo';
UPDATE allocation.rule SET enabled = false;

-------------------------------------------------------------------------------
-- Team + least_loaded: held ASC, then id; sub-team members are candidates;
-- inactive reps and reps at capacity are skipped
-------------------------------------------------------------------------------
-- preload holdings with owners given by hand: n1 2, n2 1, na1 1, s1 1 (s1 is now full)
INSERT INTO r11_customer (id, name, owner) VALUES
    (901, 'preload n1', 1), (902, 'preload n1', 1), (903, 'preload n2', 2), (904, 'preload na1', 3);
INSERT INTO r11_customer (id, name, owner) VALUES (905, 'preload s1', 4);
SELECT * FROM r11_load WHERE team_id IN (2, 3, 4) ORDER BY code;

INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES ('north_ll', 10, 'team', 2, 'least_loaded');
-- n2 and na1 both hold 1: tie broken by id -> n2
INSERT INTO r11_customer (id, name) VALUES (10, 'least loaded: n2 (tie with na1, lower id)');
-- now n1 2, n2 2, na1 1 -> na1, a member of the sub-team
INSERT INTO r11_customer (id, name) VALUES (11, 'least loaded: na1 (sub-team)');
-- all hold 2 -> n1 (lowest id)
INSERT INTO r11_customer (id, name) VALUES (12, 'least loaded: n1 (all equal)');
SELECT * FROM r11_result WHERE id BETWEEN 10 AND 19 ORDER BY id;
SELECT * FROM r11_load WHERE team_id IN (2, 3) ORDER BY code;

-- the whole sales tree, least loaded: s2 (inactive, 0 held) and s1 (full) are skipped
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES ('sales_ll', 20, 'team', 1, 'least_loaded');
INSERT INTO r11_customer (id, name) VALUES (13, 'sales tree: o1 (0 held, lowest id of the empty ones)');
INSERT INTO r11_customer (id, name) VALUES (14, 'sales tree: o2');
INSERT INTO r11_customer (id, name) VALUES (15, 'sales tree: o1 (o1 and o2 hold 1, lower id)');
SELECT * FROM r11_result WHERE id BETWEEN 13 AND 15 ORDER BY id;
SELECT * FROM r11_load WHERE team_id IN (2, 3, 4, 5) ORDER BY code;
UPDATE allocation.rule SET enabled = false;

-- one multi-row statement spreads the load like single rows do (see bugs/bench.md B1)
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES ('owners_ll', 10, 'team', 5, 'least_loaded');
INSERT INTO r11_customer (id, name) SELECT g, 'multi-row least loaded' FROM generate_series(16, 19) g;
SELECT * FROM r11_result WHERE id BETWEEN 16 AND 19 ORDER BY id;
SELECT * FROM r11_load WHERE team_id = 5 ORDER BY code;
-- (give those slots back so the rest of the test does not depend on this one)
DELETE FROM r11_customer WHERE id BETWEEN 16 AND 19;
SELECT * FROM r11_load WHERE team_id = 5 ORDER BY code;
UPDATE allocation.rule SET enabled = false;

-------------------------------------------------------------------------------
-- Weighted: held / capacity ASC, then id
-------------------------------------------------------------------------------
-- preload: w1 5/10 = 0.5, w2 1/4 = 0.25, w3 2/5 = 0.4
INSERT INTO r11_customer (id, name, owner) SELECT 910 + g, 'preload w1', 15 FROM generate_series(1, 5) g;
INSERT INTO r11_customer (id, name, owner) VALUES (920, 'preload w2', 16), (921, 'preload w3', 17), (922, 'preload w3', 17);
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES ('weighted', 10, 'team', 8, 'weighted');
INSERT INTO r11_customer (id, name) VALUES (20, 'weighted: w2 (0.25)');        -- w2 -> 2/4 = 0.5
INSERT INTO r11_customer (id, name) VALUES (21, 'weighted: w3 (0.4)');         -- w3 -> 3/5 = 0.6
INSERT INTO r11_customer (id, name) VALUES (22, 'weighted: w1 (0.5, tie with w2, lower id)');  -- w1 -> 6/10
INSERT INTO r11_customer (id, name) VALUES (23, 'weighted: w2 (0.5)');         -- w2 -> 3/4
INSERT INTO r11_customer (id, name) VALUES (24, 'weighted: w1 (0.6, tie with w3, lower id)');
SELECT * FROM r11_result WHERE id BETWEEN 20 AND 29 ORDER BY id;
SELECT * FROM r11_load WHERE team_id = 8 ORDER BY code;
UPDATE allocation.rule SET enabled = false;

-------------------------------------------------------------------------------
-- Skill: only reps whose crops contain the customer's crop, least loaded among them
-------------------------------------------------------------------------------
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES ('skill', 10, 'team', 7, 'skill');
INSERT INTO r11_customer (id, name, crop) VALUES (30, 'corn -> sk_corn', 'corn');
INSERT INTO r11_customer (id, name, crop) VALUES (31, 'wheat -> sk_corn', 'wheat');
INSERT INTO r11_customer (id, name, crop) VALUES (32, 'rice -> sk_rice', 'rice');
INSERT INTO r11_customer (id, name, crop) VALUES (33, 'soy: nobody has the skill', 'soy');
INSERT INTO r11_customer (id, name, crop) VALUES (34, 'no crop: nobody has the skill', NULL);
SELECT * FROM r11_result WHERE id BETWEEN 30 AND 39 ORDER BY id;
SELECT * FROM r11_load WHERE team_id = 7 ORDER BY code;
UPDATE allocation.rule SET enabled = false;

-------------------------------------------------------------------------------
-- Territory owner
-------------------------------------------------------------------------------
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES ('terr_owner', 10, 'team', 1, 'territory_owner');
INSERT INTO r11_customer (id, name, loc) VALUES (40, 'in OWN_REP -> o1', 'SRID=4326;POINT(7 7)');
INSERT INTO r11_customer (id, name, loc) VALUES (41, 'in OWN_REP_CHILD (no owner) -> parent owner o1', 'SRID=4326;POINT(2 2)');
-- owner team: its reps, least loaded (o1 holds more than o2 now)
INSERT INTO r11_customer (id, name, loc) VALUES (42, 'in OWN_TEAM -> least loaded of o1, o2', 'SRID=4326;POINT(15 5)');
INSERT INTO r11_customer (id, name, loc) VALUES (43, 'in OWN_OUTSIDER: x1 is not in sales', 'SRID=4326;POINT(25 5)');
INSERT INTO r11_customer (id, name, loc) VALUES (44, 'in NO_OWNER', 'SRID=4326;POINT(35 5)');
INSERT INTO r11_customer (id, name, loc) VALUES (45, 'outside every territory', 'SRID=4326;POINT(80 80)');
INSERT INTO r11_customer (id, name, loc) VALUES (46, 'no location', NULL);
SELECT * FROM r11_result WHERE id BETWEEN 40 AND 49 ORDER BY id;
SELECT * FROM r11_load WHERE team_id IN (5, 9) ORDER BY code;
-- a territory-owner rule whose team does contain x1
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES ('terr_owner_outsiders', 5, 'team', 9, 'territory_owner');
INSERT INTO r11_customer (id, name, loc) VALUES (47, 'in OWN_OUTSIDER: falls through to terr_owner_outsiders', 'SRID=4326;POINT(25 5)');
SELECT * FROM r11_result WHERE id = 47;
UPDATE allocation.rule SET enabled = false;

-------------------------------------------------------------------------------
-- Round robin: order over several inserts, cursor persisted across sessions
-------------------------------------------------------------------------------
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES ('rr', 10, 'team', 6, 'round_robin');
SELECT * FROM allocation.rr_cursor ORDER BY team_id;
INSERT INTO r11_customer (id, name) VALUES (50, 'rr first');
INSERT INTO r11_customer (id, name) VALUES (51, 'rr second');
INSERT INTO r11_customer (id, name) VALUES (52, 'rr third');
INSERT INTO r11_customer (id, name) VALUES (53, 'rr fourth (wraps)');
SELECT * FROM r11_result WHERE id BETWEEN 50 AND 59 ORDER BY id;
SELECT * FROM allocation.rr_cursor ORDER BY team_id;
-- a new session continues where the cursor stands
\c -
\pset null '(null)'
INSERT INTO r11_customer (id, name) VALUES (54, 'rr fifth, after reconnect');
SELECT * FROM r11_result WHERE id BETWEEN 54 AND 54 ORDER BY id;
SELECT * FROM allocation.rr_cursor ORDER BY team_id;
-- several rows in one statement keep rotating
INSERT INTO r11_customer (id, name) VALUES (55, 'rr multi 1'), (56, 'rr multi 2'), (57, 'rr multi 3');
SELECT * FROM r11_result WHERE id BETWEEN 55 AND 57 ORDER BY id;
SELECT * FROM allocation.rr_cursor ORDER BY team_id;
-- the rotation skips a rep that cannot take the customer and goes on with the next one:
-- last assigned rr2 -> rr3; then rr1 (inactive) is skipped -> rr2; then rr3
UPDATE allocation.rep SET active = false WHERE code = 'rr1';
INSERT INTO r11_customer (id, name) VALUES (58, 'rr: after rr2 comes rr3');
INSERT INTO r11_customer (id, name) VALUES (59, 'rr: rr1 inactive, after rr3 comes rr2');
INSERT INTO r11_customer (id, name) VALUES (60, 'rr: then rr3 again');
SELECT * FROM r11_result WHERE id BETWEEN 58 AND 60 ORDER BY id;
UPDATE allocation.rep SET active = true WHERE code = 'rr1';
SELECT * FROM r11_load WHERE team_id = 6 ORDER BY code;
UPDATE allocation.rule SET enabled = false;

-------------------------------------------------------------------------------
-- Exclusive territories
-------------------------------------------------------------------------------
-- north least loaded: n1 is the least loaded, but EXCL belongs to n2 only, EXCL_TEAM to north_a only
UPDATE allocation.rule SET enabled = true WHERE name = 'north_ll';
SELECT * FROM r11_load WHERE team_id IN (2, 3) ORDER BY code;
INSERT INTO r11_customer (id, name, loc) VALUES (61, 'in EXCL -> n2 (others barred)', 'SRID=4326;POINT(5 25)');
INSERT INTO r11_customer (id, name, loc) VALUES (62, 'in EXCL_TEAM -> na1 (member of the owner team)', 'SRID=4326;POINT(15 25)');
INSERT INTO r11_customer (id, name, loc) VALUES (63, 'outside: least loaded as usual', 'SRID=4326;POINT(80 80)');
SELECT * FROM r11_result WHERE id BETWEEN 61 AND 63 ORDER BY id;
-- a rule whose only candidates are barred falls through
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id) VALUES ('to_o1', 100, 'rep', 12);
INSERT INTO r11_customer (id, name, loc) VALUES (64, 'in EXCL: to_o1 barred, north_ll -> n2', 'SRID=4326;POINT(5 25)');
SELECT * FROM r11_result WHERE id = 64;
-- an owner given by hand must respect exclusivity too
INSERT INTO r11_customer (id, name, loc, owner) VALUES (65, 'manual non-owner in EXCL', 'SRID=4326;POINT(5 25)', 1);
\echo :SQLSTATE
INSERT INTO r11_customer (id, name, loc, owner) VALUES (65, 'manual non-member in EXCL_TEAM', 'SRID=4326;POINT(15 25)', 2);
\echo :SQLSTATE
INSERT INTO r11_customer (id, name, loc, owner) VALUES (65, 'manual owner in EXCL', 'SRID=4326;POINT(5 25)', 2);
INSERT INTO r11_customer (id, name, loc, owner) VALUES (66, 'manual member in EXCL_TEAM', 'SRID=4326;POINT(15 25)', 3);
SELECT * FROM r11_result WHERE id IN (65, 66) ORDER BY id;
UPDATE allocation.rule SET enabled = false;

-------------------------------------------------------------------------------
-- Fall-through, pool rule, nothing matches
-------------------------------------------------------------------------------
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, crops) VALUES ('ft_solo', 30, 'rep', 18, '{rice,corn}');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy, crops) VALUES ('ft_south', 20, 'team', 4, 'least_loaded', '{rice,corn}');
INSERT INTO allocation.rule (name, priority, target_kind, crops) VALUES ('ft_pool_rice', 10, 'pool', '{rice}');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy, crops) VALUES ('ft_weighted', 5, 'team', 8, 'weighted', '{rice,corn,soy}');
-- solo full, south: s1 full and s2 inactive -> rice: the pool rule
INSERT INTO r11_customer (id, name, crop) VALUES (70, 'rice: falls through solo and south to the pool rule', 'rice');
-- corn: the pool rule does not match -> weighted team
INSERT INTO r11_customer (id, name, crop) VALUES (71, 'corn: falls through to ft_weighted', 'corn');
-- no rule matches at all
INSERT INTO r11_customer (id, name, crop) VALUES (72, 'wheat: nothing matches', 'wheat');
SELECT * FROM r11_result WHERE id BETWEEN 70 AND 79 ORDER BY id;
-- every matching rule falls through
UPDATE allocation.rule SET enabled = false WHERE name = 'ft_weighted';
INSERT INTO r11_customer (id, name, crop) VALUES (73, 'corn: every matching rule falls through', 'corn');
SELECT * FROM r11_result WHERE id = 73;
SELECT key, territory_code, reason FROM allocation.pool WHERE table_name = 'public.r11_customer' ORDER BY key::int;
UPDATE allocation.rule SET enabled = false;

-------------------------------------------------------------------------------
-- Suggest mode: the owner stays NULL, a pending suggestion names the rep
-------------------------------------------------------------------------------
INSERT INTO allocation.rule (name, priority, mode, target_kind, target_team_id, policy) VALUES ('suggest_owners', 10, 'suggest', 'team', 5, 'least_loaded');
SELECT * FROM r11_load WHERE team_id = 5 ORDER BY code;
INSERT INTO r11_customer (id, name) VALUES (80, 'suggested');
INSERT INTO r11_customer (id, name) VALUES (81, 'suggested too');
SELECT * FROM r11_result WHERE id BETWEEN 80 AND 81 ORDER BY id;
-- no slot is taken by a suggestion
SELECT * FROM r11_load WHERE team_id = 5 ORDER BY code;
SELECT key, rep_code, rule_name, reason FROM allocation.pending_suggestion ORDER BY key;
SELECT kind, key, from_rep, to_rep, rule_id, reason FROM allocation.event WHERE kind = 'suggest' ORDER BY id;
UPDATE allocation.rule SET enabled = false;

SELECT * FROM allocation.check_consistency();

DROP VIEW r11_result, r11_load;
DROP TABLE r11_customer;
DROP EXTENSION allocation CASCADE;
