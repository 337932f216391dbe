-- bench/duplicates_report.sql: what bench/duplicates.sh prints after the run
\set ON_ERROR_STOP 1
\pset footer off
SET client_min_messages = warning;
\echo
\echo '== outcomes =='
SELECT outcome, count(*) AS attempts, min(message) AS example FROM dup.outcome GROUP BY outcome ORDER BY outcome;
\echo '== dealers by rows stored =='
SELECT n AS rows_stored, count(*) AS dealers
  FROM (SELECT d.dealer, (SELECT count(*) FROM dup.customer c WHERE c.dealer = d.dealer) AS n
          FROM (SELECT DISTINCT dealer FROM dup.task) d) x
 GROUP BY n ORDER BY n;
\echo '== a dealer stored more than once (first 5) =='
SELECT dealer, string_agg(name || ' (rep ' || coalesce(owner_id::text, '-') || ')', ', ' ORDER BY id) AS rows
  FROM dup.customer GROUP BY dealer HAVING count(*) > 1 ORDER BY dealer LIMIT 5;
\echo '== allocation.check_consistency() =='
SELECT * FROM allocation.check_consistency();
