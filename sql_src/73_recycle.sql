-- Recycling to the public pool (公海), its views, registration protection
-------------------------------------------------------------------------------
-- Recycling to the public pool
-------------------------------------------------------------------------------

-- The new-rep policy that protects a rep at a time: none once its ramp-up is over
CREATE FUNCTION allocation._new_rep_ramp(p_rep bigint, p_at timestamptz)
RETURNS SETOF allocation.new_rep_policy
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT x.* FROM allocation.rep r
      JOIN LATERAL (SELECT x.* FROM allocation.new_rep_policy x
                     WHERE x.team_id IS NULL OR allocation._rep_in_team(r.id, x.team_id)
                     ORDER BY x.team_id = r.team_id DESC NULLS LAST, x.team_id IS NULL, x.id LIMIT 1) x
        ON r.created_at + x.ramp_up > p_at
     WHERE r.id = p_rep
$$;
COMMENT ON FUNCTION allocation._new_rep_ramp(bigint, timestamptz) IS 'internal: the new_rep_policy row protecting a rep at a time (its team''s own row first, then the nearest enclosing team''s, then the NULL one), none once its ramp-up is over';

-- The new rep a team's round robin must serve first (the one furthest below its minimum
-- share), if any; p_record makes first-time candidates' counter rows (not when explaining)
CREATE FUNCTION allocation._rr_behind(p_team bigint, p_candidates bigint[], p_at timestamptz, p_record boolean)
RETURNS TABLE (rep_id bigint, served bigint, team_served bigint, min_share numeric)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS
$$
    WITH cur AS (SELECT coalesce((SELECT c.served FROM allocation.rr_cursor c WHERE c.team_id = p_team), 0) AS served),
    fresh AS (
        SELECT c.id, nr.min_share FROM unnest(p_candidates) AS c(id)
          CROSS JOIN LATERAL allocation._new_rep_ramp(c.id, p_at) nr
         WHERE nr.min_share IS NOT NULL),
    made AS (
        INSERT INTO allocation.rr_share AS s (team_id, rep_id, served, team_served_before)
        SELECT p_team, f.id, 0, cur.served FROM fresh f, cur WHERE p_record
        ON CONFLICT (team_id, rep_id) DO NOTHING
        RETURNING s.rep_id, s.team_served_before),
    shares AS (
        SELECT f.id, f.min_share, coalesce(s.served, 0) AS served,
               cur.served - coalesce(s.team_served_before, m.team_served_before, cur.served) AS team_served
          FROM fresh f CROSS JOIN cur
          LEFT JOIN allocation.rr_share s ON s.team_id = p_team AND s.rep_id = f.id
          LEFT JOIN made m ON m.rep_id = f.id)
    SELECT sh.id, sh.served, sh.team_served, sh.min_share FROM shares sh
     WHERE sh.served < sh.min_share * (sh.team_served + 1)
     ORDER BY sh.min_share * (sh.team_served + 1) - sh.served DESC, sh.id
     LIMIT 1
$$;
COMMENT ON FUNCTION allocation._rr_behind(bigint, bigint[], timestamptz, boolean) IS 'internal: the new rep in its ramp-up that a team''s round robin serves first because its share of the fresh leads given since its first turn would fall below the policy''s min_share';

