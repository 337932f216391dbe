/*
 * record.c
 *		Writing a statement's decisions: one ownership event per decision,
 *		a customer_state row only for the exceptions, suggestions, identities
 *		and the holdings counters, atomically with the statement.
 *
 * A statement that only inserted customers is written directly (writer.c);
 * anything else goes through allocation._record_batch, with the same entries.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parse_relation.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "common/hashfn.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/typcache.h"
#include "executor/tuptable.h"

#include "frame.h"
#include "record.h"

/* >0 while the batch writer (allocation._record_batch) runs */
static int	alloc_in_batch = 0;

/* _in_batch(): whether the engine's batch writer is running (no user setting can say so) */
PG_FUNCTION_INFO_V1(allocation_in_batch);
Datum
allocation_in_batch(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(alloc_in_batch > 0);
}

/* Transaction end: no batch is being written */
void
record_reset_all(void)
{
	alloc_in_batch = 0;
}

/* ---------- writing a batch ---------- */

/* The statement's change of each rep's holdings (deltas of its frame) */
typedef struct Deltas
{
	int			n;
	Datum	   *rep;			/* int8 */
	Datum	   *count;			/* int4 */
} Deltas;

/* A one-dimensional array of n datums of a base type */
static Datum
datum_array(Datum *values, bool *nulls, int n, Oid type)
{
	int16		len;
	bool		byval;
	char		align;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(type, &len, &byval, &align);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, type, len, byval, align));
}

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

/* The frame's slot changes per rep (the rows not stored already given back) */
static void
collect_deltas(Frame *f, Deltas *d)
{
	d->n = 0;
	d->rep = palloc(sizeof(Datum) * Max(f->reps ? hash_get_num_entries(f->reps) : 0, 1));
	d->count = palloc(sizeof(Datum) * Max(f->reps ? hash_get_num_entries(f->reps) : 0, 1));
	if (f->reps)
	{
		HASH_SEQ_STATUS hs;
		RepCount   *rc;

		hash_seq_init(&hs, f->reps);
		while ((rc = hash_seq_search(&hs)) != NULL)
			if (rc->n != 0)
			{
				d->rep[d->n] = Int64GetDatum(rc->rep_id);
				d->count[d->n] = Int32GetDatum(rc->n);
				d->n++;
			}
	}
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

/*
 * The detail of a direct-path event: what _record_batch's jsonb_build_object
 * keeps (team, territory, source and pinned are columns).  A direct-path frame
 * has no suggestion, so only a requested owner can be there; the empty
 * object is built once.
 */
static Datum
event_detail(Entry *e)
{
	static Jsonb *empty = NULL;
	JsonbParseState *st = NULL;
	JsonbValue	v;

	if (e->requested == 0)
	{
		if (empty == NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
			empty = JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
			MemoryContextSwitchTo(old);
		}
		return JsonbPGetDatum(empty);
	}
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	jb_key(&st, "requested_owner");
	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(e->requested);
	pushJsonbValue(&st, WJB_VALUE, &v);
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
	R_MANAGED, R_KEY, R_REP, R_TEAM, R_TERRITORY, R_RULE, R_SOURCE, R_PINNED, R_REASON,
	R_TIER, R_CROP, R_BTYPE, R_STAGE, R_STAGE_SINCE, R_VALID_FROM, R__N
};
static const char *const state_columns[R__N + 1] = {
	"managed_id", "key", "rep_id", "team_id", "territory_id", "rule_id", "source", "pinned",
	"reason", "tier", "crop", "business_type", "stage", "stage_since", "valid_from", NULL
};
enum
{
	V_ID, V_AT, V_ACTOR, V_KIND, V_MANAGED, V_TABLE, V_KEY, V_FROM, V_TO, V_RULE, V_REASON, V_DETAIL,
	V_TEAM, V_TERRITORY, V_SOURCE, V_PINNED, V_PERIOD, V_TIER, V_CROP, V_BTYPE, V_STAGE, V__N
};
/* the fields of allocation._entry, in order */
enum
{
	E_ORD, E_MANAGED, E_OP, E_KEY, E_REP, E_OLD_REP, E_TEAM, E_TERRITORY, E_RULE, E_SOURCE, E_PINNED,
	E_KIND, E_REASON, E_TIER, E_CROP, E_BTYPE, E_SUGGEST, E_STAGE, E_REQUESTED, E_STATE, E_PLAN, E__N
};
static const char *const event_columns[V__N + 1] = {
	"id", "at", "actor", "kind", "managed_id", "table_name", "key", "from_rep", "to_rep", "rule_id",
	"reason", "detail", "team_id", "territory_id", "source", "pinned", "period", "tier", "crop",
	"business_type", "stage", NULL
};

/*
 * Whether a new ownership is what a rule decided and nobody pinned: its
 * event alone records it (no allocation.customer_state row).  The one place
 * of this rule: the direct writer asks it, and _record_batch gets its answer
 * in each entry (allocation._entry.state).
 */
static bool
entry_is_default_state(Entry *e)
{
	return e->rep != 0 && !e->pinned && e->source != NULL &&
		(strcmp(e->source, "rule") == 0 || strcmp(e->source, "reevaluate") == 0);
}
/*
 * The direct path's one SPI query per statement: the counters (one write per
 * rep), the FOR KEY SHARE locks a foreign key would take per row (once per
 * referenced rep and table), and whether registration protection applies.
 */
static bool
direct_statement_query(Datum actor, Deltas *d, int64 *reps, int nreps, int32 *managed, int nman)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[5] = {INT8ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, INT4ARRAYOID, TEXTOID};
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Datum	   *repd = palloc(sizeof(Datum) * Max(nreps, 1)),
			   *mand = palloc(sizeof(Datum) * Max(nman, 1));
	bool		isnull;
	int			i;

	for (i = 0; i < nreps; i++)
		repd[i] = Int64GetDatum(reps[i]);
	for (i = 0; i < nman; i++)
		mand[i] = Int32GetDatum(managed[i]);
	args[0] = PointerGetDatum(construct_array(repd, nreps, INT8OID, 8, true, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(mand, nman, INT4OID, 4, true, TYPALIGN_INT));
	if (d->n > 0)
	{
		args[2] = datum_array(d->rep, NULL, d->n, INT8OID);
		args[3] = datum_array(d->count, NULL, d->n, INT4OID);
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
				 errdetail("A rep the rules chose was deleted (by a concurrent transaction, or by a trigger of this statement) before the statement's rows were written; no ownership may name it."),
				 errhint("Retry the statement.")));
	if (DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) != nman)
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("the table is no longer managed"),
				 errdetail("A concurrent transaction removed the table from allocation.managed_table."),
				 errhint("Retry the statement.")));
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
}

