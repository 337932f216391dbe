/*
 * outcomes.c
 *		Outcomes read from the CRM's own tables, and customer potentials.
 *
 * The row trigger of an outcome table (manage_outcomes()) reads the mapped
 * columns of the old and new row by attribute number -- only columns of
 * built-in types, through their output functions, so no user code (casts,
 * domain checks, triggers) runs with the engine's rights -- and hands them,
 * as text arrays, to allocation._outcome_apply(), the one implementation of
 * landing and removing outcome rows, run as the extension owner with the
 * writing role recorded as actor (as the gateway does).
 *
 * The potential of a customer is a SQL expression over the customer row.  It
 * is checked and evaluated as the customer table's owner, as a
 * security-restricted operation with the owner's search_path (owner.c): never
 * as the caller or the extension owner, also not at compile time.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_func.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "rewrite/rewriteManip.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "allocation.h"

#define OUTCOME_VALUES 6		/* key, at, rep, value 1, value 2, ref */

#define ERRCODE_ALLOC_OUTCOME_TYPE		MAKE_SQLSTATE('L','A','0','O','3')
#define ERRCODE_ALLOC_POTENTIAL_EXPR	MAKE_SQLSTATE('L','A','0','O','7')

/* Internal functions: only the extension owner (or a superuser) calls them */
static void
require_engine(const char *fn)
{
	alloc_lookup_oids();
	if (GetUserId() != alloc_oids.schema_owner && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("allocation.%s() is internal", fn)));
}

/* A relation given to an internal function exists (42P01 otherwise) */
static void
require_relation(Oid relid)
{
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
}

/* Whether a type (domains down to their base type) is built in */
static bool
builtin_type(Oid type)
{
	Oid			base = getBaseType(type);
	Oid			elem = get_element_type(base);

	return base < FirstNormalObjectId && (!OidIsValid(elem) || getBaseType(elem) < FirstNormalObjectId);
}

typedef struct OutcomeTrigCache
{
	FmgrInfo	apply;
	int			source;
	AttrNumber	attnums[OUTCOME_VALUES];
} OutcomeTrigCache;

/*
 * The trigger's arguments (source id, the mapped column names; '' = not
 * mapped), resolved to attribute numbers once per statement (names, not
 * numbers: they survive a dump and restore), and allocation._outcome_apply()
 */
static OutcomeTrigCache *
outcome_trig_cache(FunctionCallInfo fcinfo, Trigger *trig, Relation rel)
{
	OutcomeTrigCache *c = (OutcomeTrigCache *) fcinfo->flinfo->fn_extra;
	Oid			argtypes[4] = {INT4OID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID};
	Oid			fn;
	int			i;

	if (c != NULL)
		return c;
	if (trig->tgnargs != OUTCOME_VALUES + 1)
		elog(ERROR, "allocation._outcome_trigger: wrong number of trigger arguments");
	c = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(OutcomeTrigCache));
	c->source = pg_strtoint32(trig->tgargs[0]);
	for (i = 0; i < OUTCOME_VALUES; i++)
	{
		const char *col = trig->tgargs[i + 1];
		int			att;

		c->attnums[i] = 0;
		if (col[0] == '\0')
			continue;
		att = SPI_fnumber(RelationGetDescr(rel), col);
		if (att <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_ALLOC_OUTCOME_TYPE),
					 errmsg("column \"%s\" mapped by allocation.manage_outcomes() on %s is gone", col,
							RelationGetRelationName(rel)),
					 errdetail("The outcome table was attached with this column."),
					 errhint("Call allocation.unmanage_outcomes() and allocation.manage_outcomes() again.")));
		c->attnums[i] = (AttrNumber) att;
	}
	fn = LookupFuncName(list_make2(makeString("allocation"), makeString("_outcome_apply")), 4, argtypes, false);
	fmgr_info_cxt(fn, &c->apply, fcinfo->flinfo->fn_mcxt);
	fcinfo->flinfo->fn_extra = c;
	return c;
}

