#!/usr/bin/env bash
# bench/import.sh: a whole country's county outlines in one import_territories() call (issue 15).
# Generates a synthetic FeatureCollection shaped like a national county layer: IM_COUNTIES
# counties (default 3,200) of IM_VERTICES vertices each (default 3,000, 6 decimals, as GDAL
# writes them), under 32 provinces (parent property), about 220 MB of GeoJSON. Then, each in a
# fresh backend, it measures wall time and memory of the backend:
#   1. the split alone: count(*) FROM allocation.geojson_features(pg_read_file(file));
#   2. import_territories(pg_read_file(file))          -- the text path, a first import;
#   3. the same again                                   -- every territory updated (upsert);
#   4. import_territories(pg_read_file(file)::jsonb)    -- the jsonb path (expected to fail above
#      jsonb's 255 MB limit; run it on a smaller file with IM_COUNTIES to see its memory).
# Memory: peak RssAnon (the backend's private memory, polled every 50 ms) and VmHWM (peak
# resident set, which also counts the shared buffers the backend touched). Backend CPU time
# (user + system, up to the last poll) is printed too: on a shared machine it is steadier than
# the wall time.
#
#   bash bench/import.sh                    # builds and installs, then runs in a throwaway cluster
#   IM_NO_CLUSTER=1 IM_NO_INSTALL=1 PGHOST=/tmp PGPORT=5502 PGUSER=postgres bash bench/import.sh
#                                           # against a running server (superuser: pg_read_file)
# Knobs: IM_COUNTIES=3200 IM_VERTICES=3000 IM_FILE=/tmp/allocation-country.geojson IM_DB=allocation_import_bench
#        IM_SKIP_JSONB=1 IM_NO_INSTALL=1 IM_NO_CLUSTER=1
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
export IM_COUNTIES=${IM_COUNTIES:-3200} IM_VERTICES=${IM_VERTICES:-3000}
export IM_FILE=${IM_FILE:-/tmp/allocation-country-${IM_COUNTIES}x${IM_VERTICES}.geojson}
export IM_DB=${IM_DB:-allocation_import_bench}

if [ -z "${IM_IN_CLUSTER:-}" ] && [ -z "${IM_NO_CLUSTER:-}" ]; then
    if [ -z "${IM_NO_INSTALL:-}" ]; then
        echo "== build and install ($(date -u '+%Y-%m-%d %H:%M:%S UTC')) =="
        (cd "$ROOT" && make -s 2>&1 && make -s install 2>&1) > /tmp/allocation-import-build.log \
            || { cat /tmp/allocation-import-build.log; exit 1; }
    fi
    export IM_IN_CLUSTER=1
    exec pg_virtualenv -t bash "${BASH_SOURCE[0]}" "$@"
fi

PSQL="psql -X -q -v ON_ERROR_STOP=1"
echo "== database $IM_DB: postgis, allocation =="
$PSQL -d postgres -c "DROP DATABASE IF EXISTS $IM_DB" -c "CREATE DATABASE $IM_DB"
$PSQL -d "$IM_DB" -c "CREATE EXTENSION postgis" -c "CREATE EXTENSION allocation"
$PSQL -d "$IM_DB" -Atc "SELECT 'server ' || current_setting('server_version') || ', shared_buffers ' || current_setting('shared_buffers') || ', work_mem ' || current_setting('work_mem')"

if [ ! -s "$IM_FILE" ]; then
    echo "== generate $IM_FILE: $IM_COUNTIES counties x $IM_VERTICES vertices =="
    t0=$(date +%s.%N)
    # counties on a grid over lon 73-135, lat 18-53; each a wobbly ring inside its cell;
    # 32 provinces = 8 x 4 blocks of the grid (rectangles), named by the counties' "parent"
    $PSQL -d "$IM_DB" <<SQL
