/*
 * claims.c
 *		claim() and release(): a rep takes a customer from the public pool or
 *		gives one back.
 *
 * The SQL-callable functions run as the caller (SECURITY INVOKER), so they
 * know who is asking: the rep is the one whose login is the current role.
 * The checks and the counters (allocation._claim / _release, PL/pgSQL) then
 * run as the extension owner, and the owner change itself is an UPDATE of
 * the customer table run as that table's owner -- through the managed
 * table's own triggers, so capacity and exclusive territories are enforced
 * exactly as for any other write, and the user's own triggers never run
 * with more rights than the table owner has.
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "catalog/namespace.h"

#include "storage/proc.h"

#include "utils/tuplestore.h"


#include "utils/array.h"

#include "funcapi.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "allocation.h"

static void
require_arg(FunctionCallInfo fcinfo, int i, const char *what)
{
	if (PG_ARGISNULL(i))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", what),
				 errdetail("allocation.%s() was called with a NULL %s.", get_func_name(fcinfo->flinfo->fn_oid), what),
				 errhint("Pass the managed table, the customer key%s.",
						 strcmp(what, "reason") == 0 ? " and why" : "")));
}

/* Whether the role may make managers' decisions (it can run allocation.assign()) */
static bool
is_manager(Oid role)
{
	AllocUserSwitch sw;
	Oid			types[1] = {OIDOID};
	Datum		vals[1];
	bool		ok,
				isnull;

	vals[0] = ObjectIdGetDatum(role);
	alloc_spi_begin(&sw);
	if (SPI_execute_with_args("SELECT pg_catalog.has_function_privilege($1, "
							  "'allocation.assign(pg_catalog.regclass, pg_catalog.text, pg_catalog.int8, pg_catalog.text)'"
							  "::pg_catalog.regprocedure, 'EXECUTE')", 1, types, vals, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "privilege check failed");
	ok = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	alloc_spi_end(&sw);
	return ok;
}

/* Runs one internal function as the extension owner, events naming the caller */
static void
run_as_owner(const char *sql, int nargs, Oid *types, Datum *vals, const char *nulls, Oid caller)
{
	AllocUserSwitch sw;
	Oid			save = alloc_actor_override;

	alloc_actor_override = caller;
	PG_TRY();
	{
		alloc_spi_begin(&sw);
		if (SPI_execute_with_args(sql, nargs, types, vals, nulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "%s failed", sql);
		alloc_spi_end(&sw);
	}
	PG_FINALLY();
	{
		alloc_actor_override = save;
	}
	PG_END_TRY();
}

/* claim(tbl, key) for the current rep; claim(tbl, key, rep) for a manager */
PG_FUNCTION_INFO_V1(allocation_claim);
Datum
allocation_claim(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	int64		rep;
	Oid			types[4] = {REGCLASSOID, TEXTOID, INT8OID, TEXTOID};
	Datum		vals[4];

	require_arg(fcinfo, 0, "table");
	require_arg(fcinfo, 1, "key");
	if (PG_NARGS() > 2)
	{
		require_arg(fcinfo, 2, "rep");
		rep = PG_GETARG_INT64(2);
	}
	else if ((rep = alloc_rep_of_role(caller)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_NOT_A_REP),
				 errmsg("role \"%s\" is no rep's login", GetUserNameFromId(caller, false)),
				 errdetail("allocation.claim(table, key) claims for the rep whose login is the current role."),
				 errhint("Set allocation.rep.login for this role, or let a manager call allocation.claim(table, key, rep).")));
	vals[0] = PG_GETARG_DATUM(0);
	vals[1] = PG_GETARG_DATUM(1);
	vals[2] = Int64GetDatum(rep);
	vals[3] = CStringGetTextDatum(GetUserNameFromId(caller, false));
	run_as_owner("SELECT allocation._claim($1, $2, $3, $4)", 4, types, vals, NULL, caller);
	PG_RETURN_VOID();
}

/* release(tbl, key, reason): a rep gives back its own customer; a manager any */
PG_FUNCTION_INFO_V1(allocation_release);
Datum
allocation_release(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	int64		rep;
	Oid			types[5] = {REGCLASSOID, TEXTOID, TEXTOID, INT8OID, TEXTOID};
	Datum		vals[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	require_arg(fcinfo, 0, "table");
	require_arg(fcinfo, 1, "key");
	rep = alloc_rep_of_role(caller);
	if (rep == 0 && !is_manager(caller))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_NOT_A_REP),
				 errmsg("role \"%s\" is no rep's login and no manager", GetUserNameFromId(caller, false)),
				 errdetail("A rep releases its own customers; a manager (who may run allocation.assign()) releases any."),
				 errhint("Set allocation.rep.login for this role, or grant it the manager kind with allocation.grant_role().")));
	vals[0] = PG_GETARG_DATUM(0);
	vals[1] = PG_GETARG_DATUM(1);
	if (PG_ARGISNULL(2))
		nulls[2] = 'n';
	else
		vals[2] = PG_GETARG_DATUM(2);
	if (rep == 0)
		nulls[3] = 'n';
	else
		vals[3] = Int64GetDatum(rep);
	vals[4] = CStringGetTextDatum(GetUserNameFromId(caller, false));
	run_as_owner("SELECT allocation._release($1, $2, $3, $4, $5)", 5, types, vals, nulls, caller);
	PG_RETURN_VOID();
}

