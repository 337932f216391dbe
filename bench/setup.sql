-- bench/setup.sql: loads the generated data (bench/generate.sql) into the extension's
-- configuration and creates the three customer tables the benchmark inserts into:
--
--   bench.customer_plain  no trigger at all                          (baseline)
--   bench.customer_m      managed by the extension                   (allocation.manage)
--   bench.customer_ref    BEFORE INSERT trigger ref.assign_customer  (bench/reference.sql)
--   bench.customer_d      managed, with duplicate detection (exact: warn)
--   bench.customer_lean   BEFORE INSERT trigger lean.assign_customer (bench/reference_lean.sql)
--   bench.customer_plain_ix  plain, with a CRM's usual indexes: GiST(loc), btree(owner), btree(name)
--   bench.customer_mi     managed, the same indexes
--
-- Needs: CREATE EXTENSION allocation CASCADE; bench/generate.sql; then this file; then
-- bench/reference.sql (which copies the configuration loaded here into schema ref) and
-- bench/reference_lean.sql (which cuts the territories loaded here into pieces).
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

-------------------------------------------------------------------------------
-- Organisation and territories (explicit ids from the generator)
-------------------------------------------------------------------------------
INSERT INTO allocation.team (id, code, name, parent_id)
SELECT id, code, name, parent_id FROM bench.g_team ORDER BY id;
INSERT INTO allocation.rep (id, code, name, team_id, capacity, active)
SELECT id, code, name, team_id, capacity, active FROM bench.g_rep ORDER BY id;
INSERT INTO allocation.territory (id, code, name, parent_id, geom, owner_rep_id, owner_team_id, exclusive, priority)
SELECT id, gkey, kind || ' ' || gkey, parent_id, geom, owner_rep_id, owner_team_id, exclusive, priority
  FROM bench.g_territory ORDER BY id;
SELECT setval(pg_get_serial_sequence('allocation.team', 'id'), (SELECT max(id) FROM allocation.team));
SELECT setval(pg_get_serial_sequence('allocation.rep', 'id'), (SELECT max(id) FROM allocation.rep));
SELECT setval(pg_get_serial_sequence('allocation.territory', 'id'), (SELECT max(id) FROM allocation.territory));

