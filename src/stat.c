/*
 * stat.c
 *		Engine statistics for the DBA, in the spirit of pg_stat_statements:
 *		shared counters per (database, managed table) and per database,
 *		read through allocation.stat and allocation.stat_index.
 *
 * With shared_preload_libraries = 'allocation' the postmaster reserves a
 * fixed-size hash (allocation.stat_max_tables rows) protected by one named
 * LWLock, each row with its own spinlock.  A backend adds to local counters
 * while a statement runs -- a row's decision costs two clock reads and a few
 * additions -- and moves them to the shared row once per statement (and at
 * commit, for what ran outside a managed statement), under the shared lock;
 * the exclusive lock is taken only to create a row or to reset.
 *
 * Without preloading nothing is collected: the views return no table rows
 * and allocation.stat_index says collecting = false.
 *
 * The shared-memory hooks are chained (the previous hook is saved and
 * called), so other parts of the library can have their own.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "allocation.h"
#include "stat.h"

/* A row of counters: a managed table of a database, or (relid 0) the database */
typedef struct StatKey
{
	Oid			dbid;
	Oid			relid;
} StatKey;

typedef struct StatCounters
{
	/* per table */
	int64		calls;			/* rows the BEFORE trigger examined */
	int64		refused;		/* of which refused with an engine SQLSTATE (class LA) */
	double		decide_ms;		/* time in the BEFORE trigger */
	int64		statements;		/* statements whose batch was recorded */
	double		record_ms;		/* time writing the batches */
	int64		rows_direct;	/* rows recorded by the C writer */
	int64		rows_sql;		/* rows recorded by allocation._record_batch */
	int64		outcome[ASO__N];
	/* per database */
	int64		index_builds;
	double		index_ms;
	int64		fallbacks;
	double		last_index_ms;	/* the last build (replaced, not summed) */
	int64		last_index_bytes;
	int64		last_index_territories;
	bool		last_index_in_memory;
	TimestampTz last_index_at;	/* 0 = no build yet */
} StatCounters;

typedef struct StatEntry
{
	StatKey		key;			/* hash key: first */
	slock_t		mutex;			/* protects c */
	StatCounters c;
	TimestampTz stats_reset;	/* created or last reset */
} StatEntry;

typedef struct StatShared
{
	LWLock	   *lock;			/* the hash's entries (shared: add; exclusive: create, reset) */
	pg_atomic_uint64 dropped;	/* updates lost because the hash was full */
} StatShared;

bool		alloc_stat_on = false;
bool		alloc_stat_track = true;

/* allocation.stat_max_tables */
static int	stat_max_tables = 1000;

static StatShared *stat_shared = NULL;
static HTAB *stat_hash = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* This backend's counts not yet in shared memory, by relation (0 = the database) */
#define STAT_PENDING 8
typedef struct StatPending
{
	Oid			relid;
	StatCounters c;
} StatPending;
static StatPending pending[STAT_PENDING];
static int	npending = 0;
static int	last_pending = -1;

static void stat_flush(void);

static Size
stat_memsize(void)
{
	return add_size(MAXALIGN(sizeof(StatShared)),
					hash_estimate_size(stat_max_tables, sizeof(StatEntry)));
}

static void
stat_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(stat_memsize());
	RequestNamedLWLockTranche("allocation_stat", 1);
}

static void
stat_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stat_shared = ShmemInitStruct("allocation_stat", sizeof(StatShared), &found);
	if (!found)
	{
		stat_shared->lock = &(GetNamedLWLockTranche("allocation_stat"))->lock;
		pg_atomic_init_u64(&stat_shared->dropped, 0);
	}
	info.keysize = sizeof(StatKey);
	info.entrysize = sizeof(StatEntry);
	stat_hash = ShmemInitHash("allocation_stat hash", stat_max_tables, stat_max_tables,
							  &info, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
	alloc_stat_on = true;
}