/*
 * _table_rows(tbl, cols, key, lock): rows of a managed table read as its
 * owner, each as a text[] of the named columns (their text form); key NULL
 * = every row, else the row with that key; lock '' or 'update', 'update
 * nowait', 'update skip locked'.  Internal (only the extension owner).
 */
/* "key_column = $n::key_type" for a managed table */
static char *
key_condition(ManagedTable *mt, int param)
{
	Form_pg_attribute katt = TupleDescAttr(mt->tupdesc, mt->key_att - 1);

	return psprintf("%s = $%d::%s", quote_identifier(NameStr(katt->attname)), param,
					format_type_with_typemod(katt->atttypid, katt->atttypmod));
}

static bool
has_column(TupleDesc td, const char *col)
{
	int			i;

	for (i = 0; i < td->natts; i++)
		if (!TupleDescAttr(td, i)->attisdropped && strcmp(NameStr(TupleDescAttr(td, i)->attname), col) == 0)
			return true;
	return false;
}

PG_FUNCTION_INFO_V1(allocation_table_rows);
Datum
allocation_table_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			relid;
	ArrayType  *cols;
	char	   *lock = PG_ARGISNULL(3) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(3));
	ManagedTable *mt;
	Datum	   *elems;
	bool	   *enulls;
	int			ncols,
				i;
	StringInfoData sql;
	AllocOwnerSwitch osw;
	Oid			types[1] = {TEXTOID};
	Datum		vals[1];
	Tuplestorestate *ts;
	TupleDesc	tupdesc;
	MemoryContext oldcxt;
	uint64		r;

	alloc_lookup_oids();
	if (GetUserId() != alloc_oids.schema_owner && !superuser())
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("allocation._table_rows() is internal")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("allocation._table_rows() needs a table and a column list")));
	relid = PG_GETARG_OID(0);
	cols = PG_GETARG_ARRAYTYPE_P(1);
	if (strcmp(lock, "") != 0 && strcmp(lock, "update") != 0 && strcmp(lock, "update nowait") != 0 &&
		strcmp(lock, "update skip locked") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown lock mode \"%s\"", lock),
				 errhint("Use '', 'update', 'update nowait' or 'update skip locked'.")));
	config_prepare();
	mt = config_get_table(relid, false);
	deconstruct_array(cols, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &ncols);
	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ARRAY[");
	for (i = 0; i < ncols; i++)
	{
		char	   *col = enulls[i] ? NULL : TextDatumGetCString(elems[i]);

		if (i > 0)
			appendStringInfoString(&sql, ", ");
		if (col == NULL || !has_column(mt->tupdesc, col))
			appendStringInfoString(&sql, "NULL::pg_catalog.text");
		else
			appendStringInfo(&sql, "t.%s::pg_catalog.text", quote_identifier(col));
	}
	appendStringInfo(&sql, "]::pg_catalog.text[] FROM %s t", mt->name);
	if (!PG_ARGISNULL(2))
	{
		appendStringInfo(&sql, " WHERE t.%s", key_condition(mt, 1));
		vals[0] = PG_GETARG_DATUM(2);
	}
	if (lock[0])
		appendStringInfo(&sql, " FOR %s", lock);

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) || !(rsinfo->allowedModes & SFRM_Materialize))
		elog(ERROR, "allocation._table_rows() must be called in a context that accepts a set");
	oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	tupdesc = CreateTemplateTupleDesc(1);
	TupleDescInitEntry(tupdesc, 1, "r", TEXTARRAYOID, -1, 0);
	tupdesc = BlessTupleDesc(tupdesc);
	ts = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(oldcxt);

	/* (a read runs no triggers: temporary objects are not refused here) */
	alloc_become_table_owner(relid, &osw);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args(sql.data, PG_ARGISNULL(2) ? 0 : 1, types, vals, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "reading a customer table failed");
		for (r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);

			oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
			tuplestore_putvalues(ts, tupdesc, &d, &isnull);
			MemoryContextSwitchTo(oldcxt);
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		alloc_restore_table_owner(&osw);
	}
	PG_END_TRY();
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = ts;
	rsinfo->setDesc = tupdesc;
	return (Datum) 0;
}

