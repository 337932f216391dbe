/*-------------------------------------------------------------------------
 *
 * writer.c
 *	  Direct writes of engine rows (state exceptions, events) the way COPY writes:
 *	  buffered heap multi-insert, then index insertion per row.
 *
 * The PL/pgSQL batch writer costs an executor start per statement it runs,
 * a projection per row, and one foreign-key check (an SPI query) per row and
 * key.  For the common case -- a statement that only inserted customers --
 * the engine writes its own rows here instead.  What the executor would have
 * done is kept: identity defaults come from the column's sequence, NOT NULL
 * and CHECK constraints are evaluated (ExecConstraints), every index is
 * maintained with its uniqueness checked (ExecInsertIndexTuples).  The
 * foreign keys are checked by the caller once per statement and referenced
 * row (FOR KEY SHARE, as the RI trigger would per row).
 *
 * A table is written directly only while it looks as the extension created
 * it: a plain heap table without FORCE ROW LEVEL SECURITY, rules or stored
 * generated columns, whose INSERT triggers are exactly the foreign-key
 * checks the caller knows about plus the engine's own statement trigger, and
 * whose columns the caller does not fill are nullable without a default.
 * Anything else (a DBA's audit trigger on allocation.event, say) makes
 * writer_open() return NULL and the caller uses the SQL path, so such a
 * trigger still fires.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/hash.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_trigger.h"
#include "commands/sequence.h"
#include "storage/lmgr.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "utils/datum.h"
#include "utils/snapmgr.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "allocation.h"

#define WRITER_BATCH 1000

struct RowWriter
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	BulkInsertState bis;
	CommandId	cid;
	MemoryContext rows_cxt;		/* datums of the buffered rows */
	int			natts;
	int			ncols;			/* the columns the caller fills ... */
	int		   *col_att;		/* ... and their attribute indexes */
	/*
	 * The hash index whose entries wait for writer_close() (moved to the
	 * last position of rri's index arrays, hidden from the per-batch
	 * insertion), and the rows waiting: key, heap TID and key hash.
	 */
	bool		defer_hash;
	Relation	hash_ix;
	IndexInfo  *hash_ii;
	AttrNumber	hash_att;
	MemoryContext defer_cxt;
	int			ndefer;
	int			maxdefer;
	Datum	   *defer_key;
	ItemPointerData *defer_tid;
	uint32	   *defer_hash_value;
	bool		checks_trusted; /* writer_trust_checks(): only NOT NULL is checked */
	int			nslots;
	TupleTableSlot *slots[WRITER_BATCH];
};

/*
 * Whether the table's INSERT triggers are the ones the direct path accounts
 * for: nfk foreign-key checks, and statement triggers named in allowed_stmt.
 */
static bool
triggers_accounted(Relation rel, int nfk, const char *allowed_stmt)
{
	TriggerDesc *td = rel->trigdesc;
	int			i,
				fk = 0;

	if (td == NULL)
		return nfk == 0;
	for (i = 0; i < td->numtriggers; i++)
	{
		Trigger    *t = &td->triggers[i];

		if (!TRIGGER_FOR_INSERT(t->tgtype) || t->tgenabled == TRIGGER_DISABLED)
			continue;
		if (RI_FKey_trigger_type(t->tgfoid) == RI_TRIGGER_FK)
			fk++;
		else if (!(allowed_stmt && !TRIGGER_FOR_ROW(t->tgtype) && strcmp(t->tgname, allowed_stmt) == 0))
			return false;
	}
	return fk == nfk;
}

/*
 * Whether every column the caller does not fill would be NULL in an INSERT
 * naming only the filled ones: nullable, without a default (a column a DBA
 * added with a default or NOT NULL sends the caller to the SQL path).
 */
static bool
columns_accounted(Relation rel, const char *const *filled)
{
	TupleDesc	td = RelationGetDescr(rel);
	int			i,
				k;

	for (i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);
		bool		is_filled = false;

		if (att->attisdropped)
			continue;
		for (k = 0; filled[k] != NULL && !is_filled; k++)
			is_filled = (strcmp(NameStr(att->attname), filled[k]) == 0);
		if (!is_filled && (att->atthasdef || att->attnotnull || att->attidentity || att->attgenerated))
			return false;
	}
	return true;
}

