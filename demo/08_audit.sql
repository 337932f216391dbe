-- demo/08_audit.sql -- the log proves it: seal the audit log into a SHA-256 hash chain, let a
-- superuser rewrite one event behind the engine's back, and watch verify_audit() catch it.
\set ON_ERROR_STOP 1
\pset null '-'

\echo
\echo '== Tamper-evident audit =='
\echo '-- every decision and every configuration change of this demo is in allocation.event:'
SELECT kind, count(*) AS events FROM allocation.event GROUP BY kind ORDER BY count(*) DESC, kind LIMIT 8;
\echo '-- the scheduler seals the log (cheap, idempotent: a second run seals nothing)'
SELECT allocation.seal_audit() AS events_sealed;
SELECT allocation.seal_audit() AS sealed_again;
\echo '-- the head of the chain: a DBA copies it somewhere outside the database'
SELECT seal_id, hash, last_event_id, events_sealed FROM allocation.audit_head();
SELECT hash AS head FROM allocation.audit_head() \gset
\echo '-- verify_audit() recomputes everything: no rows = intact'
SELECT * FROM allocation.verify_audit(:'head');

\echo
\echo '-- a superuser turns the triggers off and rewrites why a dealer was handed to a rep ...'
SELECT id AS victim, reason AS true_reason FROM allocation.event WHERE kind IN ('reassign', 'assign') ORDER BY kind DESC, id LIMIT 1 \gset
SELECT :victim AS event_id, :'true_reason' AS reason_in_the_log;
SET session_replication_role = replica;
UPDATE allocation.event SET reason = 'approved by the regional director' WHERE id = :victim;
RESET session_replication_role;
SELECT id, kind, reason FROM allocation.event WHERE id = :victim;
\echo '-- ... and verify_audit() names the event:'
SELECT * FROM allocation.verify_audit(:'head');

SELECT count(*) <> 1 AS audit_check_failed FROM allocation.verify_audit(:'head') WHERE event_id = :victim \gset
\if :audit_check_failed
    \echo 'FAILED: verify_audit() did not report the rewritten event'
    SELECT 1/0 AS verify_audit_failed;
\endif