-- The recycle clock of every held customer of one table.
CREATE FUNCTION allocation._recycle_status(p_managed integer, p_at timestamptz, p_key text DEFAULT NULL)
RETURNS TABLE (managed_id integer, key text, rep_id bigint, policy_id bigint, last_followup timestamptz,
               last_progress timestamptz, due_at timestamptz, warn_at timestamptz, why text, exempt text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
BEGIN
    SELECT * INTO m FROM allocation.managed_table mt WHERE mt.id = p_managed AND mt.active;
    IF m.id IS NULL OR NOT EXISTS (SELECT 1 FROM allocation.recycle_policy p WHERE p.enabled) THEN
        RETURN;
    END IF;
    -- the customer table is read as its owner (allocation._table_rows), never as the extension owner
    RETURN QUERY EXECUTE $q$
        WITH t AS MATERIALIZED (
            SELECT u.r[1] AS key, u.r[2]::timestamptz AS last_contact, u.r[3] AS stage
              FROM allocation._table_rows($3, ARRAY[$5, $6, $7], $4, '') AS u(r)),
        held AS (
            SELECT a.managed_id, a.key, a.rep_id, a.tier, a.territory_id, a.valid_from, a.stage_since,
                   t.last_contact, t.stage
              FROM allocation.assignment a
              JOIN t ON t.key = a.key
             WHERE a.managed_id = $1 AND a.valid_to IS NULL AND a.rep_id IS NOT NULL
               AND ($4::text IS NULL OR a.key = $4)),
        pol AS (
            SELECT h.key, (SELECT p.id FROM allocation.recycle_policy p
                             LEFT JOIN LATERAL (
                                 WITH RECURSIVE up AS (
                                     SELECT tt.id, tt.parent_id, 0 AS depth FROM allocation.territory tt WHERE tt.id = h.territory_id
                                     UNION ALL
                                     SELECT tt.id, tt.parent_id, up.depth + 1 FROM allocation.territory tt JOIN up ON tt.id = up.parent_id
                                      WHERE up.depth < 64)
                                 SELECT up.depth FROM up WHERE up.id = p.territory_id) d ON true
                            WHERE p.enabled AND (p.tbl IS NULL OR p.tbl = $3)
                              AND (p.tier IS NULL OR p.tier = h.tier)
                              AND (p.territory_id IS NULL OR d.depth IS NOT NULL)
                            ORDER BY d.depth NULLS LAST, (p.tier IS NOT NULL) DESC, (p.tbl IS NOT NULL) DESC, p.id
                            LIMIT 1) AS policy_id
              FROM held h),
        clocks AS (
            SELECT h.*, p.id AS policy_id, p.no_followup, p.no_progress, p.warn_before, p.exempt_stages,
                   greatest(h.valid_from, h.last_contact,
                            (SELECT max(f.at) FROM allocation.followup f
                              WHERE f.managed_id = h.managed_id AND f.key = h.key AND f.at <= $2)) AS last_followup,
                   greatest(h.valid_from, h.stage_since,
                            (SELECT max(f.at) FROM allocation.followup f
                              WHERE f.managed_id = h.managed_id AND f.key = h.key AND f.progress AND f.at <= $2)) AS last_progress
              FROM held h JOIN pol ON pol.key = h.key JOIN allocation.recycle_policy p ON p.id = pol.policy_id),
        due AS (
            SELECT c.*, least(c.last_followup + c.no_followup, c.last_progress + c.no_progress) AS due_at
              FROM clocks c),
        -- exempt for a reason of its own (locked, disputed, an exempt stage), and the
        -- registration protection that pushes the due time back, read once
        flagged AS (
            SELECT d.*, pr.until AS protected_until,
                   CASE WHEN lk.key IS NOT NULL THEN 'locked'
                        WHEN EXISTS (SELECT 1 FROM allocation.ownership_dispute od
                                      WHERE od.managed_id = d.managed_id AND od.key = d.key AND od.status = 'open') THEN 'disputed'
                        WHEN d.stage = ANY (d.exempt_stages) THEN format('stage %s is exempt', d.stage) END AS exempt
              FROM due d
              LEFT JOIN allocation.customer_lock lk ON lk.managed_id = d.managed_id AND lk.key = d.key
              LEFT JOIN allocation.protection pr ON pr.managed_id = d.managed_id AND pr.key = d.key
                                               AND pr.rep_id = d.rep_id AND pr.until > $2),
        -- new reps in their ramp-up: how many more customers recycling may take away from them
        -- (those due first go first; the rest are exempt); customers exempt for another reason
        -- or protected use none of the quota
        ramp AS (
            SELECT f.key, nr.max_recycled,
                   (SELECT count(*) FROM allocation.event e
                     WHERE e.kind = 'recycle' AND e.from_rep = f.rep_id AND e.at >= r.created_at)
                   + row_number() OVER (PARTITION BY f.rep_id ORDER BY least(f.due_at, 'infinity'), f.key) AS nth
              FROM flagged f
              JOIN allocation.rep r ON r.id = f.rep_id
             CROSS JOIN LATERAL allocation._new_rep_ramp(f.rep_id, $2) nr
             WHERE nr.max_recycled IS NOT NULL AND f.due_at <= $2 AND f.exempt IS NULL AND f.protected_until IS NULL)
        SELECT f.managed_id, f.key, f.rep_id, f.policy_id, f.last_followup, f.last_progress,
               greatest(f.due_at, f.protected_until) AS due_at, greatest(f.due_at, f.protected_until) - f.warn_before AS warn_at,
               CASE WHEN f.last_followup + f.no_followup <= coalesce(f.last_progress + f.no_progress, 'infinity')
                    THEN format('no follow-up since %s (policy: %s)', f.last_followup, f.no_followup)
                    ELSE format('no stage progress or deal since %s (policy: %s)', f.last_progress, f.no_progress) END,
               coalesce(f.exempt,
                        CASE WHEN ramp.nth > ramp.max_recycled
                             THEN format('new rep in its ramp-up: at most %s customers recycled away', ramp.max_recycled) END)
          FROM flagged f
          LEFT JOIN ramp ON ramp.key = f.key
        $q$
    USING p_managed, p_at, m.tbl, p_key, m.key_column::text, m.attributes->>'last_contact', m.attributes->>'stage';
END
$$;
COMMENT ON FUNCTION allocation._recycle_status(integer, timestamptz, text) IS 'internal: recycle policy, clocks and due time of every held customer of a managed table';

CREATE FUNCTION allocation.recycle(now timestamptz DEFAULT now())
RETURNS TABLE (table_name text, key text, rep_id bigint, action text, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    r record;
    v_owner bigint;
    v_found boolean;
    v_busy text;
    v_msg text;
    v_skipped integer := 0;
BEGIN
    PERFORM allocation._refuse_read_only('allocation.recycle()');   -- 25006 on a standby, before anything else
    IF recycle.now IS NULL OR (recycle.now > pg_catalog.now() + interval '1 minute'
                               AND NOT (SELECT ro.rolsuper FROM pg_catalog.pg_roles ro WHERE ro.rolname = allocation._actor())) THEN
        RAISE EXCEPTION 'recycle() cannot run as of a later time'
            USING ERRCODE = '22023',
                  DETAIL = format('It was called for %s; recycling as of a later time would take customers away before their policy says so.',
                                  coalesce(recycle.now::text, 'NULL')),
                  HINT = 'Call allocation.recycle() without an argument; only a superuser may simulate a later date.';
    END IF;
    -- the recycle events name the caller, not the function owner
    PERFORM allocation._set_actor(allocation._actor());
    -- one run at a time; a second caller waits and then finds nothing left to do
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('allocation.recycle'));
    FOR m IN SELECT * FROM allocation.managed_table mt WHERE mt.active ORDER BY mt.id LOOP
        -- warnings: once per customer and due time
        FOR r IN SELECT s.* FROM allocation._recycle_status(m.id, recycle.now) s
                  WHERE s.exempt IS NULL AND s.warn_at <= recycle.now AND s.due_at > recycle.now
                    AND NOT EXISTS (SELECT 1 FROM allocation.event e
                                     WHERE e.managed_id = m.id AND e.key = s.key AND e.kind = 'recycle_warning'
                                       AND e.to_rep = s.rep_id AND (e.detail->>'due_at')::timestamptz = s.due_at)
                  ORDER BY s.key LOOP
            INSERT INTO allocation.event (actor, kind, managed_id, table_name, key, to_rep, reason, detail)
            VALUES (allocation._actor(), 'recycle_warning', m.id, m.table_name, r.key, r.rep_id,
                    format('goes back to the public pool at %s: %s', r.due_at, r.why),
                    jsonb_build_object('due_at', r.due_at, 'policy_id', r.policy_id,
                                       'last_followup', r.last_followup, 'last_progress', r.last_progress));
            table_name := m.table_name; key := r.key; rep_id := r.rep_id; action := 'warned'; reason := r.why;
            RETURN NEXT;
        END LOOP;
        -- recycling: each due customer under its row lock, checked again after the lock.
        -- Nothing here waits for another transaction: a customer whose row, or whose rep's
        -- holdings counter, another open transaction holds (a claim in progress) is skipped,
        -- reported (action 'skipped') and left for the next run; the others are recycled.
        FOR r IN SELECT s.* FROM allocation._recycle_status(m.id, recycle.now) s
                  WHERE s.exempt IS NULL AND s.due_at <= recycle.now ORDER BY s.key LOOP
            v_busy := NULL;
            SELECT l.row_found, l.row_owner INTO v_found, v_owner FROM allocation._lock_customer_row(m, r.key, true) l;
            IF v_found IS NULL THEN
                IF EXISTS (SELECT 1 FROM allocation._table_rows(m.tbl, ARRAY[m.key_column::text], r.key, '')) THEN
                    v_busy := 'customer is busy: another open transaction is changing it';
                ELSE
                    CONTINUE;   -- deleted meanwhile
                END IF;
            ELSIF v_owner IS DISTINCT FROM r.rep_id OR NOT EXISTS (
                   SELECT 1 FROM allocation._recycle_status(m.id, recycle.now, r.key) s2
                    WHERE s2.exempt IS NULL AND s2.due_at <= recycle.now AND s2.rep_id = r.rep_id) THEN
                CONTINUE;       -- claimed, released, followed up or locked meanwhile
            ELSIF NOT allocation._try_lock_counter(r.rep_id) THEN
                v_busy := format('rep %s is busy: another open transaction is taking or releasing its customers',
                                 (SELECT x.code FROM allocation.rep x WHERE x.id = r.rep_id));
            ELSE
                BEGIN
                    PERFORM allocation._owner_update(m.tbl, r.key, NULL, 'recycle', 'recycled to the public pool: ' || r.why);
                EXCEPTION WHEN lock_not_available THEN
                    -- another counter this recycle needs (e.g. of a pending suggestion's rep) is busy
                    GET STACKED DIAGNOSTICS v_msg = MESSAGE_TEXT;
                    v_busy := v_msg;
                END;
            END IF;
            table_name := m.table_name; key := r.key; rep_id := r.rep_id;
            IF v_busy IS NULL THEN
                action := 'recycled'; reason := r.why;
            ELSE
                action := 'skipped'; reason := v_busy || '; left for the next run (due: ' || r.why || ')';
                v_skipped := v_skipped + 1;
            END IF;
            RETURN NEXT;
        END LOOP;
    END LOOP;
    IF v_skipped > 0 THEN
        RAISE NOTICE '% due customer(s) skipped: busy in another open transaction', v_skipped
            USING DETAIL = 'They are returned with action ''skipped'' and the reason; the others were recycled.',
                  HINT = 'The next run recycles them if they are still due.';
    END IF;
    PERFORM allocation._set_actor(NULL);
END
$$;
COMMENT ON FUNCTION allocation.recycle(timestamptz) IS
'Returns neglected customers to the public pool per allocation.recycle_policy and records warning events K days ahead; idempotent, one run at a time (schedule it with pg_cron); never waits for another transaction: a due customer busy in one (its row or its rep''s counter) is returned with action skipped and left for the next run';

-------------------------------------------------------------------------------
-- Views
-------------------------------------------------------------------------------
-- (the pool screen: claimable_now, claimable(), claimable_page(), claimable_count() are in 74_claimable.sql)

CREATE VIEW allocation.dispute_queue AS
SELECT d.id, m.tbl, m.table_name, d.key, a.rep_id AS owner_rep_id, a.source AS owner_source,
       d.other_key, oa.rep_id AS other_owner_rep_id, ro.code AS other_owner_code, oa.valid_from AS other_since,
       d.match, d.value, d.similarity, d.action, d.opened_at, d.opened_by
  FROM allocation.duplicate d
  JOIN allocation.managed_table m ON m.id = d.managed_id
  LEFT JOIN allocation.assignment a ON a.managed_id = d.managed_id AND a.key = d.key AND a.valid_to IS NULL
  LEFT JOIN allocation.assignment oa ON oa.managed_id = d.managed_id AND oa.key = d.other_key AND oa.valid_to IS NULL
  LEFT JOIN allocation.rep ro ON ro.id = oa.rep_id
 WHERE d.status = 'open';
COMMENT ON VIEW allocation.dispute_queue IS 'Open duplicates and disputes: the customer, the one it matched (and who holds each), how it matched, and the action taken';

CREATE FUNCTION allocation.upcoming_recycles(p_at timestamptz)
RETURNS TABLE (managed_id integer, key text, rep_id bigint, policy_id bigint, last_followup timestamptz,
               last_progress timestamptz, due_at timestamptz, warn_at timestamptz, why text, exempt text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    SELECT s.* FROM allocation.managed_table m, allocation._recycle_status(m.id, p_at) s WHERE m.active
$$;
COMMENT ON FUNCTION allocation.upcoming_recycles(timestamptz) IS 'Recycle clocks of every held customer at a point in time (last follow-up and progress, warning and due times, exemption)';

CREATE VIEW allocation.upcoming_recycle AS
SELECT m.tbl, m.table_name, s.key, s.rep_id, r.code AS rep_code, r.name AS rep_name, s.policy_id,
       p.name AS policy_name, s.last_followup, s.last_progress, s.warn_at, s.due_at, s.why, s.exempt,
       s.due_at <= now() AS overdue
  FROM allocation.upcoming_recycles(now()) s
  JOIN allocation.managed_table m ON m.id = s.managed_id
  LEFT JOIN allocation.rep r ON r.id = s.rep_id
  LEFT JOIN allocation.recycle_policy p ON p.id = s.policy_id
 WHERE s.warn_at <= now();
COMMENT ON VIEW allocation.upcoming_recycle IS 'The warning list: held customers inside their recycle warning window (or overdue), with owner, policy, last follow-up and progress, due time, and any exemption';

-- registration protection (报备): a rep that inserts customers as its own login
-- protects them for the policy's period (also called by the engine's direct path)
CREATE FUNCTION allocation._record_protection(p_actor text, p_managed integer[], p_key text[], p_tier text[])
RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
$$
    INSERT INTO allocation.protection (managed_id, key, rep_id, until)
    SELECT b.managed_id, b.key, r.id, now() + l.protection
      FROM unnest(p_managed, p_key, p_tier) AS b(managed_id, key, tier)
      JOIN allocation.rep r ON r.login = p_actor
      CROSS JOIN LATERAL allocation.claim_limits(r.id, b.tier) l
     WHERE l.protection > interval '0'
    ON CONFLICT (managed_id, key) DO UPDATE SET rep_id = EXCLUDED.rep_id, since = now(), until = EXCLUDED.until;
$$;
COMMENT ON FUNCTION allocation._record_protection(text, integer[], text[], text[])
    IS 'internal: registration protection of customers a rep inserted as its own login';