/* The attribute number of a column the writer fills */
static AttrNumber
writer_attnum(RowWriter *w, const char *name)
{
	int			a = attnameAttNum(w->rel, name, false);

	if (a <= 0)
		elog(ERROR, "column \"%s\" of %s not found", name, RelationGetRelationName(w->rel));
	return (AttrNumber) a;
}

/*
 * Asks that the table's hash index on one plain column (allocation.event's
 * key) get its entries at writer_close(), in bucket order.  Rows arrive in
 * random key order, so each entry would visit a random bucket page: on a
 * large index a cache miss per row, the largest single cost of writing an
 * event.  Sorted, consecutive entries share a bucket page.  A hash index is
 * never unique, so this changes no unique check; the caller promises that
 * nothing reads the table through that index between writer_add() and
 * writer_close() (the identity tables, probed while a statement registers
 * rows, do not use it).  No such index: nothing changes.
 */
void
writer_defer_hash_index(RowWriter *w)
{
	ResultRelInfo *rri = w->rri;
	int			i,
				last = rri->ri_NumIndices - 1;

	for (i = 0; i <= last; i++)
	{
		Relation	ix = rri->ri_IndexRelationDescs[i];
		IndexInfo  *ii = rri->ri_IndexRelationInfo[i];

		if (ix->rd_rel->relam == HASH_AM_OID && ii->ii_NumIndexKeyAttrs == 1 &&
			ii->ii_IndexAttrNumbers[0] > 0 && ii->ii_Predicate == NIL)
		{
			/* swap it to the end: ri_NumIndices - 1 then covers the others */
			rri->ri_IndexRelationDescs[i] = rri->ri_IndexRelationDescs[last];
			rri->ri_IndexRelationInfo[i] = rri->ri_IndexRelationInfo[last];
			rri->ri_IndexRelationDescs[last] = ix;
			rri->ri_IndexRelationInfo[last] = ii;
			w->defer_hash = true;
			w->hash_ix = ix;
			w->hash_ii = ii;
			w->hash_att = ii->ii_IndexAttrNumbers[0];
			w->defer_cxt = AllocSetContextCreate(CurrentMemoryContext, "allocation deferred hash entries",
												 ALLOCSET_DEFAULT_SIZES);
			w->maxdefer = 1024;
			w->defer_key = MemoryContextAlloc(w->defer_cxt, sizeof(Datum) * w->maxdefer);
			w->defer_tid = MemoryContextAlloc(w->defer_cxt, sizeof(ItemPointerData) * w->maxdefer);
			w->defer_hash_value = MemoryContextAlloc(w->defer_cxt, sizeof(uint32) * w->maxdefer);
			return;
		}
	}
}

/* Remembers the deferred hash index entry of a row just written */
static void
writer_defer_entry(RowWriter *w, TupleTableSlot *slot)
{
	Relation	ix = w->hash_ix;
	bool		isnull;
	Datum		d = slot_getattr(slot, w->hash_att, &isnull);

	if (isnull)
		return;					/* hash indexes do not store NULLs */
	if (w->ndefer == w->maxdefer)
	{
		w->maxdefer *= 2;
		w->defer_key = repalloc_huge(w->defer_key, sizeof(Datum) * w->maxdefer);
		w->defer_tid = repalloc_huge(w->defer_tid, sizeof(ItemPointerData) * w->maxdefer);
		w->defer_hash_value = repalloc_huge(w->defer_hash_value, sizeof(uint32) * w->maxdefer);
	}
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(w->rel), w->hash_att - 1);
		MemoryContext old = MemoryContextSwitchTo(w->defer_cxt);

		w->defer_key[w->ndefer] = datumCopy(d, att->attbyval, att->attlen);
		MemoryContextSwitchTo(old);
	}
	w->defer_tid[w->ndefer] = slot->tts_tid;
	w->defer_hash_value[w->ndefer] = _hash_datum2hashkey(ix, w->defer_key[w->ndefer]);
	w->ndefer++;
}

