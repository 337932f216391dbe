--
-- 35_read_only: a read-only transaction, as on a hot standby (issue 15;
-- scripts/standby_check.sh runs the same on a real streaming replica): every
-- read works (views, explain, owner_at, territory_geojson, scorecard, the claim
-- screens) and builds the territory index; every
-- write fails with PostgreSQL's read-only error 25006 -- also the scheduler's
-- functions when nothing is due, run_maintenance() (no per-step failures) and
-- transfer_all(), for real and as a dry run (no per-customer refusals) -- and
-- nothing changes.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

DO $$
BEGIN
    CREATE ROLE regress_r35_a;
    CREATE ROLE regress_r35_mgr;
    CREATE ROLE regress_r35_bi;
END $$;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login) VALUES
    (1, 'a', 'Rep A', 1, 100, 'regress_r35_a'),
    (2, 'b', 'Rep B', 1, 100, NULL);
INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id) VALUES
    (1, 'east', 'East county', ST_Multi(ST_MakeEnvelope(0, 0, 1, 1, 4326)), 1),
    (2, 'west', 'West county', ST_Multi(ST_MakeEnvelope(1, 0, 2, 1, 4326)), 2);
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
VALUES ('territory owners', 10, 'team', 1, 'territory_owner');
SELECT allocation.grant_role('regress_r35_a', 'rep'), allocation.grant_role('regress_r35_mgr', 'manager'),
       allocation.grant_role('regress_r35_bi', 'analyst');
