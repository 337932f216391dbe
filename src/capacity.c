/*
 * capacity.c
 *		Capacity: the holdings counters in allocation.rep_load, taken and
 *		given back with row locks in rep id order, and the slots of pending
 *		suggestions.  A slot is reserved while the owner can still be set
 *		(BEFORE row) and counted in the statement's frame until written.
 *
 * Layering: below the decisions (assign.c) and the trigger; uses only the
 * frame's slot counts (frame.c).
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "allocation.h"
#include "capacity.h"

/* ---------- capacity: counters in allocation.rep_load ---------- */

static SPIPlanPtr plan_reserve_wait = NULL;
static SPIPlanPtr plan_reserve_skip = NULL;

/*
 * Deadlock avoidance.  A transaction holds the counter rows of the reps it
 * took slots of until it ends.  It only ever WAITS for a counter with a
 * higher rep id than every counter it holds (ordered locking: no cycle among
 * counters); otherwise a locked rep is skipped.  It waits for a round-robin
 * cursor only while it holds no counter.  Reset at transaction end.
 */
static int64 max_counter_held = 0;

void
assign_reset_locks(void)
{
	max_counter_held = 0;
}

bool
capacity_may_wait_for(int64 rep_id)
{
	return rep_id > max_counter_held;
}

/*
 * Holdings counters.  The first time a transaction needs a rep's slot it
 * locks the rep's counter row (SELECT ... FOR UPDATE, re-read on the newest
 * version) and remembers the value: from then on no other transaction can
 * change it until this one ends, so further slots are counted in memory
 * (per statement, in the trigger's batch) and written once per rep at the end
 * of each statement.  Capacity = remembered value + this transaction's
 * unwritten slots.  A subtransaction abort forgets the remembered values
 * (its writes and maybe its locks are gone); they are simply read again.
 */
typedef struct RepBase
{
	int64		rep_id;			/* hash key */
	int32		held;			/* held + reserved (slots of pending suggestions),
								 * including our written slots */
} RepBase;

static HTAB *rep_bases = NULL;

void
assign_forget_bases(void)
{
	rep_bases = NULL;			/* memory goes with TopTransactionContext */
}

/* SQL: the counters were rewritten (recount): read them again when needed */
PG_FUNCTION_INFO_V1(allocation_forget_counters);
Datum
allocation_forget_counters(PG_FUNCTION_ARGS)
{
	assign_forget_bases();
	PG_RETURN_VOID();
}

