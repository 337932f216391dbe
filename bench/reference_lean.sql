-- bench/reference_lean.sql: the lean PL/pgSQL reference (issue 11).
--
-- What a good DBA writes in an afternoon to give every new customer the owner of the
-- territory it lies in, with an audit trail:
--   * lean.territory_part: every territory cut into pieces of at most 128 vertices
--     (ST_Subdivide), with the territory's priority and owner rep copied onto each piece,
--     and a GiST index on the pieces (small pieces make both the index probe and the exact
--     ST_Covers test cheap: the reason ST_Subdivide exists);
--   * a BEFORE INSERT row trigger on bench.customer_lean that takes the covering piece with
--     the highest priority, ties broken by the lowest territory id (the engine's order;
--     border points are covered), sets the owner to that territory's owner rep (NULL when
--     no territory covers the point or the winner has no owner rep), and writes one audit
--     row per customer into lean.event (BRIN on time, hash on key).
--
-- No rule chain, no capacity, no team policy, no ancestor walk: this is the territory-owner
-- part of the bench rule set only.  bench/README.md ("The lean reference") says exactly
-- which decisions the engine and this trigger share and how run.sh compares them.
--
-- It keeps its own copy of the territories (schema lean), refreshed by lean.refresh().
-- Load after bench/setup.sql:
--   psql -f bench/reference_lean.sql
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

DROP SCHEMA IF EXISTS lean CASCADE;
CREATE SCHEMA lean;

-------------------------------------------------------------------------------
-- The territory pieces
-------------------------------------------------------------------------------
CREATE TABLE lean.territory_part (
    territory_id  bigint NOT NULL,
    priority      integer NOT NULL,
    owner_rep_id  bigint,
    geom          geometry NOT NULL CHECK (ST_SRID(geom) = 4326)
);

-- Rebuilds the pieces from allocation.territory (a DBA would call it from the job that
-- loads the GIS team's territories).
CREATE FUNCTION lean.refresh() RETURNS bigint LANGUAGE sql AS
$$
    TRUNCATE lean.territory_part;
    INSERT INTO lean.territory_part (territory_id, priority, owner_rep_id, geom)
    SELECT t.id, t.priority, t.owner_rep_id, ST_Subdivide(t.geom, 128)
      FROM allocation.territory t
     WHERE t.geom IS NOT NULL AND NOT ST_IsEmpty(t.geom);
    SELECT count(*) FROM lean.territory_part;
$$;
SELECT lean.refresh();
CREATE INDEX territory_part_geom_idx ON lean.territory_part USING gist (geom);

-------------------------------------------------------------------------------
-- The audit trail: one row per customer
-------------------------------------------------------------------------------
CREATE TABLE lean.event (
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text NOT NULL DEFAULT current_user,
    table_name    text NOT NULL,
    key           text NOT NULL,
    territory_id  bigint,
    rep_id        bigint
);
CREATE INDEX event_at_idx ON lean.event USING brin (at);
CREATE INDEX event_key_idx ON lean.event USING hash (key);

-------------------------------------------------------------------------------
-- The trigger
-------------------------------------------------------------------------------
CREATE FUNCTION lean.assign_customer() RETURNS trigger LANGUAGE plpgsql AS
$$
DECLARE
    v_territory bigint;
    v_owner     bigint;
BEGIN
    IF NEW.owner IS NULL AND NEW.loc IS NOT NULL THEN
        SELECT p.territory_id, p.owner_rep_id INTO v_territory, v_owner
          FROM lean.territory_part p
         WHERE ST_Covers(p.geom, NEW.loc)
         ORDER BY p.priority DESC, p.territory_id
         LIMIT 1;
        NEW.owner := v_owner;
    ELSE
        v_owner := NEW.owner;   -- an owner given on INSERT is kept (not exercised by the bench)
    END IF;
    INSERT INTO lean.event (table_name, key, territory_id, rep_id)
    VALUES (TG_TABLE_NAME, NEW.id::text, v_territory, v_owner);
    RETURN NEW;
END
$$;

CREATE TRIGGER assign_customer BEFORE INSERT ON bench.customer_lean
    FOR EACH ROW EXECUTE FUNCTION lean.assign_customer();

-- Resets the audit trail between runs (the customer table is truncated by the caller).
CREATE FUNCTION lean.reset() RETURNS void LANGUAGE sql AS
$$
    TRUNCATE lean.event;
$$;

ANALYZE lean.territory_part;