/* The mapped values of a row in their text form (NULL for unmapped or NULL columns) */
static void
outcome_values(Relation rel, HeapTuple tup, OutcomeTrigCache *c, char **vals)
{
	TupleDesc	td = RelationGetDescr(rel);
	int			i;

	for (i = 0; i < OUTCOME_VALUES; i++)
	{
		AttrNumber	att = c->attnums[i];
		Form_pg_attribute a;
		bool		isnull;
		Datum		d;
		Oid			out;
		bool		varlena;

		vals[i] = NULL;
		if (att <= 0)
			continue;
		if (att > td->natts || TupleDescAttr(td, att - 1)->attisdropped)
			ereport(ERROR,
					(errcode(ERRCODE_ALLOC_OUTCOME_TYPE),
					 errmsg("a column mapped by allocation.manage_outcomes() on %s is gone", RelationGetRelationName(rel)),
					 errdetail("Column number %d was mapped when the table was attached.", att),
					 errhint("Call allocation.unmanage_outcomes() and allocation.manage_outcomes() again.")));
		a = TupleDescAttr(td, att - 1);
		/* only built-in output functions run with the engine's rights */
		if (!builtin_type(a->atttypid))
			ereport(ERROR,
					(errcode(ERRCODE_ALLOC_OUTCOME_TYPE),
					 errmsg("column \"%s\" of %s has the non-built-in type %s", NameStr(a->attname),
							RelationGetRelationName(rel), format_type_be(a->atttypid)),
					 errdetail("The engine reads mapped outcome columns of built-in types only."),
					 errhint("Call allocation.unmanage_outcomes(), change the column, then allocation.manage_outcomes() again.")));
		d = heap_getattr(tup, att, td, &isnull);
		if (isnull)
			continue;
		if (a->atttypid == TIMESTAMPTZOID)
		{
			/*
			 * ISO with a numeric offset, whatever DateStyle says: a style that
			 * prints zone abbreviations would read "CST" back as US Central
			 */
			vals[i] = pstrdup(timestamptz_to_str(DatumGetTimestampTz(d)));
			continue;
		}
		getTypeOutputInfo(a->atttypid, &out, &varlena);
		vals[i] = OidOutputFunctionCall(out, d);
	}
}

/* Text values as a text[] */
static Datum
outcome_array(char **vals)
{
	Datum		elems[OUTCOME_VALUES];
	bool		nulls[OUTCOME_VALUES];
	int			dims[1] = {OUTCOME_VALUES};
	int			lbs[1] = {1};
	int			i;

	for (i = 0; i < OUTCOME_VALUES; i++)
	{
		nulls[i] = (vals[i] == NULL);
		elems[i] = vals[i] ? CStringGetTextDatum(vals[i]) : (Datum) 0;
	}
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
}

/* Whether two rows' mapped values are the same */
static bool
outcome_same(char **a, char **b)
{
	int			i;

	for (i = 0; i < OUTCOME_VALUES; i++)
		if ((a[i] == NULL) != (b[i] == NULL) || (a[i] && strcmp(a[i], b[i]) != 0))
			return false;
	return true;
}

/* Calls allocation._outcome_apply(source, op, old, new) as the extension owner for the writer */
static void
outcome_apply(OutcomeTrigCache *c, const char *op, Datum oldv, bool oldnull, Datum newv, bool newnull)
{
	LOCAL_FCINFO(inner, 4);
	Oid			save_actor = alloc_actor_override;
	AllocUserSwitch sw;

	InitFunctionCallInfoData(*inner, &c->apply, 4, InvalidOid, NULL, NULL);
	inner->args[0].value = Int32GetDatum(c->source);
	inner->args[0].isnull = false;
	inner->args[1].value = CStringGetTextDatum(op);
	inner->args[1].isnull = false;
	inner->args[2].value = oldv;
	inner->args[2].isnull = oldnull;
	inner->args[3].value = newv;
	inner->args[3].isnull = newnull;

	alloc_lookup_oids();
	if (GetUserId() != alloc_oids.schema_owner || !OidIsValid(alloc_actor_override))
		alloc_actor_override = GetUserId();
	alloc_become_owner(&sw);
	PG_TRY();
	{
		(void) FunctionCallInvoke(inner);
	}
	PG_CATCH();
	{
		alloc_actor_override = save_actor;
		PG_RE_THROW();
	}
	PG_END_TRY();
	alloc_restore_user(&sw);
	alloc_actor_override = save_actor;
}

/*
 * _outcome_trigger(source, attnums...): AFTER INSERT/UPDATE/DELETE FOR EACH
 * ROW and AFTER TRUNCATE FOR EACH STATEMENT on an outcome table.
 */