/* Commit: what ran outside a managed statement (explain's lookups); abort: forget */
static void
stat_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_PARALLEL_PRE_COMMIT ||
		event == XACT_EVENT_PRE_PREPARE)
		stat_flush();
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		npending = 0;
		last_pending = -1;
	}
}

void
alloc_stat_init(void)
{
	DefineCustomBoolVariable("allocation.stat_track",
							 "Whether the engine counts its work for allocation.stat (with shared_preload_libraries = 'allocation').",
							 "Off: the counters stay as they are (no clock reads, no shared-memory updates) until it is on again.",
							 &alloc_stat_track, true, PGC_SUSET, 0, NULL, NULL, NULL);
	/* a PGC_POSTMASTER setting can only be defined while the postmaster loads us */
	if (!process_shared_preload_libraries_in_progress)
		return;
	DefineCustomIntVariable("allocation.stat_max_tables",
							"Number of counter rows allocation.stat keeps in shared memory.",
							"One row per managed table per database, plus one per database for its territory index; activity of tables beyond it is not counted (allocation.stat_index.dropped says how often).",
							&stat_max_tables, 1000, 16, 1000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = stat_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stat_shmem_startup;
	RegisterXactCallback(stat_xact_callback, NULL);
}

/* ---------- backend-local counts ---------- */

/* The pending counters of a relation (0 = the database), flushing when all slots are taken */
static StatCounters *
stat_local(Oid relid)
{
	int			i;

	if (last_pending >= 0 && last_pending < npending && pending[last_pending].relid == relid)
		return &pending[last_pending].c;
	for (i = 0; i < npending; i++)
		if (pending[i].relid == relid)
			break;
	if (i == npending)
	{
		if (npending == STAT_PENDING)
		{
			stat_flush();
			i = 0;
		}
		npending++;
		pending[i].relid = relid;
		memset(&pending[i].c, 0, sizeof(StatCounters));
	}
	last_pending = i;
	return &pending[i].c;
}

static void
counters_add(StatCounters *to, const StatCounters *d)
{
	int			k;

	to->calls += d->calls;
	to->refused += d->refused;
	to->decide_ms += d->decide_ms;
	to->statements += d->statements;
	to->record_ms += d->record_ms;
	to->rows_direct += d->rows_direct;
	to->rows_sql += d->rows_sql;
	for (k = 0; k < ASO__N; k++)
		to->outcome[k] += d->outcome[k];
	to->index_builds += d->index_builds;
	to->index_ms += d->index_ms;
	to->fallbacks += d->fallbacks;
	if (d->last_index_at != 0)
	{
		to->last_index_ms = d->last_index_ms;
		to->last_index_bytes = d->last_index_bytes;
		to->last_index_territories = d->last_index_territories;
		to->last_index_in_memory = d->last_index_in_memory;
		to->last_index_at = d->last_index_at;
	}
}

/* Adds d to the shared row of (this database, relid); creates the row if there is room */
static void
stat_add_shared(Oid relid, const StatCounters *d)
{
	StatKey		key;
	StatEntry  *e;

	memset(&key, 0, sizeof(key));
	key.dbid = MyDatabaseId;
	key.relid = relid;
	LWLockAcquire(stat_shared->lock, LW_SHARED);
	e = hash_search(stat_hash, &key, HASH_FIND, NULL);
	if (e == NULL)
	{
		TimestampTz now = GetCurrentTimestamp();
		bool		found;

		LWLockRelease(stat_shared->lock);
		LWLockAcquire(stat_shared->lock, LW_EXCLUSIVE);
		e = hash_search(stat_hash, &key, HASH_FIND, NULL);
		if (e == NULL && hash_get_num_entries(stat_hash) < stat_max_tables)
		{
			e = hash_search(stat_hash, &key, HASH_ENTER_NULL, &found);
			if (e != NULL && !found)
			{
				SpinLockInit(&e->mutex);
				memset(&e->c, 0, sizeof(StatCounters));
				e->stats_reset = now;
			}
		}
		if (e == NULL)
		{
			pg_atomic_fetch_add_u64(&stat_shared->dropped, 1);
			LWLockRelease(stat_shared->lock);
			return;
		}
	}
	SpinLockAcquire(&e->mutex);
	counters_add(&e->c, d);
	SpinLockRelease(&e->mutex);
	LWLockRelease(stat_shared->lock);
}

/* Moves this backend's pending counts to shared memory */
static void
stat_flush(void)
{
	int			i;

	if (!alloc_stat_on)
		return;
	for (i = 0; i < npending; i++)
		stat_add_shared(pending[i].relid, &pending[i].c);
	npending = 0;
	last_pending = -1;
}

static double
elapsed_ms(instr_time *t0)
{
	instr_time	t1;

	INSTR_TIME_SET_CURRENT(t1);
	INSTR_TIME_SUBTRACT(t1, *t0);
	return INSTR_TIME_GET_MILLISEC(t1);
}

/* ---------- the hooks in the engine ---------- */

void
alloc_stat_decision(Oid relid, instr_time *t0, bool ok)
{
	StatCounters *c;

	if (!ALLOC_STAT_ACTIVE() || INSTR_TIME_IS_ZERO(*t0))
		return;
	c = stat_local(relid);
	c->calls++;
	c->decide_ms += elapsed_ms(t0);
	if (!ok)
	{
		/* the error is being thrown: the statement's counts go now or never */
		if (ERRCODE_TO_CATEGORY(geterrcode()) == ERRCODE_TO_CATEGORY(ERRCODE_ALLOC_NOT_MANAGED))
			c->refused++;
		stat_flush();
	}
}

void
alloc_stat_recorded(Oid relid, AllocStatOutcome outcome, bool direct)
{
	StatCounters *c;

	if (!ALLOC_STAT_ACTIVE())
		return;
	c = stat_local(relid);
	c->outcome[outcome]++;
	if (direct)
		c->rows_direct++;
	else
		c->rows_sql++;
}

void
alloc_stat_statement(Oid relid, instr_time *t0)
{
	StatCounters *c;

	if (!ALLOC_STAT_ACTIVE() || INSTR_TIME_IS_ZERO(*t0))
		return;
	c = stat_local(relid);
	c->statements++;
	c->record_ms += elapsed_ms(t0);
	stat_flush();
}

void
alloc_stat_index_build(double ms, Size bytes, int64 territories, bool in_memory)
{
	StatCounters d;

	if (!ALLOC_STAT_ACTIVE())
		return;
	memset(&d, 0, sizeof(d));
	d.index_builds = 1;
	d.index_ms = ms;
	d.last_index_ms = ms;
	d.last_index_bytes = (int64) bytes;
	d.last_index_territories = territories;
	d.last_index_in_memory = in_memory;
	d.last_index_at = GetCurrentTimestamp();
	stat_add_shared(InvalidOid, &d);
}

void
alloc_stat_fallback(void)
{
	if (ALLOC_STAT_ACTIVE())
		stat_local(InvalidOid)->fallbacks++;
}

/* ---------- SQL ---------- */

/* A copy of the current database's rows (relid 0 included), taken under the shared lock */
static StatEntry *
stat_snapshot(int *n)
{
	HASH_SEQ_STATUS seq;
	StatEntry  *e,
			   *out;
	int			k = 0;

	stat_flush();
	LWLockAcquire(stat_shared->lock, LW_SHARED);
	out = palloc(sizeof(StatEntry) * Max(hash_get_num_entries(stat_hash), 1));
	hash_seq_init(&seq, stat_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->key.dbid != MyDatabaseId)
			continue;
		out[k].key = e->key;
		SpinLockAcquire(&e->mutex);
		out[k].c = e->c;
		SpinLockRelease(&e->mutex);
		out[k].stats_reset = e->stats_reset;
		k++;
	}
	LWLockRelease(stat_shared->lock);
	*n = k;
	return out;
}

