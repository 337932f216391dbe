#!/usr/bin/env bash
# scripts/cron_check.sh -- allocation.run_maintenance() scheduled for real with
# pg_cron, as a DBA sets it up, and an app listening for the alerts it raises.
#
#   bash scripts/cron_check.sh [BINDIR]
#
# BINDIR (default: pg_config --bindir, or $PG_BINDIR) must have the extension
# installed (make install), PostGIS and pg_cron (Debian: postgresql-15-cron).
# One throw-away cluster in a temporary directory, run as the postgres user
# when started as root, with shared_preload_libraries = 'pg_cron,allocation':
#   1. database crm: a territory whose only customer was last followed up 10
#      days ago, and alert rule territory_untouched after 1 day;
#   2. a LISTEN allocation_alert session (psql, as an app or a WeCom/DingTalk
#      bridge would hold one) is started;
#   3. SELECT cron.schedule('allocation-maintenance', '* * * * *',
#      'SELECT * FROM allocation.run_maintenance()')  -- the README's call;
#   4. waits (up to ~100 s: pg_cron 1.4 schedules by the minute) for the job's
#      first run in cron.job_run_details, then checks that it succeeded, that
#      the alert is open, and that the LISTEN session received its NOTIFY.
# Prints PASS or FAIL (with the logs) and exits non-zero on failure.
set -Eeuo pipefail
export LC_ALL=C.UTF-8 LANG=C.UTF-8

BINDIR=${1:-${PG_BINDIR:-$(pg_config --bindir)}}
TMP=$(mktemp -d /tmp/alloc_cron.XXXXXX)
chmod 700 "$TMP"   # the cluster trusts local connections: only its owner may reach the socket
LISTENER=
fail () {
    echo "--- server log"; tail -40 "$TMP/server.log" 2>/dev/null || true
    echo "--- listener output"; cat "$TMP/listen.out" 2>/dev/null || true
    echo "CRON CHECK FAILED: $*"
    exit 1
}

AS=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$TMP"
    AS=(runuser -u postgres --)
fi
run () { (cd "$TMP" && "${AS[@]}" env LC_ALL=C.UTF-8 LANG=C.UTF-8 "$@"); }
PORT=$((20000 + RANDOM % 20000))
cleanup () {
    [ -n "$LISTENER" ] && kill "$LISTENER" 2>/dev/null || true
    run "$BINDIR/pg_ctl" -D "$TMP/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
psql_crm () { run "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT" -U postgres -d crm "$@"; }

[ -e "$("$BINDIR/pg_config" --pkglibdir)/pg_cron.so" ] \
    || fail "pg_cron is not installed for $BINDIR (Debian package postgresql-15-cron)"

echo "--- cluster with shared_preload_libraries = 'pg_cron,allocation' (port $PORT)"
run "$BINDIR/initdb" -D "$TMP/data" -U postgres -A trust >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log"; fail "initdb"; }
cat >>"$TMP/data/postgresql.conf" <<EOF
shared_preload_libraries = 'pg_cron,allocation'
cron.database_name = 'crm'
# jobs run in background workers: no connection to a TCP port is needed
cron.use_background_workers = on
max_worker_processes = 16
EOF
run "$BINDIR/pg_ctl" -D "$TMP/data" -o "-p $PORT -k $TMP -c listen_addresses='' -c unix_socket_permissions=0700" \
    -l "$TMP/server.log" -w start >/dev/null || fail "starting the cluster"
run "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT" -U postgres -d postgres -c 'CREATE DATABASE crm' \
    || fail "creating database crm"

echo "--- a territory untouched for 10 days, an alert rule, a LISTEN session"
psql_crm >"$TMP/setup.out" 2>&1 <<'SQL' || { cat "$TMP/setup.out"; fail "setting up database crm"; }
CREATE EXTENSION postgis;
CREATE EXTENSION allocation;
CREATE EXTENSION pg_cron;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id) VALUES (1, 'wang', 'Wang Wei', 1);
INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id)
     VALUES (1, 'east', 'East county', ST_Multi(ST_MakeEnvelope(0, 0, 1, 1, 4326)), 1);
