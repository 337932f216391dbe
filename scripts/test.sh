#!/usr/bin/env bash
# scripts/test.sh -- the one test command of the allocation extension.
#
#   bash scripts/test.sh
#
# 1. installs the Debian packages it needs when they are missing (as root),
# 2. builds the extension in a scratch copy of the work tree; any compiler
#    "warning:" fails the run,
# 3. make install,
# 4. inside a throw-away cluster (pg_virtualenv):
#      make installcheck   pg_regress suite (sql/, expected/) and the
#                          isolation specs (specs/, expected/)
#      pg_prove            pgTAP suites (test/*.sql) in database "tap"
#                          (extensions postgis + pgtap; each file creates
#                          allocation itself inside BEGIN ... ROLLBACK)
#      dump/restore        scripts/dump_restore_check.sh
#      upgrade             scripts/upgrade_check.sh (every released version's
#                          frozen script + ALTER EXTENSION UPDATE = a fresh
#                          install of the default version; data kept)
#      sqlstates           scripts/check_sqlstates.sh (code and README agree)
#    then, in a second throw-away cluster started with
#    shared_preload_libraries = 'allocation' (the shared territory index):
#      make installcheck   the same pg_regress suite and isolation specs
#                          (counted as regress_preload / isolation_preload;
#                          their results are kept in results_preload/ and
#                          output_iso_preload/ of the scratch copy)
#    then a real pg_upgrade of a filled database between two clusters
#    of its own (scripts/pg_upgrade_check.sh), and last
#    allocation.run_maintenance() scheduled with pg_cron in a cluster
#    started with shared_preload_libraries = 'pg_cron,allocation': the job
#    runs, an alert opens, a LISTEN session receives its NOTIFY
#    (scripts/cron_check.sh); then a primary and a streaming replica where every
#    view, explain(), owner_at(), territory_geojson() and scorecard() answer as on
#    the primary and every write fails with 25006 (scripts/standby_check.sh),
#    preloaded and not; then the HTML map of territory_map_html()
#    opened in headless Chromium (scripts/map_check.sh: the territories drawn,
#    no console error, the injected name stays text, the plan's after view);
# 5. prints one summary line "N passed, M failed" (regress tests + isolation
#    specs of both modes + pgTAP files + dump, upgrade, pg_upgrade and
#    pg_cron checks) and exits non-zero on any failure.
#
# Idempotent: safe to run again and again; it never touches the work tree
# (results go to the scratch copy, kept and named on failure).
#
# Environment knobs (all optional):
#   PG_VERSION=15        PostgreSQL major version to build and test against
#   KEEP_WORKDIR=1       keep the scratch copy even when everything passed
set -Eeuo pipefail

export LC_ALL=C.UTF-8 LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
PG_VERSION=${PG_VERSION:-15}
PG_BINDIR=/usr/lib/postgresql/$PG_VERSION/bin
PG_CONFIG=$PG_BINDIR/pg_config
export PG_CONFIG

