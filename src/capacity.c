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
#include "executor/tuptable.h"
#include "parser/parse_relation.h"
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
	Relation	rel,
				ix;
	TupleTableSlot *slot;
	RowLockResult r;
	int32		value = 0;

	if (b != NULL && b->held >= 0)
		return b;
	/* SELECT held + reserved ... FOR UPDATE [SKIP LOCKED], without SPI */
	alloc_lookup_oids();
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(get_relname_relid("rep_load", alloc_oids.schema), RowShareLock);
	ix = index_open(get_relname_relid("rep_load_pkey", alloc_oids.schema), AccessShareLock);
	slot = table_slot_create(rel, NULL);
	r = writer_lock_row(rel, ix, Int64GetDatum(rep_id), F_INT8EQ, GetActiveSnapshot(),
						LockTupleExclusive, wait, slot);
	if (r == ROWLOCK_OK)
	{
		bool		isnull;

		value = DatumGetInt32(slot_getattr(slot, attnameAttNum(rel, "held", false), &isnull)) +
			DatumGetInt32(slot_getattr(slot, attnameAttNum(rel, "reserved", false), &isnull));
	}
	ExecDropSingleTupleTableSlot(slot);
	index_close(ix, NoLock);
	table_close(rel, NoLock);	/* locks kept until the transaction ends, as a query's */
	PopActiveSnapshot();
	if (r != ROWLOCK_OK)
		return NULL;			/* locked by another transaction (skip), or no counter row */
	b = rep_base(rep_id, true);
	b->held = value;
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
static int
int64_cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a,
				y = *(const int64 *) b;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/* One counter row read: into held[]/reserved[] of ids[0..n-1] and the statement's cache */
static void
note_counter(int64 rep, int32 h, int32 r, int64 *ids, int n, int32 *held, int32 *reserved, HTAB *cache)
{
	int			i;

	for (i = 0; i < n; i++)
		if (ids[i] == rep)
		{
			held[i] = h + frames_pending(rep);	/* + this transaction's unwritten slots */
			if (reserved)
				reserved[i] = r;
		}
	if (cache)
	{
		RepCount   *rc = hash_search(cache, &rep, HASH_ENTER, NULL);

		rc->n = h;
		rc->reserved = r;
	}
}

/*
 * Reads the counters of reps want[0..nwant-1] from allocation.rep_load
 * without SPI (a single-row statement paid an executor start for this):
 * index probes for a few reps, one pass over the (small) table for many.
 * Under a fresh snapshot taken after the commands so far, as an SPI query
 * would.  Used for ordering only; capacity is checked on the locked counter.
 */
static void
read_counters(int64 *want, int nwant, int64 *ids, int n, int32 *held, int32 *reserved, HTAB *cache)
{
	Relation	rel;
	Snapshot	snap;
	TupleTableSlot *slot;
	AttrNumber	a_rep,
				a_held,
				a_res;
	bool		isnull;
	int			w;

	alloc_lookup_oids();
	CommandCounterIncrement();
	snap = RegisterSnapshot(GetLatestSnapshot());
	rel = table_open(get_relname_relid("rep_load", alloc_oids.schema), AccessShareLock);
	a_rep = attnameAttNum(rel, "rep_id", false);
	a_held = attnameAttNum(rel, "held", false);
	a_res = attnameAttNum(rel, "reserved", false);
	slot = table_slot_create(rel, NULL);
	if (nwant <= 4)
	{
		Relation	ix = index_open(get_relname_relid("rep_load_pkey", alloc_oids.schema), AccessShareLock);

		for (w = 0; w < nwant; w++)
		{
			ScanKeyData key;
			IndexScanDesc scan;

			ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(want[w]));
			scan = index_beginscan(rel, ix, snap, 1, 0);
			index_rescan(scan, &key, 1, NULL, 0);
			if (index_getnext_slot(scan, ForwardScanDirection, slot))
				note_counter(want[w], DatumGetInt32(slot_getattr(slot, a_held, &isnull)),
							 DatumGetInt32(slot_getattr(slot, a_res, &isnull)), ids, n, held, reserved, cache);
			index_endscan(scan);
		}
		index_close(ix, NoLock);
	}
	else
	{
		TableScanDesc scan = table_beginscan(rel, snap, 0, NULL);

		qsort(want, nwant, sizeof(int64), int64_cmp);
		while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
		{
			int64		rep = DatumGetInt64(slot_getattr(slot, a_rep, &isnull));

			if (bsearch(&rep, want, nwant, sizeof(int64), int64_cmp))
				note_counter(rep, DatumGetInt32(slot_getattr(slot, a_held, &isnull)),
							 DatumGetInt32(slot_getattr(slot, a_res, &isnull)), ids, n, held, reserved, cache);
		}
		table_endscan(scan);
	}
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, NoLock);	/* the lock is kept until the transaction ends, as a query's */
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
