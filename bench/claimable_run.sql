-- bench/claimable_run.sql: times the rep's pool screen (issue 11 targets: first page <= 50 ms,
-- full claimable count <= 1 s, with :n customers in the pool).  Each query runs :runs times
-- in one session after one warm-up; the median, min and max are server-side wall times
-- (clock_timestamp around an EXECUTE).  Rep 1 (team west, 40 tier A customers held, 30 in
-- cooldown) asks, as allocation.claimable_page(..., rep => 1) -- the same code path as a
-- rep's own call with its login.
\set ON_ERROR_STOP 1
\pset footer off
CREATE OR REPLACE FUNCTION bench.time_ms(q text, runs integer)
RETURNS TABLE (median_ms numeric, min_ms numeric, max_ms numeric, result bigint)
LANGUAGE plpgsql AS
$$
DECLARE
    t0 timestamptz;
    ts double precision[] := '{}';
    n bigint;
BEGIN
    EXECUTE q INTO n;                       -- warm-up (plans, caches, the library)
    FOR i IN 1 .. runs LOOP
        t0 := clock_timestamp();
        EXECUTE q INTO n;
        ts := ts || extract(epoch FROM clock_timestamp() - t0) * 1000;
    END LOOP;
    RETURN QUERY SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY x)::numeric, 1),
                        round(min(x)::numeric, 1), round(max(x)::numeric, 1), n FROM unnest(ts) x;
END
$$;

CREATE TEMP TABLE t (what text, target_ms numeric, median_ms numeric, min_ms numeric, max_ms numeric, result bigint);
INSERT INTO t SELECT 'first page, nearest (open country), 20 claimable', 50, r.* FROM bench.time_ms($q$
    SELECT count(*) FROM allocation.claimable_page('bench.customer', ST_SetSRID(ST_MakePoint(113.3, 27.1), 4326), 20, 0, false, 1)
$q$, :runs) r;
INSERT INTO t SELECT 'first page, nearest (inside another rep''s exclusive territory), 20 claimable', 50, r.* FROM bench.time_ms($q$
    SELECT count(*) FROM allocation.claimable_page('bench.customer', ST_SetSRID(ST_MakePoint(110.5, 27.5), 4326), 20, 0, false, 1)
$q$, :runs) r;
INSERT INTO t SELECT 'first page, nearest, 20 with the reasons of the blocked', 50, r.* FROM bench.time_ms($q$
    SELECT count(*) FROM allocation.claimable_page('bench.customer', ST_SetSRID(ST_MakePoint(110.5, 27.5), 4326), 20, 0, true, 1)
$q$, :runs) r;
INSERT INTO t SELECT 'first page, newest in the pool, 20 claimable', 50, r.* FROM bench.time_ms($q$
    SELECT count(*) FROM allocation.claimable_page('bench.customer', NULL, 20, 0, false, 1)
$q$, :runs) r;
INSERT INTO t SELECT 'first page, newest in the pool, 20 with the reasons of the blocked', 50, r.* FROM bench.time_ms($q$
    SELECT count(*) FROM allocation.claimable_page('bench.customer', NULL, 20, 0, true, 1)
$q$, :runs) r;
INSERT INTO t SELECT 'page 50 (skip 980), newest, 20 claimable', NULL, r.* FROM bench.time_ms($q$
    SELECT count(*) FROM allocation.claimable_page('bench.customer', NULL, 20, 980, false, 1)
$q$, :runs) r;
INSERT INTO t SELECT 'full claimable count (claimable_count)', 1000, r.* FROM bench.time_ms($q$
    SELECT allocation.claimable_count('bench.customer', 1)
$q$, :runs) r;
INSERT INTO t SELECT 'rep at its tier A max_held: count', 1000, r.* FROM bench.time_ms($q$
    SELECT allocation.claimable_count('bench.customer', 5)
$q$, :runs) r;
INSERT INTO t SELECT 'whole pool with reasons (claimable(rep), the view claimable_now)', NULL, r.* FROM bench.time_ms($q$
    SELECT count(*) FROM allocation.claimable(1)
$q$, greatest(:runs / 2, 1)) r;
SELECT what, median_ms, min_ms, max_ms, target_ms,
       CASE WHEN target_ms IS NOT NULL THEN round(median_ms / target_ms, 3) END AS ratio_to_target,
       result AS rows_or_count
  FROM t;
-- the blocked customers by first failing check (rep 1), from the whole-pool screen
SELECT coalesce(sqlstate, '(claimable)') AS sqlstate, count(*) FROM allocation.claimable(1) GROUP BY 1 ORDER BY 1;