static int
bucket_cmp(const void *a, const void *b, void *arg)
{
	const uint32 *bucket = (const uint32 *) arg;
	uint32		x = bucket[*(const int *) a],
				y = bucket[*(const int *) b];

	if (x != y)
		return x < y ? -1 : 1;
	return *(const int *) a - *(const int *) b;
}

/* Inserts the deferred hash index entries, in the order of their buckets */
static void
writer_insert_deferred(RowWriter *w)
{
	Relation	ix = w->hash_ix;
	IndexInfo  *ii = w->hash_ii;
	Buffer		metabuf = InvalidBuffer;
	HashMetaPage metap;
	uint32	   *bucket;
	int		   *order;
	int			i;

	if (w->ndefer == 0)
		return;
	bucket = MemoryContextAlloc(w->defer_cxt, sizeof(uint32) * w->ndefer);
	order = MemoryContextAlloc(w->defer_cxt, sizeof(int) * w->ndefer);
	/* the current bucket mapping (returned pinned, not locked); splits during the loop only cost locality */
	metap = _hash_getcachedmetap(ix, &metabuf, true);
	for (i = 0; i < w->ndefer; i++)
	{
		bucket[i] = _hash_hashkey2bucket(w->defer_hash_value[i], metap->hashm_maxbucket,
										 metap->hashm_highmask, metap->hashm_lowmask);
		order[i] = i;
	}
	if (BufferIsValid(metabuf))
		_hash_dropbuf(ix, metabuf);
	qsort_arg(order, w->ndefer, sizeof(int), bucket_cmp, bucket);
	for (i = 0; i < w->ndefer; i++)
	{
		bool		isnull = false;
		int			k = order[i];

		index_insert(ix, &w->defer_key[k], &isnull, &w->defer_tid[k], w->rel,
					 UNIQUE_CHECK_NO, false, ii);
	}
	w->ndefer = 0;
}

/*
 * Opens relid for direct insertion, or returns NULL when the table is not as
 * the extension created it (see the file header).  The lock is kept until the
 * end of the transaction, as an INSERT's would be.
 */
RowWriter *
writer_open(Oid relid, int nfk, const char *allowed_stmt_trigger, const char *const *filled)
{
	Relation	rel = table_open(relid, RowExclusiveLock);
	RowWriter  *w;
	RangeTblEntry *rte;
	int			i;

	if (rel->rd_rel->relkind != RELKIND_RELATION ||
		rel->rd_rel->relforcerowsecurity ||
		rel->rd_rules != NULL ||
		(rel->rd_att->constr && rel->rd_att->constr->has_generated_stored) ||
		!triggers_accounted(rel, nfk, allowed_stmt_trigger) ||
		!columns_accounted(rel, filled))
	{
		table_close(rel, NoLock);
		return NULL;
	}
	w = palloc0(sizeof(RowWriter));
	w->rel = rel;
	w->natts = RelationGetDescr(rel)->natts;
	w->estate = CreateExecutorState();
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = relid;
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(w->estate, list_make1(rte));
	w->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(w->rri, rel, 1, NULL, 0);
	ExecOpenIndices(w->rri, false);
	w->cid = GetCurrentCommandId(true);
	w->estate->es_output_cid = w->cid;
	w->bis = GetBulkInsertState();
	w->rows_cxt = AllocSetContextCreate(CurrentMemoryContext, "allocation row writer",
										ALLOCSET_DEFAULT_SIZES);
	while (filled[w->ncols] != NULL)
		w->ncols++;
	w->col_att = palloc(sizeof(int) * w->ncols);
	for (i = 0; i < w->ncols; i++)
		w->col_att[i] = writer_attnum(w, filled[i]) - 1;
	return w;
}

/*
 * The sequence of an identity column.  Looked up in pg_depend, so the last
 * few answers are remembered: a table's identity sequence only changes with
 * the table (a new relation OID after DROP/CREATE EXTENSION), and the answer
 * is checked to still be a sequence.
 */