/* The relation and primary-key index of one of the extension's tables, opened with lockmode */
static void
open_with_pkey(const char *name, LOCKMODE lockmode, Relation *rel, Relation *ix)
{
	char		ixname[NAMEDATALEN];
	Oid			relid = get_relname_relid(name, alloc_oids.schema),
				ixid;

	snprintf(ixname, sizeof(ixname), "%s_pkey", name);
	ixid = get_relname_relid(ixname, alloc_oids.schema);
	if (!OidIsValid(relid) || !OidIsValid(ixid))
		elog(ERROR, "allocation.%s or its primary key is missing", name);
	*rel = table_open(relid, lockmode);
	*ix = index_open(ixid, AccessShareLock);
}

/* FOR KEY SHARE locks on the rows with these keys; the number found */
static int
lock_referenced(const char *name, Datum *keys, int n, RegProcedure eqproc, Snapshot snap)
{
	Relation	rel,
				ix;
	TupleTableSlot *slot;
	int			i,
				found = 0;

	open_with_pkey(name, RowShareLock, &rel, &ix);
	slot = table_slot_create(rel, NULL);
	for (i = 0; i < n; i++)
		if (writer_lock_row(rel, ix, keys[i], eqproc, snap, LockTupleKeyShare, true, slot) == ROWLOCK_OK)
			found++;
	ExecDropSingleTupleTableSlot(slot);
	index_close(ix, NoLock);
	table_close(rel, NoLock);
	return found;
}

/*
 * held += n on the counters of the statement's reps, in rep id order, each
 * row locked first (FOR NO KEY UPDATE, as the UPDATE would).  false, having
 * done nothing, when rep_load has triggers the direct path does not know.
 */
