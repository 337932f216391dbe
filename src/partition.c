/*
 * partition.c
 *		Partitioned customer tables (by province, by key range, ...).
 *
 * The row triggers are created on the partitioned table and PostgreSQL
 * clones them to every partition, present and future; they fire with the
 * partition as tg_relation, and config.c gives each partition an entry of
 * its own (its column numbers, key index, rule conditions mapped to its
 * columns) that names the managed root as relid: events, frames, statistics
 * and owner changes all speak of the root.  This file holds what only
 * partitions need:
 *
 * - the key across partitions: a key unique only together with the
 *   partition columns (PRIMARY KEY (id, province)) is checked here after
 *   the row is stored, like an exclusion constraint: a dirty-snapshot probe
 *   of every partition's key index, waiting for a transaction still
 *   inserting the same key (two such inserts end in a deadlock error for
 *   one of them, never in two customers with one key);
 * - row movement: an UPDATE of the partition columns is run by PostgreSQL
 *   as a DELETE from the old partition and an INSERT into the new one; the
 *   engine sees the BEFORE UPDATE (where it decides, as for any update),
 *   then a BEFORE INSERT, AFTER DELETE and AFTER INSERT of the same key,
 *   which it recognises (the old tuple carries PostgreSQL's "moved to
 *   another partition" mark) and treats as the rest of that update: no new
 *   decision, no closing, no second opening;
 * - the lookup of a key in whichever partition holds it (follow_parent).
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "executor/tuptable.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "allocation.h"
#include "frame.h"

/*
 * One probe of a partition's key index.  Returns whether a row with the key
 * is visible to snap; with a dirty snapshot, *xwait is a transaction still
 * inserting or deleting it.  skip: the caller's own row.
 */
static bool
probe_leaf(ManagedTable *pm, Datum key, Snapshot snap, ItemPointer skip, int64 *owner,
		   TransactionId *xwait)
{
	Relation	heap = table_open(pm->rel_here, AccessShareLock);
	Relation	idx = index_open(pm->key_index, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(heap, NULL);
	IndexScanDesc scan = index_beginscan(heap, idx, snap, 1, 0);
	ScanKeyData skey;
	bool		found = false;

	*xwait = InvalidTransactionId;
	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid, pm->key_coll, pm->key_eq, key);
	index_rescan(scan, &skey, 1, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		if (skip && ItemPointerEquals(skip, &slot->tts_tid))
			continue;
		found = true;
		if (snap->snapshot_type == SNAPSHOT_DIRTY)
			*xwait = TransactionIdIsValid(snap->xmin) ? snap->xmin : snap->xmax;
		if (owner)
		{
			bool		isnull;
			Datum		d = slot_getattr(slot, pm->owner_att, &isnull);

			*owner = isnull ? 0 : (pm->owner_type == INT4OID ? DatumGetInt32(d) : DatumGetInt64(d));
		}
		break;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	table_close(heap, AccessShareLock);
	return found;
}

/*
 * Finds a key (a value of the key column's type) in whichever partition
 * holds it, as the current command sees the table (SnapshotSelf, as a
 * non-partitioned lookup).  *owner: its owner (0 = pool).
 */
bool
part_find_key(ManagedTable *mt, Datum key, int64 *owner, Oid *found_in)
{
	Oid		   *leaves;
	int			n = config_leaves(mt, &leaves);
	int			i;

	for (i = 0; i < n; i++)
	{
		ManagedTable *pm = config_lookup(leaves[i], true);
		TransactionId xw;

		if (pm == NULL || !OidIsValid(pm->key_index))
			continue;
		if (probe_leaf(pm, key, SnapshotSelf, NULL, owner, &xw))
		{
			if (found_in)
				*found_in = leaves[i];
			return true;
		}
	}
	return false;
}

/*
 * The statement's open probes of the partitions' key indexes: the check
 * below probes every partition for every row, so the scans stay open for the
 * statement (closed with its frame, under the resource owner that opened
 * them).
 */
typedef struct LeafProbe
{
	Oid			leaf;
	Relation	heap;
	Relation	idx;
	TupleTableSlot *slot;
	IndexScanDesc scan;
	SnapshotData dirty;			/* the scan's snapshot (reset before each probe) */
} LeafProbe;

typedef struct PartProbes
{
	ResourceOwner owner;
	int			n;
	LeafProbe **p;				/* each allocated once: its scan points at its snapshot */
} PartProbes;

static LeafProbe *
leaf_probe(ManagedTable *pm)
{
	Frame	   *f = frames;
	PartProbes *pp;
	LeafProbe  *lp;
	MemoryContext old;
	int			i;

	if (f == NULL)
		return NULL;
	pp = (PartProbes *) f->part_probes;
	if (pp == NULL)
	{
		pp = MemoryContextAllocZero(f->cxt, sizeof(PartProbes));
		pp->owner = CurrentResourceOwner;
		f->part_probes = pp;
	}
	if (pp->owner != CurrentResourceOwner)
		return NULL;
	for (i = 0; i < pp->n; i++)
		if (pp->p[i]->leaf == pm->rel_here)
			return pp->p[i];
	old = MemoryContextSwitchTo(f->cxt);
	pp->p = pp->n ? repalloc(pp->p, sizeof(LeafProbe *) * (pp->n + 1)) : palloc(sizeof(LeafProbe *));
	lp = pp->p[pp->n++] = palloc(sizeof(LeafProbe));
	lp->leaf = pm->rel_here;
	lp->heap = table_open(pm->rel_here, AccessShareLock);
	lp->idx = index_open(pm->key_index, AccessShareLock);
	lp->slot = table_slot_create(lp->heap, NULL);
	InitDirtySnapshot(lp->dirty);
	lp->scan = index_beginscan(lp->heap, lp->idx, &lp->dirty, 1, 0);
	MemoryContextSwitchTo(old);
	return lp;
}

void
part_probes_close(Frame *f)
{
	PartProbes *pp = (PartProbes *) f->part_probes;
	int			i;

	if (pp == NULL || pp->owner != CurrentResourceOwner)
		return;
	for (i = 0; i < pp->n; i++)
	{
		index_endscan(pp->p[i]->scan);
		ExecDropSingleTupleTableSlot(pp->p[i]->slot);
		index_close(pp->p[i]->idx, AccessShareLock);
		table_close(pp->p[i]->heap, AccessShareLock);
	}
	f->part_probes = NULL;
}

/* One dirty probe through the statement's open scan; as probe_leaf */
static bool
probe_leaf_kept(LeafProbe *lp, ManagedTable *pm, Datum key, ItemPointer skip, TransactionId *xwait)
{
	ScanKeyData skey;
	bool		found = false;

	*xwait = InvalidTransactionId;
	InitDirtySnapshot(lp->dirty);
	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid, pm->key_coll, pm->key_eq, key);
	index_rescan(lp->scan, &skey, 1, NULL, 0);
	while (index_getnext_slot(lp->scan, ForwardScanDirection, lp->slot))
	{
		if (skip && ItemPointerEquals(skip, &lp->slot->tts_tid))
			continue;
		found = true;
		*xwait = TransactionIdIsValid(lp->dirty.xmin) ? lp->dirty.xmin : lp->dirty.xmax;
		break;
	}
	ExecClearTuple(lp->slot);
	return found;
}