#define STAT_COLS 17

/* _stat(): one row per table of the current database with counters */
PG_FUNCTION_INFO_V1(allocation_stat);
Datum
allocation_stat(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	StatEntry  *rows;
	int			n,
				i;

	InitMaterializedSRF(fcinfo, 0);
	if (!alloc_stat_on)
		return (Datum) 0;
	rows = stat_snapshot(&n);
	for (i = 0; i < n; i++)
	{
		StatCounters *c = &rows[i].c;
		Datum		v[STAT_COLS];
		bool		nul[STAT_COLS];
		int			k = 0,
					o;

		/* the database's row is allocation.stat_index; a dropped table's is gone */
		if (!OidIsValid(rows[i].key.relid) ||
			!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(rows[i].key.relid)))
			continue;
		memset(nul, 0, sizeof(nul));
		v[k++] = ObjectIdGetDatum(rows[i].key.relid);
		v[k++] = Int64GetDatum(c->calls);
		v[k++] = Float8GetDatum(c->decide_ms);
		v[k++] = Int64GetDatum(c->statements);
		v[k++] = Float8GetDatum(c->record_ms);
		v[k++] = Int64GetDatum(c->rows_direct);
		v[k++] = Int64GetDatum(c->rows_sql);
		for (o = 0; o < ASO__N; o++)
			v[k++] = Int64GetDatum(c->outcome[o]);
		v[k++] = Int64GetDatum(c->refused);
		v[k++] = TimestampTzGetDatum(rows[i].stats_reset);
		Assert(k == STAT_COLS);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, nul);
	}
	return (Datum) 0;
}

