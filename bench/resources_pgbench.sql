-- bench/resources_pgbench.sql: one grant (or release) attempt per transaction (bench/resources.sh).
-- pgbench -D pool=... -D n_customers=... -D release_pct=0|N -D phase=1|2; resources.attempt() is in bench/resources_setup.sql.
\set op random(1, 100)
\set cust random(1, :n_customers)
\set q random(1, 100)
SELECT resources.attempt(:phase, :pool, :op, :release_pct, :cust, :q);
