/*
 * trigger.c
 *		The C triggers allocation.manage() installs on a customer table.
 *
 *   zz_allocation_stmt_before  BEFORE stmt   opens a batch (a "frame")
 *   zz_allocation_before       BEFORE row    INSERT: decides the owner and
 *                                            writes it into the new row;
 *                                            UPDATE: manual change or
 *                                            re-evaluation
 *   zz_allocation_after        AFTER row     confirms the row was stored
 *                                            (ON CONFLICT DO NOTHING skips);
 *                                            DELETE: closes the ownership
 *   zz_allocation_stmt_after   AFTER stmt    writes the batch with one call:
 *                                            registry, history, suggestions,
 *                                            counters and audit
 *
 * Names start with "zz_" so the BEFORE trigger runs after the user's own
 * BEFORE triggers and sees the final row.  Capacity slots are reserved in the
 * BEFORE trigger (the only point where the owner can still be set); slots of
 * rows that were not stored are given back when the batch is written.
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

#include "allocation.h"
#include "stat.h"

typedef enum EntryOp
{
	OP_INSERT = 'i',
	OP_UPDATE = 'u',
	OP_REFRESH = 'r',			/* same owner: refresh the registry's attribute snapshot */
	OP_DELETE = 'd'
} EntryOp;

typedef struct Entry
{
	EntryOp		op;
	bool		confirmed;
	Oid			relid;
	int32		managed_id;
	char	   *key;
	int64		rep;			/* new owner, 0 = none */
	int64		old_rep;		/* released owner (update/delete), 0 = none */
	int64		suggest;		/* suggested rep, 0 = none */
	int64		team;
	int64		territory;
	int64		rule;
	int64		reserved;		/* rep whose slot this entry took, 0 = none */
	const char *source;
	bool		pinned;
	const char *kind;
	char	   *reason;
	char	   *tier;
	char	   *crop;
	char	   *btype;
	char	   *stage;
	/* duplicate detection */
	bool		identity;		/* this entry (re)registered the customer's identity */
	bool		forget;			/* deleted: drop the customer's identity */
	char		dup_action;		/* 'w' warn, 'd' dispute, 0 = no duplicate */
	const char *dup_match;
	char	   *dup_other;
	char	   *dup_value;
	double		dup_similarity;
	int64		requested;		/* dispute: the owner the write asked for (evidence), 0 = none */
	int			next_same;		/* older entry with the same key hash, -1 = none */
} Entry;

/* Entries by key hash, so AFTER ROW confirmations find theirs in O(1) */
typedef struct KeySlot
{
	uint32		hash;			/* hash key */
	int			newest;			/* newest entry index with this hash */
} KeySlot;


/* The customer table's key index, kept open for the rows of one statement */
typedef struct KeyProbe
{
	Oid			index;			/* InvalidOid = not open */
	ResourceOwner owner;		/* the resource owner it was opened under */
	Relation	idx;
	IndexScanDesc scan;
	TupleTableSlot *slot;
} KeyProbe;

/* Engine tables written row by row during the statement, kept open */
#define FRAME_WRITERS 4

typedef struct Frame
{
	struct Frame *prev;
	MemoryContext cxt;			/* the frame's own memory, freed after the flush */
	CommandId	cid;			/* command id of the statement (query) */
	Oid			actor;			/* whom the statement's events name */
	int			refs;			/* statement triggers of that query still to end */
	HTAB	   *reps;			/* RepCount by rep id, NULL until a slot is taken */
	HTAB	   *bykey;			/* KeySlot by key hash */
	HTAB	   *loads;			/* RepCount: holdings read during this statement */
	int			nest_level;
	int			n;
	int			cap;
	int			cursor;			/* next entry expected to be confirmed */
	Entry	   *entries;
	KeyProbe	probe;
	int			nwriters;
	Oid			writer_rel[FRAME_WRITERS];
	RowWriter  *writers[FRAME_WRITERS];
	ResourceOwner writer_owner;
	bool		written_direct; /* flushed by the C writer, not _record_batch */
} Frame;

static Frame *frames = NULL;

/* >0 while the batch writer (allocation._record_batch) runs */
static int	alloc_in_batch = 0;

/* _in_batch(): whether the engine's batch writer is running (no user setting can say so) */
PG_FUNCTION_INFO_V1(allocation_in_batch);
Datum
allocation_in_batch(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(alloc_in_batch > 0);
}

#define frame_cxt (frames->cxt)

/* Transaction end: everything lived in TopTransactionContext */
void
trigger_reset_all(void)
{
	frames = NULL;
	alloc_in_batch = 0;
}

/* Subtransaction abort: drop the frames its statements opened */
static void
trigger_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
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
	/* the subtransaction's counter writes and locks are gone: re-read them */
	assign_forget_bases();
}