/*
 * AFTER INSERT on a partition of a table whose key is unique only with the
 * partition columns: no other row anywhere in the table may have the key.
 */
void
part_check_key_unique(ManagedTable *mt, HeapTuple tup)
{
	Oid		   *leaves;
	int			n = config_leaves(mt, &leaves);
	int			i;
	bool		isnull;
	Datum		key = heap_getattr(tup, mt->key_att, mt->tupdesc, &isnull);

	if (isnull)
		return;
	for (i = 0; i < n; i++)
	{
		ManagedTable *pm = config_lookup(leaves[i], true);
		SnapshotData dirty;
		TransactionId xw;

		if (pm == NULL)
			continue;
		if (!OidIsValid(pm->key_index))
			ereport(ERROR,
					(errcode(MAKE_SQLSTATE('L', 'A', '0', '1', '3')),
					 errmsg("partition %s of managed table %s has no index on the key", get_rel_name(leaves[i]), mt->name),
					 errdetail("The engine checks that a key is unique across partitions through each partition's index on it."),
					 errhint("Create the partition with PARTITION OF (it then inherits the table's unique index).")));
		for (;;)
		{
			LeafProbe  *lp = leaf_probe(pm);
			ItemPointer skip = leaves[i] == mt->rel_here ? &tup->t_self : NULL;

			if (lp != NULL ? !probe_leaf_kept(lp, pm, key, skip, &xw)
				: (InitDirtySnapshot(dirty), !probe_leaf(pm, key, &dirty, skip, NULL, &xw)))
				break;
			if (TransactionIdIsValid(xw) && !TransactionIdIsCurrentTransactionId(xw))
			{
				/* another transaction inserts or deletes it: its outcome decides */
				XactLockTableWait(xw, NULL, NULL, XLTW_None);
				continue;
			}
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("duplicate key value violates the key of managed table %s", mt->name),
					 errdetail("Key (%s)=(%s) already exists in partition %s.",
							   NameStr(TupleDescAttr(mt->tupdesc, mt->key_att - 1)->attname),
							   OutputFunctionCall(&mt->key_out, key), get_rel_name(leaves[i])),
					 errhint("The allocation engine needs one row per key in the whole table, whatever the partition; update the existing row instead.")));
		}
	}
}

/* ---------- row movement ---------- */

/* The last BEFORE UPDATE on a partition: the row that may move */
static struct
{
	bool		valid;
	Oid			root;
	Oid			rel;
	ItemPointerData tid;
	char		key[NAMEDATALEN * 2];	/* the row's key (a longer key: never a move) */
	LocalTransactionId lxid;
} upd;

