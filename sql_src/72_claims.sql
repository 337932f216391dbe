-- Claims and releases, locks, follow-ups, disputes (functions; the tables are in 70_claims.sql)
-------------------------------------------------------------------------------
-- Claim limits and checks
-------------------------------------------------------------------------------
CREATE FUNCTION allocation.claim_limits(rep bigint, tier text DEFAULT NULL)
RETURNS TABLE (max_held integer, max_held_tier text, daily_claims integer, cooldown interval, protection interval)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    WITH RECURSIVE up AS (
        SELECT t.id, t.parent_id, 0 AS depth
          FROM allocation.rep r JOIN allocation.team t ON t.id = r.team_id WHERE r.id = claim_limits.rep
        UNION ALL
        SELECT t.id, t.parent_id, up.depth + 1 FROM allocation.team t JOIN up ON t.id = up.parent_id
         WHERE up.depth < 64),
    p AS (
        SELECT cp.*, coalesce(up.depth, 1000) AS depth
          FROM allocation.claim_policy cp LEFT JOIN up ON up.id = cp.team_id
         WHERE (cp.team_id IS NULL OR up.id IS NOT NULL)
           AND (cp.tier IS NULL OR cp.tier = claim_limits.tier)),
    mh AS (SELECT p.max_held, p.tier FROM p WHERE p.max_held IS NOT NULL
            ORDER BY (p.tier IS NOT NULL) DESC, p.depth LIMIT 1)
    -- rewards (issue 14): tier_access raises the tier's max_held, daily_claims_bonus the daily limit
    SELECT (SELECT mh.max_held + CASE WHEN mh.tier IS NOT NULL
                                      THEN allocation._reward_bonus(claim_limits.rep, 'tier_access', mh.tier) ELSE 0 END FROM mh),
           (SELECT mh.tier FROM mh),
           (SELECT p.daily_claims + allocation._reward_bonus(claim_limits.rep, 'daily_claims_bonus')
              FROM p WHERE p.daily_claims IS NOT NULL ORDER BY (p.tier IS NOT NULL) DESC, p.depth LIMIT 1),
           (SELECT p.cooldown FROM p WHERE p.cooldown IS NOT NULL ORDER BY (p.tier IS NOT NULL) DESC, p.depth LIMIT 1),
           (SELECT p.protection FROM p WHERE p.protection IS NOT NULL ORDER BY (p.tier IS NOT NULL) DESC, p.depth LIMIT 1)
$$;
COMMENT ON FUNCTION allocation.claim_limits(bigint, text) IS 'The claim limits that apply to a rep for a customer tier (NULL = no limit), resolved from allocation.claim_policy, with the rep''s active rewards added (tier_access to its tier''s max_held, daily_claims_bonus to the daily limit)';

-- The claim day: the date in allocation.claim_timezone (a superuser setting), never the
-- session's TimeZone, which any rep could change to count a claim on another day.
CREATE FUNCTION allocation.claim_today()
RETURNS date
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT (now() AT TIME ZONE coalesce(nullif(current_setting('allocation.claim_timezone', true), ''), 'Asia/Shanghai'))::date
$$;
COMMENT ON FUNCTION allocation.claim_today() IS 'The day the daily claim limit counts in: today in allocation.claim_timezone (default Asia/Shanghai)';

-- An existing, active rep, or LA020 / LA021 (p_inactive: the errdetail saying why an inactive
-- rep cannot take part in the step at hand)
CREATE FUNCTION allocation._active_rep(p_rep bigint, p_inactive text)
RETURNS allocation.rep
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    r allocation.rep;
BEGIN
    SELECT * INTO r FROM allocation.rep x WHERE x.id = p_rep;
    IF r.id IS NULL THEN
        RAISE EXCEPTION 'rep % does not exist', p_rep USING ERRCODE = 'LA020',
              DETAIL = 'No row of allocation.rep has this id.', HINT = 'SELECT id, code FROM allocation.rep;';
    END IF;
    IF NOT r.active THEN
        RAISE EXCEPTION 'rep % is inactive', r.code USING ERRCODE = 'LA021', DETAIL = p_inactive, HINT = 'Choose an active rep.';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION allocation._active_rep(bigint, text) IS 'internal: an existing active rep, or LA020 (none) / LA021 (inactive, with the given detail)';

CREATE FUNCTION allocation._rep_in_team(p_rep bigint, p_team bigint)
RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    WITH RECURSIVE up AS (
        SELECT t.id, t.parent_id, 0 AS depth FROM allocation.rep r JOIN allocation.team t ON t.id = r.team_id WHERE r.id = p_rep
        UNION ALL
        SELECT t.id, t.parent_id, up.depth + 1 FROM allocation.team t JOIN up ON t.id = up.parent_id WHERE up.depth < 64)
    SELECT EXISTS (SELECT 1 FROM up WHERE up.id = p_team)
$$;
COMMENT ON FUNCTION allocation._rep_in_team(bigint, bigint) IS 'internal: whether a rep belongs to a team or one of its sub-teams';