PG_FUNCTION_INFO_V1(allocation_outcome_trigger);
Datum
allocation_outcome_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	OutcomeTrigCache *c;
	TriggerEvent ev;
	char	   *o[OUTCOME_VALUES];
	char	   *n[OUTCOME_VALUES];

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event))
		elog(ERROR, "allocation._outcome_trigger: must be fired AFTER");
	ev = td->tg_event;
	c = outcome_trig_cache(fcinfo, td->tg_trigger, td->tg_relation);
	if (TRIGGER_FIRED_BY_TRUNCATE(ev))
		outcome_apply(c, "TRUNCATE", (Datum) 0, true, (Datum) 0, true);
	else if (!TRIGGER_FIRED_FOR_ROW(ev))
		elog(ERROR, "allocation._outcome_trigger: must be fired FOR EACH ROW (or for TRUNCATE)");
	else if (TRIGGER_FIRED_BY_INSERT(ev))
	{
		outcome_values(td->tg_relation, td->tg_trigtuple, c, n);
		outcome_apply(c, "INSERT", (Datum) 0, true, outcome_array(n), false);
	}
	else if (TRIGGER_FIRED_BY_DELETE(ev))
	{
		outcome_values(td->tg_relation, td->tg_trigtuple, c, o);
		outcome_apply(c, "DELETE", outcome_array(o), false, (Datum) 0, true);
	}
	else
	{
		outcome_values(td->tg_relation, td->tg_trigtuple, c, o);
		outcome_values(td->tg_relation, td->tg_newtuple, c, n);
		/* an UPDATE of columns the engine does not map changes nothing landed */
		if (!outcome_same(o, n))
			outcome_apply(c, "UPDATE", outcome_array(o), false, outcome_array(n), false);
	}
	return PointerGetDatum(NULL);
}

/*
 * _outcome_rows(tbl, columns name[]): the mapped values of every row of an
 * outcome table (as the trigger reads them; NULL = not mapped), read as the
 * table's owner.
 */
PG_FUNCTION_INFO_V1(allocation_outcome_rows);
Datum
allocation_outcome_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			relid;
	ArrayType  *cols;
	Datum	   *elems;
	bool	   *enulls;
	int			n,
				i;
	StringInfoData sql;
	AllocOwnerSwitch osw;
	Tuplestorestate *ts;
	TupleDesc	tupdesc;
	MemoryContext oldcxt;
	Relation	rel;
	uint64		r;

	require_engine("_outcome_rows");
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("allocation._outcome_rows() needs a table and column names")));
	relid = PG_GETARG_OID(0);
	require_relation(relid);
	cols = PG_GETARG_ARRAYTYPE_P(1);
	deconstruct_array(cols, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR, &elems, &enulls, &n);
	rel = table_open(relid, AccessShareLock);
	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ARRAY[");
	for (i = 0; i < n; i++)
	{
		int			att = enulls[i] ? 0 : SPI_fnumber(RelationGetDescr(rel), NameStr(*DatumGetName(elems[i])));
		Form_pg_attribute a;

		if (i > 0)
			appendStringInfoString(&sql, ", ");
		if (att <= 0)
		{
			appendStringInfoString(&sql, "NULL::pg_catalog.text");
			continue;
		}
		a = TupleDescAttr(RelationGetDescr(rel), att - 1);
		if (!builtin_type(a->atttypid))
			ereport(ERROR,
					(errcode(ERRCODE_ALLOC_OUTCOME_TYPE),
					 errmsg("column \"%s\" of %s has the non-built-in type %s", NameStr(a->attname),
							RelationGetRelationName(rel), format_type_be(a->atttypid))));
		if (a->atttypid == TIMESTAMPTZOID)	/* ISO with an offset, whatever DateStyle says */
			appendStringInfo(&sql, "pg_catalog.textcat(pg_catalog.to_char(pg_catalog.timezone('UTC', t.%s), 'YYYY-MM-DD HH24:MI:SS.US'), '+00')",
							 quote_identifier(NameStr(a->attname)));
		else
			appendStringInfo(&sql, "t.%s::pg_catalog.text", quote_identifier(NameStr(a->attname)));
	}
	appendStringInfo(&sql, "]::pg_catalog.text[] FROM %s t",
					 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												RelationGetRelationName(rel)));
	table_close(rel, AccessShareLock);

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) || !(rsinfo->allowedModes & SFRM_Materialize))
		elog(ERROR, "allocation._outcome_rows() must be called in a context that accepts a set");
	oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	tupdesc = CreateTemplateTupleDesc(1);
	TupleDescInitEntry(tupdesc, 1, "r", TEXTARRAYOID, -1, 0);
	tupdesc = BlessTupleDesc(tupdesc);
	ts = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(oldcxt);

	alloc_become_table_owner(relid, &osw);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute(sql.data, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "reading an outcome table failed");
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