static RepBase *
rep_base(int64 rep_id, bool create)
{
	bool		found;
	RepBase    *b;

	if (rep_bases == NULL)
	{
		HASHCTL		ctl;

		if (!create)
			return NULL;
		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(RepBase);
		ctl.hcxt = TopTransactionContext;
		rep_bases = hash_create("allocation locked counters", 64, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	b = hash_search(rep_bases, &rep_id, create ? HASH_ENTER : HASH_FIND, &found);
	if (b && create && !found)
		b->held = -1;
	return b;
}

/*
 * The batch writer added n slots to a counter this transaction holds;
 * n = 0: it changed by an amount only the registry knows (a release), so
 * the value is read again when next needed (the lock is still ours).
 */
void
assign_note_written(int64 rep_id, int32 n)
{
	RepBase    *b = rep_base(rep_id, false);

	/* the batch writer updated the counter: this transaction holds its lock now */
	if (rep_id > max_counter_held)
		max_counter_held = rep_id;
	if (b == NULL || b->held < 0)
		return;
	if (n == 0)
		b->held = -1;
	else
		b->held += n;
}

/*
 * Locks a rep's counter for this transaction and remembers its value (if
 * not done yet).  With wait = false a counter locked by another transaction
 * is not waited for: returns NULL.
 */
static RepBase *
lock_counter(int64 rep_id, bool wait)
{
	RepBase    *b = rep_base(rep_id, false);
	AllocUserSwitch sw;
	Oid			types[1] = {INT8OID};
	Datum		vals[1];
	int			rc;
	bool		isnull;

	if (b != NULL && b->held >= 0)
		return b;
	alloc_spi_begin(&sw);
	vals[0] = Int64GetDatum(rep_id);
	rc = SPI_execute_plan(wait
						  ? alloc_keep_plan(&plan_reserve_wait,
									  "SELECT held + reserved FROM allocation.rep_load WHERE rep_id = $1 FOR UPDATE",
									  1, types)
						  : alloc_keep_plan(&plan_reserve_skip,
									  "SELECT held + reserved FROM allocation.rep_load WHERE rep_id = $1"
									  " FOR UPDATE SKIP LOCKED", 1, types),
						  vals, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "locking a holdings counter failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
	{
		/* locked by another transaction (skip), or no counter row */
		alloc_spi_end(&sw);
		return NULL;
	}
	b = rep_base(rep_id, true);
	b->held = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	alloc_spi_end(&sw);
	if (rep_id > max_counter_held)
		max_counter_held = rep_id;
	return b;
}

/* Whether the rep is still stored (latest committed state: after waiting for its deleter) */
static bool
rep_still_exists(int64 rep_id)
{
	AllocUserSwitch sw;
	Oid			types[1] = {INT8OID};
	Datum		vals[1] = {Int64GetDatum(rep_id)};
	bool		exists;

	alloc_spi_begin(&sw);
	PushActiveSnapshot(GetLatestSnapshot());
	if (SPI_execute_with_args("SELECT 1 FROM allocation.rep WHERE id = $1", 1, types, vals, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading a rep failed");
	exists = SPI_processed > 0;
	PopActiveSnapshot();
	alloc_spi_end(&sw);
	return exists;
}

/*
 * Locks the counter of a rep whose customer this transaction releases, under
 * the ordered-locking rule: false when waiting for it could deadlock.
 */
bool
assign_lock_released(int64 rep_id)
{
	return lock_counter(rep_id, capacity_may_wait_for(rep_id)) != NULL;
}

/*
 * Takes one holdings slot of a rep: succeeds only while the rep is active
 * and below capacity.  With wait = false a rep whose counter is locked by
 * another transaction is skipped.
 */

bool
capacity_reserve_slot(int64 rep_id, bool wait, int32 own)
{
	RepBase    *b;
	RepInfo    *rep = config_get_rep(rep_id);

	if (rep == NULL || !rep->active)
		return false;
	b = lock_counter(rep_id, wait);
	if (b == NULL)
		return false;
	/* own: slots of this very customer the counter already includes (its pending suggestion) */
	if (rep->capacity >= 0 && b->held - own + frames_pending(rep_id) >= rep->capacity)
		return false;
	frames_add_reservation(rep_id, 1);
	return true;
}

bool
assign_reserve(int64 rep_id, bool wait)
{
	return capacity_reserve_slot(rep_id, wait, 0);
}

/* Locks an active rep's counter without taking a slot (a slot it already reserved is used) */
bool
capacity_lock_only(int64 rep_id, bool wait)
{
	RepInfo    *rep = config_get_rep(rep_id);

	return rep != NULL && rep->active && lock_counter(rep_id, wait) != NULL;
}

/* LA020 when a rep was deleted by another transaction while a customer was being given to it */
void
capacity_refuse_deleted_rep(ManagedTable *mt, Customer *c, RepInfo *rep, int64 rep_id)
{
	if (!rep_still_exists(rep_id))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_UNKNOWN_REP),
				 errmsg("rep %s no longer exists", rep->code),
				 errdetail("Rep %s (id " INT64_FORMAT ") was deleted by another transaction while customer %s of %s was being given to it.",
						   rep->code, rep_id, c->key, mt->name),
				 errhint("Give the customer to another rep.")));
}

/* _holds_counters(): whether this transaction holds any holdings counter */
PG_FUNCTION_INFO_V1(allocation_holds_counters);
Datum
allocation_holds_counters(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(max_counter_held > 0);
}

/*
 * _try_lock_counter(rep): locks a rep's holdings counter for this
 * transaction unless another transaction holds it; never waits (recycle()
 * skips a busy rep's customers instead of failing or blocking).
 */
PG_FUNCTION_INFO_V1(allocation_try_lock_counter);
Datum
allocation_try_lock_counter(PG_FUNCTION_ARGS)
{
	config_prepare();
	PG_RETURN_BOOL(lock_counter(PG_GETARG_INT64(0), false) != NULL);
}

/*
 * _lock_counter(rep): claim() serializes one rep's claims on the rep's
 * holdings counter, under the same ordered-locking rule as every other
 * assignment (so claims and assignments cannot deadlock on counters):
 * it waits only for a counter with a higher rep id than every counter this
 * transaction holds, and otherwise fails at once with 55P03.
 */
PG_FUNCTION_INFO_V1(allocation_lock_counter);
Datum
allocation_lock_counter(PG_FUNCTION_ARGS)
{
	int64		rep_id = PG_GETARG_INT64(0);
	RepInfo    *rep;

	config_prepare();
	rep = config_get_rep(rep_id);
	if (rep == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_UNKNOWN_REP),
				 errmsg("rep " INT64_FORMAT " does not exist", rep_id),
				 errdetail("No row of allocation.rep has this id."),
				 errhint("Claim for an existing rep.")));
	if (lock_counter(rep_id, capacity_may_wait_for(rep_id)) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("rep %s is busy", rep->code),
				 errdetail("Another open transaction is taking or releasing customers of rep %s; waiting for it here could deadlock with this transaction's own earlier assignments.",
						   rep->code),
				 errhint("Retry after the other transaction ends, or claim for reps in rep id order within one transaction.")));
	PG_RETURN_VOID();
}

