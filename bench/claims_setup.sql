-- bench/claims_setup.sql: the hot set for bench/claims.sh (claims under concurrency, issue #3).
--
-- psql variables (set by claims.sh):
--   n_customers   customers in the hot set (all start in the public pool)
--   n_reps        reps (ids 1..n_reps); odd ids are team A, even ids team B
--   capacity      rep.capacity of every rep
--   daily_a       claim_policy daily_claims of team A (tight: reached during the run)
--   daily_all     claim_policy daily_claims of everybody else (the global row)
--   max_held_b    claim_policy max_held of team B (below capacity: the policy path of LA022)
--   cooldown_b    claim_policy cooldown of team B (LA083)
--
-- Every rep also gets a role claims_rep_<id> (rep kind, rep.login) so that part of the
-- attempts go through the rep forms claim(tbl, key) and release(tbl, key, reason).
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE SCHEMA claims;

INSERT INTO allocation.team (id, code, name) VALUES
    (1, 'claims_a', 'Claims bench team A (tight daily limit)'),
    (2, 'claims_b', 'Claims bench team B (max_held below capacity, cooldown)');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login)
SELECT i, format('r%s', lpad(i::text, 2, '0')), format('Claims bench rep %s', i),
       CASE WHEN i % 2 = 1 THEN 1 ELSE 2 END, :capacity, format('claims_rep_%s', i)
  FROM generate_series(1, :n_reps) i;
SELECT setval(pg_get_serial_sequence('allocation.team', 'id'), 2);
SELECT setval(pg_get_serial_sequence('allocation.rep', 'id'), :n_reps);

SELECT format('CREATE ROLE claims_rep_%s NOLOGIN', i) FROM generate_series(1, :n_reps) i \gexec
SELECT allocation.grant_role(format('claims_rep_%s', i)::regrole, 'rep') FROM generate_series(1, :n_reps) i;

-- limits: the most specific row wins per limit (team row before the global row)
INSERT INTO allocation.claim_policy (team_id, tier, max_held, daily_claims, cooldown, note) VALUES
    (NULL, NULL, NULL, :daily_all, NULL, 'claims bench: everybody'),
    (1, NULL, NULL, :daily_a, NULL, 'claims bench: team A, daily limit reached during the run'),
    (2, NULL, :max_held_b, NULL, :'cooldown_b', 'claims bench: team B, holdings limit and cooldown');

-- the customer table: no territories and no rules, so every customer starts in the pool
CREATE TABLE claims.customer (
    id        bigint PRIMARY KEY,
    name      text NOT NULL,
    loc       geometry(Point, 4326),
    owner_id  bigint
);
INSERT INTO claims.customer (id, name, loc)
SELECT i, format('hot customer %s', i), ST_SetSRID(ST_MakePoint(112 + i * 0.01, 28), 4326)
  FROM generate_series(1, :n_customers) i;
SELECT allocation.manage('claims.customer', 'id', 'loc', 'owner_id');
GRANT USAGE ON SCHEMA claims TO PUBLIC;      -- the rep roles name the table ...
GRANT SELECT ON claims.customer TO PUBLIC;   -- ... and the swap op reads which customers its rep holds

-------------------------------------------------------------------------------
-- One attempt = one pgbench transaction.  The outcome is recorded in the same
-- transaction, so a committed 'ok' outcome and the engine's event commit together.
-------------------------------------------------------------------------------
CREATE UNLOGGED TABLE claims.outcome (
    phase    integer NOT NULL,  -- 1: single-operation transactions, 2: with move and swap
    op       text NOT NULL,
    rep      bigint NOT NULL,
    key      bigint NOT NULL,   -- the random customer (a swap also releases one the rep holds)
    outcome  text NOT NULL,     -- 'ok', 'noop' or the SQLSTATE
    message  text,              -- the error message with digits replaced by #
    detail   text               -- DETAIL and CONTEXT of an unexpected error (not a refusal)
);
GRANT INSERT ON claims.outcome TO PUBLIC;

-- op (1..100; phase 1 draws 1..85, phase 2 1..100):
--              1-25 claim(tbl, key, rep) by the manager (the superuser session)
--              26-45 claim(tbl, key) as the rep's own role
--              46-65 release(tbl, key, reason) by the manager (any held customer)
--              66-85 release(tbl, key, reason) as the rep's own role (LA086 unless it holds it)
--              86-92 move: the manager releases the customer and claims it for the rep, one transaction
--              93-96 swap: the rep releases one customer it holds and claims another, one transaction
--              97-100 pair: the manager claims the customer for the rep and the next customer for the
--                     next rep of the same team (rep id + 2, wrapping around), one transaction
CREATE FUNCTION claims.attempt(p_phase integer, p_op integer, p_rep bigint, p_key bigint)
RETURNS text
LANGUAGE plpgsql AS
$$
DECLARE
    v_op text := CASE WHEN p_op <= 25 THEN 'claim (manager)'
                      WHEN p_op <= 45 THEN 'claim (rep)'
                      WHEN p_op <= 65 THEN 'release (manager)'
                      WHEN p_op <= 85 THEN 'release (rep)'
                      WHEN p_op <= 92 THEN 'move (manager: release + claim)'
                      WHEN p_op <= 96 THEN 'swap (rep: release own + claim)'
                      ELSE 'pair (manager: two claims, two reps)' END;
    v_outcome text := 'ok';
    v_message text;
    v_held bigint;
    v_detail text;
    v_context text;
