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
	V_PERIOD, V_TIER, V_CROP, V_BTYPE, V_STAGE, V__N
};
static const char *const event_columns[V__N + 1] = {
	"id", "at", "actor", "kind", "managed_id", "table_name", "key", "from_rep", "to_rep", "rule_id",
	"reason", "detail", "period", "tier", "crop", "business_type", "stage", NULL
};

/*
 * Whether a new customer's ownership is what a rule decided and nobody
 * pinned: its event alone records it (no allocation.customer_state row).
 */
static bool
entry_is_default_state(Entry *e)
{
	return e->rep != 0 && !e->pinned && e->source != NULL &&
		(strcmp(e->source, "rule") == 0 || strcmp(e->source, "reevaluate") == 0);
}

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
	/* the clock, read while the customers' rows are locked: one customer's times never go back */
	TimestampTz now = GetCurrentTimestamp();
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
	wa = writer_open(get_relname_relid("customer_state", alloc_oids.schema), 2, NULL, state_columns);
	if (wa == NULL)
		return false;
	we = writer_open(get_relname_relid("event", alloc_oids.schema), 0, "ownership_loaded", event_columns);
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

	/* the state exceptions: a row per new customer that no rule owns unpinned */
	{
		Datum		v[R__N];
		bool		nul[R__N];

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
	return true;
}

void
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