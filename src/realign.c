/*
 * realign.c
 *		Realignment (allocation.realign_*, sql_src/88_realign.sql): the
 *		preview's scan and the NOTICE on a direct territory-owner change.
 *
 * The scan decides every customer of the managed tables again with the
 * trigger's own decision code (assign_decide, dry run: no reservation, no
 * cursor advance, no write), in one pass over each table's heap.  It runs
 * while the plan's configuration is applied inside a subtransaction that
 * the caller rolls back (see _realign_compute): the configuration caches are
 * invalidated locally by that rollback, nothing reaches other backends, and
 * a transaction that changed the territories never publishes a shared
 * territory index (territory_index.c), so no uncommitted shape is shared.
 *
 * A real apply moves customers one after another, each move changing the
 * reps' loads and the round-robin cursors the next decision reads.  The scan
 * simulates that: each simulated move is added to a statement batch of its
 * own (frame.c: the loads the decision code reads are counter + the batch's
 * slots) and to a table of simulated round-robin cursors (assign.c), so the
 * preview decides as the apply will, in the same order.  Customers that stay
 * whatever the rules say (pinned, locked, ..., given by the caller) and
 * review-mode suggestions are reported but not simulated, as the apply does
 * not move them.
 *
 * No SPI per row: the customers with a pending suggestion or a recent
 * release/recycle (whose history the decision needs) are read once per
 * table; only those few read their history row by row, as the trigger does.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "allocation.h"
#include "frame.h"

/* while a plan's configuration is written, the territory-owner NOTICE is quiet */
bool		realign_quiet = false;

void
realign_xact_end(void)
{
	realign_quiet = false;
}

/* _realign_quiet(on): sets the flag (unless NULL), returns the previous value */
PG_FUNCTION_INFO_V1(allocation_realign_quiet);
Datum
allocation_realign_quiet(PG_FUNCTION_ARGS)
{
	bool		prev = realign_quiet;

	if (!PG_ARGISNULL(0))
		realign_quiet = PG_GETARG_BOOL(0);
	PG_RETURN_BOOL(prev);
}

/*
 * AFTER UPDATE OF owner_rep_id, owner_team_id ON allocation.territory (row,
 * WHEN the owner changed): today's behaviour -- no customer moves -- said
 * out loud, pointing at realignment.
 */
PG_FUNCTION_INFO_V1(allocation_territory_owner_notice);
Datum
allocation_territory_owner_notice(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	bool		isnull;
	Datum		code;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
		elog(ERROR, "allocation_territory_owner_notice: must be fired FOR EACH ROW");
	if (!realign_quiet)
	{
		code = heap_getattr(td->tg_newtuple, 2, RelationGetDescr(td->tg_relation), &isnull);
		ereport(NOTICE,
				(errmsg("territory %s has a new owner; no existing customer was moved",
						isnull ? "?" : TextDatumGetCString(code)),
				 errdetail("Changing a territory's owner directly affects only decisions made from now on (new customers, re-evaluations)."),
				 errhint("To move the customers already there, stage the change in a realignment plan: allocation.realign_create(), realign_stage_territory(), realign_preview(), then CALL allocation.realign_apply().")));
	}
	return PointerGetDatum(td->tg_newtuple);
}

/* realign_in_block(): inside BEGIN ... COMMIT (realign_apply cannot commit there) */
PG_FUNCTION_INFO_V1(allocation_realign_in_block);
Datum
allocation_realign_in_block(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(IsTransactionBlock());
}

static int
cstring_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

static bool
sorted_contains(char **items, int n, const char *s)
{
	return n > 0 && bsearch(&s, items, n, sizeof(char *), cstring_cmp) != NULL;
}

/* the keys of one managed table in a text[] paired with an integer[] of managed ids */
static char **
keys_of(ArrayType *ids, ArrayType *keys, int32 managed_id, int *nout)
{
	Datum	   *iv,
			   *kv;
	bool	   *in,
			   *kn;
	int			ni,
				nk,
				i,
				n = 0;
	char	  **out;

	*nout = 0;
	if (ids == NULL || keys == NULL)
		return NULL;
	deconstruct_array(ids, INT4OID, 4, true, TYPALIGN_INT, &iv, &in, &ni);
	deconstruct_array(keys, TEXTOID, -1, false, TYPALIGN_INT, &kv, &kn, &nk);
	if (ni != nk)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("the managed ids and keys of the customers that stay differ in length")));
	out = palloc(sizeof(char *) * Max(ni, 1));
	for (i = 0; i < ni; i++)
		if (!in[i] && !kn[i] && DatumGetInt32(iv[i]) == managed_id)
			out[n++] = TextDatumGetCString(kv[i]);
	qsort(out, n, sizeof(char *), cstring_cmp);
	*nout = n;
	return out;
}

/*
 * The keys of a table whose decision reads history (a pending suggestion, a
 * release or recycle recent enough for a claim cooldown): a superset of what
 * assign_read_history finds, read in one query.
 */