/* _set_actor(role name): the actor of this transaction's events (NULL: the current user) */
PG_FUNCTION_INFO_V1(allocation_set_actor);
Datum
allocation_set_actor(PG_FUNCTION_ARGS)
{
	alloc_lookup_oids();
	if (GetUserId() != alloc_oids.schema_owner && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("allocation._set_actor() is internal")));
	alloc_actor_override = PG_ARGISNULL(0) ? InvalidOid :
		get_role_oid(text_to_cstring(PG_GETARG_TEXT_PP(0)), true);
	PG_RETURN_VOID();
}

/*
 * The engine's UPDATE of one customer row (owner := rep, or for a realignment
 * owner := owner), run with change as the context its row trigger reads.
 */
static bool
owner_update_run(Oid relid, char *key, const char *source, bool rep_null, Datum rep, AllocChange *change)
{
	ManagedTable *mt;
	char	   *sql;
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		vals[2];
	char		nulls[2] = {' ', ' '};
	bool		found;
	AllocOwnerSwitch osw;
	AllocChange *save_change = alloc_change;
	Oid			save_actor = alloc_actor_override;
	bool		as_caller;
	bool		realign = strcmp(source, "realign") == 0;
	const char *owner_col;

	config_prepare();
	mt = config_get_table(relid, false);
	owner_col = quote_identifier(NameStr(TupleDescAttr(mt->tupdesc, mt->owner_att - 1)->attname));
	/* a realignment leaves the owner column to the trigger's re-evaluation */
	sql = psprintf("UPDATE %s SET %s = %s WHERE %s",
				   mt->name, owner_col, realign ? owner_col : "$1", key_condition(mt, 2));
	if (rep_null || realign)
		nulls[0] = 'n';
	else
		vals[0] = rep;
	vals[1] = CStringGetTextDatum(key);

	/*
	 * The UPDATE runs the table's triggers as the table owner (see
	 * alloc_become_table_owner), never in a session with temporary objects.
	 * What the row trigger records (source, reason) travels in backend
	 * memory, for this table and key only, used once.
	 */
	change->relid = relid;
	change->key = key;
	change->source = source;
	change->used = false;
	change->actor = alloc_actor_id();
	change->cid = GetCurrentCommandId(false);
	change->result = NULL;
	change->result_rep = 0;
	change->items = NULL;
	change->nitems = 0;
	change->next = 0;
	as_caller = (strcmp(source, "manual") == 0 || strcmp(source, "suggestion") == 0);
	if (as_caller)
	{
		/*
		 * A manager's decision (assign, accept_suggestion) is the manager's
		 * own UPDATE: their rights on the table (and its row-level
		 * security), their triggers' rights -- as it always was.
		 */
		alloc_become_caller(alloc_actor_id(), &osw);
	}
	else
	{
		alloc_refuse_temp_objects(realign ? "a realignment" : "a claim, release or recycle");
		alloc_become_table_owner(relid, &osw);
	}
	alloc_change = change;
	/*
	 * Only the engine's own UPDATE is the caller's act (its statement batch
	 * takes change.actor): what the table's triggers do meanwhile is named
	 * after the role they run as.
	 */
	alloc_actor_override = InvalidOid;
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args(sql, 2, types, vals, nulls, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "updating the owner of a customer failed");
		found = SPI_processed > 0;
		SPI_finish();
	}
	PG_FINALLY();
	{
		alloc_change = save_change;
		alloc_actor_override = save_actor;
		/* settings the table's triggers changed (even session-wide ones) are thrown away */
		alloc_restore_table_owner(&osw);
	}
	PG_END_TRY();
	return found;
}