static bool
update_counters(Deltas *d, Snapshot snap)
{
	static const char *const cols[] = {"rep_id", "held", "reserved", NULL};
	Relation	ix;
	RowWriter  *w;
	TupleTableSlot *slot;
	int64	   *reps = palloc(sizeof(int64) * Max(d->n, 1));
	Datum	   *values;
	bool	   *isnull;
	AttrNumber	held;
	int			i,
				k,
				natts;

	w = writer_open(get_relname_relid("rep_load", alloc_oids.schema), 1, NULL, cols);
	if (w == NULL)
		return false;
	if (!writer_can_update(w, 1))
	{
		writer_close(w);
		return false;
	}
	ix = index_open(get_relname_relid("rep_load_pkey", alloc_oids.schema), RowExclusiveLock);
	slot = table_slot_create(writer_relation(w), NULL);
	natts = RelationGetDescr(writer_relation(w))->natts;
	values = palloc(sizeof(Datum) * natts);
	isnull = palloc(sizeof(bool) * natts);
	held = attnameAttNum(writer_relation(w), "held", false);
	for (i = 0; i < d->n; i++)
		reps[i] = DatumGetInt64(d->rep[i]);
	qsort(reps, d->n, sizeof(int64), cmp_int64);
	for (i = 0; i < d->n; i++)
	{
		int32		n = 0;

		for (k = 0; k < d->n; k++)
			if (DatumGetInt64(d->rep[k]) == reps[i])
				n = DatumGetInt32(d->count[k]);
		if (n == 0 ||
			writer_lock_row(writer_relation(w), ix, Int64GetDatum(reps[i]), F_INT8EQ, snap,
							LockTupleNoKeyExclusive, true, slot) != ROWLOCK_OK)
			continue;			/* no counter row: the UPDATE would change nothing either */
		slot_getallattrs(slot);
		memcpy(values, slot->tts_values, sizeof(Datum) * natts);
		memcpy(isnull, slot->tts_isnull, sizeof(bool) * natts);
		values[held - 1] = Int32GetDatum(DatumGetInt32(values[held - 1]) + n);
		writer_update(w, slot, values, isnull);
	}
	ExecDropSingleTupleTableSlot(slot);
	index_close(ix, NoLock);
	writer_close(w);
	return true;
}

/* Whether registration protection may apply: some claim policy sets it, and the actor is a rep */
static bool
protection_applies(Datum actor, Snapshot snap)
{
	Relation	rel;
	TableScanDesc scan;
	TupleTableSlot *slot;
	AttrNumber	att;
	bool		any = false,
				isnull;

	rel = table_open(get_relname_relid("claim_policy", alloc_oids.schema), AccessShareLock);
	att = attnameAttNum(rel, "protection", false);
	slot = table_slot_create(rel, NULL);
	scan = table_beginscan(rel, snap, 0, NULL);
	while (!any && table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		(void) slot_getattr(slot, att, &isnull);
		any = !isnull;
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, NoLock);
	if (!any)
		return false;
	rel = table_open(alloc_oids.rep, AccessShareLock);
	att = attnameAttNum(rel, "login", false);
	slot = table_slot_create(rel, NULL);
	scan = table_beginscan(rel, snap, 0, NULL);
	any = false;
	while (!any && table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		Datum		login = slot_getattr(slot, att, &isnull);

		any = !isnull && strcmp(NameStr(*DatumGetName(login)), TextDatumGetCString(actor)) == 0;
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, NoLock);
	return any;
}

/*
 * The direct path's statement work without SPI: the FOR KEY SHARE locks a
 * foreign key would take per row (once per referenced rep and table), the
 * counters (one update per rep), and whether registration protection
 * applies (-1: the counters table is not as the extension made it, use
 * direct_statement_query).  Under a snapshot taken now, after this
 * transaction's earlier commands, as the SQL would.
 */
static int
direct_statement_rows(Datum actor, Deltas *d, int64 *reps, int nreps, int32 *managed, int nman)
{
	Datum	   *keys = palloc(sizeof(Datum) * Max(Max(nreps, nman), 1));
	Snapshot	snap;
	int			i,
				result = -1;

	CommandCounterIncrement();
	snap = GetTransactionSnapshot();
	PushActiveSnapshot(snap);
	snap = GetActiveSnapshot();
	for (i = 0; i < nreps; i++)
		keys[i] = Int64GetDatum(reps[i]);
	if (lock_referenced("rep", keys, nreps, F_INT8EQ, snap) != nreps)
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("a rep assigned by this statement no longer exists"),
				 errdetail("A rep the rules chose was deleted (by a concurrent transaction, or by a trigger of this statement) before the statement's rows were written; no ownership may name it."),
				 errhint("Retry the statement.")));
	for (i = 0; i < nman; i++)
		keys[i] = Int32GetDatum(managed[i]);
	if (lock_referenced("managed_table", keys, nman, F_INT4EQ, snap) != nman)
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("the table is no longer managed"),
				 errdetail("A concurrent transaction removed the table from allocation.managed_table."),
				 errhint("Retry the statement.")));
	if (update_counters(d, snap))
		result = protection_applies(actor, snap) ? 1 : 0;
	PopActiveSnapshot();
	return result;
}

