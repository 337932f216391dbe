#!/usr/bin/env bash
# bench/outcomes.sh: the cost of reading a CRM's own visit table (issue 14).  Inserts OUT_ROWS
# rows (one INSERT ... SELECT) into a follow-up table three ways:
#   plain   - the table alone, no trigger;
#   engine  - attached with allocation.manage_outcomes(..., 'followup', ...): the C row trigger
#             reading the mapped columns, allocation._outcome_apply() landing each row in
#             allocation.followup credited to the holder at the visit's time (or the visiting rep
#             when it held or shared the customer then);
#   lean    - the PL/pgSQL trigger a DBA would write instead: copies each row into
#             allocation.followup (no holder-at-the-time attribution, no UPDATE/DELETE/TRUNCATE
#             handling, no type or ownership checks);
# each OUT_REPEAT times (best run kept) and prints the milliseconds and the ratios to plain.
#
# Runs against the server PGHOST/PGPORT/PGUSER name (the extension must be installed there, e.g. by
# W=... PGME=... PORT=... /work/check.sh); creates and drops the database OUT_DB.
#
#   PGHOST=/tmp PGPORT=5502 PGUSER=postgres bash bench/outcomes.sh
#
# Knobs: OUT_ROWS=100000 OUT_CUSTOMERS=2000 OUT_REPEAT=3 OUT_DB=bench_outcomes
set -euo pipefail

OUT_ROWS=${OUT_ROWS:-100000}
OUT_CUSTOMERS=${OUT_CUSTOMERS:-2000}
OUT_REPEAT=${OUT_REPEAT:-3}
OUT_DB=${OUT_DB:-bench_outcomes}
PSQL="psql -X -q -v ON_ERROR_STOP=1"

$PSQL -d postgres -c "DROP DATABASE IF EXISTS $OUT_DB" -c "CREATE DATABASE $OUT_DB"
trap '$PSQL -d postgres -c "DROP DATABASE IF EXISTS $OUT_DB"' EXIT

$PSQL -d "$OUT_DB" <<SQL
CREATE EXTENSION postgis;
CREATE EXTENSION allocation;
INSERT INTO allocation.team (id, code, name) VALUES (1, 't', 'Team');
INSERT INTO allocation.rep (id, code, name, team_id, capacity)
SELECT g, 'r' || g, 'Rep ' || g, 1, $OUT_CUSTOMERS FROM generate_series(1, 20) g;
CREATE TABLE customer (id integer PRIMARY KEY, name text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('customer', 'id', 'loc', 'owner');
INSERT INTO customer SELECT g, 'customer ' || g, NULL, 1 + g % 20 FROM generate_series(1, $OUT_CUSTOMERS) g;

-- three identical visit tables, a CRM's usual shape
CREATE TABLE visit_plain (id bigserial PRIMARY KEY, customer_id integer NOT NULL, visited_at timestamptz NOT NULL,
                          rep integer, channel text, note text);
CREATE TABLE visit_engine (LIKE visit_plain INCLUDING ALL);
CREATE TABLE visit_lean (LIKE visit_plain INCLUDING ALL);
SELECT allocation.manage_outcomes('visit_engine', 'followup', 'customer_id',
                                  '{"at": "visited_at", "rep": "rep", "channel": "channel", "note": "note"}');

-- the lean hand-written trigger
CREATE FUNCTION visit_lean_copy() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    INSERT INTO allocation.followup (managed_id, key, rep_id, at, kind, note, recorded_by)
    VALUES (1, NEW.customer_id::text, NEW.rep, NEW.visited_at,
            CASE WHEN NEW.channel IN ('visit', 'call', 'message', 'meeting', 'demo', 'sample', 'deal')
                 THEN NEW.channel ELSE 'other' END, NEW.note, current_user);
    RETURN NEW;
END \$\$;
CREATE TRIGGER visit_lean_copy AFTER INSERT ON visit_lean FOR EACH ROW EXECUTE FUNCTION visit_lean_copy();
SQL

# one timed INSERT of OUT_ROWS rows into table $1; prints milliseconds
run_one() {
    $PSQL -d "$OUT_DB" -At <<SQL
TRUNCATE $1;
TRUNCATE allocation.followup;
CHECKPOINT;
SELECT clock_timestamp() AS t0 \gset
INSERT INTO $1 (customer_id, visited_at, rep, channel, note)
SELECT 1 + g % $OUT_CUSTOMERS, now() - interval '1 millisecond' * (g % 1000), 1 + g % 20,
       (ARRAY['visit', 'call', 'WeChat', 'demo'])[1 + g % 4], 'note ' || g
  FROM generate_series(1, $OUT_ROWS) g;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0') * 1000);
SQL
}

best() {
    local b="" t i
    for i in $(seq 1 "$OUT_REPEAT"); do
        t=$(run_one "$1" | tail -1)
        if [ -z "$b" ] || [ "$t" -lt "$b" ]; then b=$t; fi
    done
    echo "$b"
}

plain=$(best visit_plain)
engine=$(best visit_engine)
lean=$(best visit_lean)
landed=$($PSQL -d "$OUT_DB" -At -c "SELECT count(*) FROM allocation.followup")
echo "rows per INSERT: $OUT_ROWS (customers: $OUT_CUSTOMERS, best of $OUT_REPEAT)"
printf "plain                 %8d ms\n" "$plain"
printf "manage_outcomes       %8d ms   x%s of plain\n" "$engine" "$(echo "scale=2; $engine / $plain" | bc)"
printf "lean PL/pgSQL copy    %8d ms   x%s of plain\n" "$lean" "$(echo "scale=2; $lean / $plain" | bc)"
printf "manage_outcomes / lean          x%s\n" "$(echo "scale=2; $engine / $lean" | bc)"
echo "follow-ups landed by the last run: $landed"