BEGIN
    BEGIN
        IF p_op <= 25 THEN
            PERFORM allocation.claim('claims.customer', p_key::text, p_rep);
        ELSIF p_op <= 45 THEN
            PERFORM set_config('role', 'claims_rep_' || p_rep, true);
            PERFORM allocation.claim('claims.customer', p_key::text);
        ELSIF p_op <= 65 THEN
            PERFORM allocation.release('claims.customer', p_key::text, 'bench: manager release');
        ELSIF p_op <= 85 THEN
            PERFORM set_config('role', 'claims_rep_' || p_rep, true);
            PERFORM allocation.release('claims.customer', p_key::text, 'bench: rep release');
        ELSIF p_op <= 92 THEN
            PERFORM allocation.release('claims.customer', p_key::text, 'bench: move');
            PERFORM allocation.claim('claims.customer', p_key::text, p_rep);
        ELSIF p_op > 96 THEN
            PERFORM allocation.claim('claims.customer', p_key::text, p_rep);
            PERFORM allocation.claim('claims.customer', (p_key % (SELECT count(*) FROM claims.customer) + 1)::text,
                                     (p_rep + 1) % (SELECT count(*) FROM allocation.rep) + 1);
        ELSE
            PERFORM set_config('role', 'claims_rep_' || p_rep, true);
            SELECT c.id INTO v_held FROM claims.customer c WHERE c.owner_id = p_rep ORDER BY c.id LIMIT 1;
            IF v_held IS NULL THEN
                v_outcome := 'noop';        -- holds nothing to swap
            ELSE
                PERFORM allocation.release('claims.customer', v_held::text, 'bench: swap');
                PERFORM allocation.claim('claims.customer', p_key::text);
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN      -- rolls the attempt back (role included); pgbench keeps going
        v_outcome := SQLSTATE;
        v_message := regexp_replace(SQLERRM, '[0-9]+', '#', 'g');
        IF SQLSTATE NOT IN ('LA080', 'LA022', 'LA082', 'LA083', 'LA086', '55P03') THEN
            GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL, v_context = PG_EXCEPTION_CONTEXT;
            v_detail := v_detail || E'\n' || v_context;
        END IF;
    END;
    PERFORM set_config('role', 'none', true);
    INSERT INTO claims.outcome (phase, op, rep, key, outcome, message, detail)
    VALUES (p_phase, v_op, p_rep, p_key, v_outcome, v_message, v_detail);
    RETURN v_outcome;
END
$$;

-- What the watcher samples while pgbench runs: each sample is one statement, so one snapshot.
CREATE UNLOGGED TABLE claims.sample (
    phase               integer NOT NULL,
    at                  timestamptz NOT NULL DEFAULT clock_timestamp(),
    multi_owner         integer NOT NULL,   -- customers with more than one open registry row
    owner_mismatch      integer NOT NULL,   -- customer.owner_id differs from the open registry row
    over_capacity       integer NOT NULL,   -- reps holding more than rep.capacity (registry or counter)
    over_max_held       integer NOT NULL,   -- reps holding more than the claim policy's max_held
    counter_mismatch    integer NOT NULL,   -- rep_load.held differs from the open registry rows
    held_total          integer NOT NULL
);

CREATE VIEW claims.invariants AS
WITH m AS (SELECT id FROM allocation.managed_table WHERE tbl = 'claims.customer'::regclass AND active),
open AS (SELECT a.* FROM allocation.assignment a, m WHERE a.managed_id = m.id AND a.valid_to IS NULL),
held AS (SELECT r.id AS rep_id, r.capacity, (allocation.claim_limits(r.id)).max_held,
                coalesce(l.held, 0) AS counter, (SELECT count(*) FROM open o WHERE o.rep_id = r.id) AS n
           FROM allocation.rep r LEFT JOIN allocation.rep_load l ON l.rep_id = r.id)
SELECT (SELECT count(*) FROM (SELECT key FROM open GROUP BY key HAVING count(*) > 1) x)::integer AS multi_owner,
       (SELECT count(*) FROM claims.customer c
         WHERE NOT EXISTS (SELECT 1 FROM open o WHERE o.key = c.id::text AND o.rep_id IS NOT DISTINCT FROM c.owner_id))::integer
           AS owner_mismatch,
       (SELECT count(*) FROM held WHERE held.n > held.capacity OR held.counter > held.capacity)::integer AS over_capacity,
       (SELECT count(*) FROM held WHERE held.n > held.max_held)::integer AS over_max_held,
       (SELECT count(*) FROM held WHERE held.n <> held.counter)::integer AS counter_mismatch,
       (SELECT count(*) FROM open WHERE rep_id IS NOT NULL)::integer AS held_total;

VACUUM ANALYZE;