Oid
writer_identity_seq(RowWriter *w, const char *name)
{
	static struct
	{
		Oid			relid;
		AttrNumber	attnum;
		Oid			seq;
	}			cache[4];
	static int	next = 0;
	Oid			relid = RelationGetRelid(w->rel);
	AttrNumber	attnum = writer_attnum(w, name);
	int			i;

	for (i = 0; i < lengthof(cache); i++)
		if (cache[i].relid == relid && cache[i].attnum == attnum &&
			get_rel_relkind(cache[i].seq) == RELKIND_SEQUENCE)
			return cache[i].seq;
	i = next++ % lengthof(cache);
	cache[i].seq = getIdentitySequence(relid, attnum, false);
	cache[i].relid = relid;
	cache[i].attnum = attnum;
	return cache[i].seq;
}

/* Memory for the datums of the next row; valid until the row is written */
MemoryContext
writer_row_context(RowWriter *w)
{
	return w->rows_cxt;
}

static void
writer_flush(RowWriter *w)
{
	int			i;

	if (w->nslots == 0)
		return;
	table_multi_insert(w->rel, w->slots, w->nslots, w->cid, 0, w->bis);
	if (w->defer_hash)
		w->rri->ri_NumIndices--;	/* the deferred hash index waits for writer_close() */
	PG_TRY();
	{
		for (i = 0; i < w->nslots; i++)
		{
			if (w->rri->ri_NumIndices > 0)
			{
				List	   *recheck = ExecInsertIndexTuples(w->rri, w->slots[i], w->estate,
															false, false, NULL, NIL);

				list_free(recheck);
			}
			if (w->defer_hash)
				writer_defer_entry(w, w->slots[i]);
			ResetPerTupleExprContext(w->estate);
			ExecClearTuple(w->slots[i]);
		}
	}
	PG_FINALLY();
	{
		if (w->defer_hash)
			w->rri->ri_NumIndices++;
	}
	PG_END_TRY();
	w->nslots = 0;
	MemoryContextReset(w->rows_cxt);
}

/*
 * The caller builds rows that satisfy the CHECK constraints named in names
 * (those the extension created); when the table has no other CHECK
 * constraint, rows are not evaluated against them (ExecConstraints prepares
 * every constraint expression again for each statement: a large part of a
 * one-row statement's write).  NOT NULL is still checked.
 */
void
writer_trust_checks(RowWriter *w, const char *const *names)
{
	TupleConstr *constr = w->rel->rd_att->constr;
	int			i,
				k;

	if (constr != NULL)
		for (i = 0; i < constr->num_check; i++)
		{
			bool		known = false;

			for (k = 0; names[k] != NULL && !known; k++)
				known = strcmp(constr->check[i].ccname, names[k]) == 0;
			if (!known)
				return;			/* a DBA's constraint: evaluate every one */
		}
	w->checks_trusted = true;
}

static void
writer_check_not_null(RowWriter *w, TupleTableSlot *slot)
{
	TupleDesc	td = RelationGetDescr(w->rel);
	int			i;

	for (i = 0; i < td->natts; i++)
		if (TupleDescAttr(td, i)->attnotnull && slot->tts_isnull[i])
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("null value in column \"%s\" of relation \"%s\" violates not-null constraint",
							NameStr(TupleDescAttr(td, i)->attname), RelationGetRelationName(w->rel)),
					 errdetail("The engine built a row without a required value."),
					 errhint("Report this as a bug of the allocation extension.")));
}

/*
 * Slot i, holding one row: values/isnull in the order of the columns given to
 * writer_open(), every other column NULL.  Constraints are checked.
 */