CREATE TABLE r35_customer (id integer PRIMARY KEY, name text, tier text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('r35_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
INSERT INTO r35_customer (id, name, tier, loc) VALUES
    (1, 'east dealer', 'A', ST_Point(0.5, 0.5, 4326)),
    (2, 'west dealer', 'A', ST_Point(1.5, 0.5, 4326)),
    (3, 'far away', 'A', ST_Point(9, 9, 4326));
SELECT allocation.log_followup('r35_customer', '1', 'visit');
GRANT SELECT ON r35_customer TO regress_r35_bi, regress_r35_mgr, regress_r35_a;

CREATE FUNCTION r35_try(sql text) RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE sql;
    code := '00000';
    RETURN NEXT;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN NEXT;
END $f$;
GRANT EXECUTE ON FUNCTION r35_try(text) TO PUBLIC;
CREATE VIEW r35_counts AS
SELECT (SELECT count(*) FROM allocation.event) AS events, (SELECT count(*) FROM r35_customer) AS customers,
       (SELECT count(*) FROM allocation.followup) AS followups, (SELECT count(*) FROM allocation.audit_seal) AS seals,
       (SELECT string_agg(id || ':' || coalesce(owner::text, '-'), ' ' ORDER BY id) FROM r35_customer) AS owners;
SELECT * FROM r35_counts;
SELECT * FROM r35_counts \gset before_

-------------------------------------------------------------------------------
-- Reads in a read-only transaction: all answer
-------------------------------------------------------------------------------
BEGIN READ ONLY;
SELECT allocation.explain('r35_customer', '1') -> 'result' ->> 'rep' AS explain_key,
       allocation.explain('r35_customer', '{"id": 9, "tier": "A", "loc": "SRID=4326;POINT(1.5 0.2)"}'::jsonb) -> 'result' ->> 'rep' AS explain_row,
       allocation.owner_at('r35_customer', '2', now()) AS owner_at,
       allocation.territory_at(ST_Point(0.2, 0.2, 4326)) AS territory_at,
       jsonb_array_length(allocation.territory_geojson() -> 'features') AS geojson_features,
       (allocation.cache_stats() ->> 'territories')::int AS indexed_territories;
SELECT count(*) AS scorecard_rows FROM allocation.scorecard(allocation.month_of(now()));
SELECT count(*) AS pool, (SELECT count(*) FROM allocation.current_owner) AS current_owner,
       (SELECT count(*) FROM allocation.rep_portfolio) AS rep_portfolio FROM allocation.pool;
COMMIT;

-------------------------------------------------------------------------------
-- Writes in a read-only transaction: 25006 each, PostgreSQL's message
-------------------------------------------------------------------------------
SET default_transaction_read_only = on;
SELECT s.label, t.code, t.message FROM (VALUES
    ('insert',            $$INSERT INTO r35_customer (id, name, tier, loc) VALUES (4, 'new', 'A', ST_Point(0.5, 0.6, 4326))$$),
    ('update',            $$UPDATE r35_customer SET name = 'renamed' WHERE id = 1$$),
    ('claim',             $$SELECT allocation.claim('r35_customer', '3', 1)$$),
    ('release',           $$SELECT allocation.release('r35_customer', '1', 'read only')$$),
    ('assign',            $$SELECT allocation.assign('r35_customer', '3', 2, 'read only')$$),
    ('log_followup',      $$SELECT allocation.log_followup('r35_customer', '1', 'call')$$),
    ('territory update',  $$UPDATE allocation.territory SET priority = 5 WHERE id = 1$$),
    ('rule insert',       $$INSERT INTO allocation.rule (name, priority, target_kind) VALUES ('ro', 1, 'pool')$$),
    ('refresh_scorecards', $$SELECT allocation.refresh_scorecards()$$)
) s (label, sql), LATERAL r35_try(s.sql) t ORDER BY s.label;
-- the scheduler's functions refuse before they start, also when nothing is due
-- (they used to answer "0 recycled", "0 expired", ...), with a detail and a hint
SELECT s.label, t.code, t.message, t.detail, t.hint FROM (VALUES
    ('recycle',              $$SELECT * FROM allocation.recycle()$$),
    ('expire_grants',        $$SELECT allocation.expire_grants()$$),
    ('auto_settle_disputes', $$SELECT allocation.auto_settle_disputes()$$),
    ('seal_audit',           $$SELECT allocation.seal_audit()$$),
    ('evaluate_alerts',      $$SELECT * FROM allocation.evaluate_alerts()$$)
) s (label, sql), LATERAL r35_try(s.sql) t ORDER BY s.label;
-- run_maintenance(): one error, not a table of failed steps
SELECT code, message FROM r35_try('SELECT * FROM allocation.run_maintenance()');
-- transfer_all() for real: one error, not one refusal per customer
SET ROLE regress_r35_mgr;
SELECT code, message FROM r35_try($$SELECT * FROM allocation.transfer_all(1, ARRAY[2]::bigint[], 'rep a leaves', false)$$);
-- its dry run too: it tries each transfer and rolls it back (it used to answer
-- "refused, 25006" for every customer)
SELECT code, message, detail, hint FROM r35_try($$SELECT * FROM allocation.transfer_all(1, ARRAY[2]::bigint[], 'rep a leaves', true)$$);
RESET ROLE;
-- a BI analyst reads as usual
SET ROLE regress_r35_bi;
SELECT count(*) AS bi_current_owner FROM allocation.current_owner;
SELECT allocation.explain('r35_customer', '2') -> 'result' ->> 'rep' AS bi_explain;
RESET ROLE;
RESET default_transaction_read_only;

-- nothing changed
SELECT * FROM r35_counts;
SELECT (SELECT row(r.*)::text FROM r35_counts r) = row(:before_events, :before_customers, :before_followups, :before_seals, :'before_owners')::text AS unchanged;

-- read-write again: the same calls work
SELECT count(*) >= 0 AS recycle_ran FROM allocation.recycle();
SET ROLE regress_r35_mgr;
SELECT table_name, key, to_rep_code, outcome, code FROM allocation.transfer_all(1, ARRAY[2]::bigint[], 'rep a leaves', true);
RESET ROLE;
SELECT step, outcome FROM allocation.run_maintenance() ORDER BY 1;

DROP TABLE r35_customer CASCADE;
DROP FUNCTION r35_try(text);
DROP EXTENSION allocation CASCADE;
DROP OWNED BY regress_r35_a, regress_r35_mgr, regress_r35_bi;
DROP ROLE regress_r35_a, regress_r35_mgr, regress_r35_bi;