static void
push_frame(void)
{
	MemoryContext old,
				cxt;
	Frame	   *f;
	CommandId	cid;
	static bool registered = false;

	if (!registered)
	{
		RegisterSubXactCallback(trigger_subxact_callback, NULL);
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

static void frames_add_reservation_in(Frame *f, int64 rep_id, int32 n);

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

static void
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

static uint32 key_hash(Oid relid, const char *key);
static void frame_index_entry(Frame *f, int i);

static Entry *
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
static void
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
static HTAB *
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

static uint32
key_hash(Oid relid, const char *key)
{
	return hash_bytes((const unsigned char *) key, strlen(key)) ^ (uint32) relid;
}

/* Index of the newest entry of a frame for (relid, key), or -1 */
static int
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

static char *
frame_strdup(const char *s)
{
	return s ? MemoryContextStrdup(frame_cxt, s) : NULL;
}

/* An entry that keeps the owner and refreshes the registry's snapshot of the attributes */
static Entry *
new_refresh(ManagedTable *mt, Customer *c)
{
	Entry	   *e = new_entry(OP_REFRESH, mt, c->key);

	e->territory = customer_territory_id(c);
	e->tier = frame_strdup(c->attr[ATTR_TIER]);
	e->crop = frame_strdup(c->attr[ATTR_CROP]);
	e->btype = frame_strdup(c->attr[ATTR_BTYPE]);
	e->stage = frame_strdup(c->attr[ATTR_STAGE]);
	return e;
}

/* Records a duplicate found for this entry's row (warn/dispute) */
static void
note_duplicate(Entry *e, DupMatch *m)
{
	e->identity = m->registered;
	if (m->action != 'w' && m->action != 'd')
		return;
	e->dup_action = m->action;
	e->dup_match = m->match;
	e->dup_other = frame_strdup(m->other_key);
	e->dup_value = frame_strdup(m->value);
	e->dup_similarity = m->similarity;
}


/* The NOTICE of a 'warn' action (without the other customer when the writer cannot see it) */
static void
warn_duplicate(ManagedTable *mt, const char *key, DupMatch *m)
{
	if (m->redact)
		ereport(NOTICE,
				(errmsg("customer %s may duplicate another customer of %s (%s)", key, mt->name, dup_match_words(m->match)),
				 errdetail("The other customer is %s; the write was kept and queued in allocation.dispute_queue for a manager.",
						   dup_hidden_holder(m))));
	else
		ereport(NOTICE,
				(errmsg("customer %s may duplicate customer %s of %s (%s)", key, m->other_key, mt->name, dup_match_words(m->match)),
				 errdetail("Customer %s (%s) is held by %s; the write was kept and queued in allocation.dispute_queue.",
						   m->other_key, m->value, m->owner)));
}

/* A duplicate under a 'dispute' action: the row is stored without an owner */
static void
dispute_decision(Decision *d, Customer *c, DupMatch *m)
{
	memset(d, 0, sizeof(*d));
	d->kind = DECISION_POOL;
	d->territory_id = customer_territory_id(c);
	d->reason = psprintf("possible duplicate of customer %s (%s %s); kept without an owner until a manager decides",
						 m->other_key, dup_match_words(m->match), m->value);
}

static void
fill_decision(Entry *e, Customer *c, Decision *d)
{
	e->team = d->team_id;
	e->territory = d->territory_id;
	e->rule = d->rule_id;
	e->reason = frame_strdup(d->reason);
	e->tier = frame_strdup(c->attr[ATTR_TIER]);
	e->crop = frame_strdup(c->attr[ATTR_CROP]);
	e->btype = frame_strdup(c->attr[ATTR_BTYPE]);
	e->stage = frame_strdup(c->attr[ATTR_STAGE]);
	if (d->reserved)
		e->reserved = d->rep_id;
	switch (d->kind)
	{
		case DECISION_ASSIGN:
			e->rep = d->rep_id;
			break;
		case DECISION_SUGGEST:
			e->suggest = d->rep_id;
			break;
		case DECISION_MANUAL:
			e->rep = d->rep_id;
			e->pinned = true;
			break;
		case DECISION_POOL:
			break;
	}
}

/* Owner column value <-> rep id */
static int64
owner_value(ManagedTable *mt, HeapTuple tup, bool *isnull)
{
	Datum		d = heap_getattr(tup, mt->owner_att, mt->tupdesc, isnull);

	if (*isnull)
		return 0;
	return mt->owner_type == INT4OID ? (int64) DatumGetInt32(d) : DatumGetInt64(d);
}

static HeapTuple
set_owner(ManagedTable *mt, HeapTuple tup, int64 rep)
{
	int			col = mt->owner_att;
	Datum		val;
	bool		isnull = (rep == 0);

	if (mt->owner_type == INT4OID)
	{
		if (rep > PG_INT32_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("rep id " INT64_FORMAT " does not fit the integer owner column of %s", rep, mt->name),
					 errdetail("The owner column is integer; rep ids are bigint."),
					 errhint("ALTER the owner column to bigint.")));
		val = Int32GetDatum((int32) rep);
	}
	else
		val = Int64GetDatum(rep);
	return heap_modify_tuple_by_cols(tup, mt->tupdesc, 1, &col, &val, &isnull);
}

/*
 * The engine's own owner change of this row (allocation._owner_update(): an
 * assign, accepted suggestion, claim, release or recycle), or NULL for a
 * plain UPDATE.  Only engine code sets it; it applies to one row, once.
 */
static AllocChange *
engine_change(ManagedTable *mt, Datum key)
{
	AllocChange *chg = alloc_change;

	if (chg == NULL || chg->used || chg->relid != mt->relid ||
		strcmp(chg->key, OutputFunctionCall(&mt->key_out, key)) != 0)
		return NULL;
	return chg;
}

static char *
change_reason(AllocChange *chg, const char *dflt)
{
	return (chg && chg->reason && chg->reason[0]) ? (char *) chg->reason : (char *) dflt;
}

/*
 * Whether a row with this key is already stored (committed, or inserted
 * earlier by this very statement).  Such a row will not be inserted as new:
 * ON CONFLICT skips it or turns it into an UPDATE, otherwise the unique index
 * refuses it.  One btree probe, no SPI.
 */
static bool
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
static void
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

/* BEFORE INSERT: the hot path */
static HeapTuple
before_insert(ManagedTable *mt, Relation rel, HeapTuple tup)
{
	Customer	c;
	Decision	d;
	bool		isnull;
	int64		owner;
	Entry	   *e;
	DupMatch	dup;

	owner = owner_value(mt, tup, &isnull);
	/* a row whose key is taken runs no rule and takes no slot (ON CONFLICT) */
	if (key_exists(mt, rel, tup))
		return tup;
	/* a rep registers a new customer for itself (报备) or for the rules, never for another rep */
	if (!isnull && alloc_acting_rep() != 0 && alloc_acting_rep() != owner)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_REP_OWNER_UPDATE),
				 errmsg("a rep cannot give a new customer to another rep"),
				 errdetail("This session acts for rep %lld; the INSERT into %s sets %s to rep " INT64_FORMAT ".",
						   (long long) alloc_acting_rep(), mt->name,
						   NameStr(TupleDescAttr(mt->tupdesc, mt->owner_att - 1)->attname), owner),
				 errhint("Leave the owner empty (the rules decide) or register the customer for yourself; a manager uses allocation.assign().")));

	assign_read_customer(mt, tup, &c, false);
	if (dup_check(mt, &c, &dup, true) && dup.action == 'd')
	{
		dispute_decision(&d, &c, &dup);
		if (!isnull)
			tup = set_owner(mt, tup, 0);
		e = new_entry(OP_INSERT, mt, c.key);
		fill_decision(e, &c, &d);
		note_duplicate(e, &dup);
		e->requested = isnull ? 0 : owner;
		e->source = "dispute";
		e->kind = "dispute";
		e->old_rep = 0;
		return tup;
	}
	if (dup.action == 'w')
		warn_duplicate(mt, c.key, &dup);
	if (!isnull)
	{
		assign_check_manual(mt, &c, owner, false);
		memset(&d, 0, sizeof(d));
		d.kind = DECISION_MANUAL;
		d.rep_id = owner;
		d.reserved = true;
		d.team_id = config_get_rep(owner)->team_id;
		d.territory_id = customer_territory_id(&c);
		d.reason = "owner given on INSERT";
	}
	else
	{
		assign_decide(mt, tup, &c, &d, false, NULL);
		if (d.kind == DECISION_ASSIGN)
			tup = set_owner(mt, tup, d.rep_id);
	}
	e = new_entry(OP_INSERT, mt, c.key);
	fill_decision(e, &c, &d);
	note_duplicate(e, &dup);
	e->source = d.kind == DECISION_MANUAL ? "manual" : (d.kind == DECISION_ASSIGN ? "rule" : "pool");
	e->kind = d.kind == DECISION_MANUAL ? "manual_assign" :
		d.kind == DECISION_ASSIGN ? "assign" : d.kind == DECISION_SUGGEST ? "suggest" : "pool";
	return tup;
}

/* Whether any column that feeds the rules changed */
static bool
inputs_changed(ManagedTable *mt, HeapTuple oldtup, HeapTuple newtup)
{
	AttrNumber	atts[ATTR__COUNT + 1];
	int			n = 0,
				i;

	if (mt->loc_att != InvalidAttrNumber)
		atts[n++] = mt->loc_att;
	for (i = ATTR_TIER; i <= ATTR_STAGE; i++)
		if (mt->attr_att[i] != InvalidAttrNumber)
			atts[n++] = mt->attr_att[i];
	for (i = 0; i < n; i++)
	{
		Form_pg_attribute att = TupleDescAttr(mt->tupdesc, atts[i] - 1);
		bool		n1,
					n2;
		Datum		d1 = heap_getattr(oldtup, atts[i], mt->tupdesc, &n1),
					d2 = heap_getattr(newtup, atts[i], mt->tupdesc, &n2);

		if (n1 != n2)
			return true;
		if (!n1 && !datumIsEqual(d1, d2, att->attbyval, att->attlen))
			return true;
	}
	return false;
}

