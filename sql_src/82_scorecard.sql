-------------------------------------------------------------------------------
-- The allocation loop, measured (issue 14): per holding period the outcome facts,
-- aggregated into scorecards (per rep, team, territory) and strategy
-- effectiveness (per rule, policy, territory, tier, crop); monthly snapshots
-- materialised by refresh_scorecards() for BI
-------------------------------------------------------------------------------

-- Who may read everyone's measures: managers, analysts and admins (they read the log);
-- a rep reads its own only
CREATE FUNCTION allocation._reads_all_measures()
RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT pg_catalog.has_table_privilege(allocation._actor(), 'allocation.event', 'SELECT')
$$;
COMMENT ON FUNCTION allocation._reads_all_measures() IS 'internal: whether the caller reads every rep''s measures (it may read the audit log), else only its own';

-- The period argument of the measures: bounded, not empty
CREATE FUNCTION allocation._check_period(p_period tstzrange, p_touch_days integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF p_period IS NULL OR p_touch_days IS NULL THEN
        RAISE EXCEPTION 'the period and touch_days must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'Measures are taken over a period, e.g. a month.',
              HINT = 'SELECT * FROM allocation.scorecard(tstzrange(''2027-03-01'', ''2027-04-01''));';
    END IF;
    IF isempty(p_period) OR lower_inf(p_period) OR upper_inf(p_period) THEN
        RAISE EXCEPTION 'period % is empty or unbounded', p_period USING ERRCODE = 'LA0M0',
              DETAIL = 'Measures need a start and an end (held at the end, touched before the end, per day held).',
              HINT = 'Use e.g. tstzrange(''2027-03-01'', ''2027-04-01'') or allocation.month_of(now()).';
    END IF;
    IF NOT lower_inc(p_period) OR upper_inc(p_period) THEN
        RAISE EXCEPTION 'period % is not half-open', p_period USING ERRCODE = 'LA0M0',
              DETAIL = 'Measures are taken over [start, end): the start belongs to the period, the end to the next one, so consecutive periods neither overlap nor leave a gap.',
              HINT = 'Use tstzrange(start, end), whose bounds are [) by default, or allocation.month_of(now()).';
    END IF;
    IF p_touch_days < 1 THEN
        RAISE EXCEPTION 'touch_days must be at least 1, not %', p_touch_days USING ERRCODE = 'LA0M0',
              DETAIL = 'A customer counts as touched when it had a follow-up within this many days before the end of the period.',
              HINT = 'The default is 30.';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._check_period(tstzrange, integer) IS 'internal: 22004 / LA0M0 for a NULL, empty, unbounded or not half-open period or a touch_days below 1';

-- The loop's evaluations take a lock so that one runs at a time, then read what the one
-- before wrote: that needs a snapshot taken after the lock, i.e. READ COMMITTED
CREATE FUNCTION allocation._require_read_committed(p_function text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'allocation.%() needs a READ COMMITTED transaction', p_function USING ERRCODE = 'LA0M2',
              DETAIL = pg_catalog.format('This transaction is %s: its snapshot could predate a concurrent run that it waits for, and it would miss what that run wrote.',
                                         pg_catalog.upper(pg_catalog.current_setting('transaction_isolation'))),
              HINT = 'Call it in its own READ COMMITTED transaction (pg_cron jobs and autocommit statements are, unless default_transaction_isolation is changed).';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._require_read_committed(text) IS 'internal: LA0M2 unless the transaction is READ COMMITTED (the loop''s evaluations wait for each other, then read what the one before wrote)';

-- The calendar month (in the session's time zone) that contains a time
CREATE FUNCTION allocation.month_of(at timestamptz DEFAULT now())
RETURNS tstzrange
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    -- in allocation.claim_timezone (a superuser setting, default Asia/Shanghai), never the
    -- session's TimeZone: runs from sessions in different zones name the same month
    SELECT pg_catalog.tstzrange(pg_catalog.timezone(z, date_trunc('month', pg_catalog.timezone(z, at))),
                                pg_catalog.timezone(z, date_trunc('month', pg_catalog.timezone(z, at)) + interval '1 month'))
      FROM (SELECT coalesce(nullif(pg_catalog.current_setting('allocation.claim_timezone', true), ''), 'Asia/Shanghai') AS z) x
$$;
COMMENT ON FUNCTION allocation.month_of(timestamptz) IS 'The calendar month containing a time, in allocation.claim_timezone (default Asia/Shanghai), as the period argument of scorecard(), strategy_effectiveness() and evaluate_performance()';

-- One row per holding period of a rep that overlaps the period, with its outcome facts.
-- The clipped window w = the part of the holding inside the period.
CREATE FUNCTION allocation._outcome_base(p_period tstzrange, p_touch_days integer)
RETURNS TABLE (managed_id integer, key text, rep_id bigint, team_id bigint, territory_id bigint,
               rule_id bigint, source text, tier text, crop text,
               held_days numeric, held_at_end boolean, started_in_period boolean,
               first_contact interval, touched boolean, prior_deal boolean, converted boolean,
               deal_amount numeric, satisfaction_sum numeric, satisfaction_n integer)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    WITH h AS (
        SELECT a.managed_id, a.key, a.rep_id, r.team_id, a.territory_id, a.rule_id, a.source, a.tier, a.crop,
               a.valid_from, a.valid_to,
               greatest(a.valid_from, lower(p_period)) AS w_from,
               least(coalesce(a.valid_to, 'infinity'), upper(p_period)) AS w_to
          FROM allocation.assignment a
          LEFT JOIN allocation.rep r ON r.id = a.rep_id
         WHERE a.rep_id IS NOT NULL
           AND a.valid_from < upper(p_period) AND (a.valid_to IS NULL OR a.valid_to > lower(p_period)))
    SELECT h.managed_id, h.key, h.rep_id, h.team_id, h.territory_id, h.rule_id, h.source, h.tier, h.crop,
           round((extract(epoch FROM h.w_to - h.w_from) / 86400)::numeric, 4),
           h.valid_to IS NULL OR h.valid_to >= upper(p_period),
           h.valid_from >= lower(p_period),
           -- the holder's first follow-up after it got the customer (holdings that started in the period)
           CASE WHEN h.valid_from >= lower(p_period) THEN
                (SELECT min(f.at) FROM allocation.followup f
                  WHERE f.managed_id = h.managed_id AND f.key = h.key AND f.rep_id = h.rep_id
                    AND f.at >= h.valid_from AND f.at < h.w_to) - h.valid_from END,
           -- held at the end and touched (by anyone) within touch_days before the end
           (h.valid_to IS NULL OR h.valid_to >= upper(p_period))
           AND EXISTS (SELECT 1 FROM allocation.followup f
                        WHERE f.managed_id = h.managed_id AND f.key = h.key
                          AND f.at >= upper(p_period) - make_interval(days => p_touch_days) AND f.at < upper(p_period)),
           d.first_at < h.w_from,
           d.first_at >= h.w_from AND d.first_at < h.w_to,
           coalesce((SELECT sum(x.amount) FROM allocation.deal x
                      WHERE x.managed_id = h.managed_id AND x.key = h.key AND x.at >= h.w_from AND x.at < h.w_to), 0),
           s.total, coalesce(s.n, 0)::integer
      FROM h
      LEFT JOIN LATERAL (SELECT min(x.at) AS first_at FROM allocation.deal x
                          WHERE x.managed_id = h.managed_id AND x.key = h.key) d ON true
      LEFT JOIN LATERAL (SELECT sum(x.score_pct) AS total, count(*) AS n FROM allocation.satisfaction x
                          WHERE x.managed_id = h.managed_id AND x.key = h.key AND x.at >= h.w_from AND x.at < h.w_to) s ON true
$$;
COMMENT ON FUNCTION allocation._outcome_base(tstzrange, integer) IS 'internal: one row per holding period of a rep overlapping the period, with its outcome facts (days held in it, held at the end, first contact, touched, converted, deals, satisfaction)';

-- Per rep: the measures of the contract (rep_measures), for every rep with a holding, a credit
-- or an event in the period
CREATE FUNCTION allocation._rep_measures(p_period tstzrange, p_touch_days integer)
RETURNS TABLE (rep_id bigint, held_end integer, held_avg numeric, touched_pct numeric,
               first_contact_median interval, first_contacts integer, conversion_base integer,
               converted integer, conversion_pct numeric, revenue numeric, satisfaction_avg numeric,
               satisfaction_n integer, claims integer, releases integer, recycled_away integer,
               grants integer, grants_converted integer)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    WITH b AS (SELECT * FROM allocation._outcome_base(p_period, p_touch_days)),
    per_rep AS (
        SELECT b.rep_id,
               count(*) FILTER (WHERE b.held_at_end)::integer AS held_end,
               round(sum(b.held_days) / (extract(epoch FROM upper(p_period) - lower(p_period)) / 86400)::numeric, 2) AS held_avg,
               round(100.0 * count(*) FILTER (WHERE b.touched) / nullif(count(*) FILTER (WHERE b.held_at_end), 0), 1) AS touched_pct,
               justify_hours(percentile_cont(0.5) WITHIN GROUP (ORDER BY b.first_contact)
                             FILTER (WHERE b.first_contact IS NOT NULL)) AS first_contact_median,
               count(b.first_contact)::integer AS first_contacts,
               count(*) FILTER (WHERE b.prior_deal IS NOT TRUE)::integer AS conversion_base,
               count(*) FILTER (WHERE b.converted)::integer AS converted,
               sum(b.satisfaction_sum) AS sat_total, sum(b.satisfaction_n)::integer AS sat_n
          FROM b GROUP BY b.rep_id),
    credit AS (   -- revenue with the virtual teams' splits: what each rep was credited
        SELECT s.rep_id, sum(s.amount) AS revenue
          FROM allocation.deal d JOIN allocation.deal_split s ON s.deal_id = d.id
         WHERE d.at <@ p_period AND s.rep_id IS NOT NULL GROUP BY s.rep_id),
    ev AS (
        SELECT coalesce(e.to_rep, e.from_rep) AS rep_id,
               count(*) FILTER (WHERE e.kind = 'claim')::integer AS claims,
               count(*) FILTER (WHERE e.kind = 'release')::integer AS releases,
               count(*) FILTER (WHERE e.kind = 'recycle')::integer AS recycled_away
          FROM allocation.event e
         WHERE e.at <@ p_period AND e.period = 'open' AND e.kind IN ('claim', 'release', 'recycle')
         GROUP BY 1),
    ev_from AS (  -- a release or recycle names the rep that lost the customer
        SELECT e.from_rep AS rep_id,
               count(*) FILTER (WHERE e.kind = 'release')::integer AS releases,
               count(*) FILTER (WHERE e.kind = 'recycle')::integer AS recycled_away
          FROM allocation.event e
         WHERE e.at <@ p_period AND e.period = 'open' AND e.kind IN ('release', 'recycle') AND e.from_rep IS NOT NULL
         GROUP BY 1),
    gr AS (
        SELECT q.rep_id, count(*)::integer AS grants,
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM allocation.deal d
                                               WHERE d.managed_id = q.managed_id AND d.key = q.key AND d.at >= q.decided_at))::integer
                   AS grants_converted
          FROM allocation.resource_request q
         WHERE q.status IN ('granted', 'released', 'expired') AND q.decided_at <@ p_period AND q.rep_id IS NOT NULL
         GROUP BY q.rep_id),
    reps AS (SELECT x.rep_id FROM per_rep x UNION SELECT x.rep_id FROM credit x
             UNION SELECT x.rep_id FROM ev x WHERE x.claims > 0 UNION SELECT x.rep_id FROM ev_from x
             UNION SELECT x.rep_id FROM gr x)
    SELECT r.rep_id, coalesce(p.held_end, 0), coalesce(p.held_avg, 0), p.touched_pct,
           p.first_contact_median, coalesce(p.first_contacts, 0), coalesce(p.conversion_base, 0), coalesce(p.converted, 0),
           round(100.0 * p.converted / nullif(p.conversion_base, 0), 1),
           coalesce(c.revenue, 0), round(p.sat_total / nullif(p.sat_n, 0), 1), coalesce(p.sat_n, 0),
           coalesce(ev.claims, 0), coalesce(ef.releases, 0), coalesce(ef.recycled_away, 0),
           coalesce(gr.grants, 0), coalesce(gr.grants_converted, 0)
      FROM reps r
      LEFT JOIN per_rep p ON p.rep_id = r.rep_id
      LEFT JOIN credit c ON c.rep_id = r.rep_id
      LEFT JOIN ev ON ev.rep_id = r.rep_id
      LEFT JOIN ev_from ef ON ef.rep_id = r.rep_id
      LEFT JOIN gr ON gr.rep_id = r.rep_id
$$;
COMMENT ON FUNCTION allocation._rep_measures(tstzrange, integer) IS 'internal: every rep''s measures over a period (rep_measures() without the caller filter)';

CREATE FUNCTION allocation.rep_measures(period tstzrange, touch_days integer DEFAULT 30)
RETURNS TABLE (rep_id bigint, held_end integer, held_avg numeric, touched_pct numeric,
               first_contact_median interval, first_contacts integer, conversion_base integer,
               converted integer, conversion_pct numeric, revenue numeric, satisfaction_avg numeric,
               satisfaction_n integer, claims integer, releases integer, recycled_away integer,
               grants integer, grants_converted integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_all boolean := allocation._reads_all_measures();
    v_me bigint := allocation.current_rep_id();
BEGIN
    PERFORM allocation._check_period(period, touch_days);
    RETURN QUERY SELECT m.* FROM allocation._rep_measures(period, touch_days) m
                  WHERE v_all OR m.rep_id = v_me
                  ORDER BY m.rep_id;
END
$$;
COMMENT ON FUNCTION allocation.rep_measures(tstzrange, integer) IS
'Each rep''s measures over a period: customers held at the end and on average, touched within touch_days before the end (%), median first contact after getting a customer, conversion (first deal within the holding, %), revenue credited (with virtual-team splits), satisfaction (0-100), claims, releases, customers lost to recycling, resource grants and how many converted; a rep sees its own row';

-- Scorecards: per rep, team and territory
CREATE FUNCTION allocation.scorecard(period tstzrange, touch_days integer DEFAULT 30)
RETURNS TABLE (level text, id bigint, code text, name text, held_end integer, held_avg numeric,
               touched_pct numeric, first_contact_median interval, conversion_base integer, converted integer,
               conversion_pct numeric, revenue numeric, satisfaction_avg numeric, satisfaction_n integer,
               claims integer, releases integer, recycled_away integer, grants integer, grants_converted integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_all boolean := allocation._reads_all_measures();
    v_me bigint := allocation.current_rep_id();
    v_days numeric;
BEGIN
    PERFORM allocation._check_period(period, touch_days);
    v_days := (extract(epoch FROM upper(period) - lower(period)) / 86400)::numeric;
    RETURN QUERY
    WITH m AS (SELECT * FROM allocation._rep_measures(period, touch_days)),
    b AS (SELECT * FROM allocation._outcome_base(period, touch_days)),
    reps AS (
        SELECT 'rep'::text AS level, r.id, r.code, r.name, m.held_end, m.held_avg, m.touched_pct,
               m.first_contact_median, m.conversion_base, m.converted, m.conversion_pct, m.revenue,
               m.satisfaction_avg, m.satisfaction_n, m.claims, m.releases, m.recycled_away, m.grants, m.grants_converted
          FROM m JOIN allocation.rep r ON r.id = m.rep_id),
    teams AS (   -- the reps' measures summed per team (rates from the summed counts)
        SELECT 'team'::text, t.id, t.code, t.name, sum(m.held_end)::integer, sum(m.held_avg),
               round(100.0 * sum(m.touched_pct * m.held_end / 100.0) / nullif(sum(m.held_end) FILTER (WHERE m.touched_pct IS NOT NULL), 0), 1),
               NULL::interval, sum(m.conversion_base)::integer, sum(m.converted)::integer,
               round(100.0 * sum(m.converted) / nullif(sum(m.conversion_base), 0), 1), sum(m.revenue),
               round(sum(m.satisfaction_avg * m.satisfaction_n) / nullif(sum(m.satisfaction_n), 0), 1),
               sum(m.satisfaction_n)::integer, sum(m.claims)::integer, sum(m.releases)::integer,
               sum(m.recycled_away)::integer, sum(m.grants)::integer, sum(m.grants_converted)::integer
          FROM m JOIN allocation.rep r ON r.id = m.rep_id JOIN allocation.team t ON t.id = r.team_id
         GROUP BY t.id, t.code, t.name),
    terrs AS (   -- the customers held in each territory (the territory of their holding)
        SELECT 'territory'::text, t.id, t.code, t.name,
               count(*) FILTER (WHERE b.held_at_end)::integer, round(sum(b.held_days) / v_days, 2),
               round(100.0 * count(*) FILTER (WHERE b.touched) / nullif(count(*) FILTER (WHERE b.held_at_end), 0), 1),
               justify_hours(percentile_cont(0.5) WITHIN GROUP (ORDER BY b.first_contact) FILTER (WHERE b.first_contact IS NOT NULL)),
               count(*) FILTER (WHERE b.prior_deal IS NOT TRUE)::integer, count(*) FILTER (WHERE b.converted)::integer,
               round(100.0 * count(*) FILTER (WHERE b.converted) / nullif(count(*) FILTER (WHERE b.prior_deal IS NOT TRUE), 0), 1),
               sum(b.deal_amount), round(sum(b.satisfaction_sum) / nullif(sum(b.satisfaction_n), 0), 1),
               sum(b.satisfaction_n)::integer, NULL::integer, NULL::integer, NULL::integer, NULL::integer, NULL::integer
          FROM b JOIN allocation.territory t ON t.id = b.territory_id
         GROUP BY t.id, t.code, t.name)
    SELECT x.* FROM reps x WHERE v_all OR x.id = v_me
    UNION ALL SELECT x.* FROM teams x WHERE v_all
    UNION ALL SELECT x.* FROM terrs x WHERE v_all
    ORDER BY 1, 3;
END
$$;
COMMENT ON FUNCTION allocation.scorecard(tstzrange, integer) IS
'Scorecards over a period per rep, team and territory: held (end, average), touched %, median first contact, conversion, revenue with splits, satisfaction, claims, releases, lost to recycling, resources; a rep sees its own row only';

-- Strategy effectiveness: the same outcomes grouped by what assigned each customer
CREATE FUNCTION allocation.strategy_effectiveness(period tstzrange, touch_days integer DEFAULT 30)
RETURNS TABLE (dimension text, value text, holdings integer, started integer, touched_pct numeric,
               first_contact_median interval, conversion_base integer, converted integer, conversion_pct numeric,
               revenue numeric, revenue_per_holding numeric, satisfaction_avg numeric, satisfaction_n integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF NOT allocation._reads_all_measures() THEN
        RAISE EXCEPTION 'role % may not read strategy effectiveness', allocation._actor() USING ERRCODE = 'LA0M1',
              DETAIL = 'It compares every rep''s customers; managers, analysts and admins read it.',
              HINT = 'A rep reads its own measures with allocation.rep_measures() or allocation.scorecard().';
    END IF;
    PERFORM allocation._check_period(period, touch_days);
    RETURN QUERY
    WITH b AS (
        SELECT x.*, ru.name AS rule_name,
               CASE WHEN x.source IN ('rule', 'reevaluate', 'suggestion') THEN
                        coalesce(ru.policy, ru.target_kind, 'rule (deleted)')
                    ELSE x.source END AS policy,
               t.code AS territory_code
          FROM allocation._outcome_base(period, touch_days) x
          LEFT JOIN allocation.rule ru ON ru.id = x.rule_id
          LEFT JOIN allocation.territory t ON t.id = x.territory_id),
    dims AS (
        SELECT 'rule'::text AS dimension,
               coalesce(b.rule_name, CASE WHEN b.rule_id IS NULL THEN '(' || b.source || ')' ELSE '(rule ' || b.rule_id || ')' END) AS value,
               b.* FROM b
        UNION ALL SELECT 'policy', b.policy, b.* FROM b
        UNION ALL SELECT 'territory', coalesce(b.territory_code, '(none)'), b.* FROM b
        UNION ALL SELECT 'tier', coalesce(b.tier, '(none)'), b.* FROM b
        UNION ALL SELECT 'crop', coalesce(b.crop, '(none)'), b.* FROM b)
    SELECT d.dimension, d.value, count(*)::integer, count(*) FILTER (WHERE d.started_in_period)::integer,
           round(100.0 * count(*) FILTER (WHERE d.touched) / nullif(count(*) FILTER (WHERE d.held_at_end), 0), 1),
           justify_hours(percentile_cont(0.5) WITHIN GROUP (ORDER BY d.first_contact) FILTER (WHERE d.first_contact IS NOT NULL)),
           count(*) FILTER (WHERE d.prior_deal IS NOT TRUE)::integer, count(*) FILTER (WHERE d.converted)::integer,
           round(100.0 * count(*) FILTER (WHERE d.converted) / nullif(count(*) FILTER (WHERE d.prior_deal IS NOT TRUE), 0), 1),
           sum(d.deal_amount), round(sum(d.deal_amount) / count(*), 2),
           round(sum(d.satisfaction_sum) / nullif(sum(d.satisfaction_n), 0), 1), sum(d.satisfaction_n)::integer
      FROM dims d
     GROUP BY d.dimension, d.value
     ORDER BY d.dimension, count(*) DESC, d.value;
END
$$;
COMMENT ON FUNCTION allocation.strategy_effectiveness(tstzrange, integer) IS
'Outcomes over a period grouped by what assigned each customer: the rule, the policy (or manual, claim, transfer, ...), the territory, the tier and the crop; with counts, so small groups are visibly small; managers, analysts and admins';

-- Monthly snapshots for BI: refresh_scorecards(at) recomputes the month of `at` and the month
-- before it, each in one statement under an advisory lock (concurrent refreshes queue; readers see
-- the old or the new snapshot, never a mix)
CREATE TABLE allocation.scorecard_month (
    month                date NOT NULL,
    level                text NOT NULL CHECK (level IN ('rep', 'team', 'territory')),
    id                   bigint NOT NULL,
    code                 text,
    name                 text,
    held_end             integer,
    held_avg             numeric,
    touched_pct          numeric,
    first_contact_median interval,
    conversion_base      integer,
    converted            integer,
    conversion_pct       numeric,
    revenue              numeric,
    satisfaction_avg     numeric,
    satisfaction_n       integer,
    claims               integer,
    releases             integer,
    recycled_away        integer,
    grants               integer,
    grants_converted     integer,
    refreshed_at         timestamptz NOT NULL,
    PRIMARY KEY (month, level, id)
);
COMMENT ON TABLE allocation.scorecard_month IS 'Materialised monthly scorecards (refresh_scorecards(), run by run_maintenance()); derived data, not dumped: refresh after a restore';

-- The date that names a month of month_of() (its first day in the claim time zone)
CREATE FUNCTION allocation._month_date(p_month tstzrange)
RETURNS date
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT pg_catalog.timezone(coalesce(nullif(pg_catalog.current_setting('allocation.claim_timezone', true), ''), 'Asia/Shanghai'),
                               lower(p_month))::date
$$;
COMMENT ON FUNCTION allocation._month_date(tstzrange) IS 'internal: the first day of a month_of() month, in allocation.claim_timezone';

CREATE FUNCTION allocation._refresh_scorecards(at timestamptz)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_month tstzrange;
    n integer := 0;
    k integer;
BEGIN
    IF at IS NULL THEN
        RAISE EXCEPTION 'the time must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'refresh_scorecards() recomputes the month of this time and the month before.',
              HINT = 'SELECT allocation.refresh_scorecards(now());';
    END IF;
    PERFORM allocation._require_read_committed('refresh_scorecards');
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('allocation.refresh_scorecards'));
    FOREACH v_month IN ARRAY ARRAY[allocation.month_of(at - interval '1 month'), allocation.month_of(at)] LOOP
        DELETE FROM allocation.scorecard_month s WHERE s.month = allocation._month_date(v_month);
        INSERT INTO allocation.scorecard_month
        SELECT allocation._month_date(v_month), x.level, x.id, x.code, x.name, x.held_end, x.held_avg, x.touched_pct,
               x.first_contact_median, x.conversion_base, x.converted, x.conversion_pct, x.revenue,
               x.satisfaction_avg, x.satisfaction_n, x.claims, x.releases, x.recycled_away, x.grants,
               x.grants_converted, pg_catalog.clock_timestamp()
          FROM allocation.scorecard(pg_catalog.tstzrange(lower(v_month), least(upper(v_month), greatest(at, lower(v_month) + interval '1 second')))) x;
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation._refresh_scorecards(timestamptz) IS 'internal: implementation of allocation.refresh_scorecards(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.refresh_scorecards(at timestamptz DEFAULT now())
RETURNS integer
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.refresh_scorecards(timestamptz) IS
'Recomputes the monthly scorecards of the month of `at` (up to `at`) and of the month before into scorecard_month (for a scheduler; run_maintenance() calls it); returns the rows written';

CREATE VIEW allocation.scorecard_monthly WITH (security_barrier) AS
SELECT s.month, s.level, s.id, s.code, s.name, s.held_end, s.held_avg, s.touched_pct, s.first_contact_median,
       s.conversion_base, s.converted, s.conversion_pct, s.revenue, s.satisfaction_avg, s.satisfaction_n,
       s.claims, s.releases, s.recycled_away, s.grants, s.grants_converted, s.refreshed_at
  FROM allocation.scorecard_month s
 WHERE pg_catalog.has_table_privilege('allocation.scorecard_month', 'SELECT')
    OR (s.level = 'rep' AND s.id = allocation.current_rep_id());
COMMENT ON VIEW allocation.scorecard_monthly IS 'BI: the materialised monthly scorecards (refresh_scorecards()); a rep sees its own rows';
