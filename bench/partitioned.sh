#!/usr/bin/env bash
# bench/partitioned.sh: the managed INSERT path on a table partitioned by province.
#
#   PGHOST=/tmp PGPORT=5432 PGUSER=postgres bash bench/partitioned.sh
#
# Runs against the server the libpq environment names (the extension must be
# installed there), in a scratch database it creates and drops (BENCH_DB).
# Territories: a 30 x 30 grid of squares (900 counties) owned by 10 reps, one
# territory_owner rule.  Five tables get the same BENCH_ROWS rows (one
# INSERT ... SELECT per run, best of BENCH_RUNS, table truncated between runs):
#   plain            ordinary table, not managed
#   managed          ordinary table, managed
#   part             partitioned by LIST (province), 34 partitions, not managed
#   part_managed     the same, managed: PRIMARY KEY (id, province), so the engine
#                    also checks the id across the 34 partitions (partition.c)
#   hash_managed     partitioned by HASH (id), 8 partitions, managed: the key is
#                    unique by PostgreSQL, no cross-partition check
# and prints ms per run, us per row, and the ratios managed/plain.
# Knobs: BENCH_ROWS=20000, BENCH_RUNS=5, BENCH_DB=allocation_bench_partitioned.
set -euo pipefail
ROWS=${BENCH_ROWS:-20000}
RUNS=${BENCH_RUNS:-5}
DB=${BENCH_DB:-allocation_bench_partitioned}

psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
trap 'psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB"' EXIT
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" <<SQL
SET client_min_messages = warning;
CREATE EXTENSION allocation CASCADE;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field');
INSERT INTO allocation.rep (id, code, name, team_id) SELECT i, 'r' || i, 'Rep ' || i, 1 FROM generate_series(1, 10) i;
INSERT INTO allocation.territory (code, name, geom, owner_rep_id)
SELECT 'c' || x || '_' || y, 'County ' || x || '/' || y,
       ST_Multi(ST_MakeEnvelope(100 + x * 0.5, 25 + y * 0.5, 100.5 + x * 0.5, 25.5 + y * 0.5, 4326)), 1 + (x + y) % 10
  FROM generate_series(0, 29) x, generate_series(0, 29) y;
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES ('terr', 10, 'team', 1, 'territory_owner');

CREATE TABLE src AS
SELECT i AS id, 'p' || (i % 34) AS province, 'Customer ' || i AS name,
       ST_SetSRID(ST_MakePoint(100 + random() * 15, 25 + random() * 15), 4326) AS loc
  FROM generate_series(1, $ROWS) i;

CREATE TABLE plain (id int PRIMARY KEY, province text NOT NULL, name text, loc geometry(Point, 4326), owner bigint);
CREATE TABLE managed (LIKE plain INCLUDING ALL);
CREATE TABLE part (id int NOT NULL, province text NOT NULL, name text, loc geometry(Point, 4326), owner bigint,
                   PRIMARY KEY (id, province)) PARTITION BY LIST (province);
CREATE TABLE part_managed (LIKE part) PARTITION BY LIST (province);
ALTER TABLE part_managed ADD PRIMARY KEY (id, province);
CREATE TABLE hash_managed (id int PRIMARY KEY, province text NOT NULL, name text, loc geometry(Point, 4326), owner bigint)
    PARTITION BY HASH (id);
DO \$\$
BEGIN
    FOR i IN 0..33 LOOP
        EXECUTE format('CREATE TABLE part_p%s PARTITION OF part FOR VALUES IN (%L)', i, 'p' || i);
        EXECUTE format('CREATE TABLE part_managed_p%s PARTITION OF part_managed FOR VALUES IN (%L)', i, 'p' || i);
    END LOOP;
    FOR i IN 0..7 LOOP
        EXECUTE format('CREATE TABLE hash_managed_%s PARTITION OF hash_managed FOR VALUES WITH (MODULUS 8, REMAINDER %s)', i, i);
    END LOOP;
END
\$\$;
SELECT allocation.manage('managed', 'id', 'loc', 'owner') \gset ignored_
SELECT allocation.manage('part_managed', 'id', 'loc', 'owner') \gset ignored_
SELECT allocation.manage('hash_managed', 'id', 'loc', 'owner') \gset ignored_

-- one timed INSERT ... SELECT (statement triggers fire per EXECUTE as for any statement)
CREATE FUNCTION bench_insert(tbl regclass) RETURNS double precision LANGUAGE plpgsql AS \$\$
DECLARE t0 timestamptz;
BEGIN
    t0 := clock_timestamp();
    EXECUTE format('INSERT INTO %s (id, province, name, loc) SELECT id, province, name, loc FROM src', tbl);
    RETURN extract(epoch FROM clock_timestamp() - t0) * 1000;
END
\$\$;
SQL

echo "rows per INSERT: $ROWS, best of $RUNS runs; $(nproc) cpu, load $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A best
for t in plain managed part part_managed hash_managed; do
    b=""
    for r in $(seq 1 "$RUNS"); do
        # a fresh table each run (a managed TRUNCATE closes the ownerships: the registry grows like production's)
        psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "TRUNCATE $t" >/dev/null
        ms=$(psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" -c "SELECT round(bench_insert('$t')::numeric, 1)")
        if [ -z "$b" ] || awk "BEGIN {exit !($ms < $b)}"; then b=$ms; fi
    done
    best[$t]=$b
    printf "%-14s %9s ms  %7.2f us/row\n" "$t" "$b" "$(awk "BEGIN {print $b * 1000 / $ROWS}")"
done
ratio() { awk "BEGIN {printf \"%.2f\", ${best[$1]} / ${best[$2]}}"; }
echo "managed / plain                 $(ratio managed plain)"
echo "part / plain                    $(ratio part plain)"
echo "part_managed / part             $(ratio part_managed part)"
echo "part_managed / managed          $(ratio part_managed managed)"
echo "hash_managed / managed          $(ratio hash_managed managed)"
psql -X -q -At -d "$DB" -c "SELECT 'consistency problems: ' || count(*) FROM allocation.check_consistency()"