static TupleTableSlot *
writer_slot(RowWriter *w, int i, Datum *values, bool *isnull)
{
	TupleTableSlot *slot = w->slots[i];
	int			k;

	if (slot == NULL)
	{
		/* slots outlive the rows: the executor state's memory */
		MemoryContext old = MemoryContextSwitchTo(w->estate->es_query_cxt);

		slot = w->slots[i] = table_slot_create(w->rel, &w->estate->es_tupleTable);
		MemoryContextSwitchTo(old);
	}
	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, sizeof(bool) * w->natts);
	for (k = 0; k < w->ncols; k++)
	{
		slot->tts_values[w->col_att[k]] = values[k];
		slot->tts_isnull[w->col_att[k]] = isnull[k];
	}
	ExecStoreVirtualTuple(slot);
	if (w->checks_trusted)
		writer_check_not_null(w, slot);
	else if (w->rel->rd_att->constr)
		ExecConstraints(w->rri, slot, w->estate);
	return slot;
}

/*
 * Buffers one row (see writer_slot), its datums allocated in
 * writer_row_context().
 */
void
writer_add(RowWriter *w, Datum *values, bool *isnull)
{
	(void) writer_slot(w, w->nslots, values, isnull);
	if (++w->nslots == WRITER_BATCH)
		writer_flush(w);
}

/*
 * Inserts one row at once the way INSERT ... ON CONFLICT DO NOTHING does
 * (speculative insertion): returns false, having inserted nothing, when a
 * unique index already has the key (a concurrent inserter of the same key
 * is waited for by the caller's next look, as the executor does).
 */
bool
writer_insert_speculative(RowWriter *w, Datum *values, bool *isnull)
{
	TupleTableSlot *slot;
	uint32		token;
	bool		conflict = false;

	Assert(w->nslots == 0);
	if (w->rri->ri_NumIndices == 0)
		elog(ERROR, "speculative insertion into %s without indexes", RelationGetRelationName(w->rel));
	slot = writer_slot(w, 0, values, isnull);
	token = SpeculativeInsertionLockAcquire(GetCurrentTransactionId());
	table_tuple_insert_speculative(w->rel, slot, w->cid, 0, NULL, token);
	list_free(ExecInsertIndexTuples(w->rri, slot, w->estate, false, true, &conflict, NIL));
	table_tuple_complete_speculative(w->rel, slot, token, !conflict);
	SpeculativeInsertionLockRelease(GetCurrentTransactionId());
	ResetPerTupleExprContext(w->estate);
	ExecClearTuple(slot);
	return !conflict;
}

Relation
writer_relation(RowWriter *w)
{
	return w->rel;
}

/* Writes what is buffered and releases everything but the lock */
void
writer_close(RowWriter *w)
{
	writer_flush(w);
	if (w->defer_hash)
	{
		writer_insert_deferred(w);
		MemoryContextDelete(w->defer_cxt);
	}
	FreeBulkInsertState(w->bis);
	table_finish_bulk_insert(w->rel, 0);
	ExecCloseIndices(w->rri);
	ExecResetTupleTable(w->estate->es_tupleTable, false);
	FreeExecutorState(w->estate);
	MemoryContextDelete(w->rows_cxt);
	table_close(w->rel, NoLock);
	pfree(w);
}

/* ---------- rows found by key and locked (no SPI) ---------- */

/*
 * Finds the row of rel whose key column (the first column of the btree index
 * ix) equals key, and locks it in mode, as SELECT ... FOR <mode> [SKIP LOCKED]
 * run now in this transaction would: the row is found with snap; under READ
 * COMMITTED a concurrent update is followed and the newest version locked
 * (its key checked again), under REPEATABLE READ and SERIALIZABLE a
 * concurrent update or delete raises 40001.  The locked version is left in
 * slot.  eqproc is the equality function of the key's type.
 */