#define STAT_INDEX_COLS 13

/* _stat_index(): the current database's territory index counters, and whether anything is collected */
PG_FUNCTION_INFO_V1(allocation_stat_index);
Datum
allocation_stat_index(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		v[STAT_INDEX_COLS];
	bool		nul[STAT_INDEX_COLS];
	StatEntry  *rows;
	StatEntry  *db = NULL;
	int			n,
				i,
				used = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);
	memset(nul, true, sizeof(nul));
	v[0] = BoolGetDatum(alloc_stat_on);
	nul[0] = false;
	if (alloc_stat_on)
	{
		rows = stat_snapshot(&n);
		for (i = 0; i < n; i++)
			if (!OidIsValid(rows[i].key.relid))
				db = &rows[i];
		LWLockAcquire(stat_shared->lock, LW_SHARED);
		used = (int) hash_get_num_entries(stat_hash);
		LWLockRelease(stat_shared->lock);
		if (db)
		{
			StatCounters *c = &db->c;

			v[1] = Int64GetDatum(c->index_builds);
			v[2] = Float8GetDatum(c->index_ms);
			v[8] = Int64GetDatum(c->fallbacks);
			v[12] = TimestampTzGetDatum(db->stats_reset);
			nul[1] = nul[2] = nul[8] = nul[12] = false;
			if (c->last_index_at != 0)
			{
				v[3] = Float8GetDatum(c->last_index_ms);
				v[4] = Int64GetDatum(c->last_index_bytes);
				v[5] = Int64GetDatum(c->last_index_territories);
				v[6] = CStringGetTextDatum(c->last_index_in_memory ? "memory" : "indexed");
				v[7] = TimestampTzGetDatum(c->last_index_at);
				nul[3] = nul[4] = nul[5] = nul[6] = nul[7] = false;
			}
		}
		else
		{
			/* nothing happened yet in this database since the start or the reset */
			v[1] = Int64GetDatum(0);
			v[2] = Float8GetDatum(0);
			v[8] = Int64GetDatum(0);
			nul[1] = nul[2] = nul[8] = false;
		}
		v[9] = Int32GetDatum(used);
		v[10] = Int32GetDatum(stat_max_tables);
		v[11] = Int64GetDatum((int64) pg_atomic_read_u64(&stat_shared->dropped));
		nul[9] = nul[10] = nul[11] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, v, nul)));
}