/* Whether the customer's current ownership was set by a person */
static bool
registry_pinned(ManagedTable *mt, const char *key)
{
	static SPIPlanPtr plan = NULL;
	AllocUserSwitch sw;
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		vals[2];
	bool		pinned = false;
	bool		found;

	alloc_spi_begin(&sw);
	if (plan == NULL)
	{
		plan = SPI_prepare("SELECT pinned FROM allocation.assignment"
						   " WHERE managed_id = $1 AND key = $2 AND valid_to IS NULL", 2, types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed");
		SPI_keepplan(plan);
	}
	vals[0] = Int32GetDatum(mt->id);
	vals[1] = CStringGetTextDatum(key);
	if (SPI_execute_plan(plan, vals, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading the ownership registry failed");
	found = SPI_processed > 0;
	if (found)
	{
		bool		isnull;

		pinned = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	alloc_spi_end(&sw);
	if (!found)
	{
		/* inserted by a statement still running (e.g. updated by an AFTER trigger) */
		Frame	   *f;

		for (f = frames; f; f = f->prev)
		{
			int			j = frame_newest_entry(f, mt->relid, key);

			if (j >= 0)
				return f->entries[j].pinned;
		}
	}
	return pinned;
}

/* Whether a column the duplicate check reads changed */
static bool
identity_changed(ManagedTable *mt, HeapTuple oldtup, HeapTuple newtup)
{
	/* the location matters only to a fuzzy match within a radius */
	AttrNumber	atts[4] = {mt->attr_att[ATTR_NAME], mt->attr_att[ATTR_PHONE], mt->attr_att[ATTR_CREDIT],
	(mt->dup_fuzzy != 'o' && mt->within_m > 0) ? mt->loc_att : InvalidAttrNumber};
	int			i;

	for (i = 0; i < 4; i++)
	{
		Form_pg_attribute att;
		bool		n1,
					n2;
		Datum		d1,
					d2;

		if (atts[i] == InvalidAttrNumber)
			continue;
		att = TupleDescAttr(mt->tupdesc, atts[i] - 1);
		d1 = heap_getattr(oldtup, atts[i], mt->tupdesc, &n1);
		d2 = heap_getattr(newtup, atts[i], mt->tupdesc, &n2);
		if (n1 != n2 || (!n1 && !datumIsEqual(d1, d2, att->attbyval, att->attlen)))
			return true;
	}
	return false;
}

static HeapTuple before_update_decide(ManagedTable *mt, HeapTuple oldtup, HeapTuple newtup);

/*
 * BEFORE UPDATE: the owner decision, then -- when the name, phone, credit
 * code or location changed -- the duplicate check, which may override it.
 */
static HeapTuple
before_update(ManagedTable *mt, HeapTuple oldtup, HeapTuple newtup)
{
	Frame	   *f = frames;
	int			n_before = f ? f->n : 0;
	Customer	c;
	DupMatch	dup;
	Entry	   *e = NULL;
	bool		oldnull,
				newnull;
	int64		old_owner = owner_value(mt, oldtup, &oldnull);
	/* the owner this UPDATE sets itself (kept as evidence if it ends in a dispute) */
	int64		requested = owner_value(mt, newtup, &newnull);

	if (newnull || (!oldnull && requested == old_owner))
		requested = 0;
	newtup = before_update_decide(mt, oldtup, newtup);
	if ((mt->dup_exact == 'o' && mt->dup_fuzzy == 'o') || !identity_changed(mt, oldtup, newtup))
		return newtup;
	assign_read_customer(mt, newtup, &c, false);
	if (!dup_check(mt, &c, &dup, false))
	{
		if (dup.registered && f && f->n > n_before)
			f->entries[f->n - 1].identity = true;
		else if (dup.registered)
			new_refresh(mt, &c)->identity = true;
		return newtup;
	}
	if (f && f->n > n_before)
		e = &f->entries[f->n - 1];
	if (dup.action == 'w')
	{
		warn_duplicate(mt, c.key, &dup);
		if (e == NULL)
			e = new_refresh(mt, &c);
		note_duplicate(e, &dup);
		return newtup;
	}
	/* dispute: the customer loses its owner until a manager decides */
	if (e == NULL)
		e = new_entry(OP_UPDATE, mt, c.key);
	else if (e->reserved)
	{
		frames_add_reservation(e->reserved, -1);
		e->reserved = 0;
	}
	{
		Decision	d;

		dispute_decision(&d, &c, &dup);
		fill_decision(e, &c, &d);
	}
	e->op = OP_UPDATE;
	e->rep = 0;
	e->suggest = 0;
	e->pinned = false;
	e->old_rep = oldnull ? 0 : old_owner;
	e->source = "dispute";
	e->kind = "dispute";
	note_duplicate(e, &dup);
	e->requested = requested;
	return set_owner(mt, newtup, 0);
}

/* BEFORE UPDATE: manual owner change, or re-evaluation */
static HeapTuple
before_update_decide(ManagedTable *mt, HeapTuple oldtup, HeapTuple newtup)
{
	Customer	c;
	Decision	d;
	bool		oldnull,
				newnull,
				k1,
				k2;
	int64		old_owner = owner_value(mt, oldtup, &oldnull);
	int64		new_owner = owner_value(mt, newtup, &newnull);
	Form_pg_attribute katt = TupleDescAttr(mt->tupdesc, mt->key_att - 1);
	Datum		kold = heap_getattr(oldtup, mt->key_att, mt->tupdesc, &k1);
	Datum		knew = heap_getattr(newtup, mt->key_att, mt->tupdesc, &k2);
	Entry	   *e;
	Frame	   *f = frames;
	AllocChange *chg;

	/*
	 * INSERT ... ON CONFLICT DO UPDATE: the BEFORE INSERT of this very row
	 * (the latest entry) reserved a slot for a row that will not be
	 * inserted; give it back now so this decision sees true loads.
	 */
	if (f && f->n > 0)
	{
		Entry	   *last = &f->entries[f->n - 1];

		if (last->op == OP_INSERT && !last->confirmed && last->reserved && last->relid == mt->relid &&
			!k1 && strcmp(last->key, OutputFunctionCall(&mt->key_out, kold)) == 0)
		{
			frames_add_reservation(last->reserved, -1);
			last->reserved = 0;
		}
	}

	if (k1 != k2 || (!k1 && !datumIsEqual(kold, knew, katt->attbyval, katt->attlen)))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_KEY_CHANGED),
				 errmsg("the key of a managed customer cannot change"),
				 errdetail("Table %s is managed with key column \"%s\"; ownership history is recorded under the key.",
						   mt->name, NameStr(katt->attname)),
				 errhint("Delete the row and insert it with the new key, or unmanage the table first.")));

	chg = k2 ? NULL : engine_change(mt, knew);
	if (oldnull != newnull || old_owner != new_owner)
	{
		/* a person changed the owner, or the engine on a person's behalf */
		const char *src = chg ? chg->source : "manual";

		if (chg)
			chg->used = true;
		else if (alloc_acting_rep() != 0)
			ereport(ERROR,
					(errcode(ERRCODE_ALLOC_REP_OWNER_UPDATE),
					 errmsg("a rep cannot change the owner of a customer by UPDATE"),
					 errdetail("This session acts for rep %lld; an UPDATE of %s.%s would skip the claim checks (locks, limits, cooldowns).",
							   (long long) alloc_acting_rep(),
							   mt->name, NameStr(TupleDescAttr(mt->tupdesc, mt->owner_att - 1)->attname)),
					 errhint("Use allocation.claim() or allocation.release(); a manager uses allocation.assign().")));

		assign_read_customer(mt, newtup, &c, false);
		memset(&d, 0, sizeof(d));
		d.territory_id = customer_territory_id(&c);
		if (!newnull)
		{
			/*
			 * Ordered locking: the counter of the rep losing the customer is
			 * taken before the new owner's when its id is lower (the batch
			 * writer changes it at the end of the statement).
			 */
			if (!oldnull && old_owner < new_owner)
				(void) assign_lock_released(old_owner);
			/* to the rep its pending suggestion names: that reserved slot is used */
			assign_read_history(mt, &c);
			if (c.suggested_rep == new_owner)
				assign_use_suggested_slot(mt, &c, new_owner);
			else
				assign_check_manual(mt, &c, new_owner, false);
			d.kind = DECISION_MANUAL;
			d.rep_id = new_owner;
			d.reserved = true;
			d.team_id = config_get_rep(new_owner)->team_id;
		}
		else
			d.kind = DECISION_POOL;
		d.reason = change_reason(chg, newnull ? "owner cleared by UPDATE" : "owner changed by UPDATE");
		e = new_entry(OP_UPDATE, mt, c.key);
		fill_decision(e, &c, &d);
		e->pinned = true;
		e->old_rep = oldnull ? 0 : old_owner;
		if (strcmp(src, "suggestion") == 0)
		{
			e->source = "suggestion";
			e->kind = "suggestion_accepted";
		}
		else if (strcmp(src, "claim") == 0 || strcmp(src, "recycle") == 0)
			e->source = e->kind = src[0] == 'c' ? "claim" : "recycle";
		else
		{
			e->source = "manual";
			e->kind = newnull ? "release" : "reassign";
		}
		/*
		 * Given back by release() or recycle(): back in the pool, not pinned
		 * there -- the rules apply again on re-evaluation (except to the
		 * former owner during its cooldown).  A person clearing the owner
		 * (UPDATE, assign(..., NULL)) pins the customer in the pool.
		 */
		if (newnull && chg != NULL &&
			(strcmp(src, "release") == 0 || strcmp(src, "recycle") == 0))
			e->pinned = false;
		return newtup;
	}

	if (!oldnull && chg && strcmp(chg->source, "manual") == 0)
	{
		/* allocation.assign() of this very customer to its current owner: confirmed and pinned */
		assign_read_customer(mt, newtup, &c, false);
		e = new_refresh(mt, &c);
		e->rep = old_owner;
		e->pinned = true;
		e->source = "manual";
		e->kind = "pin";
		chg->used = true;
		e->reason = frame_strdup(change_reason(chg, "confirmed by hand"));
		return newtup;
	}
	if (!inputs_changed(mt, oldtup, newtup))
		return newtup;
	assign_read_customer(mt, newtup, &c, false);
	if (mt->reevaluate == 'n' || (mt->reevaluate == 'u' && registry_pinned(mt, c.key)))
	{
		/* owner stays; the registry's snapshot of the attributes follows */
		(void) new_refresh(mt, &c);
		return newtup;
	}

	c.current_owner = oldnull ? 0 : old_owner;
	assign_read_history(mt, &c);	/* its pending suggestion's slot; former owners in cooldown */
	assign_decide(mt, newtup, &c, &d, false, NULL);
	if (d.kind == DECISION_SUGGEST && !oldnull)
	{
		/*
		 * A review-mode rule never takes a customer away by itself: the owner
		 * stays; a suggestion for another rep waits for a manager.
		 */
		e = new_entry(OP_REFRESH, mt, c.key);
		fill_decision(e, &c, &d);
		e->reason = NULL;
		e->old_rep = 0;
		if (d.rep_id == old_owner)
			e->suggest = 0;
		else
		{
			e->kind = "suggest";
			e->source = "rule";
			e->reason = frame_strdup(d.reason);	/* the suggestion's; the registry keeps its own */
		}
		return newtup;
	}
	if ((d.kind == DECISION_ASSIGN && !oldnull && d.rep_id == old_owner) ||
		(d.kind == DECISION_POOL && oldnull))
	{
		/*
		 * Same owner (who keeps the slot), or still in the pool: no new
		 * decision, but the registry row follows the new attributes (and,
		 * in the pool, the new reason).
		 */
		e = new_entry(OP_REFRESH, mt, c.key);
		fill_decision(e, &c, &d);
		e->reserved = 0;
		if (!oldnull)
			e->reason = NULL;	/* the owner's original reason stands */
		return newtup;
	}
	newtup = set_owner(mt, newtup, d.kind == DECISION_ASSIGN ? d.rep_id : 0);
	e = new_entry(OP_UPDATE, mt, c.key);
	fill_decision(e, &c, &d);
	e->old_rep = oldnull ? 0 : old_owner;
	e->source = d.kind == DECISION_ASSIGN ? "reevaluate" : "pool";
	e->kind = d.kind == DECISION_SUGGEST ? "suggest" : "reevaluate";
	return newtup;
}

/* The owner column's rep id, 0 for NULL */
static int64
owner_or_zero(ManagedTable *mt, HeapTuple tup)
{
	bool		isnull;
	int64		owner = owner_value(mt, tup, &isnull);

	return isnull ? 0 : owner;
}

/*
 * The stored row must carry the owner the engine decided: a BEFORE trigger
 * whose name sorts after zz_allocation_before could change the owner column
 * after every check (capacity, exclusive territories, claims) was made.
 */
static void
check_stored_owner(ManagedTable *mt, const char *key, int64 expected, HeapTuple tup)
{
	int64		stored = owner_or_zero(mt, tup);

	if (stored != expected)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_OWNER_OVERRIDDEN),
				 errmsg("the owner of customer %s of %s was changed after the allocation engine decided it", key, mt->name),
				 errdetail("The engine decided owner %s; the row was stored with owner %s. A BEFORE trigger that runs after zz_allocation_before (its name sorts after it) set the owner column.",
						   expected ? psprintf(INT64_FORMAT, expected) : "none (public pool)",
						   stored ? psprintf(INT64_FORMAT, stored) : "none"),
				 errhint("Rename that trigger so that it sorts before zz_allocation_before, or leave the owner column alone in it.")));
}