/* ---------- customer potential ---------- */

static void
potential_refuse(const char *expression)
{
	ereport(ERROR,
			(errcode(ERRCODE_ALLOC_POTENTIAL_EXPR),
			 errmsg("potential expression is not a single SQL expression"),
			 errdetail("The potential is one numeric expression over the customer row (or a column name), got: %s", expression),
			 errhint("Write it like a select-list item, e.g. expected_volume or hectares * 1200.")));
}

/* The single expression of "SELECT <expression>", or LA0O7 */
static Node *
potential_parse(const char *sql, const char *expression)
{
	List	   *stmts;
	RawStmt    *raw;
	SelectStmt *sel;
	ResTarget  *rt;

	stmts = raw_parser(sql, RAW_PARSE_DEFAULT);
	if (list_length(stmts) != 1)
		potential_refuse(expression);
	raw = linitial_node(RawStmt, stmts);
	if (!IsA(raw->stmt, SelectStmt))
		potential_refuse(expression);
	sel = (SelectStmt *) raw->stmt;
	if (sel->op != SETOP_NONE || list_length(sel->targetList) != 1 || sel->fromClause != NIL ||
		sel->whereClause != NULL || sel->groupClause != NIL || sel->havingClause != NULL ||
		sel->windowClause != NIL || sel->sortClause != NIL || sel->limitCount != NULL ||
		sel->limitOffset != NULL || sel->distinctClause != NIL || sel->withClause != NULL ||
		sel->intoClause != NULL || sel->lockingClause != NIL || sel->valuesLists != NIL)
		potential_refuse(expression);
	rt = linitial_node(ResTarget, sel->targetList);
	if (rt->name != NULL || (IsA(rt->val, ColumnRef) && IsA(llast(((ColumnRef *) rt->val)->fields), A_Star)))
		potential_refuse(expression);
	return rt->val;
}

/* check_functions_in_node() callback: a function the current role may not execute */
static bool
potential_not_executable(Oid fn, void *context)
{
	if (pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
	{
		*(Oid *) context = fn;
		return true;
	}
	return false;
}

typedef struct PotentialWalk
{
	Oid			denied;
} PotentialWalk;

static bool
potential_walker(Node *node, PotentialWalk *w)
{
	if (node == NULL)
		return false;
	if (check_functions_in_node(node, potential_not_executable, &w->denied))
		return true;
	return expression_tree_walker(node, potential_walker, (void *) w);
}

/*
 * Parses, type-checks and vets a potential expression over relid, as the
 * current role (the caller switched to the table's owner): one expression,
 * no subquery, aggregate, window or set-returning function, no volatile
 * function, a number, and every function executable by the role.
 */
static void
potential_compile(Oid relid, const char *expression)
{
	char	   *sql = psprintf("SELECT %s\n", expression);
	Node	   *raw = potential_parse(sql, expression);
	Node	   *expr;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;
	Relation	rel;
	Oid			type;
	PotentialWalk w = {InvalidOid};

	rel = table_open(relid, AccessShareLock);
	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = sql;
	/* the alias the values are read with (FROM <table> t): both accept the same names */
	nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock, makeAlias("t", NIL), false, true);
	addNSItemToQuery(pstate, nsitem, true, true, true);
	expr = transformExpr(pstate, raw, EXPR_KIND_SELECT_TARGET);
	if (pstate->p_hasSubLinks || checkExprHasSubLink(expr) || pstate->p_hasAggs || pstate->p_hasWindowFuncs ||
		expression_returns_set(expr))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_POTENTIAL_EXPR),
				 errmsg("potential expression must not contain a subquery, an aggregate, a window or a set-returning function"),
				 errdetail("The potential is computed from one customer row at a time."),
				 errhint("Copy the looked-up value into a column of the customer table.")));
	type = exprType(expr);
	if (!can_coerce_type(1, &type, (Oid[]) {NUMERICOID}, COERCION_ASSIGNMENT))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_POTENTIAL_EXPR),
				 errmsg("potential expression must be a number, not %s", format_type_be(type)),
				 errdetail("Tiers are thresholds the value reaches."),
				 errhint("Give a numeric column or expression, e.g. expected_volume.")));
	assign_expr_collations(pstate, expr);
	if (contain_volatile_functions(expr))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_POTENTIAL_EXPR),
				 errmsg("potential expression must not call volatile functions"),
				 errdetail("A potential that changes between reads (random(), clock_timestamp(), ...) would make tiers and alerts unrepeatable."),
				 errhint("Use only immutable or stable functions.")));
	if (potential_walker(expr, &w))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the owner of %s may not execute function %s", RelationGetRelationName(rel),
						format_procedure(w.denied)),
				 errdetail("The potential is computed as the customer table's owner (%s), never as the caller.",
						   GetUserNameFromId(GetUserId(), false)),
				 errhint("GRANT EXECUTE on the function to the table's owner, or leave it out.")));
	free_parsestate(pstate);
	table_close(rel, AccessShareLock);
}

