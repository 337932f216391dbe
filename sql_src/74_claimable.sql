-------------------------------------------------------------------------------
-- The rep's pool screen (公海): which pool customers a rep can claim now, and
-- why not for the others -- set-based: the facts that depend on the rep (active,
-- capacity, claim policy limits, claims today) are computed once per customer
-- tier, the customer facts (locks, disputes, pending suggestions, protection,
-- cooldown, exclusive territory) by joins; the first failing check is the one
-- allocation._claim_checks() (claim(), explain_claim()) reports first.
-------------------------------------------------------------------------------

-- "newest in the pool first" walks allocation.customer_state_pool_idx (pool customers
-- always have a state row; a customer a rule assigned is in no index of the screen)
-- the cooldowns running for a rep (allocation._gave_back): releases and recycles are a small
-- part of the audit log, and only they are in this index
CREATE INDEX event_gave_back_idx ON allocation.event (from_rep, at) WHERE kind IN ('release', 'recycle');

-- What the screen needs to know about the rep, computed once per screen call (a page walks
-- the pool in several batches): the rep-level checks (1 active, 9 capacity, 10 max_held,
-- 11 daily limit) depend on the customer's tier only through the claim policy, so they are
-- evaluated once per tier that has a policy of its own (array element 1 + its place in
-- tiers) and once for every other tier (element 1); plus the cooldowns, the exclusive
-- territories the rep may not claim in (check 8) and the rep's code.
CREATE TYPE allocation._screen_facts AS (
    tiers     text[],
    ord       integer[],
    "check"   text[],
    sqlstate  text[],
    message   text[],
    detail    text[],
    hint      text[],
    cooldown  interval[],
    maxcool   interval,
    forbidden bigint[],
    code      text
);
COMMENT ON TYPE allocation._screen_facts IS 'internal: the rep-level facts of a pool screen (allocation._screen_facts())';

CREATE FUNCTION allocation._screen_facts(p_rep bigint)
RETURNS allocation._screen_facts
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    f allocation._screen_facts;
    v_teams bigint[];
BEGIN
    f.tiers := ARRAY(SELECT DISTINCT cp.tier FROM allocation.claim_policy cp WHERE cp.tier IS NOT NULL ORDER BY 1);
    SELECT array_agg(c.ord ORDER BY g.i), array_agg(c."check" ORDER BY g.i),
           array_agg(c.sqlstate ORDER BY g.i), array_agg(c.message ORDER BY g.i), array_agg(c.detail ORDER BY g.i),
           array_agg(c.hint ORDER BY g.i), array_agg(l.cooldown ORDER BY g.i), max(l.cooldown)
      INTO f.ord, f."check", f.sqlstate, f.message, f.detail, f.hint, f.cooldown, f.maxcool
      FROM (SELECT 1 AS i, NULL::text AS tier UNION ALL SELECT o + 1, t FROM unnest(f.tiers) WITH ORDINALITY AS u(t, o)) g
     CROSS JOIN LATERAL allocation.claim_limits(p_rep, g.tier) l
      LEFT JOIN LATERAL (SELECT x.* FROM allocation._rep_claim_checks(p_rep, g.tier) x
                          WHERE NOT x.ok ORDER BY x.ord LIMIT 1) c ON true;
    -- check 8: the exclusive territories whose owner is neither the rep nor one of its teams
    v_teams := ARRAY(SELECT tm.id FROM allocation.team tm WHERE allocation._rep_in_team(p_rep, tm.id));
    f.forbidden := ARRAY(SELECT t.id FROM allocation.territory t
                          WHERE t.exclusive AND NOT (t.owner_rep_id IS NULL AND t.owner_team_id IS NULL)
                            AND NOT coalesce(t.owner_rep_id = p_rep, false)
                            AND NOT coalesce(t.owner_team_id = ANY (v_teams), false));
    f.code := (SELECT r.code FROM allocation.rep r WHERE r.id = p_rep);
    RETURN f;
