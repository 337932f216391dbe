--
-- 30_outcomes: outcomes read from the CRM's own tables (manage_outcomes()):
-- follow-ups, deals (split as of their time, frozen; a virtual team's split),
-- satisfaction answers; attribution to the holder at the row's time;
-- INSERT, UPDATE, DELETE and TRUNCATE of outcome rows kept in step; every bad
-- mapping with its SQLSTATE changing nothing; unmanage_outcomes(); drops.
-- Customer potential (set_potential(), _potentials(), customer_potential()):
-- by column and by expression, evaluated as the customer table's owner only.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

DO $$
BEGIN
    CREATE ROLE regress_o30_owner;
    CREATE ROLE regress_o30_other;
    CREATE ROLE regress_o30_mgr;
    CREATE ROLE regress_o30_a;
END $$;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'ka', 'Key accounts'), (2, 'county', 'County sales');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login) VALUES
    (1, 'a', 'Key account rep', 1, 100, 'regress_o30_a'),
    (2, 'b', 'County rep', 2, 100, NULL),
    (3, 'c', 'Crop specialist', 2, 100, NULL);
SELECT allocation.grant_role('regress_o30_owner', 'admin'), allocation.grant_role('regress_o30_other', 'admin'),
       allocation.grant_role('regress_o30_mgr', 'manager'), allocation.grant_role('regress_o30_a', 'rep');
-- what grant_role() grants for this feature (explicit here so the test reads on its own)
GRANT EXECUTE ON FUNCTION allocation.manage_outcomes(regclass, text, name, jsonb), allocation.unmanage_outcomes(regclass),
      allocation.set_potential(regclass, text, jsonb)
   TO regress_o30_owner, regress_o30_other;
GRANT EXECUTE ON FUNCTION allocation.customer_potential(regclass, text)
   TO regress_o30_owner, regress_o30_other, regress_o30_mgr, regress_o30_a;
GRANT EXECUTE ON FUNCTION allocation.create_virtual_team(text, text, tstzrange, jsonb, regclass, text[]) TO regress_o30_mgr;
GRANT CREATE ON SCHEMA public TO regress_o30_owner, regress_o30_other;