static char **
history_keys(int32 managed_id, int *nout)
{
	AllocUserSwitch sw;
	Oid			types[1] = {INT4OID};
	Datum		vals[1];
	char	  **out;
	uint64		i;
	MemoryContext caller = CurrentMemoryContext;

	vals[0] = Int32GetDatum(managed_id);
	alloc_spi_begin(&sw);
	if (SPI_execute_with_args("SELECT s.key FROM allocation.suggestion s WHERE s.managed_id = $1 AND s.status = 'pending'"
							  " UNION SELECT e.key FROM allocation.event e"
							  "  WHERE e.managed_id = $1 AND e.period = 'open' AND e.kind IN ('release', 'recycle')"
							  "    AND e.from_rep IS NOT NULL"
							  "    AND e.at + (SELECT coalesce(max(p.cooldown), interval '0') FROM allocation.claim_policy p)"
							  "        > pg_catalog.now()",
							  1, types, vals, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading the customers with history failed");
	out = MemoryContextAlloc(caller, sizeof(char *) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
		out[i] = MemoryContextStrdup(caller, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	*nout = (int) SPI_processed;
	alloc_spi_end(&sw);
	qsort(out, *nout, sizeof(char *), cstring_cmp);
	return out;
}

/* the active managed tables, by id */
static int
managed_tables(Oid **relids, int32 **ids)
{
	AllocUserSwitch sw;
	uint64		i;
	int			n;
	bool		isnull;
	MemoryContext caller = CurrentMemoryContext;

	alloc_spi_begin(&sw);
	if (SPI_execute("SELECT m.tbl::oid, m.id FROM allocation.managed_table m"
					" WHERE m.active AND m.tbl IS NOT NULL ORDER BY m.id", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading the managed tables failed");
	n = (int) SPI_processed;
	*relids = MemoryContextAlloc(caller, sizeof(Oid) * Max(n, 1));
	*ids = MemoryContextAlloc(caller, sizeof(int32) * Max(n, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		(*relids)[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		(*ids)[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
	}
	alloc_spi_end(&sw);
	return n;
}

typedef struct RealignScan
{
	Tuplestorestate *store;
	TupleDesc	desc;
	int64		ord;
	ArrayType  *skip_ids;
	ArrayType  *skip_keys;
	int			nskip_reps;		/* reps whose customers stay (new reps in their ramp-up) */
	int64	   *skip_reps;
	MemoryContext rowcxt;
} RealignScan;

#define SCAN_COLS 11

/* One customer decided again; a row when the decision differs from its owner */
static void
scan_row(RealignScan *st, ManagedTable *mt, HeapTuple tup, char **skip, int nskip, char **hist, int nhist)
{
	Customer	c;
	Decision	d;
	bool		isnull;
	Datum		owner_d;
	int64		owner,
				to;
	bool		simulate;
	Datum		v[SCAN_COLS];
	bool		n[SCAN_COLS];
	const char *outcome;

	owner_d = heap_getattr(tup, mt->owner_att, mt->tupdesc, &isnull);
	owner = isnull ? 0 : mt->owner_type == INT4OID ? DatumGetInt32(owner_d) : DatumGetInt64(owner_d);
	alloc_decision_depth++;
	PG_TRY();
	{
		assign_read_customer(mt, tup, &c, false);
		c.current_owner = owner;
		if (sorted_contains(hist, nhist, c.key))
			assign_read_history(mt, &c);
		assign_decide(mt, tup, &c, &d, true, NULL);
	}
	PG_FINALLY();
	{
		alloc_decision_depth--;
	}
	PG_END_TRY();

	switch (d.kind)
	{
		case DECISION_ASSIGN:
			if (d.rep_id == owner)
				return;
			outcome = "assign";
			to = d.rep_id;
			break;
		case DECISION_SUGGEST:
			if (d.rep_id == owner || d.rep_id == c.suggested_rep)
				return;
			outcome = "suggest";
			to = d.rep_id;
			break;
		default:
			if (owner == 0)
				return;
			outcome = "pool";
			to = 0;
			break;
	}
	simulate = d.kind != DECISION_SUGGEST && !sorted_contains(skip, nskip, c.key);
	for (int i = 0; simulate && owner != 0 && i < st->nskip_reps; i++)
		if (st->skip_reps[i] == owner)
			simulate = false;
	if (simulate)
	{
		RuleInfo   *r = d.rule_id ? config_get_rule(d.rule_id) : NULL;

		/* what the apply's move will do to the loads and the round-robin cursor */
		if (to != 0)
			frames_add_reservation(to, 1);
		if (owner != 0)
			frames_add_reservation(owner, -1);
		if (to != 0 && r && r->policy == POLICY_ROUND_ROBIN)
			assign_dry_rr_served(r->target_team, to);
	}
	memset(n, 0, sizeof(n));
	v[0] = Int64GetDatum(++st->ord);
	v[1] = Int32GetDatum(mt->id);
	v[2] = CStringGetTextDatum(c.key);
	v[3] = Int64GetDatum(owner);
	n[3] = owner == 0;
	v[4] = CStringGetTextDatum(outcome);
	v[5] = Int64GetDatum(to);
	n[5] = to == 0;
	v[6] = Int64GetDatum(d.team_id);
	n[6] = d.team_id == 0;
	v[7] = Int64GetDatum(d.rule_id);
	n[7] = d.rule_id == 0;
	v[8] = Int64GetDatum(d.territory_id);
	n[8] = d.territory_id == 0;
	v[9] = CStringGetTextDatum(d.reason ? d.reason : "");
	v[10] = BoolGetDatum(simulate);
	tuplestore_putvalues(st->store, st->desc, v, n);
}

/* Every row of one physical table (a plain managed table or a leaf partition), in heap order */
static void
scan_rel(RealignScan *st, Oid relid, char **skip, int nskip, char **hist, int nhist)
{
	ManagedTable *mt = config_get_table(relid, false);	/* a partition: its own column mapping */
	Relation	rel;
	TableScanDesc scan;
	TupleTableSlot *slot;
	MemoryContext old;

	rel = table_open(relid, AccessShareLock);
	scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		should_free;
		HeapTuple	tup;

		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(st->rowcxt);
		old = MemoryContextSwitchTo(st->rowcxt);
		tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
		scan_row(st, mt, tup, skip, nskip, hist, nhist);
		MemoryContextSwitchTo(old);
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	table_close(rel, AccessShareLock);
}

/* Every row of one managed table: a partitioned one partition by partition */
static void
scan_table(RealignScan *st, Oid relid, int32 managed_id)
{
	char	  **skip,
			  **hist;
	int			nskip,
				nhist;

	skip = keys_of(st->skip_ids, st->skip_keys, managed_id, &nskip);
	hist = history_keys(managed_id, &nhist);
	if (get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE)
	{
		List	   *rels = find_all_inheritors(relid, AccessShareLock, NULL);
		ListCell   *lc;

		foreach(lc, rels)
			if (get_rel_relkind(lfirst_oid(lc)) == RELKIND_RELATION)
				scan_rel(st, lfirst_oid(lc), skip, nskip, hist, nhist);
	}
	else
		scan_rel(st, relid, skip, nskip, hist, nhist);
}

/*
 * _realign_scan(skip_managed integer[], skip_keys text[], skip_reps bigint[]): every customer of
 * the active managed tables whose decision under the configuration now
 * visible differs from its owner (see the file header).
 */
PG_FUNCTION_INFO_V1(allocation_realign_scan);
Datum
allocation_realign_scan(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RealignScan	st;
	Oid		   *relids;
	int32	   *ids;
	int			ntables,
				i;
	Frame	   *outer = frames;
	Frame	   *mine;
	HASHCTL		ctl;

	alloc_lookup_oids();
	if (GetUserId() != alloc_oids.schema_owner && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("allocation._realign_scan() is internal"),
				 errhint("Use allocation.realign_preview().")));
	InitMaterializedSRF(fcinfo, 0);
	memset(&st, 0, sizeof(st));
	st.store = rsinfo->setResult;
	st.desc = rsinfo->setDesc;
	st.skip_ids = PG_ARGISNULL(0) ? NULL : PG_GETARG_ARRAYTYPE_P(0);
	st.skip_keys = PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1);
	if (!PG_ARGISNULL(2))
	{
		Datum	   *rv;
		bool	   *rn;
		int			nr;

		deconstruct_array(PG_GETARG_ARRAYTYPE_P(2), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &rv, &rn, &nr);
		st.skip_reps = palloc(sizeof(int64) * Max(nr, 1));
		for (i = 0; i < nr; i++)
			if (!rn[i])
				st.skip_reps[st.nskip_reps++] = DatumGetInt64(rv[i]);
	}
	st.rowcxt = AllocSetContextCreate(CurrentMemoryContext, "allocation realign row", ALLOCSET_DEFAULT_SIZES);

	config_prepare();
	tindex_prepare();
	ntables = managed_tables(&relids, &ids);

	/* the simulated moves: a statement batch of their own, and round-robin cursors */
	push_frame();
	mine = frames;
	if (mine == outer)
	{
		mine->refs--;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a realignment preview cannot run inside a statement on a managed table"),
				 errhint("Call allocation.realign_preview() in a statement of its own.")));
	}
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(int64) * 2;
	ctl.hcxt = mine->cxt;
	assign_dry_rr = hash_create("allocation realign cursors", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	PG_TRY();
	{
		for (i = 0; i < ntables; i++)
			scan_table(&st, relids[i], ids[i]);
	}
	PG_FINALLY();
	{
		assign_dry_rr = NULL;
	}
	PG_END_TRY();
	/* nothing of the simulation is kept */
	frames = mine->prev;
	MemoryContextDelete(mine->cxt);
	MemoryContextDelete(st.rowcxt);
	return (Datum) 0;
}