/* _potential_check(tbl, expression): checks a potential expression as the table's owner */
PG_FUNCTION_INFO_V1(allocation_potential_check);
Datum
allocation_potential_check(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *expression;
	AllocOwnerSwitch osw;

	require_engine("_potential_check");
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("allocation._potential_check() needs a table and an expression")));
	relid = PG_GETARG_OID(0);
	require_relation(relid);
	expression = text_to_cstring(PG_GETARG_TEXT_PP(1));
	alloc_become_table_owner(relid, &osw);
	PG_TRY();
	{
		potential_compile(relid, expression);
	}
	PG_FINALLY();
	{
		alloc_restore_table_owner(&osw);
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}

/*
 * _potential_values(tbl, key_column, expression, key): (key, value) of every
 * customer row (key NULL) or of one, the expression checked again and
 * evaluated as the table's owner.
 */
PG_FUNCTION_INFO_V1(allocation_potential_values);
Datum
allocation_potential_values(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			relid;
	char	   *keycol;
	char	   *expression;
	StringInfoData sql;
	AllocOwnerSwitch osw;
	Tuplestorestate *ts;
	TupleDesc	tupdesc;
	MemoryContext oldcxt;
	Relation	rel;
	AttrNumber	katt;
	Oid			types[1] = {TEXTOID};
	Datum		vals[1];
	uint64		r;

	require_engine("_potential_values");
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("allocation._potential_values() needs a table, its key column and an expression")));
	relid = PG_GETARG_OID(0);
	keycol = NameStr(*PG_GETARG_NAME(1));
	expression = text_to_cstring(PG_GETARG_TEXT_PP(2));
	require_relation(relid);

	rel = table_open(relid, AccessShareLock);
	katt = get_attnum(relid, keycol);
	if (katt == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation %s does not exist", keycol, RelationGetRelationName(rel))));
	initStringInfo(&sql);
	/* (the expression is one expression: potential_compile() checks it first) */
	appendStringInfo(&sql, "SELECT t.%s::pg_catalog.text, (\n%s\n)::pg_catalog.numeric FROM %s t",
					 quote_identifier(keycol), expression,
					 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												RelationGetRelationName(rel)));
	if (!PG_ARGISNULL(3))
	{
		Form_pg_attribute a = TupleDescAttr(RelationGetDescr(rel), katt - 1);

		appendStringInfo(&sql, " WHERE t.%s = $1::%s", quote_identifier(keycol),
						 format_type_with_typemod(a->atttypid, a->atttypmod));
		vals[0] = PG_GETARG_DATUM(3);
	}
	table_close(rel, AccessShareLock);

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) || !(rsinfo->allowedModes & SFRM_Materialize))
		elog(ERROR, "allocation._potential_values() must be called in a context that accepts a set");
	oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	tupdesc = CreateTemplateTupleDesc(2);
	TupleDescInitEntry(tupdesc, 1, "key", TEXTOID, -1, 0);
	TupleDescInitEntry(tupdesc, 2, "value", NUMERICOID, -1, 0);
	tupdesc = BlessTupleDesc(tupdesc);
	ts = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(oldcxt);

	alloc_become_table_owner(relid, &osw);
	PG_TRY();
	{
		potential_compile(relid, expression);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args(sql.data, PG_ARGISNULL(3) ? 0 : 1, types, vals, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "reading the potential of customers failed");
		for (r = 0; r < SPI_processed; r++)
		{
			Datum		d[2];
			bool		n[2];

			d[0] = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &n[0]);
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