/* The owner an entry decided: its rep; a refresh keeps the row's old owner */
static void
check_entry_owner(ManagedTable *mt, Entry *e, HeapTuple oldtup, HeapTuple tup)
{
	if (e->op != OP_REFRESH)
		check_stored_owner(mt, e->key, e->rep, tup);
	else if (oldtup != NULL)
		check_stored_owner(mt, e->key, owner_or_zero(mt, oldtup), tup);
}

/* AFTER INSERT/UPDATE row: the row was stored, confirm its entry */
static void
confirm(ManagedTable *mt, HeapTuple oldtup, HeapTuple tup, EntryOp op)
{
	Frame	   *f = frames;
	bool		isnull;
	char	   *key;
	int			j;

	if (f == NULL)
		return;
	key = OutputFunctionCall(&mt->key_out, heap_getattr(tup, mt->key_att, mt->tupdesc, &isnull));

#define ENTRY_MATCHES(e) \
	(!(e)->confirmed && ((e)->op == op || (op == OP_UPDATE && (e)->op == OP_REFRESH)) && \
	 (e)->relid == mt->relid && strcmp((e)->key, key) == 0)

	/* rows are usually confirmed in the order they were decided */
	if (f->cursor < f->n && ENTRY_MATCHES(&f->entries[f->cursor]))
	{
		check_entry_owner(mt, &f->entries[f->cursor], oldtup, tup);
		f->entries[f->cursor++].confirmed = true;
		return;
	}
	/* otherwise the oldest unconfirmed entry with this key */
	{
		uint32		h = key_hash(mt->relid, key);
		KeySlot    *ks = hash_search(frame_keys(f), &h, HASH_FIND, NULL);
		int			found = -1;

		for (j = ks ? ks->newest : -1; j >= 0; j = f->entries[j].next_same)
			if (ENTRY_MATCHES(&f->entries[j]))
				found = j;
		if (found >= 0)
		{
			check_entry_owner(mt, &f->entries[found], oldtup, tup);
			f->entries[found].confirmed = true;
			if (found == f->cursor)
				f->cursor++;
			return;
		}
	}
	/* no decision was needed (nothing the engine reads changed): nor may the owner */
	if (op == OP_UPDATE && oldtup != NULL)
		check_stored_owner(mt, key, owner_or_zero(mt, oldtup), tup);
	if (op == OP_INSERT)
	{
		/*
		 * Stored although its key looked taken (the other row was deleted by
		 * a concurrent transaction meanwhile): register it as it is, in the
		 * pool or with the owner it was given (without a capacity check).
		 */
		Entry	   *e = new_entry(OP_INSERT, mt, key);
		int64		owner = owner_value(mt, tup, &isnull);

		e->confirmed = true;
		if (isnull)
		{
			e->source = "pool";
			e->kind = "pool";
			e->reason = frame_strdup("stored while its key was taken by a row being deleted; no rule was run");
		}
		else
		{
			e->rep = owner;
			e->pinned = true;
			e->source = "manual";
			e->kind = "manual_assign";
			e->reason = frame_strdup("owner given on INSERT while its key was taken by a row being deleted; capacity not checked");
			frames_add_reservation(owner, 1);
		}
	}
}