\set ON_ERROR_STOP 1
\copy (WITH p AS (SELECT ceil(sqrt($IM_COUNTIES * 62.0 / 35))::int AS nx), g AS (SELECT nx, ceil($IM_COUNTIES::numeric / nx)::int AS ny, 62.0 / nx AS dx FROM p), c AS (SELECT i, (i % nx) AS ix, (i / nx) AS iy, nx, ny, dx, 35.0 / ny AS dy FROM g, generate_series(0, $IM_COUNTIES - 1) i) SELECT line FROM (SELECT 0 AS ord, '{"type": "FeatureCollection", "name": "synthetic_country", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}, "features": [' AS line UNION ALL SELECT 1 + px * 4 + py, format('{"type": "Feature", "properties": {"code": "P%s", "name": "Province %s"}, "geometry": {"type": "Polygon", "coordinates": [[[%s, %s], [%s, %s], [%s, %s], [%s, %s], [%s, %s]]]}},', px * 4 + py, px * 4 + py, x0, y0, x1, y0, x1, y1, x0, y1, x0, y0) FROM (SELECT px, py, round(73 + px * 62.0 / 8, 6) AS x0, round(73 + (px + 1) * 62.0 / 8, 6) AS x1, round(18 + py * 35.0 / 4, 6) AS y0, round(18 + (py + 1) * 35.0 / 4, 6) AS y1 FROM generate_series(0, 7) px, generate_series(0, 3) py) b UNION ALL SELECT 100 + c.i, format('{"type": "Feature", "properties": {"code": "C%s", "name": "County %s", "parent": "P%s", "population": %s}, "geometry": {"type": "Polygon", "coordinates": [[%s]]}}%s', c.i, c.i, least(7, floor((73 + (c.ix + 0.5) * c.dx - 73) / (62.0 / 8)))::int * 4 + least(3, floor((18 + (c.iy + 0.5) * c.dy - 18) / (35.0 / 4)))::int, 10000 + c.i, r.ring, CASE WHEN c.i < $IM_COUNTIES - 1 THEN ',' ELSE '' END) FROM c CROSS JOIN LATERAL (SELECT string_agg(format('[%s, %s]', round((73 + (c.ix + 0.5) * c.dx + 0.45 * c.dx * (0.85 + 0.15 * sin(9 * th)) * cos(th))::numeric, 6), round((18 + (c.iy + 0.5) * c.dy + 0.45 * c.dy * (0.85 + 0.15 * sin(9 * th)) * sin(th))::numeric, 6)), ', ' ORDER BY k) AS ring FROM (SELECT k, 2 * pi() * (k % ($IM_VERTICES - 1)) / ($IM_VERTICES - 1) AS th FROM generate_series(0, $IM_VERTICES - 1) k) v) r UNION ALL SELECT 1000000000, ']}') x ORDER BY ord) TO '$IM_FILE'
SQL
    t1=$(date +%s.%N)
    printf 'generated in %.1f s\n' "$(echo "$t1 - $t0" | bc)"
fi
ls -l "$IM_FILE" | awk '{printf "file: %s, %.1f MB\n", $9, $5 / 1048576}'

# run one SQL statement in a fresh backend; print wall time, peak RssAnon and VmHWM of the backend
measure() {
    local label=$1 sql=$2 out pid peak=0 hwm=0 cur t0 t1 rc=0 ticks=0 hz
    hz=$(getconf CLK_TCK)
    out=$(mktemp)
    t0=$(date +%s.%N)
    PGAPPNAME=im_bench $PSQL -d "$IM_DB" -Atc "$sql" > "$out" 2>&1 &
    local client=$!
    pid=""
    while [ -z "$pid" ] && kill -0 "$client" 2>/dev/null; do
        pid=$(psql -X -Atd "$IM_DB" -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'im_bench' LIMIT 1")
        [ -n "$pid" ] || sleep 0.02
    done
    while [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; do
        cur=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        [ -n "$cur" ] && [ "$cur" -gt "$peak" ] && peak=$cur
        cur=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        [ -n "$cur" ] && [ "$cur" -gt "$hwm" ] && hwm=$cur
        cur=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || true)
        [ -n "$cur" ] && ticks=$cur
        kill -0 "$client" 2>/dev/null || break
        sleep 0.05
    done
    wait "$client" || rc=$?
    t1=$(date +%s.%N)
    printf '%-44s %7.1f s (backend CPU %6.1f s)   peak RssAnon %6.0f MB   VmHWM %6.0f MB   %s\n' "$label" "$(echo "$t1 - $t0" | bc)" \
        "$(echo "scale=1; $ticks / $hz" | bc)" \
        "$(echo "$peak / 1024" | bc)" "$(echo "$hwm / 1024" | bc)" \
        "$( [ $rc -eq 0 ] && echo "result $(tail -1 "$out")" || echo "FAILED: $(grep -m1 ERROR "$out")")"
    rm -f "$out"
}

echo "== measurements (each in a fresh backend) =="
measure "geojson_features() split only" \
    "SELECT count(*) FROM allocation.geojson_features(pg_read_file('$IM_FILE'))"
measure "import_territories(text), first import" \
    "SELECT allocation.import_territories(pg_read_file('$IM_FILE'), parent_property => 'parent')"
measure "import_territories(text), re-import (upsert)" \
    "SELECT allocation.import_territories(pg_read_file('$IM_FILE'), parent_property => 'parent')"
if [ -z "${IM_SKIP_JSONB:-}" ]; then
    measure "import_territories(jsonb)" \
        "SELECT allocation.import_territories(pg_read_file('$IM_FILE')::jsonb, parent_property => 'parent')"
fi
$PSQL -d "$IM_DB" -Atc "SELECT format('stored: %s territories, %s vertices, %s MB in allocation.territory',
                                       count(*), sum(ST_NPoints(geom)), pg_total_relation_size('allocation.territory') / 1048576)
                          FROM allocation.territory"