-- The one place that reads when a rep last gave customers back (release or recycle; the
-- claim cooldown): the audit log's release and recycle events, which name the former owner
-- (from_rep).  With a key: that customer's latest; without: every customer the rep gave back
-- since p_since (a BRIN range on the log's time, so only the cooldown window is read).
CREATE FUNCTION allocation._gave_back(p_rep bigint, p_since timestamptz, p_managed integer DEFAULT NULL, p_key text DEFAULT NULL)
RETURNS TABLE (managed_id integer, key text, at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF p_key IS NOT NULL THEN
        RETURN QUERY
        SELECT e.managed_id, e.key, max(e.at) FROM allocation.event e
         WHERE e.key = p_key AND e.managed_id = p_managed AND e.from_rep = p_rep
           AND e.kind IN ('release', 'recycle') AND (p_since IS NULL OR e.at >= p_since)
         GROUP BY e.managed_id, e.key;
    ELSIF p_since IS NOT NULL THEN
        RETURN QUERY
        SELECT e.managed_id, e.key, max(e.at) FROM allocation.event e
         WHERE e.at >= p_since AND e.from_rep = p_rep AND e.kind IN ('release', 'recycle')
           AND (p_managed IS NULL OR e.managed_id = p_managed)
         GROUP BY e.managed_id, e.key;
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._gave_back(bigint, timestamptz, integer, text) IS 'internal: when a rep last released or recycled customers (one, or all since a time), from the audit log: the claim cooldown''s one source';

CREATE FUNCTION allocation._table_held(tbl regclass, rep bigint, tier text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'allocation_table_held' LANGUAGE C STABLE;
COMMENT ON FUNCTION allocation._table_held(regclass, bigint, text) IS 'internal: how many customers of a managed table a rep holds now with this tier (its owner and tier columns, read as the table''s owner)';

-- The one place that counts a rep's holdings for the claim policy's max_held (of one tier, or all)
CREATE FUNCTION allocation._rep_held(p_rep bigint, p_tier text)
RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    -- all tiers: the holdings counter; one tier: the rep's rows of that tier in the managed
    -- tables (their owner columns are the current ownership; a btree on the owner column
    -- serves it -- the ownership history would be read whole)
    SELECT CASE WHEN p_tier IS NULL
                THEN (SELECT coalesce(l.held, 0) FROM allocation.rep r
                        LEFT JOIN allocation.rep_load l ON l.rep_id = r.id WHERE r.id = p_rep)
                ELSE (SELECT coalesce(sum(allocation._table_held(m.tbl, p_rep, p_tier)), 0)::integer
                        FROM allocation.managed_table m WHERE m.active AND m.attributes ? 'tier') END
$$;
COMMENT ON FUNCTION allocation._rep_held(bigint, text) IS 'internal: how many customers a rep holds (of one tier, NULL = all): the max_held claim check''s count';

-- The claim checks that depend on the rep (and the customer's tier) only: active rep (1),
-- capacity (9), the claim policy's max_held (10), the daily limit (11).  Shared by
-- _claim_checks() (one customer) and _claim_screen() (once per tier for a whole pool).
CREATE FUNCTION allocation._rep_claim_checks(p_rep bigint, p_tier text, p_claims_today integer DEFAULT NULL)
RETURNS TABLE (ord integer, "check" text, ok boolean, sqlstate text, message text, detail text, hint text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    r allocation.rep;
    lim record;
    v_held integer;
    v_today integer;
    v_reserved integer;
BEGIN
    SELECT * INTO r FROM allocation.rep WHERE id = p_rep;
    SELECT * INTO lim FROM allocation.claim_limits(p_rep, p_tier);

    ord := 1; "check" := 'rep';
    ok := r.id IS NOT NULL AND r.active;
    sqlstate := CASE WHEN p_rep IS NULL THEN 'LA081' WHEN r.id IS NULL THEN 'LA020' WHEN NOT r.active THEN 'LA021' END;
    message := CASE WHEN p_rep IS NULL THEN 'no rep: the current role is no rep''s login'
                    WHEN r.id IS NULL THEN format('rep %s does not exist', p_rep)
                    WHEN NOT r.active THEN format('rep %s is inactive', r.code) ELSE format('rep %s is active', r.code) END;
    detail := NULL; hint := CASE WHEN NOT ok THEN 'Claims are made for an active rep.' END;
    RETURN NEXT;

    ord := 9; "check" := 'capacity';
    -- slots reserved by pending suggestions naming the rep count (accepting them must not fail)
    SELECT l.held, l.reserved INTO v_held, v_reserved FROM allocation.rep_load l WHERE l.rep_id = p_rep;
    v_held := coalesce(v_held, 0);
    v_reserved := coalesce(v_reserved, 0);
    ok := r.capacity IS NULL OR v_held + v_reserved < r.capacity;
    sqlstate := CASE WHEN NOT ok THEN 'LA022' END;
    message := CASE WHEN r.capacity IS NULL THEN format('holds %s, no capacity limit', v_held)
                    WHEN ok THEN format('holds %s%s of capacity %s%s', v_held,
                                        CASE WHEN v_reserved > 0 THEN format(' (and %s reserved by pending suggestions)', v_reserved) ELSE '' END,
                                        r.capacity, allocation._reward_note(p_rep, 'capacity_bonus'))
                    WHEN v_held > r.capacity OR v_held + v_reserved > r.capacity THEN format('rep %s is over capacity', r.code)
                    ELSE format('rep %s is at capacity', r.code) END;
    detail := CASE WHEN ok THEN NULL
                   WHEN v_reserved = 0 AND v_held = r.capacity THEN format('Rep %s holds %s customers, its capacity.', r.code, v_held)
                   ELSE format('Rep %s holds %s customers%s; its capacity is %s.', r.code, v_held,
                               CASE WHEN v_reserved > 0 THEN format(' and %s pending suggestions reserve %s more', v_reserved, v_reserved) ELSE '' END,
                               r.capacity) END;
    hint := CASE WHEN ok THEN NULL
                 WHEN v_reserved = 0 THEN 'Release a customer first, or ask a manager to raise the capacity.'
                 ELSE 'Release a customer first, or ask a manager to decide the pending suggestions or raise the capacity.' END;
    RETURN NEXT;

    ord := 10; "check" := 'max_held';
    IF lim.max_held IS NOT NULL THEN
        v_held := allocation._rep_held(p_rep, lim.max_held_tier);
    END IF;
    ok := lim.max_held IS NULL OR v_held < lim.max_held;
    sqlstate := CASE WHEN NOT ok THEN 'LA022' END;
    message := CASE WHEN lim.max_held IS NULL THEN 'no claim policy limits holdings'
                    WHEN ok THEN format('holds %s of %s%s allowed by the claim policy%s', v_held, lim.max_held,
                                        coalesce(' tier ' || lim.max_held_tier || ' customers', ''),
                                        CASE WHEN lim.max_held_tier IS NOT NULL
                                             THEN allocation._reward_note(p_rep, 'tier_access', lim.max_held_tier) ELSE '' END)
                    ELSE format('rep %s holds the %s%s customers its claim policy allows', r.code, lim.max_held,
                                coalesce(' tier ' || lim.max_held_tier, '')) END;
    detail := CASE WHEN NOT ok THEN format('allocation.claim_policy limits claims to reps holding fewer than %s%s customers; rep %s holds %s.',
                                           lim.max_held, coalesce(' tier ' || lim.max_held_tier, ''), r.code, v_held) END; hint := CASE WHEN NOT ok THEN 'Release a customer first, or ask an admin to change allocation.claim_policy.' END;
    RETURN NEXT;

    ord := 11; "check" := 'daily_limit';
    v_today := coalesce(p_claims_today,
                        (SELECT d.claims FROM allocation.claim_day d WHERE d.rep_id = p_rep AND d.day = allocation.claim_today()), 0);
    ok := lim.daily_claims IS NULL OR v_today < lim.daily_claims;
    sqlstate := CASE WHEN NOT ok THEN 'LA082' END;
    message := CASE WHEN lim.daily_claims IS NULL THEN format('%s claims today, no daily limit', v_today)
                    WHEN ok THEN format('%s of %s claims today%s', v_today, lim.daily_claims,
                                        allocation._reward_note(p_rep, 'daily_claims_bonus'))
                    ELSE format('rep %s reached its daily claim limit', r.code) END;
    detail := CASE WHEN NOT ok THEN format('Rep %s made %s claims today; the claim policy allows %s per day.', r.code, v_today, lim.daily_claims) END; hint := CASE WHEN NOT ok THEN 'Try again tomorrow.' END;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION allocation._rep_claim_checks(bigint, text, integer) IS 'internal: the claim checks that depend on the rep and the customer''s tier only (active, capacity, max_held, daily limit)';

-- Every claim check for one customer and rep; claim() applies them in ord order.
CREATE FUNCTION allocation._claim_checks(p_managed integer, p_key text, p_rep bigint, p_at timestamptz,
                                         p_claims_today integer DEFAULT NULL)
RETURNS TABLE (ord integer, "check" text, ok boolean, sqlstate text, message text, detail text, hint text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    r allocation.rep;
    a allocation.assignment;
    o allocation.rep;
    lk allocation.customer_lock;
    pr allocation.protection;
    t allocation.territory;
    lim record;
    v_last timestamptz;
    v_other text;
    sg allocation.suggestion;
BEGIN
    SELECT * INTO r FROM allocation.rep WHERE id = p_rep;
    SELECT * INTO a FROM allocation._current(p_managed, p_key);
    SELECT * INTO lim FROM allocation.claim_limits(p_rep, a.tier);
    -- check 1 (active rep) and 9-11 (capacity, max_held, daily limit): _rep_claim_checks()

    ord := 2; "check" := 'in_pool';
    ok := a.id IS NOT NULL AND a.rep_id IS NULL;
    SELECT * INTO o FROM allocation.rep WHERE id = a.rep_id;
    sqlstate := CASE WHEN NOT ok THEN CASE WHEN a.id IS NULL THEN 'LA062' ELSE 'LA080' END END;
    message := CASE WHEN a.id IS NULL THEN format('customer %s is not registered', p_key)
                    WHEN a.rep_id = p_rep THEN format('customer %s is already yours', p_key)
                    WHEN a.rep_id IS NOT NULL THEN format('customer %s is already claimed by rep %s', p_key, o.code)
                    ELSE format('customer %s is in the public pool', p_key) END;
    detail := CASE WHEN a.rep_id IS NOT NULL THEN format('Rep %s (%s, id %s) holds it since %s (%s).', o.code, o.name, o.id, a.valid_from, a.source) END;
    hint := CASE WHEN a.rep_id IS NOT NULL AND a.rep_id <> p_rep THEN 'Only customers in the public pool can be claimed; ask a manager for a transfer.' END;
    RETURN NEXT;

    ord := 3; "check" := 'locked';
    SELECT * INTO lk FROM allocation.customer_lock WHERE managed_id = p_managed AND key = p_key;
    ok := lk.key IS NULL;
    sqlstate := CASE WHEN NOT ok THEN 'LA084' END;
    message := CASE WHEN ok THEN 'not locked' ELSE format('customer %s is locked', p_key) END;
    detail := CASE WHEN NOT ok THEN format('Locked by %s at %s: %s', lk.locked_by, lk.locked_at, lk.reason) END;
    hint := CASE WHEN NOT ok THEN 'A manager can unlock it with allocation.unlock_customer().' END;
    RETURN NEXT;

    ord := 4; "check" := 'disputed';
    SELECT d.other_key INTO v_other FROM allocation.duplicate d
     WHERE d.managed_id = p_managed AND d.key = p_key AND d.status = 'open' AND d.action = 'dispute'
     ORDER BY d.id LIMIT 1;
    ok := v_other IS NULL;
    sqlstate := CASE WHEN NOT ok THEN 'LA087' END;
    message := CASE WHEN ok THEN 'no open dispute' ELSE format('customer %s is in dispute', p_key) END;
    detail := CASE WHEN NOT ok THEN format('It may duplicate customer %s and waits for a manager''s decision.', v_other) END;
    hint := CASE WHEN NOT ok THEN 'A manager decides with allocation.resolve_dispute() or allocation.dismiss_dispute().' END;
    RETURN NEXT;

    ord := 5; "check" := 'awaiting_review';
    SELECT * INTO sg FROM allocation.suggestion x WHERE x.managed_id = p_managed AND x.key = p_key AND x.status = 'pending';
    ok := sg.id IS NULL;
    sqlstate := CASE WHEN NOT ok THEN 'LA089' END;
    message := CASE WHEN ok THEN 'no suggestion waiting for review' ELSE format('customer %s is awaiting review', p_key) END;
    detail := CASE WHEN NOT ok THEN format('Suggestion %s (%s) proposes rep %s and waits for a manager''s decision since %s.',
                                           sg.id, coalesce(sg.reason, 'suggest rule'),
                                           (SELECT x.code FROM allocation.rep x WHERE x.id = sg.rep_id), sg.created_at) END;
    hint := CASE WHEN NOT ok THEN 'A manager decides with allocation.accept_suggestion() or allocation.reject_suggestion(); after a rejection the customer can be claimed.' END;
    RETURN NEXT;

    ord := 6; "check" := 'protected';
    SELECT * INTO pr FROM allocation.protection WHERE managed_id = p_managed AND key = p_key AND until > p_at;
    ok := pr.key IS NULL OR pr.rep_id = p_rep;
    sqlstate := CASE WHEN NOT ok THEN 'LA085' END;
    message := CASE WHEN pr.key IS NULL THEN 'not protected'
                    WHEN ok THEN format('protected for you until %s', pr.until)
                    ELSE format('customer %s is protected for the rep that registered it', p_key) END;
    detail := CASE WHEN NOT ok THEN format('Rep %s registered it at %s; protection ends at %s.',
                                           (SELECT x.code FROM allocation.rep x WHERE x.id = pr.rep_id), pr.since, pr.until) END;
    hint := CASE WHEN NOT ok THEN 'Wait until the protection ends, or ask a manager.' END;
    RETURN NEXT;

    ord := 7; "check" := 'cooldown';
    SELECT g.at INTO v_last FROM allocation._gave_back(p_rep, NULL, p_managed, p_key) g;
    ok := lim.cooldown IS NULL OR v_last IS NULL OR v_last + lim.cooldown <= p_at;
    sqlstate := CASE WHEN NOT ok THEN 'LA083' END;
    message := CASE WHEN lim.cooldown IS NULL THEN 'no cooldown applies'
                    WHEN ok THEN format('cooldown %s: none running', lim.cooldown)
                    ELSE format('rep %s gave customer %s back less than %s ago', r.code, p_key, lim.cooldown) END;
    detail := CASE WHEN NOT ok THEN format('It was released or recycled at %s; the cooldown ends at %s.', v_last, v_last + lim.cooldown) END;
    hint := CASE WHEN NOT ok THEN 'Another rep can claim it now; you can after the cooldown.' END;
    RETURN NEXT;

    ord := 8; "check" := 'exclusive';
    SELECT * INTO t FROM allocation.territory WHERE id = a.territory_id;
    ok := t.id IS NULL OR NOT t.exclusive OR (t.owner_rep_id IS NULL AND t.owner_team_id IS NULL)
          OR coalesce(t.owner_rep_id = p_rep, false)
          OR (t.owner_team_id IS NOT NULL AND allocation._rep_in_team(p_rep, t.owner_team_id));
    sqlstate := CASE WHEN NOT ok THEN 'LA023' END;
    message := CASE WHEN t.id IS NULL OR NOT t.exclusive THEN 'not in an exclusive territory'
                    WHEN ok THEN format('exclusive territory %s is yours', t.code)
                    ELSE format('customer %s lies in exclusive territory %s of another rep', p_key, t.code) END;
    detail := NULL; hint := CASE WHEN NOT ok THEN 'Only the territory''s owner may hold customers there.' END;
    RETURN NEXT;

    RETURN QUERY SELECT * FROM allocation._rep_claim_checks(p_rep, a.tier, p_claims_today);
END
$$;
COMMENT ON FUNCTION allocation._claim_checks(integer, text, bigint, timestamptz, integer) IS 'internal: each claim check for one customer and rep (the order claim() applies them)';

-- Locks a customer's row (claim, release, recycle of one customer serialize on it) and
-- returns (found, owner).  Deadlock avoidance: a transaction that already holds holdings
-- counters does not wait for a customer row (55P03 instead), because the row's holder may
-- be waiting for one of those counters; recycle() skips rows that are locked.
CREATE FUNCTION allocation._lock_customer_row(m allocation.managed_table, p_key text, p_skip_locked boolean,
                                              OUT row_found boolean, OUT row_owner bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_row text[];
BEGIN
    IF p_key IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        SELECT u.r INTO v_row
          FROM allocation._table_rows(m.tbl, ARRAY[m.key_column::text, m.owner_column::text], p_key,
                                      CASE WHEN p_skip_locked THEN 'update skip locked'
                                           WHEN allocation._holds_counters() THEN 'update nowait'
                                           ELSE 'update' END) AS u(r);
    EXCEPTION
        WHEN data_exception THEN
            v_row := NULL;
        WHEN lock_not_available THEN
            RAISE EXCEPTION 'customer % is busy', p_key
                USING ERRCODE = '55P03',
                      DETAIL = 'Another open transaction is changing this customer, and this transaction already holds holdings counters that it may be waiting for.',
                      HINT = 'Retry after the other transaction ends, or claim and release one customer per transaction.';
    END;
    row_found := CASE WHEN v_row IS NOT NULL THEN true END;
    row_owner := v_row[2]::bigint;
END
$$;
COMMENT ON FUNCTION allocation._lock_customer_row(allocation.managed_table, text, boolean) IS 'internal: the row lock of claim, release and recycle (55P03 instead of a wait that could deadlock)';

CREATE FUNCTION allocation._table_rows(tbl regclass, cols text[], key text, lock text)
RETURNS SETOF text[]
AS 'MODULE_PATHNAME', 'allocation_table_rows' LANGUAGE C;
COMMENT ON FUNCTION allocation._table_rows(regclass, text[], text, text) IS 'internal: rows of a managed table (the named columns as text) read as the table''s owner, optionally one key, optionally locked';

CREATE FUNCTION allocation._holds_counters()
RETURNS boolean
AS 'MODULE_PATHNAME', 'allocation_holds_counters' LANGUAGE C;
COMMENT ON FUNCTION allocation._holds_counters() IS 'internal: whether this transaction holds any rep''s holdings counter';

CREATE FUNCTION allocation._claim(p_tbl regclass, p_key text, p_rep bigint, p_actor text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_found boolean;
    v_today integer;
    c record;
BEGIN
    m := allocation._managed(p_tbl);
    PERFORM allocation._check_column_types(m.tbl, m.key_column, NULL);
    -- the customer's row lock orders claim, release and recycle of one customer
    SELECT l.row_found INTO v_found FROM allocation._lock_customer_row(m, p_key, false) l;
    IF v_found IS NULL THEN
        RAISE EXCEPTION 'customer % not found in %', p_key, p_tbl
            USING ERRCODE = 'LA062', DETAIL = format('No row of %s has %s = %s.', p_tbl, m.key_column, p_key),
                  HINT = 'Check the key.';
    END IF;
    PERFORM allocation._refuse_if_disputed(m.id, p_key);
    -- the rep's holdings counter orders one rep's claims (limits hold under concurrency,
    -- whatever the day), under the engine's ordered-locking rule (55P03 instead of a deadlock)
    PERFORM allocation._lock_counter(p_rep);
    INSERT INTO allocation.claim_day AS d (rep_id, day, claims) VALUES (p_rep, allocation.claim_today(), 0)
    ON CONFLICT (rep_id, day) DO UPDATE SET claims = d.claims
    RETURNING d.claims INTO v_today;
    -- from here on every statement sees what committed before the two locks
    FOR c IN SELECT * FROM allocation._claim_checks(m.id, p_key, p_rep, now(), v_today) ORDER BY ord LOOP
        IF NOT c.ok THEN
            RAISE EXCEPTION USING MESSAGE = c.message, ERRCODE = c.sqlstate,
                  DETAIL = coalesce(c.detail, format('Claim check "%s" failed.', c."check")),
                  HINT = coalesce(c.hint, 'See allocation.explain_claim() for every check.');
        END IF;
    END LOOP;
    UPDATE allocation.claim_day SET claims = claims + 1 WHERE rep_id = p_rep AND day = allocation.claim_today();
    PERFORM allocation._owner_update(p_tbl, p_key, p_rep, 'claim', format('claimed from the public pool by %s', p_actor));
END
$$;
COMMENT ON FUNCTION allocation._claim(regclass, text, bigint, text) IS 'internal: the checks and counters of claim(), run as the extension owner';

CREATE FUNCTION allocation._release(p_tbl regclass, p_key text, p_reason text, p_rep bigint, p_actor text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_owner bigint;
    v_found boolean;
    lk allocation.customer_lock;
    o allocation.rep;
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'a release needs a reason'
            USING ERRCODE = '22004', DETAIL = 'The reason is kept in the audit log with the release.',
                  HINT = 'Say why, e.g. ''dealer moved to another county''.';
    END IF;
    m := allocation._managed(p_tbl);
    PERFORM allocation._check_column_types(m.tbl, m.key_column, NULL);
    SELECT l.row_found, l.row_owner INTO v_found, v_owner FROM allocation._lock_customer_row(m, p_key, false) l;
    IF v_found IS NULL THEN
        RAISE EXCEPTION 'customer % not found in %', p_key, p_tbl
            USING ERRCODE = 'LA062', DETAIL = format('No row of %s has %s = %s.', p_tbl, m.key_column, p_key),
                  HINT = 'Check the key.';
    END IF;
    IF v_owner IS NULL THEN
        RAISE EXCEPTION 'customer % is already in the public pool', p_key
            USING ERRCODE = 'LA086', DETAIL = 'Only a held customer can be released.', HINT = 'Nothing to do.';
    END IF;
    IF p_rep IS NOT NULL AND v_owner <> p_rep THEN
        SELECT * INTO o FROM allocation.rep WHERE id = v_owner;
        RAISE EXCEPTION 'customer % is not yours', p_key
            USING ERRCODE = 'LA086', DETAIL = format('It is held by rep %s (%s).', o.code, o.name),
                  HINT = 'A rep releases only its own customers; a manager can release any.';
    END IF;
    SELECT * INTO lk FROM allocation.customer_lock WHERE managed_id = m.id AND key = p_key;
    IF lk.key IS NOT NULL THEN
        RAISE EXCEPTION 'customer % is locked', p_key
            USING ERRCODE = 'LA084', DETAIL = format('Locked by %s at %s: %s', lk.locked_by, lk.locked_at, lk.reason),
                  HINT = 'A manager can unlock it with allocation.unlock_customer().';
    END IF;
    PERFORM allocation._refuse_if_disputed(m.id, p_key);
    PERFORM allocation._owner_update(p_tbl, p_key, NULL, 'release', p_reason);
END
$$;
COMMENT ON FUNCTION allocation._release(regclass, text, text, bigint, text) IS 'internal: the checks of release(), run as the extension owner';

CREATE FUNCTION allocation._try_lock_counter(rep bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'allocation_try_lock_counter' LANGUAGE C STRICT;
COMMENT ON FUNCTION allocation._try_lock_counter(bigint) IS 'internal: locks a rep''s holdings counter for this transaction unless another transaction holds it (never waits); false when busy';

CREATE FUNCTION allocation._lock_counter(rep bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_lock_counter' LANGUAGE C STRICT;
COMMENT ON FUNCTION allocation._lock_counter(bigint) IS 'internal: locks a rep''s holdings counter for this transaction under the ordered-locking rule (55P03 when waiting could deadlock)';

CREATE FUNCTION allocation._owner_update(tbl regclass, key text, rep bigint, source text, reason text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'allocation_owner_update' LANGUAGE C;
COMMENT ON FUNCTION allocation._owner_update(regclass, text, bigint, text, text) IS 'internal: owner change of claim/release/recycle, run as the table owner through the managed table''s triggers';

CREATE FUNCTION allocation.claim(tbl regclass, key text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_claim' LANGUAGE C;
COMMENT ON FUNCTION allocation.claim(regclass, text) IS
'The current rep (the rep whose login is the current role) claims a customer from the public pool; every limit is checked under the customer''s and the rep''s row locks (see explain_claim)';

CREATE FUNCTION allocation.claim(tbl regclass, key text, rep bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_claim' LANGUAGE C;
COMMENT ON FUNCTION allocation.claim(regclass, text, bigint) IS
'A manager claims a pool customer for the given rep, with the same checks as the rep''s own claim';

CREATE FUNCTION allocation.release(tbl regclass, key text, reason text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_release' LANGUAGE C;
COMMENT ON FUNCTION allocation.release(regclass, text, text) IS
'Gives a customer back to the public pool with a reason: a rep its own customers, a manager any; starts the former owner''s cooldown';

CREATE FUNCTION allocation._explain_claim(tbl regclass, key text, rep bigint DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_rep bigint := coalesce(rep, allocation.current_rep_id());
    v_checks jsonb;
BEGIN
    m := allocation._managed(tbl);
    SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object('check', c."check", 'ok', c.ok, 'sqlstate', c.sqlstate,
                                                          'message', c.message, 'detail', c.detail)) ORDER BY c.ord)
      INTO v_checks FROM allocation._claim_checks(m.id, key, v_rep, now()) c;
    RETURN jsonb_build_object('table', m.table_name, 'key', key, 'rep', v_rep,
                              'claimable', NOT jsonb_path_exists(v_checks, '$[*] ? (@.ok == false)'),
                              'checks', v_checks);
END
$$;
COMMENT ON FUNCTION allocation._explain_claim(regclass, text, bigint) IS 'internal: implementation of allocation.explain_claim(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.explain_claim(tbl regclass, key text, rep bigint DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.explain_claim(regclass, text, bigint) IS
'Why a rep can or cannot claim a customer now: every check (active rep, in pool, locked, disputed, awaiting review, protected, cooldown, exclusive territory, capacity incl. reserved slots, claim policy, daily limit) with its SQLSTATE';

-------------------------------------------------------------------------------
-- Locks, follow-ups, disputes
-------------------------------------------------------------------------------
-- The person acting, for the audit: the caller of the public function the engine runs
-- (gateway.c), else the current role; inside a SECURITY DEFINER function of the
-- extension the role set with SET ROLE (or the session user).  Kept in C, no setting.
CREATE FUNCTION allocation._actor()
RETURNS text
AS 'MODULE_PATHNAME', 'allocation_caller' LANGUAGE C STABLE;
COMMENT ON FUNCTION allocation._actor() IS 'internal: the acting role for audit entries written by the engine';

-- Whether the caller owns a table (ALTER TABLE's test), NULL when it does not exist
CREATE FUNCTION allocation._caller_owns(tbl regclass)
RETURNS boolean
AS 'MODULE_PATHNAME', 'allocation_caller_owns' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION allocation._caller_owns(regclass) IS 'internal: whether the caller of the engine owns (or is a member of the owner of) a table';

-- Refuses a caller that does not own the table: what ALTER TABLE would refuse
CREATE FUNCTION allocation._require_owner(tbl regclass, what text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL' USING ERRCODE = '22004',
              DETAIL = format('allocation.%s() was called with a NULL table.', replace(what, ' ', '_')),
              HINT = 'Pass the customer table, e.g. ''crm.customer''.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = tbl) THEN
        RAISE EXCEPTION 'relation with OID % does not exist', tbl::oid USING ERRCODE = '42P01',
              DETAIL = format('allocation.%s() was called with a regclass that names no table.', replace(what, ' ', '_')),
              HINT = 'Pass the customer table by name, e.g. ''crm.customer''.';
    END IF;
    IF NOT coalesce(allocation._caller_owns(tbl), false) THEN
        RAISE EXCEPTION 'must be owner of table % to % it', tbl, what
            USING ERRCODE = '42501',
                  DETAIL = format('Role %s does not own %s (nor is it a member of its owner).', allocation._actor(), tbl),
                  HINT = 'Run it as the table''s owner, like ALTER TABLE.';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._require_owner(regclass, text) IS 'internal: refuses a regclass that names no table (42P01) and a caller that does not own the table (42501)';

CREATE FUNCTION allocation._set_actor(actor text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_set_actor' LANGUAGE C;
COMMENT ON FUNCTION allocation._set_actor(text) IS 'internal: the role the engine records as actor for the rest of the transaction (NULL = the current user)';

-- Locks: SECURITY DEFINER (managers need no grants on the lock table); the actor is
-- the calling role, not a parameter.
CREATE FUNCTION allocation._lock_customer(p_tbl regclass, p_key text, p_reason text, p_lock boolean)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    p_actor text := allocation._actor();
BEGIN
    m := allocation._managed(p_tbl);
    IF NOT p_lock THEN
        DELETE FROM allocation.customer_lock l WHERE l.managed_id = m.id AND l.key = p_key;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
    ELSE
        IF p_reason IS NULL OR btrim(p_reason) = '' THEN
            RAISE EXCEPTION 'a lock needs a reason' USING ERRCODE = '22004',
                  DETAIL = 'The reason is shown to reps whose claims the lock refuses.',
                  HINT = 'Say why, e.g. ''head-office key account''.';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM allocation._current(m.id, p_key)) THEN
            RAISE EXCEPTION 'customer % not found in %', p_key, p_tbl USING ERRCODE = 'LA062',
                  DETAIL = 'The customer has no open ownership record.', HINT = 'Check the key.';
        END IF;
        -- under the customer's row lock, like every other change that keeps a customer where it
        -- is: a realignment step holding the row (it re-checks the stay reasons once, before
        -- its one UPDATE of the batch) either sees the lock or moves the customer first
        PERFORM allocation._lock_customer_row(m, p_key, false);
        INSERT INTO allocation.customer_lock AS l (managed_id, key, reason, locked_by) VALUES (m.id, p_key, p_reason, p_actor)
        ON CONFLICT (managed_id, key) DO UPDATE SET reason = EXCLUDED.reason, locked_at = now(), locked_by = EXCLUDED.locked_by;
    END IF;
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, key, reason)
    VALUES (p_actor, CASE WHEN p_lock THEN 'lock' ELSE 'unlock' END, m.id, m.table_name, p_key, p_reason);
    RETURN true;
END
$$;
COMMENT ON FUNCTION allocation._lock_customer(regclass, text, text, boolean) IS 'internal: sets or removes a customer lock with its event';

CREATE FUNCTION allocation._lock_customer(tbl regclass, key text, reason text)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    SELECT allocation._lock_customer(tbl, key, reason, true);
$$;
COMMENT ON FUNCTION allocation._lock_customer(regclass, text, text) IS 'internal: implementation of allocation.lock_customer(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.lock_customer(tbl regclass, key text, reason text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.lock_customer(regclass, text, text) IS
'Locks a customer: no claim, release or recycle until unlocked (managers can still assign it)';

CREATE FUNCTION allocation._unlock_customer(tbl regclass, key text, reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    SELECT allocation._lock_customer(tbl, key, reason, false);
$$;
COMMENT ON FUNCTION allocation._unlock_customer(regclass, text, text) IS 'internal: implementation of allocation.unlock_customer(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.unlock_customer(tbl regclass, key text, reason text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.unlock_customer(regclass, text, text) IS
'Unlocks a customer; false when it was not locked';

-- Follow-ups: the recording rep is the current role's rep (it cannot be forged).
CREATE FUNCTION allocation._followup_before() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_rep bigint := allocation.current_rep_id();
    v_holder bigint;
BEGIN
    NEW.recorded_by := allocation._actor();
    -- a follow-up read from the CRM's own table (manage_outcomes()): the engine
    -- checked it and credited the rep; only the engine itself lands those
    IF NEW.source_id IS NOT NULL OR NEW.source_ref IS NOT NULL THEN
        IF current_user = (SELECT r.rolname FROM pg_catalog.pg_roles r JOIN pg_catalog.pg_namespace n ON n.nspowner = r.oid
                            WHERE n.nspname = 'allocation') THEN
            RETURN NEW;
        END IF;
        NEW.source_id := NULL;
        NEW.source_ref := NULL;
    END IF;
    IF v_rep IS NOT NULL THEN
        NEW.rep_id := v_rep;
    END IF;
    IF NOT allocation._customer_exists(NEW.managed_id, NEW.key) THEN
        RAISE EXCEPTION 'customer % not found', NEW.key USING ERRCODE = 'LA062',
              DETAIL = format('Managed table %s has no customer with this key.', NEW.managed_id),
              HINT = 'Record follow-ups of managed customers only.';
    END IF;
    -- a follow-up resets the holder's recycle clock: a rep records them for its own
    -- customers only (a manager, who is no rep's login, for any)
    IF v_rep IS NOT NULL THEN
        v_holder := allocation._customer_holder(NEW.managed_id, NEW.key);
        IF v_holder IS DISTINCT FROM v_rep THEN
            RAISE EXCEPTION 'customer % is not yours', NEW.key USING ERRCODE = 'LA08A',
                  DETAIL = CASE WHEN v_holder IS NULL THEN 'It is in the public pool; a follow-up would count for nobody''s recycle clock.'
                                ELSE format('It is held by rep %s; its follow-ups reset that rep''s recycle clock.',
                                            (SELECT x.code FROM allocation.rep x WHERE x.id = v_holder)) END,
                  HINT = 'Log follow-ups of your own customers; claim a pool customer first, or ask its holder or a manager.';
        END IF;
    END IF;
    IF NEW.at > now() + interval '1 hour'
       AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = allocation._actor()) THEN
        RAISE EXCEPTION 'a follow-up cannot be dated in the future'
            USING ERRCODE = '22008', DETAIL = format('It is dated %s.', NEW.at),
                  HINT = 'Record follow-ups when they happened (only a superuser may date one ahead, to simulate).';
    END IF;
    IF NEW.kind = 'deal' THEN
        NEW.progress := true;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION allocation._followup_before() IS 'internal: a follow-up is recorded for the current rep, for a managed customer it holds (LA08A otherwise; roles that are no rep''s login, e.g. managers, for any)';

CREATE FUNCTION allocation._customer_exists(p_managed integer, p_key text)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    SELECT EXISTS (SELECT 1 FROM allocation._current(p_managed, p_key))
$$;
COMMENT ON FUNCTION allocation._customer_exists(integer, text) IS 'internal: whether a managed customer is registered';

CREATE FUNCTION allocation._customer_holder(p_managed integer, p_key text)
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    SELECT a.rep_id FROM allocation._current(p_managed, p_key) a
$$;
COMMENT ON FUNCTION allocation._customer_holder(integer, text) IS 'internal: the rep holding a managed customer (NULL = pool)';

CREATE TRIGGER followup_before BEFORE INSERT ON allocation.followup
    FOR EACH ROW EXECUTE FUNCTION allocation._followup_before();

CREATE FUNCTION allocation._log_followup(tbl regclass, key text, kind text, outcome text DEFAULT NULL,
                                        note text DEFAULT NULL, progress boolean DEFAULT false,
                                        at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO allocation.followup (managed_id, key, kind, outcome, note, progress, at)
    VALUES ((allocation._managed(tbl)).id, key, kind, outcome, note, coalesce(progress, false), coalesce(at, now()))
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION allocation._log_followup(regclass, text, text, text, text, boolean, timestamptz) IS 'internal: implementation of allocation.log_followup(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.log_followup(tbl regclass, key text, kind text, outcome text DEFAULT NULL, note text DEFAULT NULL, progress boolean DEFAULT false, at timestamptz DEFAULT now())
RETURNS bigint
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.log_followup(regclass, text, text, text, text, boolean, timestamptz) IS
'Records a follow-up (visit, call, message, meeting, demo, sample, deal, other) of a customer for the current rep; resets its recycle clock (progress/deal also the stage clock)';

CREATE FUNCTION allocation._resolve_dispute(id bigint, rep bigint, reason text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    d allocation.duplicate;
    m allocation.managed_table;
BEGIN
    SELECT * INTO d FROM allocation._lock_duplicate(_resolve_dispute.id);
    m := allocation._managed_by_id(d.managed_id);
    IF rep IS NOT NULL THEN
        PERFORM allocation.assign(m.tbl, d.key, rep, coalesce(reason, 'dispute resolved'));
    END IF;
    PERFORM allocation._close_duplicate(d.id, true, reason, rep);
END
$$;
COMMENT ON FUNCTION allocation._resolve_dispute(bigint, bigint, text) IS 'internal: implementation of allocation.resolve_dispute(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.resolve_dispute(id bigint, rep bigint, reason text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.resolve_dispute(bigint, bigint, text) IS
'Closes a duplicate/dispute entry; with a rep the disputed customer is assigned to that rep (like allocation.assign())';

CREATE FUNCTION allocation._dismiss_dispute(id bigint, reason text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    d allocation.duplicate;
BEGIN
    SELECT * INTO d FROM allocation._lock_duplicate(_dismiss_dispute.id);
    PERFORM allocation._close_duplicate(d.id, false, reason, NULL);
END
$$;
COMMENT ON FUNCTION allocation._dismiss_dispute(bigint, text) IS 'internal: implementation of allocation.dismiss_dispute(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.dismiss_dispute(id bigint, reason text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.dismiss_dispute(bigint, text) IS
'Closes a duplicate/dispute entry as not a duplicate; the customer stays where it is';

CREATE FUNCTION allocation._lock_duplicate(p_id bigint)
RETURNS allocation.duplicate
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    d allocation.duplicate;
BEGIN
    SELECT * INTO d FROM allocation.duplicate WHERE id = p_id FOR UPDATE;
    IF d.id IS NULL THEN
        RAISE EXCEPTION 'duplicate entry % does not exist', p_id USING ERRCODE = 'LA088',
              DETAIL = 'No row of allocation.duplicate has this id.', HINT = 'See allocation.dispute_queue.';
    END IF;
    IF d.status <> 'open' THEN
        RAISE EXCEPTION 'duplicate entry % is %, not open', p_id, d.status USING ERRCODE = 'LA088',
              DETAIL = format('It was %s by %s at %s.', d.status, d.decided_by, d.decided_at),
              HINT = 'Only open entries can be resolved or dismissed.';
    END IF;
    RETURN d;
END
$$;
COMMENT ON FUNCTION allocation._lock_duplicate(bigint) IS 'internal: locks an open duplicate entry';

CREATE FUNCTION allocation._close_duplicate(p_id bigint, p_resolved boolean, p_reason text, p_rep bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    d allocation.duplicate;
    v_actor text := allocation._actor();
    v_status text := CASE WHEN p_resolved THEN 'resolved' ELSE 'dismissed' END;
BEGIN
    d := allocation._lock_duplicate(p_id);      -- open entries only
    UPDATE allocation.duplicate
       SET status = v_status, decided_at = now(), decided_by = v_actor, decision = p_reason,
           resolved_rep = CASE WHEN p_resolved THEN p_rep END
     WHERE id = d.id;
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, key, to_rep, reason, detail)
    SELECT v_actor, 'dispute_' || v_status, d.managed_id, m.table_name, d.key,
           CASE WHEN p_resolved THEN p_rep END, p_reason,
           jsonb_build_object('duplicate_id', d.id, 'other_key', d.other_key, 'match', d.match)
      FROM allocation.managed_table m WHERE m.id = d.managed_id;
END
$$;
COMMENT ON FUNCTION allocation._close_duplicate(bigint, boolean, text, bigint) IS 'internal: closes an open duplicate entry (resolved or dismissed) with an event naming the calling role';