RowLockResult
writer_lock_row(Relation rel, Relation ix, Datum key, RegProcedure eqproc, Snapshot snap,
				LockTupleMode mode, bool wait, TupleTableSlot *slot)
{
	ScanKeyData sk;
	IndexScanDesc scan;
	TM_FailureData tmfd;
	TM_Result	res;
	AttrNumber	keyatt = ix->rd_index->indkey.values[0];
	bool		found,
				isnull;

	ScanKeyInit(&sk, 1, BTEqualStrategyNumber, eqproc, key);
	scan = index_beginscan(rel, ix, snap, 1, 0);
	index_rescan(scan, &sk, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	if (!found)
		return ROWLOCK_NONE;
	res = table_tuple_lock(rel, &slot->tts_tid, snap, slot, GetCurrentCommandId(false), mode,
						   wait ? LockWaitBlock : LockWaitSkip,
						   IsolationUsesXactSnapshot() ? 0 : TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
	switch (res)
	{
		case TM_Ok:
			/* the newest version may have another key (READ COMMITTED re-check) */
			if (!DatumGetBool(OidFunctionCall2(eqproc, slot_getattr(slot, keyatt, &isnull), key)) || isnull)
				return ROWLOCK_NONE;
			return ROWLOCK_OK;
		case TM_WouldBlock:
			return ROWLOCK_BUSY;
		case TM_SelfModified:
			/* changed by this very command: a locking query skips it too */
			return ROWLOCK_NONE;
		case TM_Updated:
		case TM_Deleted:
			if (IsolationUsesXactSnapshot())
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("could not serialize access due to concurrent %s",
								res == TM_Updated ? "update" : "delete"),
						 errdetail("A row of %s this transaction needs was changed by a transaction that committed after this one's snapshot.",
								   RelationGetRelationName(rel)),
						 errhint("Retry the transaction.")));
			return ROWLOCK_NONE;
		default:
			elog(ERROR, "unexpected result %d locking a row of %s", (int) res, RelationGetRelationName(rel));
	}
	return ROWLOCK_NONE;		/* keep compiler quiet */
}

/*
 * Whether rel's UPDATE triggers are only nfk foreign-key checks (which skip
 * an update that leaves the key alone): writer_update() is then what an
 * UPDATE of non-key columns would do.
 */
bool
writer_can_update(RowWriter *w, int nfk)
{
	TriggerDesc *td = w->rel->trigdesc;
	int			i,
				fk = 0;

	if (td == NULL)
		return nfk == 0;
	for (i = 0; i < td->numtriggers; i++)
	{
		Trigger    *t = &td->triggers[i];

		if (!TRIGGER_FOR_UPDATE(t->tgtype) || t->tgenabled == TRIGGER_DISABLED)
			continue;
		if (RI_FKey_trigger_type(t->tgfoid) != RI_TRIGGER_FK)
			return false;
		fk++;
	}
	return fk == nfk;
}

/*
 * Replaces the row version in slot (locked by this transaction with
 * writer_lock_row) by values/isnull (every column, in attribute order):
 * constraints checked, indexes maintained unless the update was HOT.
 */
void
writer_update(RowWriter *w, TupleTableSlot *slot, Datum *values, bool *isnull)
{
	TupleTableSlot *newslot = w->slots[0];
	ItemPointerData otid = slot->tts_tid;
	bool		update_indexes;

	if (newslot == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(w->estate->es_query_cxt);

		newslot = w->slots[0] = table_slot_create(w->rel, &w->estate->es_tupleTable);
		MemoryContextSwitchTo(old);
	}
	ExecClearTuple(newslot);
	memcpy(newslot->tts_values, values, sizeof(Datum) * w->natts);
	memcpy(newslot->tts_isnull, isnull, sizeof(bool) * w->natts);
	ExecStoreVirtualTuple(newslot);
	if (w->rel->rd_att->constr)
		ExecConstraints(w->rri, newslot, w->estate);
	/* the row is locked by this transaction: no concurrent update can intervene */
	simple_table_tuple_update(w->rel, &otid, newslot, GetActiveSnapshot(), &update_indexes);
	if (update_indexes && w->rri->ri_NumIndices > 0)
		list_free(ExecInsertIndexTuples(w->rri, newslot, w->estate, true, false, NULL, NIL));
	ResetPerTupleExprContext(w->estate);
	ExecClearTuple(newslot);
}

/* nextval() of a sequence, without the permission check (internal columns) */
int64
writer_nextval(Oid seqid)
{
	return nextval_internal(seqid, false);
}