/* Registration protection (报备) of the statement's new customers, by _record_protection */
static void
direct_protection(Frame *f, Datum actor)
{
	Oid			ptypes[4] = {TEXTOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		pargs[4];
	Datum	   *man = palloc(sizeof(Datum) * f->n),
			   *key = palloc(sizeof(Datum) * f->n),
			   *tier = palloc(sizeof(Datum) * f->n);
	bool	   *tier_null = palloc(sizeof(bool) * f->n);
	int			i,
				n = 0;

	for (i = 0; i < f->n; i++)
		if (f->entries[i].confirmed)
		{
			man[n] = Int32GetDatum(f->entries[i].managed_id);
			key[n] = CStringGetTextDatum(f->entries[i].key);
			tier_null[n] = (f->entries[i].tier == NULL);
			tier[n] = tier_null[n] ? (Datum) 0 : CStringGetTextDatum(f->entries[i].tier);
			n++;
		}
	pargs[0] = actor;
	pargs[1] = datum_array(man, NULL, n, INT4OID);
	pargs[2] = datum_array(key, NULL, n, TEXTOID);
	pargs[3] = datum_array(tier, tier_null, n, TEXTOID);
	if (SPI_execute_with_args("SELECT allocation._record_protection($1, $2, $3, $4)",
							  4, ptypes, pargs, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "recording registration protection failed");
}

/* The state exceptions: a row per new customer that no rule owns unpinned */
static void
direct_write_states(Frame *f, RowWriter *wa, TimestampTz now)
{
	Datum		v[R__N];
	bool		nul[R__N];
	int			i;

	for (i = 0; i < f->n; i++)
	{
		Entry	   *e = &f->entries[i];
		MemoryContext old;

		if (!e->confirmed || entry_is_default_state(e))
			continue;
		old = MemoryContextSwitchTo(writer_row_context(wa));
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

/* The ownership events: one per new customer, period open */
static void
direct_write_events(Frame *f, RowWriter *we, Datum actor, TimestampTz now)
{
	Datum		v[V__N];
	bool		nul[V__N];
	Oid			seq = writer_identity_seq(we, "id");
	ManagedTable *mt = NULL;
	int			i;

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
		SET_I8(V_TEAM, e->team);
		SET_I8(V_TERRITORY, e->territory);
		SET_TEXT(V_SOURCE, e->source);
		SET_DATUM(V_PINNED, BoolGetDatum(e->pinned));
		SET_TEXT(V_PERIOD, "open");
		SET_TEXT(V_TIER, e->tier);
		SET_TEXT(V_CROP, e->crop);
		SET_TEXT(V_BTYPE, e->btype);
		SET_TEXT(V_STAGE, e->stage);
		writer_add(we, v, nul);
		MemoryContextSwitchTo(old);
	}
	writer_close(we);
}

/*
 * Writes a plain-insert frame without the PL/pgSQL batch writer: one SPI
 * query per statement (direct_statement_query), then the state exception and
 * event rows through writer.c.  Returns false, having done nothing, when
 * customer_state or event is not writable directly.  Runs inside the flush's
 * SPI session, as the extension owner.
 */
static bool
flush_direct(Frame *f, Datum actor, Deltas *d)
{
	RowWriter  *wa = NULL,
			   *we;
	int64	   *reps = palloc(sizeof(int64) * f->n);
	int32		managed[8];
	int			nreps = 0,
				nman = 0,
				protect,
				i,
				j;
	/* the clock, read while the customers' rows are locked: one customer's times never go back */
	TimestampTz now = GetCurrentTimestamp();

	/* the reps and managed tables the new ownerships reference */
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
	/* customer_state is opened only when a row needs an exception (most statements: none) */
	for (i = 0; i < f->n; i++)
		if (f->entries[i].confirmed && !entry_is_default_state(&f->entries[i]))
			break;
	if (i < f->n)
	{
		wa = writer_open(get_relname_relid("customer_state", alloc_oids.schema), 2, NULL, state_columns);
		if (wa == NULL)
			return false;
	}
	we = writer_open(get_relname_relid("event", alloc_oids.schema), 0, "ownership_loaded", event_columns);
	if (we == NULL)
	{
		if (wa)
			writer_close(wa);
		return false;
	}
	writer_defer_hash_index(we);	/* nothing reads events until direct_write_events closes it */
	/* open ownership events with a key and a managed table, by construction */
	writer_trust_checks(we, (const char *const[]) {"event_check", "event_period_check", NULL});
	qsort(reps, nreps, sizeof(int64), cmp_int64);
	for (i = 0, j = 0; i < nreps; i++)
		if (j == 0 || reps[i] != reps[j - 1])
			reps[j++] = reps[i];
	nreps = j;

	protect = direct_statement_rows(actor, d, reps, nreps, managed, nman);
	if (protect < 0)			/* a DBA's trigger on rep_load: the SQL statement fires it */
		protect = direct_statement_query(actor, d, reps, nreps, managed, nman) ? 1 : 0;
	if (protect)
		direct_protection(f, actor);
	if (wa)
		direct_write_states(f, wa, now);
	direct_write_events(f, we, actor, now);
	return true;
}

/* The entry's operation as _record_batch names it */
static const char *
op_name(EntryOp op)
{
	return op == OP_INSERT ? "insert" : op == OP_UPDATE ? "update" : op == OP_REFRESH ? "refresh" : "delete";
}

/*
 * The frame's stored entries as an allocation._entry[] (NULL when none was
 * stored): the one entry type both recording paths take.
 */
static Datum
entries_array(Frame *f, int *nstored)
{
	Oid			typid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum("_entry"),
										ObjectIdGetDatum(alloc_oids.schema));
	TupleDesc	td;
	Datum	   *rows = palloc(sizeof(Datum) * f->n);
	int			i,
				n = 0;

	if (!OidIsValid(typid))
		elog(ERROR, "type allocation._entry is missing");
	td = lookup_rowtype_tupdesc(typid, -1);
	for (i = 0; i < f->n; i++)
	{
		Entry	   *e = &f->entries[i];
		Datum		v[E__N];
		bool		nul[E__N];

		if (!e->confirmed)
			continue;
		SET_DATUM(E_ORD, Int32GetDatum(n + 1));
		SET_DATUM(E_MANAGED, Int32GetDatum(e->managed_id));
		SET_TEXT(E_OP, op_name(e->op));
		SET_TEXT(E_KEY, e->key);
		SET_I8(E_REP, e->rep);
		SET_I8(E_OLD_REP, e->old_rep);
		SET_I8(E_TEAM, e->team);
		SET_I8(E_TERRITORY, e->territory);
		SET_I8(E_RULE, e->rule);
		SET_TEXT(E_SOURCE, e->source);
		SET_DATUM(E_PINNED, BoolGetDatum(e->pinned));
		SET_TEXT(E_KIND, e->kind);
		SET_TEXT(E_REASON, e->reason);
		SET_TEXT(E_TIER, e->tier);
		SET_TEXT(E_CROP, e->crop);
		SET_TEXT(E_BTYPE, e->btype);
		SET_I8(E_SUGGEST, e->suggest);
		SET_TEXT(E_STAGE, e->stage);
		SET_I8(E_REQUESTED, e->requested);
		SET_DATUM(E_STATE, BoolGetDatum(!entry_is_default_state(e)));
		SET_I8(E_PLAN, e->realign_plan);
		rows[n++] = HeapTupleGetDatum(heap_form_tuple(td, v, nul));
	}
	ReleaseTupleDesc(td);
	*nstored = n;
	if (n == 0)
		return (Datum) 0;
	return PointerGetDatum(construct_array(rows, n, typid, -1, false, TYPALIGN_DOUBLE));
}

/*
 * The counters of reps losing customers are written by the batch writer:
 * lock them first, in rep id order and under the ordered-locking rule, so a
 * release never waits in a cycle (55P03 instead of a deadlock).
 */
static void
lock_released_counters(Frame *f)
{
	int64	   *released = palloc(sizeof(int64) * f->n);
	int			nrel = 0,
				i;

	for (i = 0; i < f->n; i++)
		if (f->entries[i].confirmed && f->entries[i].old_rep)
			released[nrel++] = f->entries[i].old_rep;
	qsort(released, nrel, sizeof(int64), cmp_int64);
	for (i = 0; i < nrel; i++)
		if ((i == 0 || released[i] != released[i - 1]) && !assign_lock_released(released[i]))
		{
			RepInfo    *rep = config_get_rep(released[i]);

			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("rep %s is busy", rep ? rep->code : "?"),
					 errdetail("Another open transaction is taking or releasing customers of rep %s; waiting for it to release one of its customers here could deadlock with this transaction's own earlier assignments.",
							   rep ? rep->code : "?"),
					 errhint("Retry after the other transaction ends, or change owners in rep id order within one transaction.")));
		}
}

