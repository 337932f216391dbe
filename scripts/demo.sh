#!/usr/bin/env bash
# scripts/demo.sh — the allocation demo in one command (see demo/README.md).
#
# On a fresh Debian 12 / Ubuntu machine, as root, from a clone of the repository:
#     bash scripts/demo.sh
# 1. installs the Debian packages that are missing (apt-get update only if something is missing),
# 2. builds and installs the extension (make && make install),
# 3. on a THROWAWAY cluster (pg_virtualenv) loads the demo CRM, province, organisation, rules and
#    ~10,000 customers (demo/0*.sql), prints the summary and writes demo/out/:
#    summary.txt, territories.geojson, map.svg, map.html, map_realign.html, scorecard.svg.
# Idempotent, offline once the packages are there, deterministic (seeded random). Fails loudly.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/demo/out"
PG_MAJOR=15
PG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"

# ---------------------------------------------------------------------------
# Inside the throwaway cluster (pg_virtualenv has set PGHOST, PGPORT, PGUSER, ...)
# ---------------------------------------------------------------------------
if [[ "${1:-}" == "--inside-virtualenv" ]]; then
    cd "$ROOT"
    createdb crm
    export PGDATABASE=crm
    for f in 01_crm 02_province 03_org_rules 04_customers 05_report 06_map 07_claims_pool 07b_transfers 07c_network 07d_virtual_team 07e_dispute 07f_loop 07g_map_html 07h_realign 08_audit; do
        echo
        echo "######## demo/$f.sql"
        psql -X -q -v ON_ERROR_STOP=1 -v outdir="$OUT" -f "demo/$f.sql" 2>&1
    done
    exit 0
fi

SECONDS=0
say() { printf '\n==> %s\n' "$*"; }

# ---------------------------------------------------------------------------
# 1. Packages (what scripts/test.sh installs, less the pgTAP test tools)
# ---------------------------------------------------------------------------
SUDO=
if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "error: run this script as root (it installs packages and the extension)" >&2; exit 1; }
    SUDO=sudo
fi
PKGS=(postgresql-common "postgresql-client-$PG_MAJOR" "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR"
      "postgresql-$PG_MAJOR-postgis-3" build-essential make gcc)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing missing packages: ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    if ! apt-cache show "postgresql-$PG_MAJOR" >/dev/null 2>&1; then
        echo "error: package postgresql-$PG_MAJOR is not available from the configured apt sources" \
             "(Debian 12 has it; on Ubuntu add the PostgreSQL apt repository, apt.postgresql.org)" >&2
        exit 1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    say "packages present: ${PKGS[*]}"
fi
for tool in "$PG_CONFIG" /usr/bin/pg_virtualenv; do
    [[ -x "$tool" ]] || { echo "error: $tool not found after package installation" >&2; exit 1; }
done

# ---------------------------------------------------------------------------
# 2. Build and install
# ---------------------------------------------------------------------------
say "building the extension"
make -C "$ROOT" -s PG_CONFIG="$PG_CONFIG"
say "installing the extension"
$SUDO make -C "$ROOT" -s PG_CONFIG="$PG_CONFIG" install >/dev/null

# ---------------------------------------------------------------------------
# 3. The demo, on a throwaway cluster
# ---------------------------------------------------------------------------
mkdir -p "$OUT"
rm -f "$OUT/summary.txt" "$OUT/territories.geojson" "$OUT/map.svg" "$OUT/map.html" "$OUT/map_realign.html"
say "running the demo on a throwaway PostgreSQL $PG_MAJOR cluster (pg_virtualenv)"
# -t: the cluster lives in a temporary directory even as root, so it never collides with
#     another cluster on this machine; it is dropped when the demo ends (also on failure).
# A port nobody uses (pg_virtualenv would take the first free one from 5432, which races with
# other throwaway clusters started at the same moment, e.g. a test run).
port_free() { [[ ! -e "/var/run/postgresql/.s.PGSQL.$1" ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PGPORT=""
for _ in $(seq 1 100); do
    p=$((54000 + RANDOM % 1500))
    if port_free "$p"; then PGPORT=$p; break; fi
done
[[ -n "$PGPORT" ]] || { echo "error: no free port for the throwaway cluster" >&2; exit 1; }
export PGPORT
pg_virtualenv -t -v "$PG_MAJOR" -o fsync=off -o synchronous_commit=off -o full_page_writes=off \
    bash "$ROOT/scripts/demo.sh" --inside-virtualenv 2>&1 | tee "$OUT/summary.txt"

for f in summary.txt territories.geojson map.svg map.html map_realign.html; do
    if [[ ! -s "$OUT/$f" ]]; then
        echo "error: demo/out/$f was not written" >&2
        exit 1
    fi
done
grep -q '^{"type": "FeatureCollection"' "$OUT/territories.geojson" || { echo "error: territories.geojson is not a FeatureCollection" >&2; exit 1; }
grep -q '</svg>' "$OUT/map.svg" || { echo "error: map.svg is incomplete" >&2; exit 1; }
grep -q '</html>' "$OUT/map.html" || { echo "error: map.html is incomplete" >&2; exit 1; }
grep -q '</html>' "$OUT/map_realign.html" || { echo "error: map_realign.html is incomplete" >&2; exit 1; }

say "demo finished in ${SECONDS}s; outputs:"
( cd "$ROOT" && ls -l demo/out/summary.txt demo/out/territories.geojson demo/out/map.svg demo/out/map.html demo/out/map_realign.html )
echo "open demo/out/map.html (the interactive map) and demo/out/map_realign.html#after (the realignment), demo/out/map.svg and demo/out/scorecard.svg in a browser; load demo/out/territories.geojson in QGIS or geojson.io"