SET ROLE regress_o30_owner;
CREATE TABLE o30_customer (id integer PRIMARY KEY, name text, expected_volume numeric, hectares integer,
                           loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('o30_customer', 'id', 'loc', 'owner');
INSERT INTO o30_customer (id, name, expected_volume, hectares, owner) VALUES
    (1, 'provincial distributor', 900000, 10, 1), (2, 'county dealer', 150000, 300, 2),
    (3, 'township retailer', 20000, 50, 2), (4, 'large grower', NULL, 800, 3);
INSERT INTO o30_customer (id, name, expected_volume) VALUES (99, 'in the pool', 1000);
-- the CRM's own tables
CREATE TABLE o30_visit (id serial PRIMARY KEY, customer_id integer, visited_at timestamptz, rep integer,
                        channel text, note text, other_column text);
CREATE TABLE o30_order (order_no text PRIMARY KEY, customer_id bigint, ordered_at timestamp, amount numeric(12,2),
                        product text, rep bigint);
CREATE TABLE o30_survey (id bigint PRIMARY KEY, customer_id integer, answered timestamp, score integer, nps integer);
RESET ROLE;

CREATE FUNCTION o30_try(sql text) RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE sql;
    code := '00000';
    RETURN NEXT;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN NEXT;
END $f$;
GRANT EXECUTE ON FUNCTION o30_try(text) TO PUBLIC;
-- what is stored, to prove a refused step changes nothing
CREATE VIEW o30_stored AS
SELECT (SELECT count(*) FROM allocation.outcome_source) AS sources,
       (SELECT count(*) FROM allocation.outcome_source WHERE active) AS active_sources,
       (SELECT count(*) FROM allocation.followup) AS followups,
       (SELECT count(*) FROM allocation.deal) AS deals,
       (SELECT count(*) FROM allocation.deal_split) AS split_lines,
       (SELECT count(*) FROM allocation.satisfaction) AS answers,
       (SELECT count(*) FROM allocation.potential) AS potentials,
       (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'zz_allocation_outcome%') AS triggers,
       (SELECT count(*) FROM allocation.event) AS events;
GRANT SELECT ON o30_stored TO PUBLIC;
CREATE VIEW o30_followups AS
SELECT f.key, r.code AS rep, f.kind, f.outcome, f.note, f.progress, f.source_ref, f.recorded_by
  FROM allocation.followup f LEFT JOIN allocation.rep r ON r.id = f.rep_id ORDER BY f.source_ref::integer, f.id;
CREATE VIEW o30_deals AS
SELECT d.ref, d.key, d.amount, d.source, d.team_id IS NOT NULL AS team, d.recorded_by,
       (SELECT string_agg(coalesce(r.code, '(pool)') || ' ' || s.share || '% ' || s.amount, ', ' ORDER BY s.rep_id NULLS LAST)
          FROM allocation.deal_split s LEFT JOIN allocation.rep r ON r.id = s.rep_id WHERE s.deal_id = d.id) AS split
  FROM allocation.deal d ORDER BY d.ref;

-------------------------------------------------------------------------------
-- Follow-ups: the visit table, with rows already there
-------------------------------------------------------------------------------
SELECT clock_timestamp() AS t_start \gset
INSERT INTO o30_visit (customer_id, visited_at, rep, channel, note) VALUES
    (1, :'t_start', 1, 'Visit', 'first visit'),         -- by the holder
    (2, :'t_start', 1, 'WeChat video', NULL),           -- rep 1 does not hold 2: credited to the holder b
    (3, NULL, 2, 'visit', 'planned'),                   -- no time yet: not an outcome
    (NULL, :'t_start', 2, 'call', 'no customer');       -- no customer: not an outcome
SET ROLE regress_o30_owner;
SELECT allocation.manage_outcomes('o30_visit', 'followup', 'customer_id',
                                  '{"at": "visited_at", "rep": "rep", "channel": "channel", "note": "note"}') > 0 AS attached;
RESET ROLE;
SELECT * FROM o30_followups;
SELECT table_name, kind, customer_key_column, columns, trigger_columns, scale, active, managed_by FROM allocation.outcome_source;
SELECT kind, table_name, reason, detail - 'outcome_source' AS detail FROM allocation.event WHERE kind = 'outcomes_managed';

-- the planned visit happens: it lands; the channel is mapped (unknown -> other, the original kept)
UPDATE o30_visit SET visited_at = clock_timestamp() WHERE id = 3;
INSERT INTO o30_visit (customer_id, visited_at, rep, channel) VALUES (4, clock_timestamp(), NULL, 'DEMO'), (99, clock_timestamp(), 2, NULL);
SELECT * FROM o30_followups;
-- an UPDATE of a column the engine does not map changes nothing landed
SELECT count(*) AS followups_before FROM allocation.followup \gset
UPDATE o30_visit SET other_column = 'x';
SELECT count(*) = :followups_before AS unchanged, max(id) AS max_id FROM allocation.followup;
-- a mapped change replaces the landed row; DELETE removes it
UPDATE o30_visit SET channel = 'meeting', note = 'meeting after all' WHERE id = 1;
DELETE FROM o30_visit WHERE id = 2;
SELECT * FROM o30_followups;
-- a row naming a customer the engine does not know is refused: nothing changes
SELECT * FROM o30_stored \gset before_
SELECT * FROM o30_try($$INSERT INTO o30_visit (customer_id, visited_at, channel) VALUES (12345, now(), 'visit')$$);
SELECT * FROM o30_try($$UPDATE o30_visit SET customer_id = 12345 WHERE id = 1$$);
SELECT (SELECT row(s.*)::text FROM o30_stored s) = row(:before_sources, :before_active_sources, :before_followups, :before_deals,
        :before_split_lines, :before_answers, :before_potentials, :before_triggers, :before_events)::text AS nothing_changed;
-- follow-ups read from the table reset the recycle clock like log_followup()'s (same table)
SELECT key, max(at) IS NOT NULL AS touched FROM allocation.followup GROUP BY key ORDER BY key;

-------------------------------------------------------------------------------
-- Attribution to the holder at the row's time
-------------------------------------------------------------------------------
SELECT clock_timestamp() AS t_before_change \gset
UPDATE o30_customer SET owner = 3 WHERE id = 3;        -- customer 3 moves from b to c
INSERT INTO o30_visit (customer_id, visited_at, channel, note) VALUES
    (3, :'t_before_change', 'call', 'dated before the change'),   -- credited to b, who held it then
    (3, clock_timestamp(), 'call', 'after the change');           -- credited to c
SELECT * FROM o30_followups WHERE key = '3';

-------------------------------------------------------------------------------
-- Deals: the order table, the split of the holder or of a virtual team
-------------------------------------------------------------------------------
SET ROLE regress_o30_mgr;
SELECT allocation.create_virtual_team('Provincial program', 'annual program', tstzrange(now(), NULL),
           '[{"rep_id": 1, "share": 60}, {"rep_id": 2, "share": 40}]', 'o30_customer', ARRAY['1']) > 0 AS team_formed;
RESET ROLE;
INSERT INTO o30_order VALUES ('SO-1', 1, clock_timestamp()::timestamp, 1000.01, 'glyphosate 41%', 1);
SET ROLE regress_o30_owner;
SELECT allocation.manage_outcomes('o30_order', 'deal', 'customer_id',
                                  '{"customers": "o30_customer", "at": "ordered_at", "amount": "amount",
                                    "product": "product", "rep": "rep"}') > 0 AS attached;
RESET ROLE;
INSERT INTO o30_order VALUES ('SO-2', 2, now()::timestamp, 250.00, 'paraquat', 2),
                             ('SO-3', 99, now()::timestamp, 80.00, NULL, NULL),
                             ('SO-4', 3, now()::timestamp, NULL, 'draft', NULL);   -- no amount yet: not landed
SELECT * FROM o30_deals;
SELECT kind, key, reason, detail->'split' AS split, detail->>'product' AS product, detail->>'rep' AS rep
  FROM allocation.event WHERE kind = 'deal_recorded' ORDER BY id;
-- the split is frozen: a later share change does not rewrite it, nor does an UPDATE of the product
UPDATE o30_order SET product = 'glyphosate 62%' WHERE order_no = 'SO-1';
SELECT * FROM o30_deals WHERE ref = 'SO-1';
-- the draft gets its amount: it lands; a cancelled order (DELETE) is removed with a deal_removed event
UPDATE o30_order SET amount = 120.50 WHERE order_no = 'SO-4';
DELETE FROM o30_order WHERE order_no = 'SO-3';
-- an amount change re-records the deal (split as of its time)
UPDATE o30_order SET amount = 300.00 WHERE order_no = 'SO-2';
SELECT * FROM o30_deals;
SELECT kind, key, reason, coalesce(detail->>'ref', reason) AS ref, detail->>'amount' AS amount FROM allocation.event
 WHERE kind IN ('deal_removed', 'deal_recorded') ORDER BY id;
-- amounts as record_deal() checks them; a future deal; a REPEATABLE READ transaction
SELECT * FROM o30_stored \gset before_
SELECT * FROM o30_try($$INSERT INTO o30_order VALUES ('SO-9', 2, now()::timestamp, -5, NULL, NULL)$$);
-- (a future deal: refused for the table's owner; only a superuser may date one ahead, to simulate)
SET ROLE regress_o30_owner;
SELECT code, message FROM o30_try($$INSERT INTO o30_order VALUES ('SO-9', 2, (now() + interval '1 day')::timestamp, 5, NULL, NULL)$$);
RESET ROLE;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT code, message FROM o30_try($$INSERT INTO o30_order VALUES ('SO-9', 2, now()::timestamp, 5, NULL, NULL)$$);
COMMIT;
SELECT (SELECT row(s.*)::text FROM o30_stored s) = row(:before_sources, :before_active_sources, :before_followups, :before_deals,
        :before_split_lines, :before_answers, :before_potentials, :before_triggers, :before_events)::text AS nothing_changed;
-- revenue_credit reads outcome deals like record_deal()'s
SELECT rep_code, team_name, source, deals, credited FROM allocation.revenue_credit ORDER BY rep_code NULLS LAST;

-------------------------------------------------------------------------------
-- Satisfaction: the survey table, 1-5 or NPS
-------------------------------------------------------------------------------
INSERT INTO o30_survey VALUES (1, 1, now()::timestamp, 5, 9);
SET ROLE regress_o30_owner;
SELECT allocation.manage_outcomes('o30_survey', 'satisfaction', 'customer_id',
                                  '{"at": "answered", "score": "score", "scale": "1-5"}') > 0 AS attached;
RESET ROLE;
INSERT INTO o30_survey VALUES (2, 2, now()::timestamp, 2, 3), (3, 3, now()::timestamp, NULL, NULL);
SELECT s.key, s.score, s.scale, s.score_pct, r.code AS rep, s.source_ref FROM allocation.satisfaction s
  LEFT JOIN allocation.rep r ON r.id = s.rep_id ORDER BY s.source_ref;
SELECT * FROM o30_stored \gset before_
SELECT code, message, detail FROM o30_try($$INSERT INTO o30_survey VALUES (4, 2, now()::timestamp, 7, 7)$$);
SELECT (SELECT row(s.*)::text FROM o30_stored s) = row(:before_sources, :before_active_sources, :before_followups, :before_deals,
        :before_split_lines, :before_answers, :before_potentials, :before_triggers, :before_events)::text AS nothing_changed;
-- attached again with the NPS column: the earlier rows are replaced
SET ROLE regress_o30_owner;
SELECT allocation.unmanage_outcomes('o30_survey');
SELECT allocation.manage_outcomes('o30_survey', 'satisfaction', 'customer_id',
                                  '{"at": "answered", "score": "nps", "scale": "nps"}') > 0 AS attached;
RESET ROLE;
SELECT s.key, s.score, s.scale, s.score_pct, s.source_ref FROM allocation.satisfaction s ORDER BY s.source_ref;
SELECT kind, reason, detail->>'existing_rows' AS existing_rows, detail->>'replaced' AS replaced FROM allocation.event
 WHERE kind IN ('outcomes_managed', 'outcomes_unmanaged') AND detail->>'table' = 'public.o30_survey' ORDER BY id;

-------------------------------------------------------------------------------
-- TRUNCATE of outcome tables
-------------------------------------------------------------------------------
TRUNCATE o30_survey;
TRUNCATE o30_order;
SELECT (SELECT count(*) FROM allocation.satisfaction) AS answers, (SELECT count(*) FROM allocation.deal) AS deals,
       (SELECT count(*) FROM allocation.followup) AS followups;
SELECT kind, reason, detail - 'outcome_source' AS detail FROM allocation.event WHERE kind = 'outcomes_truncated' ORDER BY id;
SELECT count(*) AS deal_removed_events FROM allocation.event WHERE kind = 'deal_removed';

-------------------------------------------------------------------------------
-- Bad mappings and tables: each refused with its SQLSTATE, nothing stored changes
-------------------------------------------------------------------------------
CREATE TABLE o30_bad (id integer PRIMARY KEY, customer_id integer, at timestamptz, at_text text, rep text,
                      amount money, score numeric, key_text text, nokey integer);
ALTER TABLE o30_bad OWNER TO regress_o30_owner;
CREATE TABLE o30_nopk (customer_id integer, at timestamptz, ref integer);
ALTER TABLE o30_nopk OWNER TO regress_o30_owner;
CREATE TEMP VIEW o30_view AS SELECT 1 AS id;
SELECT * FROM o30_stored \gset before_
SET ROLE regress_o30_owner;
SELECT t.code, t.message, t.detail, t.hint FROM (VALUES
    ($$SELECT allocation.manage_outcomes(NULL, 'followup', 'customer_id', '{"at": "at"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'visit', 'customer_id', '{"at": "at"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'followup', 'customer_id', '["at"]')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'followup', 'customer_id', '{"at": "at", "amount": "amount"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'followup', 'customer_id', '{"at": 1}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'followup', 'customer_id', '{"rep": "nokey"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'deal', 'customer_id', '{"at": "at"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'satisfaction', 'customer_id', '{"at": "at", "score": "score"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'satisfaction', 'customer_id', '{"at": "at", "score": "score", "scale": "1-10"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'followup', 'customer_id', '{"at": "no_such_column"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'followup', 'no_such_column', '{"at": "at"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'followup', 'customer_id', '{"at": "at_text"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'followup', 'customer_id', '{"at": "at", "rep": "rep"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'deal', 'customer_id', '{"at": "at", "amount": "amount"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'followup', 'key_text', '{"at": "at"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'followup', 'customer_id', '{"at": "at", "customers": "no_such_table"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_bad', 'followup', 'customer_id', '{"at": "at", "ref": "nokey"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_nopk', 'followup', 'customer_id', '{"at": "at"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_customer', 'followup', 'id', '{"at": "at"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_visit', 'followup', 'customer_id', '{"at": "visited_at"}')$$),
    ($$SELECT allocation.unmanage_outcomes('o30_bad')$$),
    ($$SELECT allocation.unmanage_outcomes(NULL)$$)) AS c(x), LATERAL o30_try(c.x) AS t;
RESET ROLE;
-- (a superuser owns every table: the table checks)
SELECT t.code, t.message, t.detail FROM (VALUES
    ($$SELECT allocation.manage_outcomes('allocation.followup', 'followup', 'key', '{"at": "at"}')$$),
    ($$SELECT allocation.manage_outcomes('o30_view', 'followup', 'id', '{"at": "id"}')$$)) AS c(x), LATERAL o30_try(c.x) AS t;
-- another admin, who does not own the tables
SET ROLE regress_o30_other;
SELECT t.code, t.message, t.detail FROM (VALUES
    ($$SELECT allocation.manage_outcomes('o30_bad', 'followup', 'customer_id', '{"at": "at"}')$$),
    ($$SELECT allocation.unmanage_outcomes('o30_visit')$$)) AS c(x), LATERAL o30_try(c.x) AS t;
-- its own table cannot credit the reps of a customer table it does not own
CREATE TABLE o30_forged (id integer PRIMARY KEY, customer_id integer, at timestamptz, amount numeric);
SELECT code, message, detail FROM o30_try($$SELECT allocation.manage_outcomes('o30_forged', 'deal', 'customer_id', '{"at": "at", "amount": "amount"}')$$);
DROP TABLE o30_forged;
RESET ROLE;
SELECT (SELECT row(s.*)::text FROM o30_stored s) = row(:before_sources, :before_active_sources, :before_followups, :before_deals,
        :before_split_lines, :before_answers, :before_potentials, :before_triggers, :before_events)::text AS nothing_changed;
DROP VIEW o30_view;

-- dropping or renaming a mapped column is refused (others are free); dropping the table detaches it
SELECT code, message FROM o30_try($$ALTER TABLE o30_visit DROP COLUMN channel$$);
SELECT code, message FROM o30_try($$ALTER TABLE o30_visit RENAME COLUMN channel TO contact_channel$$);
SELECT code, message FROM o30_try($$ALTER TABLE o30_visit ALTER COLUMN visited_at TYPE text$$);
SELECT code, message FROM o30_try($$ALTER TABLE o30_visit DROP CONSTRAINT o30_visit_pkey$$);
ALTER TABLE o30_visit ALTER COLUMN note TYPE varchar(200);
ALTER TABLE o30_visit RENAME COLUMN other_column TO other;
ALTER TABLE o30_visit DROP COLUMN other;
DROP TABLE o30_survey;
SELECT table_name, kind, tbl IS NULL AS dropped, active FROM allocation.outcome_source ORDER BY id;
SELECT reason, detail->>'table' AS tbl FROM allocation.event WHERE kind = 'outcomes_unmanaged' ORDER BY id;

-------------------------------------------------------------------------------
-- Potential: by column, by expression, as the table's owner only
-------------------------------------------------------------------------------
SET ROLE regress_o30_owner;
SELECT allocation.set_potential('o30_customer', 'expected_volume', '{"high": 500000, "medium": 100000}');
RESET ROLE;
SELECT * FROM allocation._potentials((SELECT id FROM allocation.managed_table WHERE tbl = 'o30_customer'::regclass)) ORDER BY key::integer;
SET ROLE regress_o30_mgr;
SELECT * FROM allocation.customer_potential('o30_customer', '2');
RESET ROLE;
-- an expression: hectares times a crop factor, the volume where it is known
SET ROLE regress_o30_owner;
-- the row is read as t: an expression may name it so (and only so), as it is run
SELECT allocation.set_potential('o30_customer', 'coalesce(t.expected_volume, t.hectares * 1200)', '{"high": 500000, "medium": 100000}');
SELECT allocation.set_potential('o30_customer', 'coalesce(expected_volume, hectares * 1200)', '{"high": 500000, "medium": 100000}');
RESET ROLE;
SELECT * FROM allocation._potentials((SELECT id FROM allocation.managed_table WHERE tbl = 'o30_customer'::regclass)) ORDER BY key::integer;
SELECT kind, actor, reason, detail->>'expression' AS expression, detail->'previous'->>'expression' AS previous
  FROM allocation.event WHERE kind = 'potential_set' ORDER BY id;

-- runs as the table's owner: a function reading a table only the owner may read works for any caller
CREATE TABLE o30_factor (hectares_factor numeric);
INSERT INTO o30_factor VALUES (2000);
REVOKE ALL ON o30_factor FROM PUBLIC;
GRANT SELECT ON o30_factor TO regress_o30_owner;
CREATE FUNCTION o30_factor() RETURNS numeric LANGUAGE sql STABLE AS 'SELECT hectares_factor FROM public.o30_factor';
CREATE FUNCTION o30_who() RETURNS text LANGUAGE sql STABLE AS 'SELECT current_user::text';
SET ROLE regress_o30_owner;
SELECT allocation.set_potential('o30_customer', 'CASE WHEN o30_who() = ''regress_o30_owner'' THEN hectares * o30_factor() END',
                                '{"high": 500000}');
RESET ROLE;
SET ROLE regress_o30_mgr;
SELECT * FROM o30_try('SELECT * FROM o30_factor');         -- the caller itself may not read it
SELECT * FROM allocation.customer_potential('o30_customer', '4');
RESET ROLE;
SELECT * FROM allocation.customer_potential('o30_customer', '4');     -- a superuser caller: still as the owner

-- a function the owner may not execute is refused (even for a superuser caller that may)
CREATE FUNCTION o30_forbidden(numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';
REVOKE EXECUTE ON FUNCTION o30_forbidden(numeric) FROM PUBLIC;
SELECT * FROM o30_stored \gset before_
SELECT t.code, t.message, t.detail, t.hint FROM (VALUES
    ($$SELECT allocation.set_potential('o30_customer', 'o30_forbidden(expected_volume)', '{}')$$),
    ($$SELECT allocation.set_potential('o30_customer', 'name', '{}')$$),
    ($$SELECT allocation.set_potential('o30_customer', 'expected_volume; DROP TABLE o30_customer', '{}')$$),
    ($$SELECT allocation.set_potential('o30_customer', 'expected_volume FROM pg_class', '{}')$$),
    ($$SELECT allocation.set_potential('o30_customer', '(SELECT max(expected_volume) FROM o30_customer)', '{}')$$),
    ($$SELECT allocation.set_potential('o30_customer', 'expected_volume * random()', '{}')$$),
    ($$SELECT allocation.set_potential('o30_customer', 'no_such_column', '{}')$$),
    ($$SELECT allocation.set_potential('o30_customer', 'o30_customer.expected_volume', '{}')$$),
    ($$SELECT allocation.set_potential('o30_customer', '  ', '{}')$$),
    ($$SELECT allocation.set_potential('o30_customer', 'expected_volume', '[1]')$$),
    ($$SELECT allocation.set_potential('o30_customer', 'expected_volume', '{"high": "a lot"}')$$),
    ($$SELECT allocation.set_potential('o30_customer', 'expected_volume', '{"low": 5}')$$),
    ($$SELECT allocation.set_potential('o30_bad', 'amount', '{}')$$),
    ($$SELECT * FROM allocation.customer_potential('o30_customer', '12345')$$),
    ($$SELECT * FROM allocation.customer_potential('o30_customer', NULL)$$)) AS c(x), LATERAL o30_try(c.x) AS t;
SET ROLE regress_o30_other;
SELECT code, message FROM o30_try($$SELECT allocation.set_potential('o30_customer', 'expected_volume', '{}')$$);
RESET ROLE;
SELECT (SELECT row(s.*)::text FROM o30_stored s) = row(:before_sources, :before_active_sources, :before_followups, :before_deals,
        :before_split_lines, :before_answers, :before_potentials, :before_triggers, :before_events)::text AS nothing_changed;
-- cleared
SET ROLE regress_o30_owner;
SELECT allocation.set_potential('o30_customer', NULL, NULL);
RESET ROLE;
SELECT code, message FROM o30_try($$SELECT * FROM allocation.customer_potential('o30_customer', '1')$$);
SELECT count(*) AS potentials FROM allocation._potentials((SELECT id FROM allocation.managed_table WHERE tbl = 'o30_customer'::regclass));

-------------------------------------------------------------------------------
-- Detaching; unmanaging the customer table leaves an attached outcome table inert
-------------------------------------------------------------------------------
SET ROLE regress_o30_owner;
SELECT allocation.unmanage_outcomes('o30_visit');
RESET ROLE;
INSERT INTO o30_visit (customer_id, visited_at, channel) VALUES (12345, now(), 'visit');   -- no trigger any more
SELECT count(*) AS followups_kept FROM allocation.followup WHERE source_id IS NOT NULL;
SET ROLE regress_o30_owner;
SELECT allocation.unmanage('o30_customer');
RESET ROLE;
INSERT INTO o30_order VALUES ('SO-10', 12345, now()::timestamp, 10, NULL, NULL);   -- the customer table is not managed: not landed
SELECT count(*) AS deals FROM allocation.deal;
-- dropping the customer table detaches the outcome tables attached to it (their triggers go)
DROP TABLE o30_customer;
SELECT table_name, active, (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = 'o30_order'::regclass AND t.tgname LIKE 'zz_allocation%') AS triggers
  FROM allocation.outcome_source WHERE table_name = 'public.o30_order';
SELECT reason, detail->>'table' AS tbl FROM allocation.event WHERE kind = 'outcomes_unmanaged' ORDER BY id;

DROP VIEW o30_stored, o30_followups, o30_deals;
DROP TABLE o30_visit, o30_order, o30_bad, o30_nopk, o30_factor;
DROP EXTENSION allocation CASCADE;
DROP FUNCTION o30_try(text), o30_factor(), o30_who(), o30_forbidden(numeric);
DROP OWNED BY regress_o30_owner, regress_o30_other, regress_o30_mgr, regress_o30_a;
DROP ROLE regress_o30_owner, regress_o30_other, regress_o30_mgr, regress_o30_a;