/* Zeroes an entry's counters (exclusive lock held) */
static void
stat_zero(StatEntry *e, TimestampTz now)
{
	SpinLockAcquire(&e->mutex);
	memset(&e->c, 0, sizeof(StatCounters));
	SpinLockRelease(&e->mutex);
	e->stats_reset = now;
}

/* Resets the current database's rows: zeroes them, removes the dropped tables' rows */
static void
stat_reset_database(TimestampTz now)
{
	StatEntry  *rows;
	StatCounters zero;
	int			n,
				i;

	/* which tables are gone, read without holding the lock */
	rows = stat_snapshot(&n);
	for (i = 0; i < n; i++)
		rows[i].key.dbid = (OidIsValid(rows[i].key.relid) &&
							!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(rows[i].key.relid)))
			? InvalidOid : MyDatabaseId;
	/* the database's row holds the reset time even when nothing ran yet */
	memset(&zero, 0, sizeof(zero));
	stat_add_shared(InvalidOid, &zero);
	LWLockAcquire(stat_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < n; i++)
	{
		StatKey		key;
		StatEntry  *e;

		memset(&key, 0, sizeof(key));
		key.dbid = MyDatabaseId;
		key.relid = rows[i].key.relid;
		if (!OidIsValid(rows[i].key.dbid))
			(void) hash_search(stat_hash, &key, HASH_REMOVE, NULL);
		else if ((e = hash_search(stat_hash, &key, HASH_FIND, NULL)) != NULL)
			stat_zero(e, now);
	}
	/* rows created meanwhile by other backends keep their counts: they started after the reset */
	{
		StatKey		key;
		StatEntry  *e;

		memset(&key, 0, sizeof(key));
		key.dbid = MyDatabaseId;
		if ((e = hash_search(stat_hash, &key, HASH_FIND, NULL)) != NULL)
			stat_zero(e, now);
	}
	LWLockRelease(stat_shared->lock);
}

/*
 * _stat_reset(tbl): zeroes the counters of one managed table, or (NULL) of
 * every table of the current database and of its territory index row; rows
 * of dropped tables are removed.  Without preloading there is nothing to
 * reset (only the argument is checked).
 */
PG_FUNCTION_INFO_V1(allocation_stat_reset);
Datum
allocation_stat_reset(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_ARGISNULL(0) ? InvalidOid : PG_GETARG_OID(0);
	TimestampTz now = GetCurrentTimestamp();
	StatKey		key;
	StatEntry  *e = NULL;

	if (!OidIsValid(relid))
	{
		if (alloc_stat_on)
			stat_reset_database(now);
		PG_RETURN_VOID();
	}
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid),
				 errdetail("allocation.stat_reset() resets the counters of an existing managed table."),
				 errhint("Call allocation.stat_reset() without an argument to reset every table of this database.")));
	if (alloc_stat_on)
	{
		stat_flush();
		memset(&key, 0, sizeof(key));
		key.dbid = MyDatabaseId;
		key.relid = relid;
		LWLockAcquire(stat_shared->lock, LW_EXCLUSIVE);
		e = hash_search(stat_hash, &key, HASH_FIND, NULL);
		if (e)
			stat_zero(e, now);
		LWLockRelease(stat_shared->lock);
	}
	/* a table counted earlier but no longer managed can still be reset */
	if (e == NULL)
	{
		config_prepare();
		if (config_get_table(relid, true) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_ALLOC_NOT_MANAGED),
					 errmsg("table %s is not managed", get_rel_name(relid)),
					 errdetail("allocation.stat counts only tables attached with allocation.manage()."),
					 errhint("Call allocation.stat_reset() without an argument to reset every table of this database.")));
	}
	PG_RETURN_VOID();
}