/* AFTER DELETE row */
static void
after_delete(ManagedTable *mt, HeapTuple oldtup)
{
	bool		isnull;
	int64		owner = owner_value(mt, oldtup, &isnull);
	Datum		kd = heap_getattr(oldtup, mt->key_att, mt->tupdesc, &isnull);
	Entry	   *e;

	if (isnull)
		return;
	e = new_entry(OP_DELETE, mt, OutputFunctionCall(&mt->key_out, kd));
	e->confirmed = true;
	e->old_rep = owner;
	e->source = "manual";
	e->kind = "delete";
	e->forget = (mt->dup_exact != 'o' || mt->dup_fuzzy != 'o');
	e->reason = frame_strdup("row deleted");
}

PG_FUNCTION_INFO_V1(allocation_row_trigger);
Datum
allocation_row_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TriggerEvent ev;
	ManagedTable *mt;
	HeapTuple	result;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "allocation_row_trigger: not called by trigger manager");
	ev = td->tg_event;
	if (!TRIGGER_FIRED_FOR_ROW(ev))
		elog(ERROR, "allocation_row_trigger: must be fired FOR EACH ROW");

	if (TRIGGER_FIRED_BEFORE(ev))
	{
		config_prepare();
		tindex_prepare();
	}
	mt = config_get_table(RelationGetRelid(td->tg_relation), false);

	if (TRIGGER_FIRED_BEFORE(ev))
	{
		volatile bool decided = false;
		instr_time	t0;

		alloc_stat_start(&t0);
		alloc_decision_depth++;
		PG_TRY();
		{
			if (TRIGGER_FIRED_BY_INSERT(ev))
				result = before_insert(mt, td->tg_relation, td->tg_trigtuple);
			else if (TRIGGER_FIRED_BY_UPDATE(ev))
				result = before_update(mt, td->tg_trigtuple, td->tg_newtuple);
			else
				result = td->tg_trigtuple;
			decided = true;
		}
		PG_FINALLY();
		{
			alloc_decision_depth--;
			alloc_stat_decision(mt->relid, &t0, decided);
		}
		PG_END_TRY();
		return PointerGetDatum(result);
	}

	if (TRIGGER_FIRED_BY_INSERT(ev))
		confirm(mt, NULL, td->tg_trigtuple, OP_INSERT);
	else if (TRIGGER_FIRED_BY_UPDATE(ev))
		confirm(mt, td->tg_trigtuple, td->tg_newtuple, OP_UPDATE);
	else if (TRIGGER_FIRED_BY_DELETE(ev))
		after_delete(mt, td->tg_trigtuple);
	return PointerGetDatum(NULL);
}

/* ---------- writing a batch ---------- */

/* the arguments of allocation._record_batch after the actor, as arrays */
enum
{
	C_MANAGED, C_OP, C_KEY, C_REP, C_OLD_REP, C_TEAM, C_TERRITORY, C_RULE, C_SOURCE,
	C_PINNED, C_KIND, C_REASON, C_TIER, C_CROP, C_BTYPE, C_SUGGEST, C_STAGE, C_DELTA_REP, C_DELTA_N, C_REQUESTED, C__N
};

typedef struct Cols
{
	Datum	   *v[C__N];
	bool	   *isnull[C__N];
} Cols;

static const Oid col_types[C__N] = {
	INT4OID, TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, TEXTOID,
	BOOLOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, INT8OID, INT4OID, INT8OID
};

static void
put_i8(Cols *c, int col, int row, int64 v)
{
	c->v[col][row] = Int64GetDatum(v);
	c->isnull[col][row] = (v == 0);
}

static void
put_text(Cols *c, int col, int row, const char *s)
{
	c->v[col][row] = s ? CStringGetTextDatum(s) : (Datum) 0;
	c->isnull[col][row] = (s == NULL);
}

static Datum
col_array(Cols *c, int col, int n)
{
	Oid			t = col_types[col];
	int16		len;
	bool		byval;
	char		align;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(t, &len, &byval, &align);
	return PointerGetDatum(construct_md_array(c->v[col], c->isnull[col], 1, dims, lbs, t, len, byval, align));
}

/*
 * Duplicate bookkeeping of a batch (inside the flush's SPI session): the
 * duplicate queue and warning events for stored rows, and the identities of
 * rows that were not stored after all, or were deleted.
 */
static void
flush_identities(Frame *f, Datum actor)
{
	int			i,
				nd = 0,
				nf = 0;
	Datum	   *dm = NULL,
			   *dk = NULL,
			   *da = NULL,
			   *dmatch = NULL,
			   *dother = NULL,
			   *dval = NULL,
			   *dsim = NULL,
			   *fm = NULL,
			   *fk = NULL;

	for (i = 0; i < f->n; i++)
	{
		Entry	   *e = &f->entries[i];
		bool		forget = e->forget || (!e->confirmed && e->identity && e->op == OP_INSERT);

		if (e->confirmed && e->dup_action)
		{
			if (dm == NULL)
			{
				dm = palloc(sizeof(Datum) * f->n);
				dk = palloc(sizeof(Datum) * f->n);
				da = palloc(sizeof(Datum) * f->n);
				dmatch = palloc(sizeof(Datum) * f->n);
				dother = palloc(sizeof(Datum) * f->n);
				dval = palloc(sizeof(Datum) * f->n);
				dsim = palloc(sizeof(Datum) * f->n);
			}
			dm[nd] = Int32GetDatum(e->managed_id);
			dk[nd] = CStringGetTextDatum(e->key);
			da[nd] = CStringGetTextDatum(e->dup_action == 'w' ? "warn" : "dispute");
			dmatch[nd] = CStringGetTextDatum(e->dup_match);
			dother[nd] = CStringGetTextDatum(e->dup_other);
			dval[nd] = CStringGetTextDatum(e->dup_value ? e->dup_value : "");
			dsim[nd] = Float4GetDatum((float4) e->dup_similarity);
			nd++;
		}
		if (forget)
		{
			if (fm == NULL)
			{
				fm = palloc(sizeof(Datum) * f->n);
				fk = palloc(sizeof(Datum) * f->n);
			}
			fm[nf] = Int32GetDatum(e->managed_id);
			fk[nf] = CStringGetTextDatum(e->key);
			nf++;
		}
	}
	if (nd > 0)
	{
		Oid			types[8] = {TEXTOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, TEXTARRAYOID, FLOAT4ARRAYOID};
		Datum		args[8];

		args[0] = actor;
		args[1] = PointerGetDatum(construct_array(dm, nd, INT4OID, 4, true, TYPALIGN_INT));
		args[2] = PointerGetDatum(construct_array(dk, nd, TEXTOID, -1, false, TYPALIGN_INT));
		args[3] = PointerGetDatum(construct_array(da, nd, TEXTOID, -1, false, TYPALIGN_INT));
		args[4] = PointerGetDatum(construct_array(dmatch, nd, TEXTOID, -1, false, TYPALIGN_INT));
		args[5] = PointerGetDatum(construct_array(dother, nd, TEXTOID, -1, false, TYPALIGN_INT));
		args[6] = PointerGetDatum(construct_array(dval, nd, TEXTOID, -1, false, TYPALIGN_INT));
		args[7] = PointerGetDatum(construct_array(dsim, nd, FLOAT4OID, 4, true, TYPALIGN_INT));
		if (SPI_execute_with_args("SELECT allocation._record_duplicates($1, $2, $3, $4, $5, $6, $7, $8)",
								  8, types, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "recording duplicates failed");
	}
	if (nf > 0)
	{
		Oid			types[2] = {INT4ARRAYOID, TEXTARRAYOID};
		Datum		args[2];

		args[0] = PointerGetDatum(construct_array(fm, nf, INT4OID, 4, true, TYPALIGN_INT));
		args[1] = PointerGetDatum(construct_array(fk, nf, TEXTOID, -1, false, TYPALIGN_INT));
		if (SPI_execute_with_args("SELECT allocation._identity_forget($1, $2)",
								  2, types, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "forgetting customer identities failed");
	}
}

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a,
				y = *(const int64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}


/* The statement's net slot changes per rep, into the delta columns */
static int
collect_deltas(Frame *f, Cols *c)
{
	int			ndelta = 0;

	if (f->reps)
	{
		HASH_SEQ_STATUS hs;
		RepCount   *rc;

		hash_seq_init(&hs, f->reps);
		while ((rc = hash_seq_search(&hs)) != NULL)
			if (rc->n != 0)
			{
				put_i8(c, C_DELTA_REP, ndelta, rc->rep_id);
				c->v[C_DELTA_N][ndelta] = Int32GetDatum(rc->n);
				c->isnull[C_DELTA_N][ndelta] = false;
				ndelta++;
			}
	}
	return ndelta;
}

/* ---------- the direct path of an INSERT statement ---------- */

static void
jb_key(JsonbParseState **st, const char *k)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) k;
	v.val.string.len = strlen(k);
	pushJsonbValue(st, WJB_KEY, &v);
}

