/*
 * frame.c
 *		The per-statement batch of decisions ("frame"): entries by key, the
 *		statement's capacity slots, its open key probe and engine-table writers.
 *
 * One frame per query (see push_frame); frames nest for statements run by
 * triggers and functions, and live in TopTransactionContext until written.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "common/hashfn.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "executor/tuptable.h"

#include "frame.h"

Frame	   *frames = NULL;

/* Transaction end: everything lived in TopTransactionContext */
void
frames_reset_all(void)
{
	frames = NULL;
}

/* Subtransaction abort: drop the frames its statements opened */
static void
frames_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	while (frames && frames->nest_level >= GetCurrentTransactionNestLevel())
	{
		Frame	   *f = frames;

		frames = f->prev;
		MemoryContextDelete(f->cxt);
	}
}

void
push_frame(void)
{
	MemoryContext old,
				cxt;
	Frame	   *f;
	CommandId	cid;
	static bool registered = false;

	if (!registered)
	{
		RegisterSubXactCallback(frames_subxact_callback, NULL);
		registered = true;
	}
	/*
	 * One frame per query: several ModifyTable nodes of one query (DML in
	 * WITH, ON CONFLICT DO UPDATE firing INSERT and UPDATE statement
	 * triggers) share the query's snapshot command id and so its frame; it is
	 * written when the last of their AFTER statement triggers fires, after
	 * every row of the query was confirmed.  A statement run inside a trigger
	 * or function has a newer command id and its own frame.
	 */
	cid = ActiveSnapshotSet() ? GetActiveSnapshot()->curcid : GetCurrentCommandId(false);
	if (frames && frames->cid == cid && frames->nest_level == GetCurrentTransactionNestLevel())
	{
		frames->refs++;
		return;
	}
	cxt = AllocSetContextCreate(TopTransactionContext, "allocation statement batch",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	f = palloc0(sizeof(Frame));
	f->cxt = cxt;
	f->cid = cid;
	/* the engine's own owner change is the caller's; anything else the current role's */
	f->actor = (alloc_change && alloc_change->cid == cid) ? alloc_change->actor : alloc_actor_id();
	f->refs = 1;
	f->nest_level = GetCurrentTransactionNestLevel();
	f->cap = 64;
	f->entries = palloc(sizeof(Entry) * f->cap);
	f->prev = frames;
	frames = f;
	MemoryContextSwitchTo(old);
}

/* A hash table living in (and freed with) a frame's memory */
static HTAB *
frame_hash(Frame *f, const char *name, Size keysize, Size entrysize)
{
	HASHCTL		ctl;

	ctl.keysize = keysize;
	ctl.entrysize = entrysize;
	ctl.hcxt = f->cxt;
	return hash_create(name, 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* Records n slots of a rep taken (n < 0: given back) by the current statement */
void
frames_add_reservation(int64 rep_id, int32 n)
{
	if (frames == NULL)
		elog(ERROR, "allocation: no open statement batch for a reservation");
	frames_add_reservation_in(frames, rep_id, n);
}

void
frames_add_reservation_in(Frame *f, int64 rep_id, int32 n)
{
	RepCount   *rc;
	bool		found;

	if (f->reps == NULL)
		f->reps = frame_hash(f, "allocation statement slots", sizeof(int64), sizeof(RepCount));
	rc = hash_search(f->reps, &rep_id, HASH_ENTER, &found);
	if (!found)
		rc->n = 0;
	rc->n += n;
}

/*
 * The current statement's cache of counter values read for ordering
 * candidates (NULL outside a statement).  Capacity itself is checked against
 * the locked counter (assign_reserve), never against this.
 */
HTAB *
frames_load_cache(void)
{
	Frame	   *f = frames;

	if (f == NULL)
		return NULL;
	if (f->loads == NULL)
		f->loads = frame_hash(f, "allocation statement loads", sizeof(int64), sizeof(RepCount));
	return f->loads;
}

/* Slots of a rep taken by this transaction's statements still running */
int32
frames_pending(int64 rep_id)
{
	Frame	   *f;
	int32		n = 0;

	for (f = frames; f; f = f->prev)
		if (f->reps)
		{
			RepCount   *rc = hash_search(f->reps, &rep_id, HASH_FIND, NULL);

			if (rc)
				n += rc->n;
		}
	return n;
}

Entry *
new_entry(EntryOp op, ManagedTable *mt, const char *key)
{
	Frame	   *f = frames;
	Entry	   *e;

	if (f == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
				 errmsg("allocation statement trigger did not run on %s", mt->name),
				 errdetail("The row trigger found no open batch; the statement trigger zz_allocation_stmt_before is missing or disabled."),
				 errhint("Call allocation.unmanage() and allocation.manage() to reinstall the triggers.")));
	if (f->n == f->cap)
	{
		f->cap *= 2;
		f->entries = repalloc_huge(f->entries, sizeof(Entry) * f->cap);
	}
	e = &f->entries[f->n++];
	memset(e, 0, sizeof(Entry));
	e->op = op;
	e->relid = mt->relid;
	e->managed_id = mt->id;
	e->key = MemoryContextStrdup(frame_cxt, key);
	e->next_same = -1;
	if (f->bykey)
		frame_index_entry(f, f->n - 1);
	return e;
}

/* Adds entry i to the frame's key hash */
void
frame_index_entry(Frame *f, int i)
{
	Entry	   *e = &f->entries[i];
	uint32		h = key_hash(e->relid, e->key);
	bool		found;
	KeySlot    *ks = hash_search(f->bykey, &h, HASH_ENTER, &found);

	e->next_same = found ? ks->newest : -1;
	ks->newest = i;
}

/*
 * The frame's entries by key hash, built on first use: a statement whose
 * rows are confirmed in the order they were decided never needs it.
 */
HTAB *
frame_keys(Frame *f)
{
	if (f->bykey == NULL)
	{
		int			i;

		f->bykey = frame_hash(f, "allocation statement keys", sizeof(uint32), sizeof(KeySlot));
		for (i = 0; i < f->n; i++)
			frame_index_entry(f, i);
	}
	return f->bykey;
}

uint32
key_hash(Oid relid, const char *key)
{
	return hash_bytes((const unsigned char *) key, strlen(key)) ^ (uint32) relid;
}

/* Index of the newest entry of a frame for (relid, key), or -1 */
int
frame_newest_entry(Frame *f, Oid relid, const char *key)
{
	uint32		h = key_hash(relid, key);
	KeySlot    *ks = hash_search(frame_keys(f), &h, HASH_FIND, NULL);
	int			j;

	for (j = ks ? ks->newest : -1; j >= 0; j = f->entries[j].next_same)
		if (f->entries[j].relid == relid && strcmp(f->entries[j].key, key) == 0)
			return j;
	return -1;
}

char *
frame_strdup(const char *s)
{
	return s ? MemoryContextStrdup(frame_cxt, s) : NULL;
}

/*
 * Whether a row with this key is already stored (committed, or inserted
 * earlier by this very statement).  Such a row will not be inserted as new:
 * ON CONFLICT skips it or turns it into an UPDATE, otherwise the unique index
 * refuses it.  One btree probe, no SPI.
 */
bool
key_exists(ManagedTable *mt, Relation heap, HeapTuple tup)
{
	Frame	   *f = frames;
	KeyProbe   *p = f ? &f->probe : NULL;
	ScanKeyData skey;
	bool		isnull;
	bool		found;
	Datum		key = heap_getattr(tup, mt->key_att, mt->tupdesc, &isnull);
	MemoryContext old;

	if (isnull || !OidIsValid(mt->key_index))
		return false;
	/* without ON CONFLICT a taken key fails the statement: nothing to skip */
	if (!onconflict_possible())
		return false;
	/* the index's collation: a text key is searched in the order it is stored in */
	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid, mt->key_coll, mt->key_eq, key);
	if (p && p->index == mt->key_index && p->owner == CurrentResourceOwner)
	{
		/* the statement's open probe */
		old = MemoryContextSwitchTo(f->cxt);
		index_rescan(p->scan, &skey, 1, NULL, 0);
		found = index_getnext_slot(p->scan, ForwardScanDirection, p->slot);
		ExecClearTuple(p->slot);
		MemoryContextSwitchTo(old);
		return found;
	}
	if (p && p->index == InvalidOid)
	{
		/* open it for this and the statement's next rows (closed by the flush) */
		old = MemoryContextSwitchTo(f->cxt);
		p->idx = index_open(mt->key_index, RowExclusiveLock);
		p->slot = table_slot_create(heap, NULL);
		p->scan = index_beginscan(heap, p->idx, SnapshotSelf, 1, 0);
		p->owner = CurrentResourceOwner;
		p->index = mt->key_index;
		index_rescan(p->scan, &skey, 1, NULL, 0);
		found = index_getnext_slot(p->scan, ForwardScanDirection, p->slot);
		ExecClearTuple(p->slot);
		MemoryContextSwitchTo(old);
		return found;
	}
	/* another table or resource owner than the probe's: a one-off scan */
	{
		Relation	idx = index_open(mt->key_index, RowExclusiveLock);
		TupleTableSlot *slot = table_slot_create(heap, NULL);
		IndexScanDesc scan = index_beginscan(heap, idx, SnapshotSelf, 1, 0);

		index_rescan(scan, &skey, 1, NULL, 0);
		found = index_getnext_slot(scan, ForwardScanDirection, slot);
		index_endscan(scan);
		ExecDropSingleTupleTableSlot(slot);
		index_close(idx, RowExclusiveLock);
	}
	return found;
}

/* Closes a frame's key probe and writers (at the statement's end, under its resource owner) */
void
probe_close(Frame *f)
{
	KeyProbe   *p = &f->probe;
	int			i;

	if (p->index != InvalidOid && p->owner == CurrentResourceOwner)
	{
		index_endscan(p->scan);
		ExecDropSingleTupleTableSlot(p->slot);
		index_close(p->idx, RowExclusiveLock);
		p->index = InvalidOid;
	}
	part_probes_close(f);
	if (f->nwriters > 0 && f->writer_owner == CurrentResourceOwner)
	{
		for (i = 0; i < f->nwriters; i++)
			if (f->writers[i])
				writer_close(f->writers[i]);
		f->nwriters = 0;
	}
	if (p->index != InvalidOid || f->nwriters > 0)
		elog(WARNING, "allocation statement resources opened under another resource owner were not closed");
}

/*
 * A writer of an engine table kept open for the current statement (closed
 * with the frame), or NULL when it cannot be kept (no frame, another
 * resource owner): the caller then opens its own.  *usable is false when the
 * table cannot be written directly at all.
 */
RowWriter *
frame_writer(Oid relid, const char *const *filled, bool *usable)
{
	Frame	   *f = frames;
	MemoryContext old;
	RowWriter  *w;
	int			i;

	*usable = true;
	if (f == NULL || (f->nwriters > 0 && f->writer_owner != CurrentResourceOwner))
		return NULL;
	for (i = 0; i < f->nwriters; i++)
		if (f->writer_rel[i] == relid)
		{
			*usable = (f->writers[i] != NULL);
			return f->writers[i];
		}
	if (f->nwriters == FRAME_WRITERS)
		return NULL;
	old = MemoryContextSwitchTo(f->cxt);
	w = writer_open(relid, 0, NULL, filled);
	MemoryContextSwitchTo(old);
	/* an ineligible table is remembered as such for the statement's next rows */
	f->writer_owner = CurrentResourceOwner;
	f->writer_rel[f->nwriters] = relid;
	f->writers[f->nwriters++] = w;
	*usable = (w != NULL);
	return w;
}