/* Keys whose row moved during the current statement: their AFTER DELETE/INSERT are the update's */
typedef struct Move
{
	Oid			root;
	char	   *key;
	bool		delete_seen;
} Move;

static List *moves = NIL;
static LocalTransactionId moves_lxid = InvalidLocalTransactionId;

static char *
key_text(ManagedTable *mt, HeapTuple tup)
{
	bool		isnull;
	Datum		d = heap_getattr(tup, mt->key_att, mt->tupdesc, &isnull);

	return isnull ? NULL : OutputFunctionCall(&mt->key_out, d);
}

void
part_note_update(ManagedTable *mt, HeapTuple oldtup)
{
	char	   *key;

	if (!mt->partitioned)
		return;
	key = key_text(mt, oldtup);
	upd.valid = key != NULL && strlen(key) < sizeof(upd.key);
	if (!upd.valid)
		return;
	strcpy(upd.key, key);
	upd.root = mt->relid;
	upd.rel = mt->rel_here;
	upd.tid = oldtup->t_self;
	upd.lxid = MyProc->lxid;
}

/*
 * BEFORE INSERT on a partition: whether this insert is the second half of a
 * row moved by the UPDATE whose BEFORE trigger ran just before.  The old
 * version carries PostgreSQL's moved-to-another-partition mark.
 */
bool
part_insert_is_move(ManagedTable *mt, HeapTuple tup)
{
	Relation	rel;
	HeapTupleData old;
	Buffer		buf;
	bool		moved = false;
	Move	   *m;
	MemoryContext oldcxt;
	char	   *key;

	if (!upd.valid || upd.root != mt->relid || upd.rel == mt->rel_here || upd.lxid != MyProc->lxid)
		return false;
	upd.valid = false;
	key = key_text(mt, tup);
	if (key == NULL || strcmp(key, upd.key) != 0)
		return false;
	rel = table_open(upd.rel, AccessShareLock);
	old.t_self = upd.tid;
	if (heap_fetch(rel, SnapshotAny, &old, &buf, true))
	{
		moved = HeapTupleHeaderIndicatesMovedPartitions(old.t_data) &&
			TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetRawXmax(old.t_data));
		ReleaseBuffer(buf);
	}
	table_close(rel, AccessShareLock);
	if (!moved)
		return false;
	if (moves_lxid != MyProc->lxid)
	{
		moves = NIL;			/* a former transaction's (its memory is gone) */
		moves_lxid = MyProc->lxid;
	}
	oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	m = palloc(sizeof(Move));
	m->root = mt->relid;
	m->key = pstrdup(key);
	m->delete_seen = false;
	moves = lappend(moves, m);
	MemoryContextSwitchTo(oldcxt);
	return true;
}

/*
 * AFTER DELETE (deleting) or AFTER INSERT on a partition: whether it is a
 * half of a row movement (then the caller records it as the update's).
 */
bool
part_take_moved(ManagedTable *mt, HeapTuple tup, bool deleting)
{
	ListCell   *lc;
	char	   *key;

	if (moves == NIL || moves_lxid != MyProc->lxid)
		return false;
	key = key_text(mt, tup);
	if (key == NULL)
		return false;
	foreach(lc, moves)
	{
		Move	   *m = (Move *) lfirst(lc);

		if (m->root != mt->relid || strcmp(m->key, key) != 0)
			continue;
		if (deleting)
		{
			if (m->delete_seen)
				continue;
			m->delete_seen = true;
			return true;
		}
		moves = foreach_delete_current(moves, lc);
		return true;
	}
	return false;
}

/* TRUNCATE of one partition: closes the ownerships of the customers stored in it */
void
part_record_truncate(ManagedTable *mt)
{
	AllocUserSwitch sw;
	Oid			types[3] = {INT4OID, OIDOID, TEXTOID};
	Datum		args[3];
	char	   *actor = GetUserNameFromId(alloc_actor_id(), false);

	args[0] = Int32GetDatum(mt->id);
	args[1] = ObjectIdGetDatum(mt->rel_here);
	args[2] = CStringGetTextDatum(actor);
	alloc_spi_begin(&sw);
	if (SPI_execute_with_args("SELECT allocation._record_truncate_partition($1, $2::pg_catalog.regclass, $3)",
							  3, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "recording the truncate of a partition failed");
	alloc_spi_end(&sw);
}

/*
 * AFTER INSERT on a partition: true when the row is one moved here by an
 * UPDATE (the caller confirms the update's entry); otherwise the key is
 * checked across partitions where PostgreSQL does not.
 */
bool
part_after_insert(ManagedTable *mt, HeapTuple tup)
{
	if (!mt->partitioned)
		return false;
	if (part_take_moved(mt, tup, false))
		return true;
	if (mt->key_global_check)
		part_check_key_unique(mt, tup);
	return false;
}
