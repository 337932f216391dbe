-- bench/resources_setup.sql: the pool, reps and customers for bench/resources.sh (resource grants
-- under concurrency, issue #4).
--
-- psql variables (set by resources.sh):
--   n_customers    customers (ids 1..n_customers), every one owned by a rep
--   n_reps         reps (ids 1..n_reps), one team
--   n_hot          "hot" reps 1..n_hot: together they own the first half of the customers, the other
--                  reps own the second half -- with customers drawn uniformly the hot reps see
--                  far more requests and reach per_rep_cap (LA094)
--   units          the pool's total (= remaining at the start)
--   customer_cap   per_customer_cap of the pool (LA093)
--   rep_cap        per_rep_cap of the pool
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE SCHEMA resources;

INSERT INTO allocation.team (id, code, name) VALUES (1, 'res', 'Resources bench team');
INSERT INTO allocation.rep (id, code, name, team_id)
SELECT i, format('r%s', lpad(i::text, 2, '0')), format('Resources bench rep %s', i), 1
  FROM generate_series(1, :n_reps) i;
SELECT setval(pg_get_serial_sequence('allocation.team', 'id'), 1);
SELECT setval(pg_get_serial_sequence('allocation.rep', 'id'), :n_reps);

-- the customer table: no territories and no rules; the owner is given on insert
CREATE TABLE resources.customer (
    id        bigint PRIMARY KEY,
    name      text NOT NULL,
    loc       geometry(Point, 4326),
    owner_id  bigint
);
SELECT allocation.manage('resources.customer', 'id', 'loc', 'owner_id');
INSERT INTO resources.customer (id, name, loc, owner_id)
SELECT i, format('customer %s', i), ST_SetSRID(ST_MakePoint(112 + i * 0.001, 28), 4326),
       CASE WHEN i <= :n_customers / 2 THEN (i - 1) % :n_hot + 1
            ELSE :n_hot + (i - :n_customers / 2 - 1) % (:n_reps - :n_hot) + 1 END
  FROM generate_series(1, :n_customers) i;

-- the pool: integral units, no season, no eligibility conditions, no approval
INSERT INTO allocation.resource_pool (code, name, kind, unit, integral, total, remaining,
                                      per_customer_cap, per_rep_cap, approval_required)
VALUES ('bench-samples', 'Resources bench: samples', 'sample', 'box', true, :units, :units,
        :customer_cap, :rep_cap, false);

-------------------------------------------------------------------------------
-- One attempt = one pgbench transaction.  The outcome is recorded in the same
-- transaction, so a committed outcome and the engine's rows and events commit together.
-------------------------------------------------------------------------------
CREATE UNLOGGED TABLE resources.outcome (
    phase       integer NOT NULL,   -- 1: requests only, 2: requests and releases
    op          text NOT NULL,      -- 'request' or 'release'
    key         bigint,             -- the random customer of a request (a release: the grant's customer)
    qty         numeric,            -- a request's quantity
    request_id  bigint,             -- the request created (granted or waitlisted) or the grant released
    outcome     text NOT NULL,      -- 'granted', 'waitlisted', 'released', 'noop' or the SQLSTATE
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    ms          numeric,            -- time of the engine call (a wait for the pool row lock included)
    message     text,               -- the error message with digits replaced by #
    detail      text                -- DETAIL and CONTEXT of an unexpected error (not a refusal)
);

-- p_op (1..100): <= p_release_pct a release, else a request (phase 1: p_release_pct = 0)
--   release: the manager releases a random current grant of the pool (release_grant), which
--            serves the waitlist; 'noop' when there is no grant, LA096 when another client
--            released the same grant first
--   request: the manager requests units for the random customer (request_resource); the
--            quantity by p_q (1..100): 1 -> 1.5 (not a whole box: LA092), 2..60 -> 1, 61..100 -> 2
CREATE FUNCTION resources.attempt(p_phase integer, p_pool bigint, p_op integer, p_release_pct integer,
                                  p_key bigint, p_q integer)
RETURNS text
LANGUAGE plpgsql AS
$$
DECLARE
    v_op text := CASE WHEN p_op <= p_release_pct THEN 'release' ELSE 'request' END;
    v_qty numeric;
    v_key bigint := p_key;
    v_outcome text;
    v_message text;
    v_detail text;
    v_context text;
    v_id bigint;
    v_t0 timestamptz;
    v_ms numeric;
    r allocation.resource_request;
BEGIN
    IF v_op = 'request' THEN
        v_qty := CASE WHEN p_q <= 1 THEN 1.5 WHEN p_q <= 60 THEN 1 ELSE 2 END;
    END IF;
    BEGIN
        IF v_op = 'request' THEN
            v_t0 := clock_timestamp();
            r := allocation.request_resource(p_pool, 'resources.customer', p_key::text, v_qty);
            v_outcome := r.status;
            v_id := r.id;
        ELSE
            SELECT q.id, q.key::bigint INTO v_id, v_key FROM allocation.resource_request q
             WHERE q.pool_id = p_pool AND q.status = 'granted' ORDER BY random() LIMIT 1;
            IF v_id IS NULL THEN
                v_outcome := 'noop';
            ELSE
                v_t0 := clock_timestamp();
                r := allocation.release_grant(v_id, 'bench: release');
                v_outcome := r.status;
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN      -- rolls the attempt back; pgbench keeps going
        v_outcome := SQLSTATE;
        v_message := regexp_replace(SQLERRM, '[0-9]+', '#', 'g');
        IF SQLSTATE NOT IN ('LA092', 'LA093', 'LA094', 'LA096') THEN
            GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL, v_context = PG_EXCEPTION_CONTEXT;
            v_detail := v_detail || E'\n' || v_context;
        END IF;
    END;
    IF v_t0 IS NOT NULL THEN
        v_ms := round(1000 * extract(epoch FROM clock_timestamp() - v_t0), 3);
    END IF;
    INSERT INTO resources.outcome (phase, op, key, qty, request_id, outcome, ms, message, detail)
    VALUES (p_phase, v_op, v_key, v_qty, v_id, v_outcome, v_ms, v_message, v_detail);
    RETURN v_outcome;
END
$$;

-- One call alone, for resources.sh's timing after the run (each in its own transaction, rolled back):
-- a request for a random customer (a refusal caught), or a release of a random grant with how many
-- waitlisted requests it served and how many it walked (row-locked) that stay waitlisted.
CREATE FUNCTION resources.time_request(p_pool bigint, p_customers integer)
RETURNS numeric
LANGUAGE plpgsql AS
$$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    BEGIN
        PERFORM allocation.request_resource(p_pool, 'resources.customer', (1 + floor(random() * p_customers))::text, 1);
    EXCEPTION WHEN SQLSTATE 'LA093' OR SQLSTATE 'LA094' THEN
        NULL;
    END;
    RETURN round(1000 * extract(epoch FROM clock_timestamp() - t0), 3);
END
$$;
CREATE FUNCTION resources.time_release(p_pool bigint, OUT ms numeric, OUT served bigint, OUT walked bigint)
LANGUAGE plpgsql AS
$$
DECLARE
    t0 timestamptz;
    v_id bigint;
BEGIN
    SELECT q.id INTO v_id FROM allocation.resource_request q WHERE q.pool_id = p_pool AND q.status = 'granted' ORDER BY random() LIMIT 1;
    t0 := clock_timestamp();
    PERFORM allocation.release_grant(v_id, 'bench: timing');
    ms := round(1000 * extract(epoch FROM clock_timestamp() - t0), 3);
    SELECT count(*) INTO served FROM allocation.resource_request q
     WHERE q.pool_id = p_pool AND q.status = 'granted' AND q.reason = 'served from the waitlist' AND q.decided_at = now();
    -- the walk locks (FOR UPDATE, until commit) every waitlisted request it looks at
    SELECT count(*) INTO walked FROM allocation.resource_request q
     WHERE q.pool_id = p_pool AND q.status = 'waitlisted' AND q.xmax = xid(pg_current_xact_id());
END
$$;

-- What the watcher samples while pgbench runs: each sample is one statement, so one snapshot.
CREATE UNLOGGED TABLE resources.sample (
    phase               integer NOT NULL,
    at                  timestamptz NOT NULL DEFAULT clock_timestamp(),
    out_of_range        integer NOT NULL,   -- remaining outside [0, total]
    granted_mismatch    numeric NOT NULL,   -- |sum(qty) of granted requests - (total - remaining)|
    over_customer_cap   integer NOT NULL,   -- customers whose granted units exceed per_customer_cap
    over_rep_cap        integer NOT NULL,   -- reps whose granted units exceed per_rep_cap
    use_mismatch        integer NOT NULL,   -- resource_customer_use / resource_rep_use rows that differ from the grants
    granted             numeric NOT NULL,
    remaining           numeric NOT NULL,
    waitlisted          bigint NOT NULL
);

CREATE VIEW resources.invariants AS
WITH p AS (SELECT * FROM allocation.resource_pool WHERE code = 'bench-samples'),
g AS (SELECT q.managed_id, q.key, q.rep_id, q.qty FROM allocation.resource_request q, p
       WHERE q.pool_id = p.id AND q.status = 'granted'),
by_customer AS (SELECT managed_id, key, sum(qty) AS n FROM g GROUP BY 1, 2),
by_rep AS (SELECT rep_id, sum(qty) AS n FROM g WHERE rep_id IS NOT NULL GROUP BY 1),
cu AS (SELECT u.* FROM allocation.resource_customer_use u, p WHERE u.pool_id = p.id AND u.used <> 0),
ru AS (SELECT u.* FROM allocation.resource_rep_use u, p WHERE u.pool_id = p.id AND u.used <> 0)
SELECT (SELECT count(*) FROM p WHERE p.remaining < 0 OR p.remaining > p.total)::integer AS out_of_range,
       (SELECT abs(coalesce((SELECT sum(qty) FROM g), 0) - (p.total - p.remaining)) FROM p) AS granted_mismatch,
       (SELECT count(*) FROM by_customer b, p WHERE b.n > p.per_customer_cap)::integer AS over_customer_cap,
       (SELECT count(*) FROM by_rep b, p WHERE b.n > p.per_rep_cap)::integer AS over_rep_cap,
       ((SELECT count(*) FROM by_customer b FULL JOIN cu ON cu.managed_id = b.managed_id AND cu.key = b.key
          WHERE b.n IS DISTINCT FROM cu.used)
        + (SELECT count(*) FROM by_rep b FULL JOIN ru ON ru.rep_id = b.rep_id
            WHERE b.n IS DISTINCT FROM ru.used))::integer AS use_mismatch,
       coalesce((SELECT sum(qty) FROM g), 0) AS granted,
       (SELECT remaining FROM p) AS remaining,
       (SELECT count(*) FROM allocation.resource_request q, p WHERE q.pool_id = p.id AND q.status = 'waitlisted') AS waitlisted;

VACUUM ANALYZE;