END
$$;
COMMENT ON FUNCTION allocation._screen_facts(bigint) IS 'internal: the rep-level facts of a pool screen, computed once per screen';

-- Pool customers with the first failing claim check for a rep (ord NULL: claimable).
-- p_managed NULL = every managed table; p_keys: only these customers; p_order 'newest'
-- (since the customer entered the pool) or NULL (no order); with p_order 'newest' and
-- p_limit, only the window of p_limit pool customers after the p_offset newest (a walk
-- of the pool index that stops there) is checked; p_include_blocked false: claimable
-- customers only.
CREATE FUNCTION allocation._claim_screen(p_rep bigint, p_at timestamptz, p_managed integer, p_keys text[],
                                         p_order text, p_limit integer, p_offset integer, p_include_blocked boolean,
                                         p_facts allocation._screen_facts DEFAULT NULL)
RETURNS TABLE (managed_id integer, key text, territory_id bigint, tier text, crop text, in_pool_since timestamptz,
               ord integer, "check" text, sqlstate text, message text, detail text, hint text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    f allocation._screen_facts := coalesce(p_facts, allocation._screen_facts(p_rep));
BEGIN
    IF p_order IS NOT NULL AND p_order <> 'newest' THEN
        RAISE EXCEPTION 'unknown order "%"', p_order USING ERRCODE = '22023',
              DETAIL = 'The orders are newest and NULL (none).', HINT = 'Pass ''newest'' or NULL.';
    END IF;

    RETURN QUERY EXECUTE format($q$
        WITH pool AS (
            -- the screen's one read of the ownership state: the pool customers' rows
            SELECT a.managed_id, a.key, a.territory_id, a.tier, a.crop, a.valid_from
              FROM allocation.customer_state a
             WHERE a.rep_id IS NULL
               AND ($3::integer IS NULL OR a.managed_id = $3) AND ($4::text[] IS NULL OR a.key = ANY ($4))
             %1$s),
        gb AS MATERIALIZED (
            SELECT * FROM allocation._gave_back($1, $15, $3)),
        c AS (
            SELECT p.*,
                   CASE WHEN $6[gi.g] = 1 THEN 1
                        WHEN lk.key IS NOT NULL THEN 3
                        WHEN dp.other_key IS NOT NULL THEN 4
                        WHEN sg.id IS NOT NULL THEN 5
                        WHEN pr.key IS NOT NULL THEN 6
                        WHEN gb.at + $12[gi.g] > $2 THEN 7
                        WHEN p.territory_id = ANY ($14) THEN 8
                        ELSE $6[gi.g] END AS ord,
                   $7[gi.g] AS rep_check, $8[gi.g] AS rep_sqlstate, $9[gi.g] AS rep_message,
                   $10[gi.g] AS rep_detail, $11[gi.g] AS rep_hint, $12[gi.g] AS cooldown,
                   lk.locked_by, lk.locked_at, lk.reason AS lock_reason, dp.other_key,
                   sg.id AS sg_id, sg.reason AS sg_reason, sg.rep_id AS sg_rep, sg.created_at AS sg_created,
                   pr.rep_id AS pr_rep, pr.since AS pr_since, pr.until AS pr_until, gb.at AS gave_back
              FROM pool p
              JOIN allocation.managed_table m ON m.id = p.managed_id AND m.active
              -- the rep-level verdict of the customer's tier group: 1 = every tier without a policy of its own
              CROSS JOIN LATERAL (SELECT coalesce(pg_catalog.array_position($13::text[], p.tier), 0) + 1 AS g) gi
              LEFT JOIN allocation.customer_lock lk ON lk.managed_id = p.managed_id AND lk.key = p.key
              LEFT JOIN (SELECT DISTINCT ON (d.managed_id, d.key) d.managed_id, d.key, d.other_key
                           FROM allocation.duplicate d
                          WHERE d.status = 'open' AND d.action = 'dispute' AND ($3::integer IS NULL OR d.managed_id = $3)
                          ORDER BY d.managed_id, d.key, d.id) dp ON dp.managed_id = p.managed_id AND dp.key = p.key
              LEFT JOIN allocation.suggestion sg ON sg.managed_id = p.managed_id AND sg.key = p.key AND sg.status = 'pending'
              LEFT JOIN allocation.protection pr ON pr.managed_id = p.managed_id AND pr.key = p.key
                                               AND pr.until > $2 AND pr.rep_id <> $1
              LEFT JOIN gb ON gb.managed_id = p.managed_id AND gb.key = p.key)
        -- the messages: as allocation._claim_checks() words them
        SELECT c.managed_id, c.key, c.territory_id, c.tier, c.crop, c.valid_from, c.ord,
               CASE c.ord WHEN 3 THEN 'locked' WHEN 4 THEN 'disputed' WHEN 5 THEN 'awaiting_review'
                          WHEN 6 THEN 'protected' WHEN 7 THEN 'cooldown' WHEN 8 THEN 'exclusive'
                          ELSE c.rep_check END,
               CASE c.ord WHEN 3 THEN 'LA084' WHEN 4 THEN 'LA087' WHEN 5 THEN 'LA089'
                          WHEN 6 THEN 'LA085' WHEN 7 THEN 'LA083' WHEN 8 THEN 'LA023'
                          ELSE c.rep_sqlstate END,
               CASE c.ord
                    WHEN 3 THEN format('customer %%s is locked', c.key)
                    WHEN 4 THEN format('customer %%s is in dispute', c.key)
                    WHEN 5 THEN format('customer %%s is awaiting review', c.key)
                    WHEN 6 THEN format('customer %%s is protected for the rep that registered it', c.key)
                    WHEN 7 THEN format('rep %%s gave customer %%s back less than %%s ago', $16, c.key, c.cooldown)
                    WHEN 8 THEN format('customer %%s lies in exclusive territory %%s of another rep', c.key,
                                       (SELECT t.code FROM allocation.territory t WHERE t.id = c.territory_id))
                    ELSE c.rep_message END,
               CASE c.ord
                    WHEN 3 THEN format('Locked by %%s at %%s: %%s', c.locked_by, c.locked_at, c.lock_reason)
                    WHEN 4 THEN format('It may duplicate customer %%s and waits for a manager''s decision.', c.other_key)
                    WHEN 5 THEN format('Suggestion %%s (%%s) proposes rep %%s and waits for a manager''s decision since %%s.',
                                       c.sg_id, coalesce(c.sg_reason, 'suggest rule'),
                                       (SELECT x.code FROM allocation.rep x WHERE x.id = c.sg_rep), c.sg_created)
                    WHEN 6 THEN format('Rep %%s registered it at %%s; protection ends at %%s.',
                                       (SELECT x.code FROM allocation.rep x WHERE x.id = c.pr_rep), c.pr_since, c.pr_until)
                    WHEN 7 THEN format('It was released or recycled at %%s; the cooldown ends at %%s.',
                                       c.gave_back, c.gave_back + c.cooldown)
                    WHEN 8 THEN NULL
                    ELSE c.rep_detail END,
               CASE c.ord
                    WHEN 3 THEN 'A manager can unlock it with allocation.unlock_customer().'
                    WHEN 4 THEN 'A manager decides with allocation.resolve_dispute() or allocation.dismiss_dispute().'
                    WHEN 5 THEN 'A manager decides with allocation.accept_suggestion() or allocation.reject_suggestion(); after a rejection the customer can be claimed.'
                    WHEN 6 THEN 'Wait until the protection ends, or ask a manager.'
                    WHEN 7 THEN 'Another rep can claim it now; you can after the cooldown.'
                    WHEN 8 THEN 'Only the territory''s owner may hold customers there.'
                    ELSE c.rep_hint END
          FROM c
         WHERE $17 OR c.ord IS NULL
         %2$s
        $q$, CASE WHEN p_order = 'newest' AND p_limit IS NOT NULL
                  THEN 'ORDER BY a.valid_from DESC, a.key DESC LIMIT $18 OFFSET $19' ELSE '' END,
             CASE WHEN p_order = 'newest' THEN 'ORDER BY c.valid_from DESC, c.key DESC' ELSE '' END)
    USING p_rep, p_at, p_managed, p_keys, NULL::text, f.ord, f."check", f.sqlstate, f.message, f.detail,
          f.hint, f.cooldown, f.tiers, f.forbidden, p_at - f.maxcool, f.code, coalesce(p_include_blocked, false),
          p_limit, coalesce(p_offset, 0);
END
$$;
COMMENT ON FUNCTION allocation._claim_screen(bigint, timestamptz, integer, text[], text, integer, integer, boolean, allocation._screen_facts) IS 'internal: pool customers with the first failing claim check for a rep, set-based (the same first check as _claim_checks())';

-- claimable(rep) and the view claimable_now: every pool customer of every managed table
CREATE FUNCTION allocation._claimable(rep bigint)
RETURNS TABLE (tbl regclass, table_name text, key text, territory_id bigint, tier text, crop text,
               in_pool_since timestamptz, claimable boolean, sqlstate text, why_not text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    RETURN QUERY
    SELECT m.tbl, m.table_name, s.key, s.territory_id, s.tier, s.crop, s.in_pool_since,
           s.ord IS NULL, s.sqlstate, s.message || coalesce(': ' || s.detail, '')
      FROM allocation._claim_screen(coalesce(_claimable.rep, allocation.current_rep_id()), now(), NULL, NULL,
                                    NULL, NULL, 0, true) s
      JOIN allocation.managed_table m ON m.id = s.managed_id;
END
$$;
COMMENT ON FUNCTION allocation._claimable(bigint) IS 'internal: implementation of allocation.claimable(): pool customers and the first failing claim check for a rep (NULL: the caller''s)';

CREATE FUNCTION allocation.claimable(rep bigint DEFAULT NULL)
RETURNS TABLE (tbl regclass, table_name text, key text, territory_id bigint, tier text, crop text,
               in_pool_since timestamptz, claimable boolean, sqlstate text, why_not text)
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C STABLE;
COMMENT ON FUNCTION allocation.claimable(bigint) IS 'Pool customers and whether the rep (default: the current role''s) can claim each now, and if not why';

CREATE VIEW allocation.claimable_now AS
SELECT * FROM allocation.claimable(allocation.current_rep_id());
COMMENT ON VIEW allocation.claimable_now IS 'For the current rep: every public-pool customer, claimable now or not, and why not (the first failing check with its SQLSTATE)';

CREATE FUNCTION allocation._table_nearest(tbl regclass, near geometry, lim integer, skip integer)
RETURNS TABLE (key text, distance double precision)
AS 'MODULE_PATHNAME', 'allocation_table_nearest' LANGUAGE C STABLE;
COMMENT ON FUNCTION allocation._table_nearest(regclass, geometry, integer, integer) IS 'internal: keys of a managed table''s pool rows (owner NULL) nearest to a point first (KNN on its location), read as the table''s owner';

-- One page of the screen for one table
CREATE FUNCTION allocation._claimable_page(tbl regclass, near geometry, page_size integer, skip integer,
                                           include_blocked boolean, rep bigint)
RETURNS TABLE (key text, distance double precision, in_pool_since timestamptz, territory_id bigint, tier text,
               crop text, claimable boolean, failed_check text, sqlstate text, why_not text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_rep bigint := coalesce(rep, allocation.current_rep_id());
    v_at timestamptz := now();
    v_skip integer := coalesce(skip, 0);
    v_want integer;
    v_pg name;
    v_srid integer;
    v_batch integer;
    v_seen integer := 0;
    v_n integer;
    v_keys text[];
    v_dists double precision[];
    v_match text[] := '{}';
    v_mdist double precision[] := '{}';
    v_mk text[];
    v_md double precision[];
    v_facts allocation._screen_facts;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.claimable_page() was called with a NULL table.',
              HINT = 'Pass the customer table, e.g. ''crm.customer''.';
    END IF;
    IF page_size IS NULL OR page_size < 1 OR page_size > 1000 OR v_skip < 0 THEN
        RAISE EXCEPTION 'page size must be between 1 and 1000 and skip at least 0' USING ERRCODE = '22023',
              DETAIL = format('allocation.claimable_page() was called with page_size %s and skip %s.',
                              coalesce(page_size::text, 'NULL'), v_skip),
              HINT = 'Ask for pages of up to 1000 customers, e.g. page_size => 20, skip => 40 for the third page.';
    END IF;
    m := allocation._managed(tbl);
    v_want := v_skip + page_size;
    IF near IS NOT NULL THEN
        -- nearest first: the point in the location column's SRID (PostGIS by its schema)
        IF m.location_column IS NULL THEN
            RAISE EXCEPTION 'table % has no location column', tbl USING ERRCODE = '22023',
                  DETAIL = 'It was managed without a location column, so its customers cannot be ordered by distance.',
                  HINT = 'Call it without a point (newest first), or manage the table with a location column.';
        END IF;
        SELECT n.nspname INTO v_pg FROM pg_catalog.pg_extension e
          JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis';
        EXECUTE format('SELECT %1$I.postgis_typmod_srid(a.atttypmod) FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = $1 AND a.attname = $2 AND a.atttypmod >= 0', v_pg)
           INTO v_srid USING m.tbl, m.location_column;
        EXECUTE format('SELECT CASE WHEN coalesce($2, 0) = 0 OR %1$I.st_srid($1) = $2 THEN $1
                                    WHEN %1$I.st_srid($1) = 0 THEN %1$I.st_setsrid($1, $2)
                                    ELSE %1$I.st_transform($1, $2) END', v_pg)
           INTO near USING near, v_srid;
    END IF;

    -- the rep-level facts, once for the whole walk; nothing to walk for when every tier
    -- fails a check of the rep's (inactive, at capacity, ...)
    v_facts := allocation._screen_facts(v_rep);
    IF NOT coalesce(include_blocked, false) AND NOT EXISTS (SELECT 1 FROM unnest(v_facts.ord) o WHERE o IS NULL) THEN
        RETURN;
    END IF;

    -- walk the pool (newest first: the pool index; nearest first: KNN on the customer table)
    -- in growing batches until the page is full; each batch is checked set-based, so a
    -- blocked customer costs only its place in the walk
    v_batch := greatest(2 * v_want, 64);
    LOOP
        IF near IS NULL THEN
            SELECT array_agg(s.key), array_agg(NULL::double precision), count(*),
                   array_agg(s.key) FILTER (WHERE coalesce(include_blocked, false) OR s.ord IS NULL)
              INTO v_keys, v_dists, v_n, v_mk
              FROM allocation._claim_screen(v_rep, v_at, m.id, NULL, 'newest', v_batch, v_seen, true, v_facts) s;
            v_md := array_fill(NULL::double precision, ARRAY[coalesce(cardinality(v_mk), 0)]);
        ELSE
            SELECT array_agg(n.key ORDER BY n.o), array_agg(n.distance ORDER BY n.o), count(*)
              INTO v_keys, v_dists, v_n
              FROM allocation._table_nearest(m.tbl, near, v_batch, v_seen) WITH ORDINALITY AS n(key, distance, o);
            SELECT array_agg(b.key ORDER BY b.o), array_agg(b.distance ORDER BY b.o) INTO v_mk, v_md
              FROM unnest(v_keys, v_dists) WITH ORDINALITY AS b(key, distance, o)
              JOIN allocation._claim_screen(v_rep, v_at, m.id, v_keys, NULL, NULL, 0,
                                            coalesce(include_blocked, false), v_facts) s ON s.key = b.key;
        END IF;
        v_seen := v_seen + v_n;
        -- (a customer seen twice, when the pool changed between two batches, counts once)
        SELECT array_agg(x.key ORDER BY x.o), array_agg(x.distance ORDER BY x.o) INTO v_mk, v_md
          FROM unnest(v_mk, v_md) WITH ORDINALITY AS x(key, distance, o) WHERE NOT x.key = ANY (v_match);
        v_match := v_match || coalesce(v_mk, '{}');
        v_mdist := v_mdist || coalesce(v_md, '{}');
        EXIT WHEN cardinality(v_match) >= v_want OR v_n < v_batch;
        -- the next batch: 4x, or what the share of claimable customers seen so far says the
        -- rest of the page needs (x 1.5), when that is more (a rep standing in a region it
        -- cannot claim in would otherwise pay a walk and a screen per step)
        v_batch := least(greatest(v_batch * 4,
                                  ceil((v_want - cardinality(v_match)) * v_seen * 1.5
                                       / greatest(cardinality(v_match), 1))::integer), 100000);
    END LOOP;

    RETURN QUERY
    SELECT s.key, w.distance, s.in_pool_since, s.territory_id, s.tier, s.crop, s.ord IS NULL,
           s."check", s.sqlstate, s.message || coalesce(': ' || s.detail, '')
      FROM unnest(v_match[v_skip + 1 : v_want], v_mdist[v_skip + 1 : v_want]) WITH ORDINALITY AS w(key, distance, o)
      JOIN allocation._claim_screen(v_rep, v_at, m.id, v_match[v_skip + 1 : v_want], NULL, NULL, 0, true, v_facts) s ON s.key = w.key
     ORDER BY w.o;
END
$$;
COMMENT ON FUNCTION allocation._claimable_page(regclass, geometry, integer, integer, boolean, bigint) IS 'internal: implementation of allocation.claimable_page(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.claimable_page(tbl regclass, near geometry DEFAULT NULL, page_size integer DEFAULT 20,
                                          skip integer DEFAULT 0, include_blocked boolean DEFAULT false,
                                          rep bigint DEFAULT NULL)
RETURNS TABLE (key text, distance double precision, in_pool_since timestamptz, territory_id bigint, tier text,
               crop text, claimable boolean, failed_check text, sqlstate text, why_not text)
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C STABLE;
COMMENT ON FUNCTION allocation.claimable_page(regclass, geometry, integer, integer, boolean, bigint) IS
'One page of a rep''s pool screen for a table: the pool customers the rep (default: the current role''s) can claim now, nearest to a point (KNN on the location column) or newest in the pool first; with include_blocked also the others, with the first failing check, its SQLSTATE and why';

CREATE FUNCTION allocation._claimable_count(tbl regclass, rep bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.claimable_count() was called with a NULL table.',
              HINT = 'Pass the customer table, e.g. ''crm.customer''.';
    END IF;
    m := allocation._managed(tbl);
    RETURN (SELECT count(*) FROM allocation._claim_screen(coalesce(rep, allocation.current_rep_id()), now(),
                                                          m.id, NULL, NULL, NULL, 0, false));
END
$$;
COMMENT ON FUNCTION allocation._claimable_count(regclass, bigint) IS 'internal: implementation of allocation.claimable_count(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.claimable_count(tbl regclass, rep bigint DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C STABLE;
COMMENT ON FUNCTION allocation.claimable_count(regclass, bigint) IS
'How many pool customers of a table the rep (default: the current role''s) can claim now (the count behind allocation.claimable_page())';
