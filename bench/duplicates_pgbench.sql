-- bench/duplicates_pgbench.sql: one registration per transaction (bench/duplicates.sh)
SELECT dup.attempt(:sleep);
