-------------------------------------------------------------------------------
-- Manual decisions and the suggestion queue
-------------------------------------------------------------------------------

-- Sets a customer's owner through the managed table itself, so the C trigger
-- validates (rep exists, active, capacity, exclusive territory) and records it.
CREATE FUNCTION allocation._set_owner(p_tbl regclass, p_key text, p_rep bigint, p_source text, p_reason text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_keytype text;
BEGIN
    m := allocation._managed(p_tbl);
    SELECT format_type(a.atttypid, a.atttypmod) INTO v_keytype FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = p_tbl AND a.attname = m.key_column;
    -- the key is cast to the key column's type as the table's owner (a domain's CHECK is its code)
    BEGIN
        PERFORM 1 FROM allocation._table_rows(p_tbl, ARRAY[m.key_column::text], p_key, '') LIMIT 1;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'customer % not found in %', p_key, p_tbl
            USING ERRCODE = 'LA062',
                  DETAIL = format('%s is not a valid %s, the type of key column %s.', quote_literal(p_key), v_keytype, m.key_column),
                  HINT = 'Check the key.';
    END;
    PERFORM allocation._refuse_if_disputed(m.id, p_key);
    -- the UPDATE runs as the table's owner; source and reason travel in C (no setting)
    IF NOT allocation._owner_update(p_tbl, p_key, p_rep, p_source, p_reason) THEN
        RAISE EXCEPTION 'customer % not found in %', p_key, p_tbl
            USING ERRCODE = 'LA062',
                  DETAIL = format('No row of %s has %s = %s.', p_tbl, m.key_column, p_key),
                  HINT = 'Check the key; it is compared with the key column''s own type.';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._set_owner(regclass, text, bigint, text, text) IS 'internal: owner change through the managed table with a recorded source and reason';

CREATE FUNCTION allocation._assign(tbl regclass, key text, rep bigint, reason text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'a manual assignment needs a reason'
            USING ERRCODE = '22004', DETAIL = 'The reason is kept in the audit log as the evidence for this decision.',
                  HINT = 'Say why, e.g. ''dealer asked for the rep who visited last season''.';
    END IF;
    PERFORM allocation._set_owner(tbl, key, rep, 'manual', reason);
END
$$;
COMMENT ON FUNCTION allocation._assign(regclass, text, bigint, text) IS 'internal: implementation of allocation.assign(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.assign(tbl regclass, key text, rep bigint, reason text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.assign(regclass, text, bigint, text) IS
'Manager''s manual decision: gives the customer to a rep (NULL = public pool), validated like any owner change, pinned and audited with the reason';

-- Locks a suggestion for a decision (the caller needs no rights on the table).
CREATE FUNCTION allocation._lock_suggestion(p_id bigint)
RETURNS allocation.suggestion
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    SELECT * FROM allocation.suggestion WHERE id = p_id FOR UPDATE
$$;
COMMENT ON FUNCTION allocation._lock_suggestion(bigint) IS 'internal: locks and returns a suggestion for accept_suggestion()';

CREATE FUNCTION allocation._accept_suggestion(id bigint)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    s allocation.suggestion;
    m allocation.managed_table;
BEGIN
    s := allocation._lock_suggestion(_accept_suggestion.id);
    IF s.id IS NULL THEN
        RAISE EXCEPTION 'suggestion % does not exist', id
            USING ERRCODE = 'LA060', DETAIL = 'No row of allocation.suggestion has this id.',
                  HINT = 'See allocation.pending_suggestion.';
    END IF;
    IF s.status <> 'pending' THEN
        RAISE EXCEPTION 'suggestion % is %, not pending', id, s.status
            USING ERRCODE = 'LA061',
                  DETAIL = format('It was %s by %s at %s.', s.status, coalesce(s.decided_by, '?'), coalesce(s.decided_at::text, '?')),
                  HINT = 'Only pending suggestions can be accepted or rejected.';
    END IF;
    SELECT * INTO m FROM allocation._managed_by_id(s.managed_id);
    PERFORM allocation._set_owner(m.tbl, s.key, s.rep_id, 'suggestion', coalesce(s.reason, 'suggestion accepted'));
END
$$;
COMMENT ON FUNCTION allocation._accept_suggestion(bigint) IS 'internal: implementation of allocation.accept_suggestion(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.accept_suggestion(id bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.accept_suggestion(bigint) IS
'Accepts a pending suggestion: the suggested rep becomes the owner (validated like any owner change)';

CREATE FUNCTION allocation._reject_suggestion(id bigint, reason text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    s allocation.suggestion;
BEGIN
    SELECT * INTO s FROM allocation.suggestion WHERE suggestion.id = _reject_suggestion.id FOR UPDATE;
    IF s.id IS NULL THEN
        RAISE EXCEPTION 'suggestion % does not exist', id
            USING ERRCODE = 'LA060', DETAIL = 'No row of allocation.suggestion has this id.',
                  HINT = 'See allocation.pending_suggestion.';
    END IF;
    IF s.status <> 'pending' THEN
        RAISE EXCEPTION 'suggestion % is %, not pending', id, s.status
            USING ERRCODE = 'LA061',
                  DETAIL = format('It was %s by %s at %s.', s.status, coalesce(s.decided_by, '?'), coalesce(s.decided_at::text, '?')),
                  HINT = 'Only pending suggestions can be accepted or rejected.';
    END IF;
    -- the slot the suggestion reserved is given back: the rep's counter first (ordered locking)
    PERFORM allocation._lock_counter(s.rep_id);
    UPDATE allocation.suggestion
       SET status = 'rejected', decided_at = now(), decided_by = allocation._actor(),
           decision_reason = _reject_suggestion.reason
     WHERE suggestion.id = s.id;
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, key, to_rep, rule_id, reason, detail)
    SELECT allocation._actor(), 'suggestion_rejected', s.managed_id, m.table_name, s.key, s.rep_id, s.rule_id,
           _reject_suggestion.reason,
           jsonb_build_object('suggestion_id', s.id)
      FROM allocation.managed_table m WHERE m.id = s.managed_id;
END
$$;
COMMENT ON FUNCTION allocation._reject_suggestion(bigint, text) IS 'internal: implementation of allocation.reject_suggestion(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.reject_suggestion(id bigint, reason text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.reject_suggestion(bigint, text) IS
'Rejects a pending suggestion with a reason; the customer stays where it is (usually the pool)';

-------------------------------------------------------------------------------
-- History and explanation
-------------------------------------------------------------------------------
CREATE FUNCTION allocation.owner_at(tbl regclass, key text, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_managed integer;
    v_rep bigint;
BEGIN
    SELECT m.id INTO v_managed FROM allocation.managed_table m WHERE m.tbl = owner_at.tbl;
    IF v_managed IS NULL THEN
        RAISE EXCEPTION 'table % is not managed', tbl
            USING ERRCODE = 'LA012', DETAIL = 'There is no allocation.manage() registration for this table.',
                  HINT = 'Call allocation.manage() first.';
    END IF;
    SELECT a.rep_id INTO v_rep FROM allocation.assignment a
     WHERE a.managed_id = v_managed AND a.key = owner_at.key
       AND a.valid_from <= at AND (a.valid_to IS NULL OR a.valid_to > at)
     ORDER BY a.valid_from DESC, a.id DESC LIMIT 1;
    RETURN v_rep;
END
$$;
COMMENT ON FUNCTION allocation.owner_at(regclass, text, timestamptz) IS 'The rep that owned a customer at a point in time (NULL = pool or unknown)';

CREATE FUNCTION allocation.explain(tbl regclass, key text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'allocation_explain_key' LANGUAGE C STABLE;
COMMENT ON FUNCTION allocation.explain(regclass, text) IS
'Decision trace for a stored customer: territories, each rule considered and why it matched or not, candidates with load and capacity, tie-breaks, result. Same C code as the trigger; no side effects';

CREATE FUNCTION allocation.explain(tbl regclass, "row" jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'allocation_explain_row' LANGUAGE C STABLE;
COMMENT ON FUNCTION allocation.explain(regclass, jsonb) IS
'Decision trace for a hypothetical customer row given as JSON (column name -> value); no side effects';

CREATE FUNCTION allocation._condition_deparse(bin text, tbl regclass)
RETURNS text
AS 'MODULE_PATHNAME', 'allocation_condition_deparse' LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION allocation._condition_deparse(text, regclass) IS 'internal: source text of a compiled rule condition with the table''s current column names';

CREATE FUNCTION allocation._condition_still_means(condition text, bin text, tbl regclass, search_path text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'allocation_condition_still_means' LANGUAGE C STABLE;
COMMENT ON FUNCTION allocation._condition_still_means(text, text, regclass, text) IS 'internal: whether a condition text still compiles to the stored condition';

CREATE FUNCTION allocation._condition_uses_column(bin text, attnum integer)
RETURNS boolean
AS 'MODULE_PATHNAME', 'allocation_condition_uses_column' LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION allocation._condition_uses_column(text, integer) IS 'internal: whether a compiled rule condition reads the given column';

CREATE FUNCTION allocation._condition_stamp() RETURNS text
AS 'MODULE_PATHNAME', 'allocation_condition_stamp' LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION allocation._condition_stamp() IS 'internal: this server''s stamp for compiled rule conditions (server version number / system identifier)';

CREATE FUNCTION allocation.check_consistency()
RETURNS TABLE (problem text, rep_id bigint, managed_id integer, key text, expected bigint, actual bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT 'holdings counter differs from registry', l.rep_id, NULL::integer, NULL::text,
           coalesce(c.n, 0), l.held::bigint
      FROM allocation.rep_load l
      LEFT JOIN (SELECT a.rep_id, count(*) AS n FROM allocation.assignment a
                  WHERE a.valid_to IS NULL AND a.rep_id IS NOT NULL GROUP BY a.rep_id) c ON c.rep_id = l.rep_id
     WHERE l.held <> coalesce(c.n, 0)
    UNION ALL
    SELECT 'reserved counter differs from pending suggestions', l.rep_id, NULL::integer, NULL::text,
           coalesce(c.n, 0), l.reserved::bigint
      FROM allocation.rep_load l
      LEFT JOIN (SELECT s.rep_id, count(*) AS n FROM allocation.suggestion s
                  WHERE s.status = 'pending' GROUP BY s.rep_id) c ON c.rep_id = l.rep_id
     WHERE l.reserved <> coalesce(c.n, 0)
    UNION ALL
    SELECT 'rep holds more than capacity', r.id, NULL, NULL, r.capacity::bigint, l.held::bigint
      FROM allocation.rep r JOIN allocation.rep_load l ON l.rep_id = r.id
     WHERE r.capacity IS NOT NULL AND l.held > r.capacity
    UNION ALL
    SELECT 'rep holds and reserves more than capacity', r.id, NULL, NULL, r.capacity::bigint, (l.held + l.reserved)::bigint
      FROM allocation.rep r JOIN allocation.rep_load l ON l.rep_id = r.id
     WHERE r.capacity IS NOT NULL AND l.held <= r.capacity AND l.held + l.reserved > r.capacity
$$;
COMMENT ON FUNCTION allocation.check_consistency() IS 'Lists disagreements between the counters (held, reserved) and the registry and suggestion queue, and reps over capacity: holding more, or holding plus reserving more, than their capacity (empty = consistent)';

-- Capacity is never exceeded by a decision of the engine, but it can be by a person:
-- manage() registers the owners a table already has, and a capacity can be lowered
-- below what a rep holds.  Both are accepted (a manager need not move customers first)
-- with a WARNING; rep_portfolio.over_capacity and check_consistency() show the state,
-- and new assignments, claims and suggestions for the rep are refused until it is under.
CREATE FUNCTION allocation._warn_over_capacity(p_managed integer, p_rep bigint)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN SELECT x.id, x.code, x.capacity, l.held, l.reserved
               FROM allocation.rep x JOIN allocation.rep_load l ON l.rep_id = x.id
              WHERE x.capacity IS NOT NULL AND l.held + l.reserved > x.capacity
                AND (p_rep IS NULL OR x.id = p_rep)
                AND (p_managed IS NULL OR EXISTS (SELECT 1 FROM allocation.assignment a
                                                   WHERE a.managed_id = p_managed AND a.rep_id = x.id AND a.valid_to IS NULL))
              ORDER BY x.id LOOP
        RAISE WARNING '%', format('rep %s is over capacity: holds %s%s, capacity %s', r.code, r.held,
                                  CASE WHEN r.reserved > 0 THEN format(' and %s reserved by pending suggestions', r.reserved) ELSE '' END,
                                  r.capacity)
            USING ERRCODE = 'LA025',
                  DETAIL = CASE WHEN p_managed IS NOT NULL
                                THEN format('The table''s existing owners were registered as they are; rep %s now holds %s customers%s.',
                                            r.code, r.held, CASE WHEN r.reserved > 0 THEN format(' and %s pending suggestions reserve %s more', r.reserved, r.reserved) ELSE '' END)
                                ELSE format('The capacity was lowered to %s; rep %s keeps the %s customers it holds%s.',
                                            r.capacity, r.code, r.held, CASE WHEN r.reserved > 0 THEN format(' and its %s pending suggestions', r.reserved) ELSE '' END) END,
                  HINT = 'New assignments, claims and suggestions for this rep are refused until it is under capacity; see allocation.rep_portfolio (over_capacity) and allocation.check_consistency().';
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation._warn_over_capacity(integer, bigint) IS 'internal: a WARNING (LA025) for each rep over capacity (of a table''s owners, or one rep)';

CREATE FUNCTION allocation._rep_capacity_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    PERFORM allocation._warn_over_capacity(NULL, NEW.id);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION allocation._rep_capacity_changed() IS 'internal: warns when a rep''s capacity is set below what it holds and reserves';
CREATE TRIGGER rep_capacity_changed AFTER UPDATE OF capacity ON allocation.rep
    FOR EACH ROW WHEN (NEW.capacity IS NOT NULL AND NEW.capacity IS DISTINCT FROM OLD.capacity)
    EXECUTE FUNCTION allocation._rep_capacity_changed();

-------------------------------------------------------------------------------
-- Views for BI
-------------------------------------------------------------------------------
CREATE VIEW allocation.current_owner AS
SELECT m.tbl, m.table_name, a.key, a.rep_id, r.code AS rep_code, r.name AS rep_name,
       r.team_id, tm.name AS team_name, a.territory_id, t.code AS territory_code, t.name AS territory_name,
       a.rule_id, ru.name AS rule_name, a.source, a.pinned, a.reason,
       a.tier, a.crop, a.business_type, a.valid_from AS since
  FROM allocation.assignment a
  JOIN allocation.managed_table m ON m.id = a.managed_id
  LEFT JOIN allocation.rep r ON r.id = a.rep_id
  LEFT JOIN allocation.team tm ON tm.id = r.team_id
  LEFT JOIN allocation.territory t ON t.id = a.territory_id
  LEFT JOIN allocation.rule ru ON ru.id = a.rule_id
 WHERE a.valid_to IS NULL;
COMMENT ON VIEW allocation.current_owner IS 'Current owner of every managed customer (rep NULL = public pool), with team, territory, rule and since when';

CREATE VIEW allocation.rep_portfolio AS
SELECT r.id AS rep_id, r.code AS rep_code, r.name AS rep_name, r.team_id, tm.name AS team_name, r.active,
       coalesce(l.held, 0) AS held, coalesce(l.reserved, 0) AS reserved, r.capacity,
       CASE WHEN r.capacity IS NULL THEN NULL
            ELSE greatest(r.capacity - coalesce(l.held, 0) - coalesce(l.reserved, 0), 0) END AS free,
       coalesce(r.capacity < coalesce(l.held, 0) + coalesce(l.reserved, 0), false) AS over_capacity,
       CASE WHEN r.capacity > 0 THEN round(100.0 * coalesce(l.held, 0) / r.capacity, 1) END AS utilization_pct,
       coalesce((SELECT jsonb_object_agg(x.tier, x.n) FROM (
                    SELECT coalesce(a.tier, '(none)') AS tier, count(*) AS n FROM allocation.assignment a
                     WHERE a.rep_id = r.id AND a.valid_to IS NULL GROUP BY 1) x), '{}') AS by_tier,
       coalesce((SELECT jsonb_object_agg(x.crop, x.n) FROM (
                    SELECT coalesce(a.crop, '(none)') AS crop, count(*) AS n FROM allocation.assignment a
                     WHERE a.rep_id = r.id AND a.valid_to IS NULL GROUP BY 1) x), '{}') AS by_crop
  FROM allocation.rep r
  LEFT JOIN allocation.rep_load l ON l.rep_id = r.id
  LEFT JOIN allocation.team tm ON tm.id = r.team_id;
COMMENT ON VIEW allocation.rep_portfolio IS 'Each rep''s holdings against capacity: held, reserved (slots of pending suggestions naming the rep), free = capacity - held - reserved (never below 0), over_capacity (held + reserved above capacity after manage() or a lowered capacity), broken down by customer tier and crop';

CREATE VIEW allocation.pool AS
SELECT m.tbl, m.table_name, a.key, a.territory_id, t.code AS territory_code, a.reason, a.tier, a.crop,
       a.business_type, a.valid_from AS since, s.id AS suggestion_id, s.rep_id AS suggested_rep_id,
       s.id IS NOT NULL AS awaiting_review
  FROM allocation.assignment a
  JOIN allocation.managed_table m ON m.id = a.managed_id
  LEFT JOIN allocation.territory t ON t.id = a.territory_id
  LEFT JOIN allocation.suggestion s ON s.managed_id = a.managed_id AND s.key = a.key AND s.status = 'pending'
 WHERE a.valid_to IS NULL AND a.rep_id IS NULL;
COMMENT ON VIEW allocation.pool IS 'Customers in the public pool (公海): no owner, with the reason; awaiting_review = a suggestion is pending for it';

CREATE VIEW allocation.pending_suggestion AS
SELECT s.id, m.tbl, m.table_name, s.key, s.rep_id, r.code AS rep_code, r.name AS rep_name,
       s.rule_id, ru.name AS rule_name, s.territory_id, s.reason, s.created_at
  FROM allocation.suggestion s
  JOIN allocation.managed_table m ON m.id = s.managed_id
  LEFT JOIN allocation.rep r ON r.id = s.rep_id
  LEFT JOIN allocation.rule ru ON ru.id = s.rule_id
 WHERE s.status = 'pending';
COMMENT ON VIEW allocation.pending_suggestion IS 'Suggest-mode decisions waiting for a manager';

-- Holdings per territory (SECURITY DEFINER: callers need no right on the registry)
CREATE FUNCTION allocation.territory_holdings()
RETURNS TABLE (territory_id bigint, holdings bigint, pool bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    SELECT a.territory_id, count(*) FILTER (WHERE a.rep_id IS NOT NULL), count(*) FILTER (WHERE a.rep_id IS NULL)
      FROM allocation.assignment a
     WHERE a.valid_to IS NULL AND a.territory_id IS NOT NULL
     GROUP BY a.territory_id
$$;
COMMENT ON FUNCTION allocation.territory_holdings() IS 'Open holdings (owned customers) and public-pool customers per territory';

CREATE FUNCTION allocation.territory_geojson()
RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT jsonb_build_object('type', 'FeatureCollection', 'features', coalesce(jsonb_agg(f ORDER BY id), '[]'))
      FROM (SELECT t.id, jsonb_build_object(
                'type', 'Feature',
                'geometry', ST_AsGeoJSON(t.geom, 6)::jsonb,
                'properties', jsonb_build_object(
                    'id', t.id, 'code', t.code, 'name', t.name, 'parent', p.code,
                    'crop_zones', to_jsonb(t.crop_zones), 'priority', t.priority, 'exclusive', t.exclusive,
                    'owner_rep', r.code, 'owner_rep_name', r.name, 'owner_team', tm.code,
                    'holdings', coalesce(h.holdings, 0),
                    'pool', coalesce(h.pool, 0))) AS f
              FROM allocation.territory t
              LEFT JOIN allocation.territory p ON p.id = t.parent_id
              LEFT JOIN allocation.rep r ON r.id = t.owner_rep_id
              LEFT JOIN allocation.team tm ON tm.id = t.owner_team_id
              LEFT JOIN allocation.territory_holdings() h ON h.territory_id = t.id
             WHERE t.geom IS NOT NULL) s
$$;
COMMENT ON FUNCTION allocation.territory_geojson() IS 'All territories as a GeoJSON FeatureCollection with owner, holdings and pool counts (for a map in any GIS or BI tool)';

CREATE FUNCTION allocation.cache_stats()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'allocation_cache_stats' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION allocation.cache_stats() IS 'This backend''s territory index (builds it if needed): mode (memory, or indexed above allocation.territory_cache_max), territories, vertices, bytes, bytes per vertex, limit_bytes, over_limit, build_ms; index_mode (shared: one copy per cluster with allocation in shared_preload_libraries; backend: this backend''s own copy; indexed), reason, preloaded, version (key of the territory rows read), backend_bytes, shared_bytes, shared_builds, shared_total_bytes, attached_backends, shared_builds_made';
