-- bench/claims_pgbench.sql: one claim/release attempt per transaction (bench/claims.sh).
-- pgbench -D n_reps=... -D n_customers=... -D op_max=85|100 -D phase=1|2; claims.attempt() is in bench/claims_setup.sql.
\set op random(1, :op_max)
\set rep random(1, :n_reps)
\set cust random(1, :n_customers)
SELECT claims.attempt(:phase, :op, :rep, :cust);
