-------------------------------------------------------------------------------
-- Engine statistics for the DBA (src/stat.c), in the spirit of pg_stat_statements
-------------------------------------------------------------------------------
-- Shared-memory counters, collected only when the server preloads the library
-- (shared_preload_libraries = 'allocation'): per managed table of the current
-- database (allocation.stat) and per database (allocation.stat_index: the
-- territory index, the indexed fallback, and whether anything is collected).
-- Without preloading allocation.stat has no rows and allocation.stat_index
-- one row with collecting = false; nothing raises, so a dashboard can read
-- both views on any server.  Counters are not transactional (a rolled-back
-- statement's recorded rows stay counted) and start again at a server restart
-- (stats_reset says since when).
--
-- Readers (analyst, manager, admin) call the public functions, C gateways
-- that run the internal ones as the extension owner; resetting is an admin's.

CREATE FUNCTION allocation._stat()
RETURNS TABLE (tbl regclass, calls bigint, decide_time double precision,
               statements bigint, record_time double precision,
               rows_direct bigint, rows_sql bigint,
               assigned bigint, manual bigint, pooled bigint, suggested bigint,
               disputed bigint, unchanged bigint, deleted bigint, refused bigint,
               stats_reset timestamptz)
AS 'MODULE_PATHNAME', 'allocation_stat' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION allocation._stat() IS 'internal: implementation of allocation.stat(), the shared counters of the current database''s tables';

CREATE FUNCTION allocation.stat()
RETURNS TABLE (tbl regclass, calls bigint, decide_time double precision,
               statements bigint, record_time double precision,
               rows_direct bigint, rows_sql bigint,
               assigned bigint, manual bigint, pooled bigint, suggested bigint,
               disputed bigint, unchanged bigint, deleted bigint, refused bigint,
               stats_reset timestamptz)
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION allocation.stat() IS 'Engine counters per managed table of the current database (no rows unless shared_preload_libraries includes allocation); read through the view allocation.stat';

CREATE VIEW allocation.stat AS
SELECT * FROM allocation.stat();
COMMENT ON VIEW allocation.stat IS 'Per managed table of the current database since stats_reset: rows the engine examined (calls) and the ms it spent deciding them (decide_time), statements recorded and the ms spent writing their batches (record_time), rows written by the C writer (rows_direct) or by allocation._record_batch (rows_sql), and what the recorded rows came to: assigned by a rule, manual (owner given by a person, claim, accepted suggestion), pooled, suggested, disputed (possible duplicate kept without an owner), unchanged, deleted; refused = writes the engine refused with an LA SQLSTATE. Empty unless the library is preloaded (see allocation.stat_index.collecting)';

CREATE FUNCTION allocation._stat_index(
    OUT collecting boolean, OUT index_builds bigint, OUT index_build_time double precision,
    OUT last_build_time double precision, OUT last_bytes bigint, OUT last_territories bigint,
    OUT last_mode text, OUT last_built_at timestamptz, OUT fallback_lookups bigint,
    OUT rows_used integer, OUT max_rows integer, OUT dropped bigint, OUT stats_reset timestamptz)
AS 'MODULE_PATHNAME', 'allocation_stat_index' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION allocation._stat_index() IS 'internal: implementation of allocation.stat_index(), the current database''s territory index counters';

CREATE FUNCTION allocation.stat_index(
    OUT collecting boolean, OUT index_builds bigint, OUT index_build_time double precision,
    OUT last_build_time double precision, OUT last_bytes bigint, OUT last_territories bigint,
    OUT last_mode text, OUT last_built_at timestamptz, OUT fallback_lookups bigint,
    OUT rows_used integer, OUT max_rows integer, OUT dropped bigint, OUT stats_reset timestamptz)
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION allocation.stat_index() IS 'Territory index counters of the current database and whether counters are collected at all (collecting = false: the library is not in shared_preload_libraries); read through the view allocation.stat_index';

CREATE VIEW allocation.stat_index AS
SELECT * FROM allocation.stat_index();
COMMENT ON VIEW allocation.stat_index IS 'One row for the current database since stats_reset: collecting (false: shared_preload_libraries lacks allocation, every other column is NULL), territory index builds and their total ms, the last build (ms, bytes, territories, mode memory or indexed, time), point lookups answered by the GiST-indexed query instead of the memory index (fallback_lookups), and the cluster''s counter rows in use of allocation.stat_max_tables (rows_used, max_rows) with the updates dropped because all were in use';

CREATE FUNCTION allocation._stat_reset(tbl regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_stat_reset' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION allocation._stat_reset(regclass) IS 'internal: implementation of allocation.stat_reset()';

CREATE FUNCTION allocation.stat_reset(tbl regclass DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION allocation.stat_reset(regclass) IS 'Zeroes the engine counters of one managed table, or (no argument) of every table and the territory index row of the current database; stats_reset records when';