/* the detail of an event, as _record_batch builds it with jsonb_build_object */
static Datum
event_detail(Entry *e)
{
	JsonbParseState *st = NULL;
	JsonbValue	v;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	if (e->territory)
	{
		jb_key(&st, "territory_id");
		v.type = jbvNumeric;
		v.val.numeric = int64_to_numeric(e->territory);
		pushJsonbValue(&st, WJB_VALUE, &v);
	}
	if (e->team)
	{
		jb_key(&st, "team_id");
		v.type = jbvNumeric;
		v.val.numeric = int64_to_numeric(e->team);
		pushJsonbValue(&st, WJB_VALUE, &v);
	}
	if (e->source)
	{
		jb_key(&st, "source");
		v.type = jbvString;
		v.val.string.val = (char *) e->source;
		v.val.string.len = strlen(e->source);
		pushJsonbValue(&st, WJB_VALUE, &v);
	}
	jb_key(&st, "pinned");
	v.type = jbvBool;
	v.val.boolean = e->pinned;
	pushJsonbValue(&st, WJB_VALUE, &v);
	jb_key(&st, "suggested");
	v.type = jbvBool;
	v.val.boolean = e->suggest != 0;
	pushJsonbValue(&st, WJB_VALUE, &v);
	if (e->requested)
	{
		jb_key(&st, "requested_owner");
		v.type = jbvNumeric;
		v.val.numeric = int64_to_numeric(e->requested);
		pushJsonbValue(&st, WJB_VALUE, &v);
	}
	return JsonbPGetDatum(JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL)));
}

/* one value of a direct-path row: column k of the writer's columns (0 and NULL = NULL) */
#define SET_I8(k, x) do { nul[k] = ((x) == 0); if (!nul[k]) v[k] = Int64GetDatum(x); } while (0)
#define SET_TEXT(k, x) do { nul[k] = ((x) == NULL); if (!nul[k]) v[k] = CStringGetTextDatum(x); } while (0)
#define SET_DATUM(k, x) do { v[k] = (x); nul[k] = false; } while (0)

/*
 * Whether every stored row of the frame is a new customer without a
 * suggestion: the only case the direct path writes (everything else --
 * updates, deletes, suggestions -- goes through _record_batch).
 */
static bool
frame_is_plain_insert(Frame *f)
{
	int			i,
				n = 0;

	for (i = 0; i < f->n; i++)
	{
		Entry	   *e = &f->entries[i];

		if (!e->confirmed)
			continue;
		if (e->op != OP_INSERT || e->suggest != 0)
			return false;
		n++;
	}
	return n > 0;
}

/* The columns the direct path fills, in this order (any other must be nullable without a default) */
enum
{
	R_ID, R_MANAGED, R_KEY, R_REP, R_TEAM, R_TERRITORY, R_RULE, R_SOURCE, R_PINNED, R_REASON,
	R_TIER, R_CROP, R_BTYPE, R_STAGE, R_STAGE_SINCE, R_VALID_FROM, R__N
};
static const char *const registry_columns[R__N + 1] = {
	"id", "managed_id", "key", "rep_id", "team_id", "territory_id", "rule_id", "source", "pinned",
	"reason", "tier", "crop", "business_type", "stage", "stage_since", "valid_from", NULL
};
enum
{
	V_ID, V_AT, V_ACTOR, V_KIND, V_MANAGED, V_TABLE, V_KEY, V_FROM, V_TO, V_RULE, V_REASON, V_DETAIL, V__N
};
static const char *const event_columns[V__N + 1] = {
	"id", "at", "actor", "kind", "managed_id", "table_name", "key", "from_rep", "to_rep", "rule_id",
	"reason", "detail", NULL
};

/*
 * Writes a plain-insert frame without the PL/pgSQL batch writer: one SPI
 * query per statement (counters, the foreign-key locks the registry's RI
 * triggers would take per row, whether registration protection applies),
 * then the registry and audit rows through writer.c.  Returns false, having
 * done nothing, when the registry or audit table is not writable directly.
 * Runs inside the flush's SPI session, as the extension owner.
 */