/*
 * _owner_update(tbl, key, rep, source, reason): the owner change of claim,
 * release and recycle -- an UPDATE of the customer row run as the table's
 * owner, with the source and reason the row trigger records.  Returns
 * whether the row exists.  Internal: only the extension owner runs it.
 */
PG_FUNCTION_INFO_V1(allocation_owner_update);
Datum
allocation_owner_update(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *key;
	char	   *source;
	bool		found;
	AllocChange change;

	alloc_lookup_oids();
	if (GetUserId() != alloc_oids.schema_owner && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("allocation._owner_update() is internal"),
				 errhint("Use allocation.claim(), allocation.release() or allocation.assign().")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("allocation._owner_update() needs a table, a key and a source"),
				 errdetail("It was called with a NULL table, key or source."),
				 errhint("Use allocation.claim(), allocation.release() or allocation.assign().")));
	relid = PG_GETARG_OID(0);
	key = text_to_cstring(PG_GETARG_TEXT_PP(1));
	source = text_to_cstring(PG_GETARG_TEXT_PP(3));
	if (strcmp(source, "manual") != 0 && strcmp(source, "suggestion") != 0 &&
		strcmp(source, "claim") != 0 && strcmp(source, "recycle") != 0 && strcmp(source, "release") != 0 &&
		strcmp(source, "transfer") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown owner change source \"%s\"", source),
				 errdetail("The sources are manual, suggestion, claim, release, recycle and transfer."),
				 errhint("Use allocation.claim(), allocation.release() or allocation.assign().")));
	change.reason = PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4));
	change.plan = 0;
	found = owner_update_run(relid, key, source, PG_ARGISNULL(2), PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2), &change);
	PG_RETURN_BOOL(found);
}

/*
 * _realign_move(tbl, key, plan, reason): one customer of a realignment decided
 * again by the rules (the plan's configuration is committed): the row
 * trigger's re-evaluation, recorded as kind "realign" naming the plan.
 * Returns the outcome (moved, unchanged, suggest, pinned, disputed; NULL when
 * the row is gone) and the owner after it.  The caller holds the row lock.
 */
PG_FUNCTION_INFO_V1(allocation_realign_move);
Datum
allocation_realign_move(PG_FUNCTION_ARGS)
{
	AllocChange change;
	TupleDesc	td;
	Datum		v[2];
	bool		n[2] = {false, false};

	alloc_lookup_oids();
	if (GetUserId() != alloc_oids.schema_owner && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("allocation._realign_move() is internal"),
				 errhint("Use CALL allocation.realign_apply().")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("allocation._realign_move() needs a table, a key and a plan"),
				 errdetail("It was called with a NULL table, key or plan."),
				 errhint("Use CALL allocation.realign_apply().")));
	if (get_call_result_type(fcinfo, NULL, &td) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "_realign_move must return a record");
	change.plan = PG_GETARG_INT64(2);
	change.reason = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	if (!owner_update_run(PG_GETARG_OID(0), text_to_cstring(PG_GETARG_TEXT_PP(1)), "realign", true, (Datum) 0, &change) ||
		change.result == NULL)
	{
		n[0] = n[1] = true;
	}
	else
	{
		v[0] = CStringGetTextDatum(change.result);
		v[1] = Int64GetDatum(change.result_rep);
		n[1] = change.result_rep == 0;
	}
	td = BlessTupleDesc(td);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(td, v, n)));
}

/*
 * ---------- Realignment batches (set-based apply) ----------
 *
 * _realign_lock_batch(tbl, keys text[]): locks the rows of the listed customers
 * in key order (one statement, FOR UPDATE NOWAIT: a busy row is 55P03 and the
 * caller moves the batch one customer at a time, which waits where waiting is
 * safe) and returns (key, owner) of the rows found.
 */
static char *
key_type_name(ManagedTable *mt)
{
	Form_pg_attribute katt = TupleDescAttr(mt->tupdesc, mt->key_att - 1);

	return format_type_with_typemod(katt->atttypid, katt->atttypmod);
}