/*
 * Reads the counters of reps want[0..nwant-1] by index probes on
 * allocation.rep_load (no SPI: a single-row statement paid an executor start
 * for this), under a fresh snapshot taken after the commands so far, as an
 * SPI query would: into held[]/reserved[] of ids[0..n-1] and the statement's
 * cache.  Used for ordering only; capacity is checked on the locked counter.
 */
static void
read_counters(int64 *want, int nwant, int64 *ids, int n, int32 *held, int32 *reserved, HTAB *cache)
{
	Relation	rel,
				ix;
	Oid			relid,
				ixid;
	Snapshot	snap;
	int			w,
				i;

	alloc_lookup_oids();
	relid = get_relname_relid("rep_load", alloc_oids.schema);
	ixid = get_relname_relid("rep_load_pkey", alloc_oids.schema);
	if (!OidIsValid(relid) || !OidIsValid(ixid))
		elog(ERROR, "allocation.rep_load or its primary key is missing");
	CommandCounterIncrement();
	snap = RegisterSnapshot(GetLatestSnapshot());
	rel = table_open(relid, AccessShareLock);
	ix = index_open(ixid, AccessShareLock);
	for (w = 0; w < nwant; w++)
	{
		ScanKeyData key;
		SysScanDesc scan;
		HeapTuple	tup;

		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(want[w]));
		scan = systable_beginscan_ordered(rel, ix, snap, 1, &key);
		tup = systable_getnext_ordered(scan, ForwardScanDirection);
		if (HeapTupleIsValid(tup))
		{
			bool		isnull;
			int32		h = DatumGetInt32(heap_getattr(tup, 2, RelationGetDescr(rel), &isnull));
			int32		r = DatumGetInt32(heap_getattr(tup, 3, RelationGetDescr(rel), &isnull));

			for (i = 0; i < n; i++)
				if (ids[i] == want[w])
				{
					held[i] = h + frames_pending(want[w]);	/* + this transaction's unwritten slots */
					if (reserved)
						reserved[i] = r;
				}
			if (cache)
			{
				RepCount   *rc = hash_search(cache, &want[w], HASH_ENTER, NULL);

				rc->n = h;
				rc->reserved = r;
			}
		}
		systable_endscan_ordered(scan);
	}
	index_close(ix, NoLock);	/* locks kept until the transaction ends, as a query's */
	table_close(rel, NoLock);
	UnregisterSnapshot(snap);
}

/*
 * Current holdings of reps ids[0..n-1] into held[] (with this transaction's
 * unwritten slots) and the slots their pending suggestions reserve into
 * reserved[] (may be NULL).  Values read once per statement and rep, for
 * ordering candidates; capacity itself is checked on the locked counter.
 */
void
capacity_read_loads(int64 *ids, int n, int32 *held, int32 *reserved)
{
	int64	   *elems;
	int			i;
	HTAB	   *cache = frames_load_cache();
	int			nmiss = 0;

	for (i = 0; i < n; i++)
	{
		held[i] = 0;
		if (reserved)
			reserved[i] = 0;
	}
	if (n == 0)
		return;
	elems = palloc(sizeof(int64) * n);
	for (i = 0; i < n; i++)
	{
		/* values read earlier in this statement: no query (ordering only) */
		RepCount   *rc = cache ? hash_search(cache, &ids[i], HASH_FIND, NULL) : NULL;

		if (rc)
		{
			held[i] = rc->n + frames_pending(ids[i]);
			if (reserved)
				reserved[i] = rc->reserved;
		}
		else
			elems[nmiss++] = ids[i];
	}
	if (nmiss == 0)
		return;
	read_counters(elems, nmiss, ids, n, held, reserved, cache);
}

/* A rep's holdings plus its reserved slots (what capacity is compared with) */
int32
assign_current_load(int64 rep_id)
{
	int32		held,
				reserved;

	capacity_read_loads(&rep_id, 1, &held, &reserved);
	return held + reserved;
}

/* Whether this transaction holds any holdings counter (it then never waits for a cursor) */
bool
capacity_holds_counters(void)
{
	return max_counter_held != 0;
}
