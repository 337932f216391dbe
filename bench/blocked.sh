#!/usr/bin/env bash
# bench/blocked.sh: a burst of blocked duplicates (issue 12, bounded background work).
# A blocked duplicate raises an ERROR, so its audit event (kind duplicate_blocked) is written by
# a background worker in a transaction of its own.  BLK_CLIENTS pgbench clients make
# BLK_ATTEMPTS writes in all, each a duplicate phone that the exact action "block" refuses
# (caught by a PL/pgSQL handler, so pgbench goes on).  A sampler polls pg_stat_activity every
# 20 ms for the audit writers and all background workers.  Prints, for the library preloaded and
# not:
#   events written / attempts, the most audit writers and background workers seen at once
#   (against max_worker_processes), the WARNINGs "no background worker", the time until the
#   last event is written.
# Exits 1 when, preloaded, an event is missing, a WARNING appeared, or more writers ran than one
# (plus a leaving one) for the one database.
#
#   bash bench/blocked.sh                 # builds and installs, then two throwaway clusters
#
# Knobs: BLK_CLIENTS=8 BLK_JOBS=2 BLK_ATTEMPTS=10000 BLK_NO_INSTALL=1
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
export BENCH_DIR ROOT
export BLK_CLIENTS=${BLK_CLIENTS:-8}
export BLK_JOBS=${BLK_JOBS:-2}
export BLK_ATTEMPTS=${BLK_ATTEMPTS:-10000}

if [ -z "${BLK_IN_CLUSTER:-}" ]; then
    if [ -z "${BLK_NO_INSTALL:-}" ]; then
        echo "== build and install ($(date -u '+%Y-%m-%d %H:%M:%S UTC')) =="
        (cd "$ROOT" && make -s 2>&1 && make -s install 2>&1) > /tmp/allocation-blocked-build.log \
            || { cat /tmp/allocation-blocked-build.log; exit 1; }
    fi
    export BLK_IN_CLUSTER=1
    rc=0
    for mode in preloaded not_preloaded; do
        opts=()
        [ "$mode" = preloaded ] && opts=(-o shared_preload_libraries=allocation)
        BLK_MODE=$mode pg_virtualenv -t -o max_connections=40 -o max_worker_processes=8 "${opts[@]}" \
            bash "${BASH_SOURCE[0]}" || rc=1
    done
    exit $rc
fi

###############################################################################
# Inside a throwaway cluster (PGHOST/PGPORT/PGUSER set by pg_virtualenv)
###############################################################################
P=(psql -X -q -v ON_ERROR_STOP=1 -d postgres)
W=$(mktemp -d /tmp/allocation-blocked.XXXXXX)
sampler=
trap 'if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; fi; rm -rf "$W"' EXIT
echo "== $BLK_MODE: $BLK_ATTEMPTS blocked duplicates from $BLK_CLIENTS clients ($(date -u '+%H:%M:%S UTC')) =="
"${P[@]}" >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION allocation;
CREATE TABLE blk_customer (id bigserial PRIMARY KEY, name text, phone text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('blk_customer', 'id', 'loc', 'owner', '{"name": "name", "phone": "phone"}');
SELECT allocation.set_duplicate_policy('blk_customer', 'block');
INSERT INTO blk_customer (name, phone) VALUES ('the first holder', '13800138000');
CREATE FUNCTION blk_try(i int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO blk_customer (name, phone) VALUES ('copy ' || i, '+86 138 0013 8000');
    RETURN true;
EXCEPTION WHEN SQLSTATE 'LA070' THEN
    RETURN false;
END $$;
SQL
echo "  max_worker_processes = $("${P[@]}" -At -c 'SHOW max_worker_processes'), shared_preload_libraries = '$("${P[@]}" -At -c 'SHOW shared_preload_libraries')'"

# the sampler: audit writers and all background workers, every 20 ms (one connection)
psql -X -q -At -d postgres >"$W/samples" 2>/dev/null <<'SQL' &
SELECT count(*) FILTER (WHERE backend_type = 'allocation audit writer'),
       count(*) FILTER (WHERE backend_type NOT IN ('client backend', 'autovacuum launcher',
           'logical replication launcher', 'background writer', 'checkpointer', 'walwriter',
           'archiver', 'startup', 'autovacuum worker', 'walsender', 'walreceiver'))
  FROM pg_stat_activity \watch 0.02
SQL
sampler=$!

per_client=$(( BLK_ATTEMPTS / BLK_CLIENTS ))
echo "SELECT blk_try(:client_id * 100000 + :scale);" >"$W/try.sql"
t0=$(date +%s.%N)
pgbench -n -c "$BLK_CLIENTS" -j "$BLK_JOBS" -t "$per_client" -f "$W/try.sql" postgres >"$W/pgbench.out" 2>"$W/pgbench.err" \
    || { cat "$W/pgbench.out" "$W/pgbench.err"; exit 1; }
t1=$(date +%s.%N)
attempts=$(( per_client * BLK_CLIENTS ))
# wait for the writers (at most 120 s)
for _ in $(seq 1 1200); do
    n=$("${P[@]}" -At -c "SELECT count(*) FROM allocation.event WHERE kind = 'duplicate_blocked'")
    [ "$n" -ge "$attempts" ] && break
    sleep 0.1
done
t2=$(date +%s.%N)
sleep 1.5
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
n=$("${P[@]}" -At -c "SELECT count(*) FROM allocation.event WHERE kind = 'duplicate_blocked'")
stored=$("${P[@]}" -At -c "SELECT count(*) FROM blk_customer")
warnings=$(grep -c 'no background worker' "$W/pgbench.err" || true)
read -r max_writers max_bgw < <(awk -F'|' '{ if ($1 > a) a = $1; if ($2 > b) b = $2 } END {print a + 0, b + 0}' "$W/samples")
mwp=$("${P[@]}" -At -c 'SHOW max_worker_processes')
tps=$(awk -F'= ' '/^tps/ {split($2, a, " "); print a[1]; exit}' "$W/pgbench.out")
printf '  attempts %d, refused %d (rows stored: %d, the first holder only)\n' "$attempts" "$attempts" "$stored"
printf '  duplicate_blocked events written: %d of %d\n' "$n" "$attempts"
printf '  the burst took %.1f s (%s attempts/s); the last event written %.1f s after it ended\n' \
    "$(echo "$t1 - $t0" | bc)" "$tps" "$(echo "$t2 - $t1" | bc)"
printf '  most audit writers at once: %d; most background workers at once: %d of max_worker_processes %d (%d samples)\n' \
    "$max_writers" "$max_bgw" "$mwp" "$(wc -l <"$W/samples")"
printf '  WARNINGs "no background worker": %d\n' "$warnings"
bad=0
if [ "$BLK_MODE" = preloaded ]; then
    [ "$n" -eq "$attempts" ] || { echo "  FAIL: events missing"; bad=1; }
    [ "$warnings" -eq 0 ] || { echo "  FAIL: warnings"; bad=1; }
    # one writer per database; a leaving writer may still be listed while its successor starts
    [ "$max_writers" -le 2 ] || { echo "  FAIL: more than one writer for one database"; bad=1; }
    [ "$max_bgw" -lt "$mwp" ] || { echo "  FAIL: max_worker_processes exhausted"; bad=1; }
fi
[ "$stored" -eq 1 ] || { echo "  FAIL: a blocked duplicate was stored"; bad=1; }
exit $bad
