#!/usr/bin/env bash
# scripts/map_check.sh -- the HTML map of allocation.territory_map_html(), opened
# for real in headless Chromium (Debian package chromium), as a manager opens it.
#
#   bash scripts/map_check.sh [BINDIR [OUTDIR]]
#
# BINDIR (default: pg_config --bindir, or $PG_BINDIR) must have the extension
# installed (make install) and PostGIS. OUTDIR (default results/map_check in the
# repository) receives map.html, map_after.html and their screenshots.
# Installs nothing: chromium must be on PATH (or $CHROMIUM names the binary).
# One throw-away cluster in a temporary directory, run as the postgres user
# when started as root:
#   1. database crm: 5 territories (a province and 4 counties, one of them named
#      '</script><img src=x onerror=...>' -- user data that must stay data),
#      3 reps, ~60 customers (deals, follow-ups, pool), a realignment plan
#      (a draft: county A to another rep, its shape grown; nobody moves yet);
#   2. territory_map_html() -> map.html and (plan 1) map_after.html;
#   3. Chromium (--headless, fresh --user-data-dir, no network features) dumps
#      each page's DOM after its script ran and takes a screenshot; checks:
#        <body data-status="ok">, no data-error, <svg data-rendered=N> with N =
#        the number of territories, data-customers = the customers with a
#        location, no <img> element anywhere (the injected name stayed text),
#        no console message at all (uncaught exception, console.error, CSP refusal)
#        in Chromium's log;
#        with #after: data-mode="after" and the plan's counts in the DOM.
# Prints PASS or FAIL (with the logs) and exits non-zero on failure.
set -Eeuo pipefail
export LC_ALL=C.UTF-8 LANG=C.UTF-8

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BINDIR=${1:-${PG_BINDIR:-$(pg_config --bindir)}}
OUT=${2:-$ROOT/results/map_check}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
TMP=$(mktemp -d /tmp/alloc_map.XXXXXX)
chmod 700 "$TMP"   # the cluster trusts local connections: only its owner may reach the socket
fail () {
    echo "--- server log"; tail -30 "$TMP/server.log" 2>/dev/null || true
    for f in "$TMP"/chromium*.log; do
        [ -e "$f" ] && { echo "--- $(basename "$f")"; grep -v -E 'dbus|DBus|Fontconfig' "$f" | tail -30; }
    done
    echo "MAP CHECK FAILED: $*"
    exit 1
}
[ -n "$CHROMIUM" ] && [ -x "$CHROMIUM" ] || fail "chromium not found (Debian: apt-get install chromium; or set CHROMIUM)"

AS=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$TMP"
    AS=(runuser -u postgres --)
fi
run () { (cd "$TMP" && "${AS[@]}" env LC_ALL=C.UTF-8 LANG=C.UTF-8 "$@"); }
PORT=$((20000 + RANDOM % 20000))
cleanup () {
    run "$BINDIR/pg_ctl" -D "$TMP/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
psql_crm () { run "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT" -U postgres -d crm "$@"; }

echo "--- throw-away cluster (port $PORT)"
run "$BINDIR/initdb" -D "$TMP/data" -U postgres -A trust >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log"; fail "initdb"; }
run "$BINDIR/pg_ctl" -D "$TMP/data" -o "-p $PORT -k $TMP -c listen_addresses='' -c unix_socket_permissions=0700" \
    -l "$TMP/server.log" -w start >/dev/null || fail "starting the cluster"
run "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT" -U postgres -d postgres -c 'CREATE DATABASE crm' \
    || fail "creating database crm"

echo "--- 5 territories (one named '</script><img src=x onerror=...>'), 3 reps, customers, a plan"
psql_crm >"$TMP/setup.out" 2>&1 <<'SQL' || { cat "$TMP/setup.out"; fail "setting up database crm"; }
CREATE EXTENSION postgis;
CREATE EXTENSION allocation;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, capacity) VALUES
    (1, 'wang', 'Wang Wei', 1, 1000), (2, 'li', 'Li Na', 1, 1000), (3, 'zhao', 'Zhao Lei', 1, 1000);
INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id, priority) VALUES
    (1, 'HN', 'Province', ST_Multi(ST_MakeEnvelope(110, 25, 113, 28, 4326)), NULL, 0),
    (2, 'HN-A', '县 A (east)', ST_Multi(ST_MakeEnvelope(110, 25, 111.5, 26.5, 4326)), 1, 1),
    (3, 'HN-B', 'County B</script><img src=x onerror="document.title=''pwned''">', ST_Multi(ST_MakeEnvelope(111.5, 25, 113, 26.5, 4326)), 2, 1),
    (4, 'HN-C', 'County C', ST_Multi(ST_MakeEnvelope(110, 26.5, 111.8, 28, 4326)), 3, 1),
    (5, 'HN-D', 'County D (vacant)', ST_Multi(ST_MakeEnvelope(111.8, 26.5, 113, 28, 4326)), NULL, 1);
UPDATE allocation.territory SET parent_id = 1 WHERE id > 1;
INSERT INTO allocation.rule (name, target_kind, target_team_id, policy) VALUES ('county owner', 'team', 1, 'territory_owner');
CREATE TABLE customer (id integer PRIMARY KEY, name text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('customer', 'id', 'loc', 'owner', '{"name": "name"}');
-- a deterministic scatter: 7 x 8 inside the province, 4 outside, 2 without a location
INSERT INTO customer (id, name, loc)
SELECT i * 10 + j, format('dealer %s-%s', i, j), ST_Point(110.15 + i * 0.41, 25.12 + j * 0.36, 4326)
  FROM generate_series(0, 6) i, generate_series(0, 7) j;
INSERT INTO customer (id, name, loc) VALUES (900, 'across the border 1', ST_Point(113.3, 25.5, 4326)),
    (901, 'across the border 2', ST_Point(113.3, 26.5, 4326)), (902, 'across <b>3</b>', ST_Point(113.4, 27.1, 4326)),
    (903, 'across 4', ST_Point(109.7, 27.9, 4326)), (950, 'no address yet', NULL), (951, 'no address either', NULL);
SELECT count(*) FROM (SELECT allocation.log_followup('customer', id::text, 'visit') FROM customer WHERE id % 3 = 0) f;
SELECT count(*) FROM (SELECT allocation.record_deal('customer', id::text, 1200.00, ref => 'SO-' || id)
                        FROM customer WHERE id % 5 = 0 AND owner IS NOT NULL) d;
-- plan 1 (a real realignment plan, still a draft): county A goes to zhao, grown east
SELECT allocation.realign_create('A to zhao', 'wang moves to the key accounts');
SELECT allocation.realign_stage_territory(1, 'HN-A', geom => ST_Multi(ST_MakeEnvelope(110, 25, 111.8, 26.5, 4326)),
                                          owner_rep => 3);
SQL

territories=$(psql_crm -At -c "SELECT count(*) FROM allocation.territory WHERE geom IS NOT NULL")
customers=$(psql_crm -At -c "SELECT count(*) FROM customer WHERE loc IS NOT NULL")
moves=$(psql_crm -At -c "SELECT count(*) FROM jsonb_array_elements(allocation.realign_geojson(1) -> 'features') f
                           WHERE f -> 'properties' ->> 'kind' = 'customer' AND f -> 'properties' ->> 'outcome' = 'moves'")
echo "    $territories territories, $customers customers with a location, plan 1 moves $moves"

echo "--- territory_map_html() -> $OUT/map.html, map_after.html"
mkdir -p "$OUT"
psql_crm -At -c "SELECT allocation.territory_map_html('Field sales <script>alert(1)</script> — map check')" >"$TMP/map.html" \
    || fail "territory_map_html()"
psql_crm -At -c "SELECT allocation.territory_map_html('Realignment plan 1', plan_id => 1)" >"$TMP/map_after.html" \
    || fail "territory_map_html(plan_id => 1)"
cp "$TMP/map.html" "$TMP/map_after.html" "$OUT/"
# the data block must not contain a raw "<" (a name cannot close the <script>)
data=$(sed -n 's/.*<script type="application\/json" id="map-data">\(.*\)<\/script>.*/\1/p' "$OUT/map.html")
[ -n "$data" ] || fail "map.html has no <script type=\"application/json\" id=\"map-data\"> block on one line"
case "$data" in *'<'*) fail "the JSON data block of map.html contains a raw '<'";; esac
grep -q 'County B\\u003c/script\\u003e\\u003cimg' "$OUT/map.html" || fail "the territory name is not in the data block, escaped"
grep -q '<title>Field sales &lt;script&gt;alert(1)&lt;/script&gt; — map check</title>' "$OUT/map.html" \
    || fail "the title is not HTML-escaped"

# Chromium: a fresh profile per run, no network features, logs on stderr
chrome () {   # $1 = log name, rest = chromium arguments
    local log=$1; shift
    local profile; profile=$(mktemp -d "$TMP/profile.XXXXXX")
    timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync --disable-extensions \
        --disable-default-apps --mute-audio --hide-scrollbars --user-data-dir="$profile" \
        --enable-logging=stderr --v=0 --window-size=1400,900 "$@" 2>>"$TMP/chromium_$log.log"
}
check_page () {   # $1 = file, $2 = url suffix, $3 = name
    local file=$1 suffix=$2 name=$3 dom
    chrome "$name" --screenshot="$OUT/$name.png" "file://$OUT/$file$suffix" >/dev/null \
        || fail "chromium --screenshot of $file$suffix"
    [ "$(stat -c %s "$OUT/$name.png" 2>/dev/null || echo 0)" -gt 20000 ] || fail "the screenshot $name.png is missing or blank"
    dom=$(chrome "$name" --dump-dom "file://$OUT/$file$suffix") || fail "chromium --dump-dom of $file$suffix"
    printf '%s\n' "$dom" >"$OUT/$name.dom.html"
    grep -q '<body data-status="ok"' <<<"$dom" || {
        grep -o '<body[^>]*>' <<<"$dom" || true; fail "$file$suffix: the page's script did not finish (body data-status)"; }
    grep -q 'data-error=' <<<"$dom" && fail "$file$suffix: the page reported an error: $(grep -o 'data-error="[^"]*"' <<<"$dom")"
    grep -q "<svg id=\"map\"[^>]* data-rendered=\"$territories\"" <<<"$dom" \
        || fail "$file$suffix: data-rendered is not $territories: $(grep -o '<svg id="map"[^>]*>' <<<"$dom")"
    grep -q "<svg id=\"map\"[^>]* data-customers=\"$customers\"" <<<"$dom" \
        || fail "$file$suffix: data-customers is not $customers: $(grep -o '<svg id="map"[^>]*>' <<<"$dom")"
    grep -q '<img' <<<"$dom" && fail "$file$suffix: an <img> element exists: user data became markup"
    # the page writes nothing to the console: any console line (an uncaught exception, a CSP refusal,
    # console.error) is a failure
    grep -q -E 'Uncaught|:CONSOLE|CONSOLE\(|Content Security Policy|Refused to' "$TMP/chromium_$name.log" \
        && fail "$file$suffix: console messages: $(grep -E 'Uncaught|CONSOLE|Content Security Policy|Refused' "$TMP/chromium_$name.log" | head -5)"
    printf '%s\n' "$dom" | grep -o '<svg id="map"[^>]*>' | sed 's/ viewBox="[^"]*"//; s/^/    /'
}

echo "--- headless Chromium: $OUT/map.png"
check_page map.html "" map
echo "--- headless Chromium, the plan's after view (#after): $OUT/map_after.png"
check_page map_after.html "#after" map_after
dom=$(cat "$OUT/map_after.dom.html")
grep -q '<body data-status="ok" data-mode="after"' <<<"$dom" || fail "map_after.html#after: not in after mode"
grep -q "data-plan-customers=\"$moves\"" <<<"$dom" || fail "map_after.html#after: data-plan-customers is not $moves"
grep -q 'data-plan-territories="1"' <<<"$dom" || fail "map_after.html#after: data-plan-territories is not 1"
grep -q '>After the plan<' <<<"$dom" || fail "map_after.html#after: no before/after toggle"
echo "PASS: territory_map_html() rendered $territories territories and $customers customers in headless Chromium, no console error, user data stayed text, the plan's after view drew $moves moves; screenshots in $OUT"