# ---------------------------------------------------------------------------
# Inner part: runs inside pg_virtualenv (PGHOST/PGPORT/PGUSER/PGPASSWORD set)
# ---------------------------------------------------------------------------
if [ "${1:-}" = "--inside" ] || [ "${1:-}" = "--inside-preload" ]; then
    MODE=$1
    WORK=$2
    cd "$WORK"
    : >"$WORK/started"
    export PATH="$PG_BINDIR:$PATH"
    counts="$WORK/counts"          # lines: "<suite> <passed> <failed>"
    [ "$MODE" = "--inside" ] && : >"$counts"
    status=0
    suffix=
    if [ "$MODE" = "--inside-preload" ]; then
        suffix=_preload
        # keep the first pass's outputs; this pass writes its own
        for d in results output_iso; do
            [ -e "$d" ] && mv "$d" "${d}_backend"
        done
        for f in regression.diffs regression.out installcheck.log; do
            [ -e "$f" ] && mv "$f" "${f%.*}_backend.${f##*.}"
        done
    fi

    # wait until the fresh cluster accepts connections
    for _ in $(seq 1 30); do
        pg_isready -q && break
        sleep 1
    done
    psql -X -q -At -c "SELECT 'server: ' || version()" || { echo "cannot connect to the throw-away cluster"; exit 1; }
    if [ "$MODE" = "--inside-preload" ]; then
        spl=$(psql -X -q -At -c "SHOW shared_preload_libraries")
        echo "shared_preload_libraries = '$spl'"
        if [ "$spl" != "allocation" ]; then
            echo "the cluster did not preload allocation"
            echo "regress$suffix 0 1" >>"$counts"
            exit 1
        fi
    fi

    # --- pg_regress + isolation (one make target for both) -------------------
    echo "=== make installcheck (pg_regress: sql/, isolation: specs/)${suffix:+ with shared_preload_libraries = allocation} ==="
    set +e
    timeout 900 make installcheck PG_CONFIG="$PG_CONFIG" >installcheck.log 2>&1
    rc=$?
    set -e
    cat installcheck.log
    # a regress failure stops make before the isolation specs: run them alone
    # so that the report is complete
    if [ $rc -ne 0 ] && ! grep -q 'isolation install-check' installcheck.log && ls specs/*.spec >/dev/null 2>&1; then
        echo "=== isolation specs (run separately because pg_regress failed) ==="
        set +e
        timeout 600 make installcheck REGRESS= PG_CONFIG="$PG_CONFIG" >installcheck_iso.log 2>&1
        set -e
        cat installcheck_iso.log
        cat installcheck_iso.log >>installcheck.log
    fi
    if [ $rc -eq 124 ]; then echo "make installcheck TIMED OUT"; fi

    # counts: PostgreSQL 15 prints "All N tests passed." or " M of N tests failed."
    suite_counts () {   # $1 = name, $2 = text block of one pg_regress run
        local text=$2 n f
        if n=$(grep -oE 'All [0-9]+ tests passed' <<<"$text" | grep -oE '[0-9]+'); then
            echo "$1 $n 0" >>"$counts"
        elif grep -qE '[0-9]+ of [0-9]+ tests failed' <<<"$text"; then
            f=$(grep -oE '[0-9]+ of [0-9]+ tests failed' <<<"$text" | awk '{print $1}')
            n=$(grep -oE '[0-9]+ of [0-9]+ tests failed' <<<"$text" | awk '{print $3}')
            echo "$1 $((n - f)) $f" >>"$counts"
        else
            # did not get as far as a summary (connection/crash/timeout)
            echo "$1 0 1" >>"$counts"
        fi
    }
    regress_part=$(sed -n '/regress install-check/,/isolation install-check/p' installcheck.log)
    iso_part=$(sed -n '/isolation install-check/,$p' installcheck.log)
    if ls sql/*.sql >/dev/null 2>&1; then suite_counts "regress$suffix" "$regress_part"; else
        echo "no pg_regress tests in sql/"; echo "regress$suffix 0 1" >>"$counts"; fi
    if ls specs/*.spec >/dev/null 2>&1; then suite_counts "isolation$suffix" "$iso_part"; else
        echo "no isolation specs in specs/"; echo "isolation$suffix 0 1" >>"$counts"; fi
    if [ $rc -ne 0 ]; then
        status=1
        for f in regression.diffs output_iso/regression.diffs; do
            if [ -s "$f" ]; then
                echo "=================== $f ==================="
                cat "$f"
            fi
        done
    fi
    if [ "$MODE" = "--inside-preload" ]; then
        for d in results output_iso; do
            [ -e "$d" ] && mv "$d" "${d}_preload"
        done
        exit $status
    fi

    # --- pgTAP ---------------------------------------------------------------
    echo "=== pgTAP (pg_prove test/*.sql) ==="
    shopt -s nullglob
    tap_files=(test/*.sql)
    shopt -u nullglob
    if [ ${#tap_files[@]} -eq 0 ]; then
        echo "no pgTAP files in test/"
        echo "pgtap 0 1" >>"$counts"
        status=1
    else
        set +e
        dropdb --if-exists tap && createdb tap \
            && psql -X -q -v ON_ERROR_STOP=1 -d tap -c 'CREATE EXTENSION postgis; CREATE EXTENSION pgtap;' \
            && timeout 600 pg_prove --failures -d tap "${tap_files[@]}" >pg_prove.log 2>&1
        rc=$?
        set -e
        touch pg_prove.log
        cat pg_prove.log
        # per-file verdicts: "test/x.sql .. ok" / "test/x.sql .. Failed 2/10 subtests" / "Dubious"
        ok=$(grep -cE '^test/[^ ]+\.sql \.+ ok' pg_prove.log || true)
        total=${#tap_files[@]}
        if [ $rc -eq 0 ] && [ "$ok" -eq "$total" ]; then
            echo "pgtap $total 0" >>"$counts"
        else
            [ $rc -eq 124 ] && echo "pg_prove TIMED OUT"
            [ "$ok" -ge "$total" ] && ok=$((total - 1))
            echo "pgtap $ok $((total - ok))" >>"$counts"
            status=1
            echo "=================== pg_prove failed (output above) ==================="
        fi
    fi

    # --- dump / restore round trip, upgrade from every released version -----
    run_check () {   # $1 = suite name, $2 = script, $3 = what it checks
        echo "=== $3 ($2) ==="
        set +e
        timeout 300 bash "$2" >"$1.log" 2>&1
        local rc=$?
        set -e
        cat "$1.log"
        if [ $rc -eq 0 ]; then
            echo "$1 1 0" >>"$counts"
        else
            [ $rc -eq 124 ] && echo "$3 TIMED OUT"
            echo "$1 0 1" >>"$counts"
            status=1
            echo "=================== $3 failed (output above) ==================="
        fi
    }
    run_check dump_restore scripts/dump_restore_check.sh "dump/restore round trip"
    run_check upgrade scripts/upgrade_check.sh "upgrade path"
    # --- SQLSTATE list: code and README agree -------------------------------
    echo "=== SQLSTATEs of the code vs the README (scripts/check_sqlstates.sh) ==="
    if bash scripts/check_sqlstates.sh; then
        echo "sqlstates 1 0" >>"$counts"
    else
        echo "sqlstates 0 1" >>"$counts"
        status=1
    fi
    exit $status
fi

# ---------------------------------------------------------------------------
# Outer part
# ---------------------------------------------------------------------------
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/scripts/test.sh"
start=$(date +%s)

WORK=
summary_fail () {   # we stop before any suite ran; the summary stays the last line
    echo "$1"
    [ -n "$WORK" ] && echo "(test work directory kept: $WORK)"
    echo "0 passed, 1 failed"
    exit 1
}

# --- packages ---------------------------------------------------------------
PKGS=(postgresql-common postgresql-client-$PG_VERSION postgresql-$PG_VERSION
      postgresql-server-dev-$PG_VERSION postgresql-$PG_VERSION-postgis-3
      postgresql-$PG_VERSION-pgtap postgresql-$PG_VERSION-cron libtap-parser-sourcehandler-pgtap-perl
      build-essential make gcc chromium)
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "=== installing missing packages: ${missing[*]} ==="
    SUDO=
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || summary_fail "missing packages (${missing[*]}) and not root"
        SUDO=sudo
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    if ! apt-cache show "postgresql-$PG_VERSION" >/dev/null 2>&1; then
        summary_fail "package postgresql-$PG_VERSION is not available from the configured apt sources"
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        || summary_fail "apt-get install failed"
fi
for tool in "$PG_CONFIG" /usr/bin/pg_virtualenv /usr/bin/pg_prove; do
    [ -x "$tool" ] || summary_fail "$tool not found after package installation"
done

# --- scratch copy of the work tree ------------------------------------------
# Build and test outside the work tree: no stale objects hide warnings, and
# parallel runs (or an editor) never see results/ or output_iso/ appear.
WORK=$(mktemp -d /tmp/allocation-test.XXXXXX)
chmod 755 "$WORK"
tar -C "$REPO" --exclude=./.git --exclude=./results --exclude=./output_iso \
    --exclude=./tmp_check --exclude=./tmp_check_iso --exclude='*.o' --exclude='*.bc' \
    --exclude='*.so' --exclude=./regression.diffs --exclude=./regression.out \
    --exclude=./log --exclude=./bench/.cache -cf - . | tar -C "$WORK" -xf -
cleanup () {
    local rc=$?
    if [ $rc -eq 0 ] && [ -z "${KEEP_WORKDIR:-}" ]; then
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
cd "$WORK"

# --- build: no warnings allowed ---------------------------------------------
echo "=== make (PG_CONFIG=$PG_CONFIG) ==="
make clean PG_CONFIG="$PG_CONFIG" >/dev/null 2>&1 || true
set +e
make PG_CONFIG="$PG_CONFIG" >build.log 2>&1
rc=$?
set -e
cat build.log
if [ $rc -ne 0 ]; then
    summary_fail "BUILD FAILED"
fi
if grep -q 'warning:' build.log; then
    echo "=================== compiler warnings ==================="
    grep -n 'warning:' build.log
    summary_fail "BUILD FAILED: the compiler printed warnings (they are errors here)"
fi

echo "=== make install ==="
make install PG_CONFIG="$PG_CONFIG" >install.log 2>&1 || { cat install.log; summary_fail "make install failed"; }

# --- everything that needs a server, in one throw-away cluster ---------------
# -t: temporary cluster directory even as root (server runs as postgres; the
# clients run as us and connect over TCP with the generated password).
echo "=== throw-away cluster (pg_virtualenv) ==="
# A port that neither a TCP listener nor a socket file in /var/run/postgresql
# uses (pg_createcluster only checks TCP; other clusters on this machine may
# listen on a Unix socket only). Creating the cluster is retried, because a
# parallel run can take the same port between the check and the start.
pick_port () {
    local p i
    for i in $(seq 1 100); do
        p=$((20000 + RANDOM % 30000))
        [ -e "/var/run/postgresql/.s.PGSQL.$p" ] && continue
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
        echo "$p"
        return
    done
    echo 5432
}
rc=1
for attempt in 1 2 3; do
    rm -f "$WORK/started"
    set +e
    PGPORT=$(pick_port) pg_virtualenv -t -v "$PG_VERSION" bash "$SELF" --inside "$WORK"
    rc=$?
    set -e
    [ -e "$WORK/started" ] && break
    echo "pg_virtualenv could not start a cluster (attempt $attempt)"
done

# the same pg_regress + isolation suite with the library preloaded (shared territory index)
if [ -e "$WORK/started" ]; then
    echo "=== throw-away cluster with shared_preload_libraries = allocation (pg_virtualenv) ==="
    rc2=1
    for attempt in 1 2 3; do
        rm -f "$WORK/started"
        set +e
        PGPORT=$(pick_port) pg_virtualenv -t -v "$PG_VERSION" -o shared_preload_libraries=allocation \
            bash "$SELF" --inside-preload "$WORK"
        rc2=$?
        set -e
        [ -e "$WORK/started" ] && break
        echo "pg_virtualenv could not start a preloaded cluster (attempt $attempt)"
    done
    if [ ! -e "$WORK/started" ]; then
        echo "regress_preload 0 1" >>"$WORK/counts"
    fi
    if [ $rc2 -ne 0 ]; then rc=$rc2; fi
fi

# checks with clusters of their own, run from the scratch copy with the system's binaries
outer_check () {   # $1 = suite name, $2 = script, $3 = what it checks, then the script's own arguments
    [ -e "$WORK/counts" ] || return 0
    echo "=== $3 ($2) ==="
    set +e
    timeout 600 bash "$WORK/$2" "$PG_BINDIR" "${@:4}" >"$WORK/$1.log" 2>&1
    local rc=$?
    set -e
    cat "$WORK/$1.log"
    if [ $rc -eq 0 ]; then
        echo "$1 1 0" >>"$WORK/counts"
    else
        [ $rc -eq 124 ] && echo "$3 TIMED OUT"
        echo "$1 0 1" >>"$WORK/counts"
    fi
}
outer_check pg_upgrade scripts/pg_upgrade_check.sh "pg_upgrade of a filled database"
outer_check pg_cron scripts/cron_check.sh "pg_cron schedules run_maintenance()"
outer_check standby scripts/standby_check.sh "hot standby: primary + streaming replica"
outer_check map_html scripts/map_check.sh "the HTML map in headless Chromium" "$WORK/map_check"

passed=0
failed=0
if [ -s "$WORK/counts" ]; then
    echo "=== results ==="
    while read -r suite p f; do
        printf '  %-18s %3d passed, %d failed\n' "$suite" "$p" "$f"
        passed=$((passed + p))
        failed=$((failed + f))
    done <"$WORK/counts"
fi
if [ $rc -ne 0 ] && [ $failed -eq 0 ]; then
    failed=1   # the cluster or the runner itself failed
fi
echo "runtime: $(( $(date +%s) - start ))s"
if [ $failed -ne 0 ] || [ $rc -ne 0 ] || [ -n "${KEEP_WORKDIR:-}" ]; then
    echo "(test work directory kept: $WORK -- results/, output_iso/, *.log)"
fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ] && [ $rc -eq 0 ]