-------------------------------------------------------------------------------
-- Customer tables: identical columns, primary key only
-------------------------------------------------------------------------------
CREATE TABLE bench.customer_plain (
    id             bigint PRIMARY KEY,
    name           text NOT NULL,
    tier           text,
    business_type  text,
    crop           text,
    tags           text[],
    annual_volume  numeric(14, 2),
    is_cooperative boolean NOT NULL DEFAULT false,
    phone          text,
    loc            geometry(Point, 4326),
    owner          bigint,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE bench.customer_m (LIKE bench.customer_plain INCLUDING ALL);
CREATE TABLE bench.customer_ref (LIKE bench.customer_plain INCLUDING ALL);
-- customer_m again, with duplicate detection: every insert registers the customer's
-- normalized name and phone and checks that nobody else holds the phone
CREATE TABLE bench.customer_d (LIKE bench.customer_plain INCLUDING ALL);
-- the lean PL/pgSQL reference's table (trigger in bench/reference_lean.sql)
CREATE TABLE bench.customer_lean (LIKE bench.customer_plain INCLUDING ALL);
-- a CRM's usual indexes: where customers are, whose they are, find by name
CREATE TABLE bench.customer_plain_ix (LIKE bench.customer_plain INCLUDING ALL);
CREATE INDEX customer_plain_ix_loc_idx ON bench.customer_plain_ix USING gist (loc);
CREATE INDEX customer_plain_ix_owner_idx ON bench.customer_plain_ix (owner);
CREATE INDEX customer_plain_ix_name_idx ON bench.customer_plain_ix (name);
CREATE TABLE bench.customer_mi (LIKE bench.customer_plain_ix INCLUDING ALL);

SELECT allocation.manage('bench.customer_m', 'id', 'loc', 'owner',
                         '{"tier": "tier", "crop": "crop", "business_type": "business_type",
                           "tags": "tags", "name": "name", "phone": "phone"}');
SELECT allocation.manage('bench.customer_d', 'id', 'loc', 'owner',
                         '{"tier": "tier", "crop": "crop", "business_type": "business_type",
                           "tags": "tags", "name": "name", "phone": "phone"}');
SELECT allocation.set_duplicate_policy('bench.customer_d', exact => 'warn');
SELECT allocation.manage('bench.customer_mi', 'id', 'loc', 'owner',
                         '{"tier": "tier", "crop": "crop", "business_type": "business_type",
                           "tags": "tags", "name": "name", "phone": "phone"}');

-------------------------------------------------------------------------------
-- The bench rule set: every rule can be mirrored exactly in PL/pgSQL
-- (bench/reference.sql hard-codes the same chain).  Evaluation order is
-- priority DESC, id ASC; the insertion order below differs on purpose.
-------------------------------------------------------------------------------
-- priority 70, inserted first (lower id): rice growers -> rice specialist 129
INSERT INTO allocation.rule (name, priority, crops, tiers, target_kind, target_rep_id)
VALUES ('rice-growers', 70, '{rice}', '{grower}', 'rep', 129);
-- priority 100: key distributors -> key-account team, least loaded (2,000 slots, ~4,000 asks)
INSERT INTO allocation.rule (name, priority, tiers, target_kind, target_team_id, policy)
VALUES ('key-accounts', 100, '{key_distributor}', 'team', 1, 'least_loaded');
-- priority 90: one SQL condition -> the large growers desk (one rep, capacity 3,000)
INSERT INTO allocation.rule (name, priority, tbl, condition, target_kind, target_rep_id)
VALUES ('big-growers', 90, 'bench.customer_m', 'annual_volume > 500000 AND NOT is_cooperative', 'rep', 135);
-- priority 80: disputed / blacklisted customers -> pool
INSERT INTO allocation.rule (name, priority, tags, target_kind)
VALUES ('blocked', 80, '{dispute,blacklisted}', 'pool');
-- priority 70, higher id: rice retailers/growers inside region R10 (incl. descendants) -> rice team
INSERT INTO allocation.rule (name, priority, crops, business_types, territory_id, target_kind, target_team_id, policy)
VALUES ('rice-south', 70, '{rice}', '{retailer,grower}', (SELECT id FROM allocation.territory WHERE code = 'R10'),
        'team', 7, 'least_loaded');
-- priority 50: the owner of the winning territory (or nearest owned ancestor), within field sales
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
VALUES ('territory-owner', 50, 'team', 2, 'territory_owner');
-- priority 10: dealers and retailers nobody took -> east field team, least loaded
INSERT INTO allocation.rule (name, priority, business_types, target_kind, target_team_id, policy)
VALUES ('overflow-east', 10, '{dealer,retailer}', 'team', 5, 'least_loaded');
-- never applies to customer_m: disabled, or bound to another table
INSERT INTO allocation.rule (name, priority, enabled, target_kind) VALUES ('disabled-pool', 200, false, 'pool');
INSERT INTO allocation.rule (name, priority, tbl, target_kind) VALUES ('plain-only', 150, 'bench.customer_plain', 'pool');
-- big-growers for customer_d, inserted last so the other rules keep their ids;
-- (a SQL condition is compiled against one table)
INSERT INTO allocation.rule (name, priority, tbl, condition, target_kind, target_rep_id)
VALUES ('big-growers-d', 90, 'bench.customer_d', 'annual_volume > 500000 AND NOT is_cooperative', 'rep', 135);
INSERT INTO allocation.rule (name, priority, tbl, condition, target_kind, target_rep_id)
VALUES ('big-growers-i', 90, 'bench.customer_mi', 'annual_volume > 500000 AND NOT is_cooperative', 'rep', 135);

-- single-row inserts (pgbench, cold/warm) take keys from here, far above the generated ones
CREATE SEQUENCE bench.single_id START 900000000;

-- results of this run
CREATE TABLE bench.result (
    step   text NOT NULL,
    run    int NOT NULL,
    ms     float8 NOT NULL,
    rows   bigint,
    at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

ANALYZE allocation.territory, allocation.rep, allocation.rep_load, allocation.team, allocation.rule;
