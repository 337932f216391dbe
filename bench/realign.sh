#!/usr/bin/env bash
# bench/realign.sh: a realignment on the real-size workload (issue 15).  3,000 territory
# outlines (bench/generate.sql: Voronoi cells with 800-1,800 vertices, overlays, enclaves) and
# 100,000 customers inserted through the engine (bench/setup.sql's rule set); then one plan
# hands 300 territories that hold customers to other field reps (receivers' capacity raised to
# unlimited in the same plan) and the script prints:
#   - preview time (realign_preview: the staged configuration in a rolled-back subtransaction,
#     every customer of every managed table decided again by the trigger's C code),
#   - the per-rep companion's time,
#   - apply time (CALL realign_apply: configuration + list, then batches of RL_BATCH moves with
#     a COMMIT between them), customers moved per second,
#   - preview == apply (moves compared key by key) and check_consistency().
#
# Runs against the server the usual libpq variables name (PGHOST, PGPORT, PGUSER); it never
# installs anything: build and install the extension into that server first.
#   PGHOST=/tmp PGPORT=5501 PGUSER=postgres bash bench/realign.sh
# Knobs: RL_DB=realign_bench RL_CELLS=3000 RL_CUSTOMERS=100000 RL_TERRITORIES=300 RL_BATCH=1000
#        RL_KEEP=1 (keep the database; with RL_REUSE=1 a kept database is reused: no generation)
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DB=${RL_DB:-realign_bench}
CELLS=${RL_CELLS:-3000}
CUSTOMERS=${RL_CUSTOMERS:-100000}
TERR=${RL_TERRITORIES:-300}
BATCH=${RL_BATCH:-1000}
PSQL="psql -X -q -v ON_ERROR_STOP=1 -d $DB"

if [ -z "${RL_REUSE:-}" ]; then
    echo "== data: $CELLS cells, $CUSTOMERS customers ($(date -u '+%H:%M:%S'))"
    dropdb --if-exists "$DB"
    createdb "$DB"
    $PSQL -c "CREATE EXTENSION allocation CASCADE"
    t0=$(date +%s)
    $PSQL -v n_cells="$CELLS" -v n_customers="$CUSTOMERS" -v seed=42 -f "$BENCH_DIR/generate.sql" >/dev/null
    $PSQL -f "$BENCH_DIR/setup.sql" >/dev/null
    echo "   generated and configured in $(( $(date +%s) - t0 )) s"
    t0=$(date +%s)
    $PSQL -c "INSERT INTO bench.customer_m (id, name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc)
              SELECT seq, name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc
                FROM bench.src_customer ORDER BY seq"
    echo "   $CUSTOMERS customers inserted through the engine in $(( $(date +%s) - t0 )) s"
fi

$PSQL <<SQL
\pset footer off
SELECT count(*) AS territories, (SELECT count(*) FROM bench.customer_m) AS customers,
       (SELECT count(*) FROM bench.customer_m WHERE owner IS NOT NULL) AS held
  FROM allocation.territory WHERE geom IS NOT NULL;
-- the plan: the $TERR owned cells with the most customers decided by territory-owner go to
-- another active field rep (team 2 and its sub-teams), whose capacity becomes unlimited
DO \$\$
DECLARE
    p bigint := allocation.realign_create('bench: $TERR territories change hands', 'bench/realign.sh');
    r record;
    v_reps bigint[];
BEGIN
    SELECT array_agg(x.id ORDER BY x.id) INTO v_reps
      FROM allocation.rep x
     WHERE x.active AND x.team_id IN (WITH RECURSIVE t(id) AS (SELECT 2::bigint UNION SELECT c.id FROM allocation.team c JOIN t ON c.parent_id = t.id)
                                      SELECT id FROM t);
    FOR r IN SELECT t.code, t.owner_rep_id, row_number() OVER (ORDER BY count(*) DESC, t.id) AS n
               FROM allocation.territory t
               JOIN allocation.assignment a ON a.territory_id = t.id AND a.valid_to IS NULL AND a.rep_id = t.owner_rep_id
              WHERE t.owner_rep_id IS NOT NULL
              GROUP BY t.id ORDER BY count(*) DESC, t.id LIMIT $TERR LOOP
        -- the next field rep in turn that is not the current owner
        PERFORM allocation.realign_stage_territory(p, r.code,
                    owner_rep => (SELECT v FROM unnest(v_reps) WITH ORDINALITY u(v, k) WHERE v <> r.owner_rep_id
                                   ORDER BY (k + r.n) % array_length(v_reps, 1) LIMIT 1));
    END LOOP;
    FOR r IN SELECT DISTINCT s.new_owner_rep_id AS id FROM allocation.realign_territory s WHERE s.plan_id = p LOOP
        PERFORM allocation.realign_stage_rep(p, r.id, unlimited => true);
    END LOOP;
END
\$\$;
SELECT id AS plan, (SELECT count(*) FROM allocation.realign_territory) AS staged_territories,
       (SELECT count(*) FROM allocation.realign_rep) AS staged_reps
  FROM allocation.realign_plan;
SQL

PLAN=$($PSQL -Atc "SELECT max(id) FROM allocation.realign_plan")
echo "== preview (plan $PLAN)"
$PSQL <<SQL
\pset footer off
CREATE TABLE bench.realign_preview AS SELECT * FROM allocation.realign_preview($PLAN) WITH NO DATA;
SELECT clock_timestamp() AS t0 \gset
INSERT INTO bench.realign_preview SELECT * FROM allocation.realign_preview($PLAN);
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000) AS preview_ms,
       count(*) FILTER (WHERE outcome = 'moves') AS moves, count(*) FILTER (WHERE outcome = 'stays') AS stays
  FROM bench.realign_preview;
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) AS reps_touched, count(*) FILTER (WHERE over_capacity) AS over_capacity FROM allocation.realign_preview_reps($PLAN);
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000) AS preview_reps_ms;
SQL

echo "== apply (batches of $BATCH)"
t0=$(date +%s%N)
$PSQL -c "SET client_min_messages = warning" -c "CALL allocation.realign_apply($PLAN, 'bench/realign.sh', $BATCH)"
t1=$(date +%s%N)
$PSQL <<SQL
\pset footer off
SELECT $(( (t1 - t0) / 1000000 )) AS apply_ms, moved,
       round(moved / greatest($(( (t1 - t0) / 1000000 )) / 1000.0, 0.001)) AS moves_per_s, stayed, unchanged
  FROM allocation.realign_progress WHERE plan_id = $PLAN;
SELECT count(*) AS preview_apply_differences FROM (
    (SELECT key, to_rep FROM bench.realign_preview WHERE outcome = 'moves'
     EXCEPT SELECT key, result_rep FROM allocation.realign_item WHERE plan_id = $PLAN AND status = 'moved')
    UNION ALL
    (SELECT key, result_rep FROM allocation.realign_item WHERE plan_id = $PLAN AND status = 'moved'
     EXCEPT SELECT key, to_rep FROM bench.realign_preview WHERE outcome = 'moves')) d;
SELECT count(*) AS consistency_problems FROM allocation.check_consistency();
SELECT count(*) AS realign_events FROM allocation.event WHERE kind = 'realign' AND (detail->>'realign_plan')::bigint = $PLAN;
SQL
[ -n "${RL_KEEP:-}" ] || dropdb "$DB"
