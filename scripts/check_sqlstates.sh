#!/usr/bin/env bash
# scripts/check_sqlstates.sh -- the extension's own SQLSTATEs (class LA) agree with the README.
#
# Every LA code the code can raise (C: MAKE_SQLSTATE('L','A',...) in src/; SQL: ERRCODE = 'LAxxx'
# in sql_src/) must have a row in the README's SQLSTATE table, and every row there must still be
# raised somewhere.  Prints the differences; exits non-zero when there are any.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
code=$( { grep -ohE "MAKE_SQLSTATE\('L', ?'A', ?'[0-9A-Z]', ?'[0-9A-Z]', ?'[0-9A-Z]'\)" src/*.c src/*.h \
            | sed -E "s/MAKE_SQLSTATE//; s/[^0-9A-Z]//g"
          grep -ohE "'LA[0-9A-Z]{3}'" sql_src/*.sql | tr -d "'"; } | sort -u)
readme=$(grep -oE '^\| `LA[0-9A-Z]{3}`' README.md | grep -oE 'LA[0-9A-Z]{3}' | sort -u)
missing=$(comm -23 <(echo "$code") <(echo "$readme"))
stale=$(comm -13 <(echo "$code") <(echo "$readme"))
echo "SQLSTATEs raised by the code: $(echo "$code" | wc -w); documented in README.md: $(echo "$readme" | wc -w)"
[ -n "$missing" ] && echo "raised but not in the README's SQLSTATE table: $missing"
[ -n "$stale" ] && echo "in the README's SQLSTATE table but raised nowhere: $stale"
if [ -z "$missing" ] && [ -z "$stale" ]; then echo "SQLSTATE list consistent"; exit 0; fi
exit 1