PG_FUNCTION_INFO_V1(allocation_realign_lock_batch);
Datum
allocation_realign_lock_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			relid;
	ManagedTable *mt;
	char	   *sql;
	const char *kcol;
	AllocOwnerSwitch osw;
	Oid			types[1] = {TEXTARRAYOID};
	Datum		vals[1];
	Tuplestorestate *ts;
	TupleDesc	tupdesc;
	MemoryContext oldcxt;
	uint64		r;
	Oid			key_outfn;
	bool		key_varlena;
	FmgrInfo	key_out;

	alloc_lookup_oids();
	if (GetUserId() != alloc_oids.schema_owner && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("allocation._realign_lock_batch() is internal"),
				 errhint("Use CALL allocation.realign_apply().")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("allocation._realign_lock_batch() needs a table and keys"),
				 errdetail("It was called with a NULL table or key list."),
				 errhint("Use CALL allocation.realign_apply().")));
	relid = PG_GETARG_OID(0);
	vals[0] = PG_GETARG_DATUM(1);
	config_prepare();
	mt = config_get_table(relid, false);
	kcol = quote_identifier(NameStr(TupleDescAttr(mt->tupdesc, mt->key_att - 1)->attname));
	/* (a local copy: the SPI query below may reset the configuration cache mt lives in) */
	getTypeOutputInfo(TupleDescAttr(mt->tupdesc, mt->key_att - 1)->atttypid, &key_outfn, &key_varlena);
	fmgr_info(key_outfn, &key_out);
	/*
	 * The key is returned in its output form (mt->key_out), the form the
	 * plan listed: a cast to text would differ for some types (character(n)
	 * drops its padding), and the caller matches the keys as text.
	 */
	sql = psprintf("SELECT t.%s, t.%s::pg_catalog.int8 FROM %s t"
				   " WHERE t.%s = ANY ($1::pg_catalog.text[]::%s[]) ORDER BY t.%s FOR UPDATE NOWAIT",
				   kcol, quote_identifier(NameStr(TupleDescAttr(mt->tupdesc, mt->owner_att - 1)->attname)),
				   mt->name, kcol, key_type_name(mt), kcol);

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) || !(rsinfo->allowedModes & SFRM_Materialize))
		elog(ERROR, "allocation._realign_lock_batch() must be called in a context that accepts a set");
	oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	tupdesc = CreateTemplateTupleDesc(2);
	TupleDescInitEntry(tupdesc, 1, "key", TEXTOID, -1, 0);
	TupleDescInitEntry(tupdesc, 2, "owner", INT8OID, -1, 0);
	tupdesc = BlessTupleDesc(tupdesc);
	ts = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(oldcxt);

	alloc_become_table_owner(relid, &osw);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args(sql, 1, types, vals, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "locking customer rows failed");
		for (r = 0; r < SPI_processed; r++)
		{
			Datum		d[2];
			bool		n[2];

			d[0] = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &n[0]);
			if (!n[0])
				d[0] = CStringGetTextDatum(OutputFunctionCall(&key_out, d[0]));
			d[1] = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &n[1]);
			oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
			tuplestore_putvalues(ts, tupdesc, d, n);
			MemoryContextSwitchTo(oldcxt);
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		alloc_restore_table_owner(&osw);
	}
	PG_END_TRY();
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = ts;
	rsinfo->setDesc = tupdesc;
	return (Datum) 0;
}

/*
 * _realign_move_batch(tbl, keys text[], plan, reason): the listed customers
 * (rows locked by the caller, in the plan's order) decided again by the
 * rules in ONE engine UPDATE: each row's trigger takes its own change
 * context (source realign), in the order of keys -- the order the preview
 * simulated, checked row by row (LA0R8 otherwise: the caller falls back to
 * one customer at a time) -- and the statement's batch writer records every
 * move in one call.  Returns (key, result, owner) per key, as
 * _realign_move does (result NULL: the row is gone).
 */