/* Hands the entries to allocation._record_batch (the SQL path), as the extension owner */
static void
record_batch_sql(Datum actor, Datum entries, Deltas *d)
{
	static SPIPlanPtr plan = NULL;
	static Oid	plan_type = InvalidOid;	/* the extension may be dropped and created again */
	Oid			types[4];
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Oid			entry_type = DatumGetArrayTypeP(entries)->elemtype;

	if (plan != NULL && plan_type != entry_type)
	{
		SPI_freeplan(plan);
		plan = NULL;
	}
	if (plan == NULL)
	{
		types[0] = TEXTOID;
		types[1] = get_array_type(entry_type);
		plan_type = entry_type;
		types[2] = INT8ARRAYOID;
		types[3] = INT4ARRAYOID;
		plan = SPI_prepare("SELECT allocation._record_batch($1, $2, $3, $4)", 4, types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare of the batch writer failed");
		SPI_keepplan(plan);
	}
	args[0] = actor;
	args[1] = entries;
	if (d->n == 0)
		nulls[2] = nulls[3] = 'n';
	else
	{
		args[2] = datum_array(d->rep, NULL, d->n, INT8OID);
		args[3] = datum_array(d->count, NULL, d->n, INT4OID);
	}
	/* the event log's ownership_loaded trigger asks allocation._in_batch() */
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
}

/*
 * Writes a statement's frame: directly when it only inserted customers and
 * the engine's tables allow it, else through allocation._record_batch; then
 * the identities, and the counters this backend holds are noted.
 */
void
flush_frame(Frame *f)
{
	AllocUserSwitch sw;
	Deltas		d;
	Datum		actor,
				entries;
	int			i,
				n;

	if (f->n == 0)
		return;
	/*
	 * Rows that were not stored: their slots are not taken after all.  A
	 * suggestion's slot is not a held one: the suggestion written by the
	 * batch counts it (rep_load.reserved).
	 */
	for (i = 0; i < f->n; i++)
		if (f->entries[i].reserved && (!f->entries[i].confirmed || f->entries[i].suggest))
			frames_add_reservation_in(f, f->entries[i].reserved, -1);
	collect_deltas(f, &d);
	actor = CStringGetTextDatum(GetUserNameFromId(f->actor, false));

	if (frame_is_plain_insert(f))
	{
		bool		done;

		alloc_spi_begin(&sw);
		done = flush_direct(f, actor, &d);
		if (done)
			flush_identities(f, actor);
		alloc_spi_end(&sw);
		if (done)
		{
			f->written_direct = true;
			for (i = 0; i < d.n; i++)
				assign_note_written(DatumGetInt64(d.rep[i]), DatumGetInt32(d.count[i]));
			return;
		}
	}

	alloc_lookup_oids();
	entries = entries_array(f, &n);
	if (n == 0)
	{
		/* nothing stored; identities registered for the rows may need forgetting */
		for (i = 0; i < f->n; i++)
			if (f->entries[i].identity)
				break;
		if (i == f->n)
			return;
		alloc_spi_begin(&sw);
		flush_identities(f, actor);
		alloc_spi_end(&sw);
		return;
	}
	lock_released_counters(f);

	alloc_spi_begin(&sw);
	record_batch_sql(actor, entries, &d);
	flush_identities(f, actor);
	alloc_spi_end(&sw);

	/* the counters now include this statement; we hold their locks */
	for (i = 0; i < d.n; i++)
		assign_note_written(DatumGetInt64(d.rep[i]), DatumGetInt32(d.count[i]));
	for (i = 0; i < f->n; i++)
		if (f->entries[i].confirmed && f->entries[i].old_rep)
			assign_note_written(f->entries[i].old_rep, 0);	/* re-read it */
	/* suggestions were made, accepted or ended: reserved slots moved; re-read what we hold */
	for (i = 0; i < f->n; i++)
		if (f->entries[i].confirmed && (f->entries[i].suggest || f->entries[i].op == OP_UPDATE ||
										f->entries[i].op == OP_DELETE))
		{
			assign_forget_bases();
			break;
		}
}

void
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