static bool
flush_direct(Frame *f, Datum actor, Cols *c, int ndelta)
{
	static SPIPlanPtr plan = NULL;
	RowWriter  *wa,
			   *we;
	Oid			types[5] = {INT8ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, INT4ARRAYOID, TEXTOID};
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int64	   *reps = palloc(sizeof(int64) * f->n);
	Datum	   *repd,
			   *mand;
	int32		managed[8];
	int			nreps = 0,
				nman = 0,
				i,
				j;
	bool		isnull,
				protect;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	ManagedTable *mt = NULL;

	/* the reps and managed tables the registry rows reference */
	for (i = 0; i < f->n; i++)
	{
		Entry	   *e = &f->entries[i];

		if (!e->confirmed)
			continue;
		if (e->rep)
			reps[nreps++] = e->rep;
		for (j = 0; j < nman && managed[j] != e->managed_id; j++)
			;
		if (j == nman)
		{
			if (nman == lengthof(managed))
				return false;	/* a query writing many managed tables: the SQL path */
			managed[nman++] = e->managed_id;
		}
	}

	alloc_lookup_oids();
	wa = writer_open(get_relname_relid("assignment", alloc_oids.schema), 2, "assignment_loaded",
					 registry_columns);
	if (wa == NULL)
		return false;
	we = writer_open(get_relname_relid("event", alloc_oids.schema), 0, NULL, event_columns);
	if (we == NULL)
	{
		writer_close(wa);
		return false;
	}
	qsort(reps, nreps, sizeof(int64), cmp_int64);
	for (i = 0, j = 0; i < nreps; i++)
		if (j == 0 || reps[i] != reps[j - 1])
			reps[j++] = reps[i];
	nreps = j;
	repd = palloc(sizeof(Datum) * Max(nreps, 1));
	for (i = 0; i < nreps; i++)
		repd[i] = Int64GetDatum(reps[i]);
	mand = palloc(sizeof(Datum) * nman);
	for (i = 0; i < nman; i++)
		mand[i] = Int32GetDatum(managed[i]);
	args[0] = PointerGetDatum(construct_array(repd, nreps, INT8OID, 8, true, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(mand, nman, INT4OID, 4, true, TYPALIGN_INT));
	if (ndelta > 0)
	{
		args[2] = col_array(c, C_DELTA_REP, ndelta);
		args[3] = col_array(c, C_DELTA_N, ndelta);
	}
	else
		nulls[2] = nulls[3] = 'n';
	args[4] = actor;
	if (plan == NULL)
	{
		plan = SPI_prepare("WITH counted AS ("
						   "  UPDATE allocation.rep_load l SET held = l.held + d.n"
						   "    FROM unnest($3, $4) AS d(rep, n)"
						   "   WHERE l.rep_id = d.rep AND d.n <> 0 RETURNING 1)"
						   " SELECT (SELECT count(*) FROM (SELECT 1 FROM allocation.rep r WHERE r.id = ANY ($1)"
						   "                               FOR KEY SHARE OF r) k)::integer,"
						   "        (SELECT count(*) FROM (SELECT 1 FROM allocation.managed_table m WHERE m.id = ANY ($2)"
						   "                               FOR KEY SHARE OF m) k)::integer,"
						   "        (SELECT count(*) FROM counted)::integer,"
						   "        EXISTS (SELECT 1 FROM allocation.claim_policy cp WHERE cp.protection IS NOT NULL)"
						   "        AND EXISTS (SELECT 1 FROM allocation.rep r WHERE r.login = $5)",
						   5, types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare of the direct batch query failed");
		SPI_keepplan(plan);
	}
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "the direct batch query failed");
	if (DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) != nreps)
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("a rep assigned by this statement no longer exists"),
				 errdetail("A rep the rules chose was deleted (by a concurrent transaction, or by a trigger of this statement) before the statement's registry rows were written; the registry cannot reference it."),
				 errhint("Retry the statement.")));
	if (DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) != nman)
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("the table is no longer managed"),
				 errdetail("A concurrent transaction removed the table from allocation.managed_table."),
				 errhint("Retry the statement.")));
	protect = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	if (protect)
	{
		Oid			ptypes[4] = {TEXTOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
		Datum		pargs[4];
		int			n = 0;

		for (i = 0; i < f->n; i++)
			if (f->entries[i].confirmed)
			{
				c->v[C_MANAGED][n] = Int32GetDatum(f->entries[i].managed_id);
				c->isnull[C_MANAGED][n] = false;
				put_text(c, C_KEY, n, f->entries[i].key);
				put_text(c, C_TIER, n, f->entries[i].tier);
				n++;
			}
		pargs[0] = actor;
		pargs[1] = col_array(c, C_MANAGED, n);
		pargs[2] = col_array(c, C_KEY, n);
		pargs[3] = col_array(c, C_TIER, n);
		if (SPI_execute_with_args("SELECT allocation._record_protection($1, $2, $3, $4)",
								  4, ptypes, pargs, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "recording registration protection failed");
	}

	/* the registry: one open row per new customer */
	{
		Datum		v[R__N];
		bool		nul[R__N];
		Oid			seq = writer_identity_seq(wa, "id");

		for (i = 0; i < f->n; i++)
		{
			Entry	   *e = &f->entries[i];
			MemoryContext old;

			if (!e->confirmed)
				continue;
			old = MemoryContextSwitchTo(writer_row_context(wa));
			SET_DATUM(R_ID, Int64GetDatum(writer_nextval(seq)));
			SET_DATUM(R_MANAGED, Int32GetDatum(e->managed_id));
			SET_TEXT(R_KEY, e->key);
			SET_I8(R_REP, e->rep);
			SET_I8(R_TEAM, e->team);
			SET_I8(R_TERRITORY, e->territory);
			SET_I8(R_RULE, e->rule);
			SET_TEXT(R_SOURCE, e->source);
			SET_DATUM(R_PINNED, BoolGetDatum(e->pinned));
			SET_TEXT(R_REASON, e->reason);
			SET_TEXT(R_TIER, e->tier);
			SET_TEXT(R_CROP, e->crop);
			SET_TEXT(R_BTYPE, e->btype);
			SET_TEXT(R_STAGE, e->stage);
			SET_DATUM(R_STAGE_SINCE, TimestampTzGetDatum(now));
			nul[R_STAGE_SINCE] = (e->stage == NULL);
			SET_DATUM(R_VALID_FROM, TimestampTzGetDatum(now));
			writer_add(wa, v, nul);
			MemoryContextSwitchTo(old);
		}
		writer_close(wa);
	}

	/* the audit: one event per new customer */
	{
		Datum		v[V__N];
		bool		nul[V__N];
		Oid			seq = writer_identity_seq(we, "id");

		for (i = 0; i < f->n; i++)
		{
			Entry	   *e = &f->entries[i];
			MemoryContext old;

			if (!e->confirmed)
				continue;
			if (mt == NULL || mt->id != e->managed_id)
				mt = config_get_table(e->relid, false);
			old = MemoryContextSwitchTo(writer_row_context(we));
			SET_DATUM(V_ID, Int64GetDatum(writer_nextval(seq)));
			SET_DATUM(V_AT, TimestampTzGetDatum(now));
			SET_DATUM(V_ACTOR, actor);
			SET_TEXT(V_KIND, e->kind);
			SET_DATUM(V_MANAGED, Int32GetDatum(e->managed_id));
			SET_TEXT(V_TABLE, mt->table_name);
			SET_TEXT(V_KEY, e->key);
			SET_I8(V_FROM, e->old_rep);
			SET_I8(V_TO, e->rep ? e->rep : e->suggest);
			SET_I8(V_RULE, e->rule);
			SET_TEXT(V_REASON, e->reason);
			SET_DATUM(V_DETAIL, event_detail(e));
			writer_add(we, v, nul);
			MemoryContextSwitchTo(old);
		}
		writer_close(we);
	}
	return true;
}

static void
flush_frame(Frame *f)
{
	static SPIPlanPtr plan = NULL;
	AllocUserSwitch sw;
	Cols		c;
	Oid			types[C__N + 1];
	Datum		args[C__N + 1];
	int			i,
				col,
				n = 0,
				ndelta = 0;
	bool		any_suggest = false;
	bool		any_requested = false;
	char		nulls[C__N + 1];
	char	   *actor;

	if (f->n == 0)
		return;
	for (col = 0; col < C__N; col++)
	{
		int			len = Max(f->n, f->reps ? (int) hash_get_num_entries(f->reps) : 0);

		c.v[col] = palloc(sizeof(Datum) * Max(len, 1));
		c.isnull[col] = palloc(sizeof(bool) * Max(len, 1));
	}
	/*
	 * Rows that were not stored: their slots are not taken after all.  A
	 * suggestion's slot is not a held one: the suggestion written by the
	 * batch counts it (rep_load.reserved).
	 */
	for (i = 0; i < f->n; i++)
		if (f->entries[i].reserved && (!f->entries[i].confirmed || f->entries[i].suggest))
			frames_add_reservation_in(f, f->entries[i].reserved, -1);
	ndelta = collect_deltas(f, &c);

	if (frame_is_plain_insert(f))
	{
		Datum		actor_d = CStringGetTextDatum(GetUserNameFromId(f->actor, false));
		bool		done;

		alloc_spi_begin(&sw);
		done = flush_direct(f, actor_d, &c, ndelta);
		if (done)
			flush_identities(f, actor_d);
		alloc_spi_end(&sw);
		if (done)
		{
			f->written_direct = true;
			for (i = 0; i < ndelta; i++)
				assign_note_written(DatumGetInt64(c.v[C_DELTA_REP][i]), DatumGetInt32(c.v[C_DELTA_N][i]));
			return;
		}
	}

	for (i = 0; i < f->n; i++)
	{
		Entry	   *e = &f->entries[i];

		if (!e->confirmed)
			continue;
		if (e->suggest)
			any_suggest = true;
		c.v[C_MANAGED][n] = Int32GetDatum(e->managed_id);
		c.isnull[C_MANAGED][n] = false;
		put_text(&c, C_OP, n, e->op == OP_INSERT ? "insert" : e->op == OP_UPDATE ? "update" :
				 e->op == OP_REFRESH ? "refresh" : "delete");
		put_text(&c, C_KEY, n, e->key);
		put_i8(&c, C_REP, n, e->rep);
		put_i8(&c, C_OLD_REP, n, e->old_rep);
		put_i8(&c, C_TEAM, n, e->team);
		put_i8(&c, C_TERRITORY, n, e->territory);
		put_i8(&c, C_RULE, n, e->rule);
		put_text(&c, C_SOURCE, n, e->source);
		c.v[C_PINNED][n] = BoolGetDatum(e->pinned);
		c.isnull[C_PINNED][n] = false;
		put_text(&c, C_KIND, n, e->kind);
		put_text(&c, C_REASON, n, e->reason);
		put_text(&c, C_TIER, n, e->tier);
		put_text(&c, C_CROP, n, e->crop);
		put_text(&c, C_BTYPE, n, e->btype);
		put_i8(&c, C_SUGGEST, n, e->suggest);
		put_text(&c, C_STAGE, n, e->stage);
		put_i8(&c, C_REQUESTED, n, e->requested);
		if (e->requested)
			any_requested = true;
		n++;
	}
	if (n == 0)
	{
		/* nothing stored; identities registered for the rows may need forgetting */
		for (i = 0; i < f->n; i++)
			if (f->entries[i].identity)
				break;
		if (i == f->n)
			return;
		alloc_spi_begin(&sw);
		flush_identities(f, CStringGetTextDatum(GetUserNameFromId(f->actor, false)));
		alloc_spi_end(&sw);
		return;
	}

	/*
	 * The counters of reps losing customers are written by the batch writer:
	 * lock them first, in rep id order and under the ordered-locking rule,
	 * so a release never waits in a cycle (55P03 instead of a deadlock).
	 */
	{
		int64	   *released = palloc(sizeof(int64) * n);
		int			nrel = 0,
					j;

		for (i = 0; i < n; i++)
			if (!c.isnull[C_OLD_REP][i])
				released[nrel++] = DatumGetInt64(c.v[C_OLD_REP][i]);
		qsort(released, nrel, sizeof(int64), cmp_int64);
		for (j = 0; j < nrel; j++)
			if ((j == 0 || released[j] != released[j - 1]) && !assign_lock_released(released[j]))
			{
				RepInfo    *rep = config_get_rep(released[j]);

				ereport(ERROR,
						(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
						 errmsg("rep %s is busy", rep ? rep->code : "?"),
						 errdetail("Another open transaction is taking or releasing customers of rep %s; waiting for it to release one of its customers here could deadlock with this transaction's own earlier assignments.",
								   rep ? rep->code : "?"),
						 errhint("Retry after the other transaction ends, or change owners in rep id order within one transaction.")));
			}
	}

	actor = GetUserNameFromId(f->actor, false);
	types[0] = TEXTOID;
	args[0] = CStringGetTextDatum(actor);
	for (col = 0; col < C__N; col++)
	{
		types[col + 1] = get_array_type(col_types[col]);
		nulls[col + 1] = ' ';
		if (col == C_DELTA_REP || col == C_DELTA_N)
		{
			if (ndelta == 0)
				nulls[col + 1] = 'n';
			else
				args[col + 1] = col_array(&c, col, ndelta);
		}
		else if ((col == C_SUGGEST && !any_suggest) || (col == C_REQUESTED && !any_requested))
			nulls[col + 1] = 'n';
		else
			args[col + 1] = col_array(&c, col, n);
	}
	nulls[0] = ' ';

	alloc_spi_begin(&sw);
	if (plan == NULL)
	{
		plan = SPI_prepare("SELECT allocation._record_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
						   " $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)", C__N + 1, types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare of the batch writer failed");
		SPI_keepplan(plan);
	}
	/* the registry's assignment_loaded trigger asks allocation._in_batch() */
	alloc_in_batch++;
	PG_TRY();
	{
		if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "writing the allocation batch failed");
	}
	PG_FINALLY();
	{
		alloc_in_batch--;
	}
	PG_END_TRY();
	flush_identities(f, args[0]);
	alloc_spi_end(&sw);

	/* the counters now include this statement; we hold their locks */
	for (i = 0; i < ndelta; i++)
		assign_note_written(DatumGetInt64(c.v[C_DELTA_REP][i]), DatumGetInt32(c.v[C_DELTA_N][i]));
	for (i = 0; i < n; i++)
		if (!c.isnull[C_OLD_REP][i])
			assign_note_written(DatumGetInt64(c.v[C_OLD_REP][i]), 0);	/* re-read it */
	/* suggestions were made, accepted or ended: reserved slots moved; re-read what we hold */
	for (i = 0; i < f->n; i++)
		if (f->entries[i].confirmed && (f->entries[i].suggest || f->entries[i].op == OP_UPDATE ||
										f->entries[i].op == OP_DELETE))
		{
			assign_forget_bases();
			break;
		}
}

/* What a recorded entry came to, for allocation.stat */
static AllocStatOutcome
entry_outcome(Entry *e)
{
	if (e->op == OP_DELETE)
		return ASO_DELETED;
	if (e->kind && strcmp(e->kind, "dispute") == 0)
		return ASO_DISPUTED;
	if (e->suggest)
		return ASO_SUGGESTED;
	if (e->op == OP_REFRESH)
		return ASO_UNCHANGED;
	if (e->rep == 0)
		return ASO_POOLED;
	return (e->source && (strcmp(e->source, "rule") == 0 || strcmp(e->source, "reevaluate") == 0)) ?
		ASO_ASSIGNED : ASO_MANUAL;
}

/* Statistics (stat.c): each stored row of the frame, the path that wrote it, the time */
static void
stat_frame(Frame *f, Oid relid, instr_time *t0)
{
	int			i;

	if (!ALLOC_STAT_ACTIVE() || f->n == 0)
		return;
	for (i = 0; i < f->n; i++)
		if (f->entries[i].confirmed)
			alloc_stat_recorded(f->entries[i].relid, entry_outcome(&f->entries[i]), f->written_direct);
	alloc_stat_statement(relid, t0);
}

static void
record_truncate(ManagedTable *mt)
{
	AllocUserSwitch sw;
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		args[2];
	char	   *actor = GetUserNameFromId(alloc_actor_id(), false);

	args[0] = Int32GetDatum(mt->id);
	args[1] = CStringGetTextDatum(actor);
	alloc_spi_begin(&sw);
	if (SPI_execute_with_args("SELECT allocation._record_truncate($1, $2)", 2, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "recording the truncate failed");
	alloc_spi_end(&sw);
}

PG_FUNCTION_INFO_V1(allocation_stmt_trigger);
Datum
allocation_stmt_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TriggerEvent ev;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "allocation_stmt_trigger: not called by trigger manager");
	ev = td->tg_event;
	if (!TRIGGER_FIRED_FOR_STATEMENT(ev))
		elog(ERROR, "allocation_stmt_trigger: must be fired FOR EACH STATEMENT");

	if (TRIGGER_FIRED_BY_TRUNCATE(ev))
	{
		config_prepare();
		record_truncate(config_get_table(RelationGetRelid(td->tg_relation), false));
	}
	else if (TRIGGER_FIRED_BEFORE(ev))
		push_frame();
	else
	{
		Frame	   *f = frames;
		instr_time	t0;

		if (f == NULL)
			elog(ERROR, "allocation batch stack is empty at statement end");
		if (--f->refs > 0)
			return PointerGetDatum(NULL);	/* another node of the query still runs */
		frames = f->prev;
		probe_close(f);
		alloc_stat_start(&t0);
		flush_frame(f);
		stat_frame(f, RelationGetRelid(td->tg_relation), &t0);
		MemoryContextDelete(f->cxt);
	}
	return PointerGetDatum(NULL);
}