PG_FUNCTION_INFO_V1(allocation_realign_move_batch);
Datum
allocation_realign_move_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			relid;
	ManagedTable *mt;
	ArrayType  *keys;
	Datum	   *elems;
	bool	   *enulls;
	int			nkeys,
				i;
	AllocChange batch;
	AllocChange *items;
	AllocChange *save_change = alloc_change;
	Oid			save_actor = alloc_actor_override;
	AllocOwnerSwitch osw;
	char	   *sql;
	const char *kcol;
	const char *owner_col;
	Oid			types[1] = {TEXTARRAYOID};
	Datum		vals[1];
	Tuplestorestate *ts;
	TupleDesc	tupdesc;
	MemoryContext oldcxt;
	char	   *reason;
	int64		plan;

	alloc_lookup_oids();
	if (GetUserId() != alloc_oids.schema_owner && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("allocation._realign_move_batch() is internal"),
				 errhint("Use CALL allocation.realign_apply().")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("allocation._realign_move_batch() needs a table, keys and a plan"),
				 errdetail("It was called with a NULL table, key list or plan."),
				 errhint("Use CALL allocation.realign_apply().")));
	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) || !(rsinfo->allowedModes & SFRM_Materialize))
		elog(ERROR, "allocation._realign_move_batch() must be called in a context that accepts a set");
	relid = PG_GETARG_OID(0);
	keys = PG_GETARG_ARRAYTYPE_P(1);
	plan = PG_GETARG_INT64(2);
	reason = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	deconstruct_array(keys, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &nkeys);

	config_prepare();
	mt = config_get_table(relid, false);
	kcol = quote_identifier(NameStr(TupleDescAttr(mt->tupdesc, mt->key_att - 1)->attname));
	owner_col = quote_identifier(NameStr(TupleDescAttr(mt->tupdesc, mt->owner_att - 1)->attname));
	/* the rows in the order of the list: the list drives a nested loop over the key's index */
	sql = psprintf("UPDATE %s t SET %s = t.%s FROM pg_catalog.unnest($1::pg_catalog.text[]::%s[]) WITH ORDINALITY u(k, o)"
				   " WHERE t.%s = u.k",
				   mt->name, owner_col, owner_col, key_type_name(mt), kcol);

	memset(&batch, 0, sizeof(batch));
	items = palloc0(sizeof(AllocChange) * Max(nkeys, 1));
	batch.relid = relid;
	batch.key = "";
	batch.source = "realign";
	batch.reason = reason;
	batch.used = true;			/* the batch itself is never a row's change */
	batch.actor = alloc_actor_id();
	batch.cid = GetCurrentCommandId(false);
	batch.plan = plan;
	batch.items = items;
	batch.nitems = nkeys;
	batch.next = 0;
	for (i = 0; i < nkeys; i++)
	{
		if (enulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("allocation._realign_move_batch() got a NULL key")));
		items[i].relid = relid;
		items[i].key = TextDatumGetCString(elems[i]);
		items[i].source = "realign";
		items[i].reason = reason;
		items[i].actor = batch.actor;
		items[i].cid = batch.cid;
		items[i].plan = plan;
	}
	vals[0] = PointerGetDatum(keys);

	alloc_refuse_temp_objects("a realignment");
	alloc_become_table_owner(relid, &osw);
	/* (the switch's GUC level undoes these with the owner's settings) */
	(void) set_config_option("enable_hashjoin", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_mergejoin", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	alloc_change = &batch;
	alloc_actor_override = InvalidOid;
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args(sql, 1, types, vals, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "updating the owners of customers failed");
		SPI_finish();
	}
	PG_FINALLY();
	{
		alloc_change = save_change;
		alloc_actor_override = save_actor;
		alloc_restore_table_owner(&osw);
	}
	PG_END_TRY();

	oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	tupdesc = CreateTemplateTupleDesc(3);
	TupleDescInitEntry(tupdesc, 1, "key", TEXTOID, -1, 0);
	TupleDescInitEntry(tupdesc, 2, "result", TEXTOID, -1, 0);
	TupleDescInitEntry(tupdesc, 3, "owner", INT8OID, -1, 0);
	tupdesc = BlessTupleDesc(tupdesc);
	ts = tuplestore_begin_heap(true, false, work_mem);
	for (i = 0; i < nkeys; i++)
	{
		Datum		d[3];
		bool		n[3] = {false, false, false};

		d[0] = CStringGetTextDatum(items[i].key);
		if (!items[i].used || items[i].result == NULL)
			n[1] = n[2] = true;
		else
		{
			d[1] = CStringGetTextDatum(items[i].result);
			d[2] = Int64GetDatum(items[i].result_rep);
			n[2] = items[i].result_rep == 0;
		}
		tuplestore_putvalues(ts, tupdesc, d, n);
	}
	MemoryContextSwitchTo(oldcxt);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = ts;
	rsinfo->setDesc = tupdesc;
	return (Datum) 0;
}