CREATE TABLE customer (id integer PRIMARY KEY, name text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('customer', 'id', 'loc', 'owner', '{}');
INSERT INTO customer VALUES (1, 'county dealer', ST_Point(0.5, 0.5, 4326), 1);
SELECT allocation.log_followup('customer', '1', 'visit', at => now() - interval '10 days');
INSERT INTO allocation.alert_rule (name, kind, params)
     VALUES ('territory untouched for a day', 'territory_untouched', '{"days": 1}');
SQL

# the listener: LISTEN, then short sleeps; psql prints each notification after the
# command during which it arrived
{
    echo 'LISTEN allocation_alert;'
    for _ in $(seq 1 30); do echo 'SELECT pg_sleep(4);'; done
} >"$TMP/listen.sql"
chmod a+r "$TMP/listen.sql"
( run "$BINDIR/psql" -X -q -h "$TMP" -p "$PORT" -U postgres -d crm -f "$TMP/listen.sql" >"$TMP/listen.out" 2>&1 ) &
LISTENER=$!
sleep 1

echo "--- SELECT cron.schedule('allocation-maintenance', '* * * * *', 'SELECT * FROM allocation.run_maintenance()')"
job=$(psql_crm -At -c "SELECT cron.schedule('allocation-maintenance', '* * * * *', 'SELECT * FROM allocation.run_maintenance()')") \
    || fail "cron.schedule"
echo "    job $job scheduled; waiting for its first run (pg_cron runs jobs at the start of a minute)"

status=
for _ in $(seq 1 50); do
    status=$(psql_crm -At -c "SELECT status FROM cron.job_run_details WHERE jobid = $job AND status IN ('succeeded', 'failed') ORDER BY runid LIMIT 1")
    [ -n "$status" ] && break
    sleep 2
done
[ -n "$status" ] || fail "the job did not run within 100 seconds"
psql_crm -c "SELECT jobid, status, return_message, end_time - start_time AS took FROM cron.job_run_details WHERE jobid = $job ORDER BY runid"
[ "$status" = succeeded ] || fail "the job's first run failed"

open=$(psql_crm -At -c "SELECT count(*) FROM allocation.alert WHERE kind = 'territory_untouched' AND subject = 'territory 1' AND resolved_at IS NULL")
psql_crm -c "SELECT id, kind, subject, rep_code, since, opened_at, open FROM allocation.my_alert"
[ "$open" = 1 ] || fail "run_maintenance() ran but opened no territory_untouched alert"
psql_crm -c "SELECT kind, reason FROM allocation.event WHERE kind = 'alert_opened'"

received=
for _ in $(seq 1 10); do
    if grep -q 'Asynchronous notification "allocation_alert" with payload ".*territory_untouched' "$TMP/listen.out"; then
        received=yes; break
    fi
    sleep 1
done
[ -n "$received" ] || fail "the LISTEN session received no allocation_alert notification"
echo "--- the LISTEN session received:"
grep 'Asynchronous notification "allocation_alert"' "$TMP/listen.out" | sed 's/ received from server process with PID [0-9]*\.$//'
payload=$(grep -o 'with payload ".*" received' "$TMP/listen.out" | head -1 | sed 's/^with payload "//; s/" received$//')
run "$BINDIR/psql" -X -q -At -h "$TMP" -p "$PORT" -U postgres -d crm \
    -c "SELECT (p ->> 'kind') = 'territory_untouched' AND (p ->> 'id')::bigint IN (SELECT id FROM allocation.alert) AND NOT p ? 'detail' FROM (SELECT \$j\$${payload}\$j\$::jsonb AS p) x" \
    | grep -qx t || fail "the notification's payload is not the alert's JSON"
psql_crm -At -c "SELECT cron.unschedule($job)" >/dev/null
echo "PASS: pg_cron ran allocation.run_maintenance(); the alert opened and its NOTIFY reached the LISTEN session"
