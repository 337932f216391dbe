/*
 * rules.c
 *		Validation and compilation of a rule's SQL condition.
 *
 * A condition is a boolean SQL expression over one customer row, like a
 * CHECK constraint.  It is parsed and analysed once, when the rule is saved
 * (BEFORE trigger on allocation.rule), and stored as a node tree next to the
 * source text; backends compile the tree once (config.c) and evaluate it per
 * row with no parsing.
 *
 * The node tree is a cache of the source text (with the search path it was
 * written under), valid only on the server that wrote it: condition_stamp
 * holds that server's major version and system identifier.  Anywhere else
 * (after pg_upgrade: another node format, other OIDs for non-built-in
 * objects; a copied data directory) the tree is never read: the condition is
 * compiled again from its text.
 */
#include "postgres.h"

#include "access/sysattr.h"
#include "access/xlog.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "rewrite/rewriteManip.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/acl.h"
#include "miscadmin.h"
#include "utils/ruleutils.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "access/xact.h"
#include "utils/timestamp.h"

#include "allocation.h"

typedef struct CondErrCtx
{
	const char *rule_name;
	const char *condition;
	const char *sql;
} CondErrCtx;

static void
condition_error_callback(void *arg)
{
	CondErrCtx *ctx = (CondErrCtx *) arg;
	int			pos = geterrposition();

	/* point the error cursor into the condition, not the user's statement */
	if (pos > 0 && ctx->sql)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery(ctx->sql);
	}
	errcontext("condition of allocation rule \"%s\": %s", ctx->rule_name, ctx->condition);
}

static Node *compile_condition(Oid relid, const char *condition, const char *rule_name);

/* The single expression of "SELECT <condition>", or an error */
static Node *
parse_condition(const char *sql, const char *condition)
{
	List	   *stmts;
	RawStmt    *raw;
	SelectStmt *sel;
	ResTarget  *rt;

	stmts = raw_parser(sql, RAW_PARSE_DEFAULT);
	if (list_length(stmts) != 1)
		goto bad;
	raw = linitial_node(RawStmt, stmts);
	if (!IsA(raw->stmt, SelectStmt))
		goto bad;
	sel = (SelectStmt *) raw->stmt;
	if (sel->op != SETOP_NONE || list_length(sel->targetList) != 1 || sel->fromClause != NIL ||
		sel->whereClause != NULL || sel->groupClause != NIL || sel->havingClause != NULL ||
		sel->windowClause != NIL || sel->sortClause != NIL || sel->limitCount != NULL ||
		sel->limitOffset != NULL || sel->distinctClause != NIL || sel->withClause != NULL ||
		sel->intoClause != NULL || sel->lockingClause != NIL || sel->valuesLists != NIL)
		goto bad;
	rt = linitial_node(ResTarget, sel->targetList);
	if (rt->name != NULL)
		goto bad;
	return rt->val;

bad:
	ereport(ERROR,
			(errcode(ERRCODE_ALLOC_BAD_CONDITION),
			 errmsg("rule condition is not a single SQL expression"),
			 errdetail("The condition must be one boolean expression over the customer row, got: %s", condition),
			 errhint("Write it like a WHERE clause, e.g. annual_volume > 500000 AND NOT is_cooperative.")));
	return NULL;				/* keep compiler quiet */
}

/*
 * Parses, type-checks and vets a condition over relation relid.  Returns the
 * analysed expression (Vars with varno 1 = the customer row).
 */
Node *
rules_compile_condition(Oid relid, const char *condition, const char *rule_name,
						const char *search_path)
{
	Node	   *result;
	int			nestlevel = -1;

	/* names in the condition resolve as when the rule was written */
	if (search_path)
	{
		nestlevel = NewGUCNestLevel();
		(void) set_config_option("search_path", search_path, PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	}
	result = compile_condition(relid, condition, rule_name);
	if (search_path)
		AtEOXact_GUC(true, nestlevel);
	return result;
}

static Node *
compile_condition(Oid relid, const char *condition, const char *rule_name)
{
	ErrorContextCallback errcb;
	CondErrCtx	ctx;
	char	   *sql;
	Node	   *raw;
	Node	   *expr;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;
	Relation	rel;
	Oid			type;

	ctx.rule_name = rule_name;
	ctx.condition = condition;
	ctx.sql = NULL;
	errcb.callback = condition_error_callback;
	errcb.arg = &ctx;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	sql = psprintf("SELECT %s", condition);
	ctx.sql = sql;
	raw = parse_condition(sql, condition);

	rel = table_open(relid, AccessShareLock);
	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = sql;
	nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock, NULL, false, true);
	addNSItemToQuery(pstate, nsitem, true, true, true);

	expr = transformExpr(pstate, raw, EXPR_KIND_OTHER);

	if (pstate->p_hasSubLinks || checkExprHasSubLink(expr))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_COND_SUBQUERY),
				 errmsg("rule condition must not contain a subquery"),
				 errdetail("Conditions are evaluated on one customer row during INSERT, without running queries."),
				 errhint("Copy the looked-up value into a column of the customer table, or use a structured rule field.")));
	if (pstate->p_hasAggs || pstate->p_hasWindowFuncs)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_COND_SUBQUERY),
				 errmsg("rule condition must not contain aggregate or window functions"),
				 errdetail("Conditions look at one customer row at a time."),
				 errhint("Compare the row's own columns, e.g. annual_volume > 500000.")));
	if (expression_returns_set(expr))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_COND_SUBQUERY),
				 errmsg("rule condition must not return a set"),
				 errdetail("Set-returning functions are not allowed in a condition."),
				 errhint("Use a scalar expression.")));

	type = exprType(expr);
	if (type != BOOLOID)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_COND_NOT_BOOLEAN),
				 errmsg("rule condition must be boolean, not %s", format_type_be(type)),
				 errdetail("The condition decides whether the rule matches a customer."),
				 errhint("Compare the value, e.g. \"%s > 0\" or \"%s IS NOT NULL\".", condition, condition)));

	assign_expr_collations(pstate, expr);

	if (contain_volatile_functions(expr))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_COND_VOLATILE),
				 errmsg("rule condition must not call volatile functions"),
				 errdetail("A condition that can change between calls (random(), nextval(), clock_timestamp(), ...) would make assignments unrepeatable and explain() untrue."),
				 errhint("Use only immutable or stable functions.")));

	free_parsestate(pstate);
	table_close(rel, AccessShareLock);
	error_context_stack = errcb.previous;
	return expr;
}

static bool
equal_nullable(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/*
 * This server's stamp for compiled conditions: major version / system
 * identifier (node trees and OIDs do not change with a minor release;
 * pg_upgrade always makes a new system identifier)
 */
char *
rules_condition_stamp(void)
{
	return psprintf("%d/" UINT64_FORMAT, PG_MAJORVERSION_NUM, GetSystemIdentifier());
}

PG_FUNCTION_INFO_V1(allocation_condition_stamp);
Datum
allocation_condition_stamp(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(rules_condition_stamp()));
}

/*
 * Whether allocation.rule has condition_stamp (SQL version 1.1 on).  The
 * library serves the 1.0 schema too while ALTER EXTENSION ... UPDATE is
 * pending; there no stored tree is read (rules_stamp_current).
 */
bool
rules_have_stamp(void)
{
	alloc_lookup_oids();
	return get_attnum(alloc_oids.rule, "condition_stamp") != InvalidAttrNumber;
}

/*
 * Whether a stored tree may be read here: its stamp is this server's.  Under
 * SQL version 1.0 (no stamp column) never: a 1.0 database may have come
 * through pg_upgrade, so its conditions are compiled from their text.
 */
bool
rules_stamp_current(bool have_stamp, const char *stamp)
{
	return have_stamp && stamp != NULL && strcmp(stamp, rules_condition_stamp()) == 0;
}

/*
 * Whether an UPDATE of a rule changes any column but the ones the engine
 * maintains (condition_bin, condition_stamp, updated_at): a statement that
 * only compiles conditions again (the 1.0 -> 1.1 upgrade) is not a change.
 */
static bool
rule_row_changed(TupleDesc td, HeapTuple oldtup, HeapTuple newtup, int att_bin, int att_stamp, int att_updated)
{
	int			i;

	for (i = 1; i <= td->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(td, i - 1);
		bool		n1,
					n2;
		Datum		d1,
					d2;

		if (a->attisdropped || i == att_bin || i == att_stamp || i == att_updated)
			continue;
		d1 = heap_getattr(oldtup, i, td, &n1);
		d2 = heap_getattr(newtup, i, td, &n2);
		if (n1 != n2 || (!n1 && !datum_image_eq(d1, d2, a->attbyval, a->attlen)))
			return true;
	}
	return false;
}

/* BEFORE INSERT OR UPDATE trigger on allocation.rule */
PG_FUNCTION_INFO_V1(allocation_rule_before);
Datum
allocation_rule_before(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	td;
	HeapTuple	tup;
	int			att_cond,
				att_bin,
				att_tbl,
				att_name,
				att_updated;
	bool		isnull;
	char	   *condition;
	char	   *name;
	Datum		tbl;
	int			cols[4];
	Datum		vals[4];
	bool		nulls[4];
	int			ncols;
	int			att_path;
	int			att_stamp;
	char	   *path;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		elog(ERROR, "allocation_rule_before: must be fired BEFORE ... FOR EACH ROW");

	td = RelationGetDescr(trigdata->tg_relation);
	tup = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple : trigdata->tg_trigtuple;
	att_cond = SPI_fnumber(td, "condition");
	att_bin = SPI_fnumber(td, "condition_bin");
	att_tbl = SPI_fnumber(td, "tbl");
	att_name = SPI_fnumber(td, "name");
	att_updated = SPI_fnumber(td, "updated_at");
	att_path = SPI_fnumber(td, "condition_search_path");
	att_stamp = SPI_fnumber(td, "condition_stamp");	/* absent under SQL 1.0 */

	condition = SPI_getvalue(tup, td, att_cond);
	name = SPI_getvalue(tup, td, att_name);
	tbl = SPI_getbinval(tup, td, att_tbl, &isnull);
	path = SPI_getvalue(tup, td, att_path);

	/*
	 * The search_path a condition was written under is kept with it (a
	 * restore, running with an empty search_path, supplies it).  A changed
	 * condition text takes the current one.
	 */
	if (condition != NULL &&
		(path == NULL ||
		 (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) &&
		  !equal_nullable(SPI_getvalue(trigdata->tg_trigtuple, td, att_cond), condition) &&
		  equal_nullable(SPI_getvalue(trigdata->tg_trigtuple, td, att_path), path))))
		path = pstrdup(GetConfigOption("search_path", false, false));
	if (condition == NULL)
		path = NULL;

	/* condition_bin, condition_search_path, condition_stamp, updated_at */
	cols[0] = att_bin;
	cols[1] = att_path;
	nulls[0] = true;
	nulls[1] = (path == NULL);
	vals[0] = (Datum) 0;
	vals[1] = path ? CStringGetTextDatum(path) : (Datum) 0;
	ncols = 2;
	if (att_stamp > 0)
	{
		cols[ncols] = att_stamp;
		nulls[ncols] = (condition == NULL);
		vals[ncols] = condition ? CStringGetTextDatum(rules_condition_stamp()) : (Datum) 0;
		ncols++;
	}
	/* INSERT keeps a supplied updated_at; an UPDATE that changes nothing keeps it too */
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) &&
		rule_row_changed(td, trigdata->tg_trigtuple, tup, att_bin, att_stamp, att_updated))
	{
		cols[ncols] = att_updated;
		nulls[ncols] = false;
		vals[ncols] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
		ncols++;
	}

	if (condition != NULL && strspn(condition, " \t\r\n") == strlen(condition))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_BAD_CONDITION),
				 errmsg("rule condition is empty"),
				 errdetail("Rule \"%s\" has a condition made only of blanks.", name ? name : "?"),
				 errhint("Set condition to NULL for a rule without one.")));
	if (condition != NULL)
	{
		Node	   *expr;

		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_ALLOC_BAD_CONDITION),
					 errmsg("a rule with a condition must name its table"),
					 errdetail("Rule \"%s\" has a condition but no tbl, so its columns cannot be resolved.", name ? name : "?"),
					 errhint("Set tbl to the managed customer table the condition reads.")));
		/* like CHECK constraints: only the table's owner may run code on its rows */
		if (!pg_class_ownercheck(DatumGetObjectId(tbl), GetUserId()))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("must be owner of table %s to give rule \"%s\" a condition on it",
							get_rel_name(DatumGetObjectId(tbl)), name ? name : "?"),
					 errdetail("A condition runs as whoever writes a customer row, like a CHECK constraint."),
					 errhint("Ask the table's owner (or a superuser) to save the rule.")));
		{
			/* as the table's owner, whoever saves (also an upgrade or an event trigger running as the extension owner) */
			AllocOwnerSwitch osw;

			alloc_become_table_owner(DatumGetObjectId(tbl), &osw);
			expr = rules_compile_condition(DatumGetObjectId(tbl), condition, name ? name : "?", path);
			alloc_restore_table_owner(&osw);
		}
		vals[0] = CStringGetTextDatum(nodeToString(expr));
		nulls[0] = false;
	}

	tup = heap_modify_tuple_by_cols(tup, td, ncols, cols, vals, nulls);
	return PointerGetDatum(tup);
}

typedef struct StoredCondition
{
	const char *bin;
	char	   *name;
	char	   *condition;
	char	   *path;
	char	   *stamp;
	Oid			relid;
	bool		have_stamp;
} StoredCondition;

static void
recompile_context(void *arg)
{
	StoredCondition *sc = (StoredCondition *) arg;

	errcontext("compiling the condition of rule \"%s\" again from its text: its stored form was compiled %s",
			   sc->name ? sc->name : "?",
			   sc->have_stamp ? "by another server (pg_upgrade?)" : "under SQL version 1.0 (run ALTER EXTENSION allocation UPDATE)");
}

/*
 * The rule whose compiled condition is bin.  Only the engine writes that
 * column (the rule trigger recomputes it on every write); text that is not
 * the condition_bin of some rule is refused before the node reader, which
 * trusts its input, sees it.
 */
static void
stored_condition(const char *bin, StoredCondition *sc)
{
	AllocUserSwitch sw;
	Oid			types[1] = {TEXTOID};
	Datum		vals[1];
	bool		stored,
				isnull;
	MemoryContext outer = CurrentMemoryContext;

	memset(sc, 0, sizeof(*sc));
	sc->bin = bin;
	sc->have_stamp = rules_have_stamp();
	vals[0] = CStringGetTextDatum(bin);
	alloc_spi_begin(&sw);
	if (SPI_execute_with_args(psprintf("SELECT name, condition, tbl::oid, condition_search_path, %s"
									   " FROM allocation.rule WHERE condition_bin = $1 ORDER BY id LIMIT 1",
									   sc->have_stamp ? "condition_stamp" : "NULL::text"),
							  1, types, vals, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading the stored rule conditions failed");
	stored = SPI_processed > 0;
	if (stored)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	td = SPI_tuptable->tupdesc;
		MemoryContext spi = MemoryContextSwitchTo(outer);
		char	   *v;

		sc->name = (v = SPI_getvalue(tup, td, 1)) ? pstrdup(v) : NULL;
		sc->condition = (v = SPI_getvalue(tup, td, 2)) ? pstrdup(v) : NULL;
		sc->relid = DatumGetObjectId(SPI_getbinval(tup, td, 3, &isnull));
		sc->path = (v = SPI_getvalue(tup, td, 4)) ? pstrdup(v) : NULL;
		sc->stamp = (v = SPI_getvalue(tup, td, 5)) ? pstrdup(v) : NULL;
		MemoryContextSwitchTo(spi);
	}
	alloc_spi_end(&sw);
	if (!stored)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("not a compiled rule condition"),
				 errdetail("The value is not the condition_bin of any rule in allocation.rule."),
				 errhint("Pass allocation.rule.condition_bin.")));
}

/*
 * A stored condition as a node tree: the stored tree where this server
 * compiled it, otherwise the rule's text compiled again, as the owner of its
 * table.
 */
static Node *
stored_condition_tree(StoredCondition *sc)
{
	AllocOwnerSwitch osw;
	ErrorContextCallback errcb;
	Node	   *result;

	if (rules_stamp_current(sc->have_stamp, sc->stamp))
		return (Node *) stringToNode(sc->bin);
	if (sc->condition == NULL || !OidIsValid(sc->relid))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_BAD_CONDITION),
				 errmsg("compiled condition of rule \"%s\" comes from another server", sc->name ? sc->name : "?"),
				 errdetail("Its stamp is %s, this server's %s, and the rule has no condition text or table to compile again.",
						   sc->stamp ? sc->stamp : "missing", rules_condition_stamp()),
				 errhint("Save the rule's condition again (UPDATE allocation.rule SET condition = ...).")));
	errcb.callback = recompile_context;
	errcb.arg = sc;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	alloc_become_table_owner(sc->relid, &osw);
	result = rules_compile_condition(sc->relid, sc->condition, sc->name ? sc->name : "?", sc->path);
	alloc_restore_table_owner(&osw);
	error_context_stack = errcb.previous;
	return result;
}

static Node *
condition_node(const char *bin)
{
	StoredCondition sc;

	stored_condition(bin, &sc);
	return stored_condition_tree(&sc);
}

/* Whether a stored condition reads column attnum */
PG_FUNCTION_INFO_V1(allocation_condition_uses_column);
Datum
allocation_condition_uses_column(PG_FUNCTION_ARGS)
{
	char	   *bin = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		attnum = PG_GETARG_INT32(1);
	Bitmapset  *atts = NULL;
	Node	   *expr = condition_node(bin);

	pull_varattnos(expr, 1, &atts);
	PG_RETURN_BOOL(bms_is_member(attnum - FirstLowInvalidHeapAttributeNumber, atts) ||
				   bms_is_member(0 - FirstLowInvalidHeapAttributeNumber, atts));
}

/* Source text of a stored condition, with the table's current column names */
PG_FUNCTION_INFO_V1(allocation_condition_deparse);
Datum
allocation_condition_deparse(PG_FUNCTION_ARGS)
{
	char	   *bin = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			relid = PG_GETARG_OID(1);
	Node	   *expr = condition_node(bin);
	char	   *relname = get_rel_name(relid);
	List	   *ctx;

	if (relname == NULL)
		PG_RETURN_NULL();
	ctx = deparse_context_for(relname, relid);
	PG_RETURN_TEXT_P(cstring_to_text(deparse_expression(expr, ctx, false, false)));
}

/*
 * Whether a condition text still compiles to the stored tree (false after a
 * rename made the text stale).  Errors are swallowed in a subtransaction.
 */
typedef struct StillMeans
{
	const char *condition;
	StoredCondition sc;
	Oid			relid;
	const char *path;
	bool		same;
} StillMeans;

static void
still_means(void *arg)
{
	StillMeans *sm = (StillMeans *) arg;
	AllocOwnerSwitch sw;
	Node	   *stored = stored_condition_tree(&sm->sc);

	/*
	 * As the table's owner: parse analysis already runs user code (a literal
	 * coerced to a domain evaluates the domain's CHECK).  The event trigger
	 * that calls this runs as the extension owner.
	 */
	alloc_become_table_owner(sm->relid, &sw);
	sm->same = equal(rules_compile_condition(sm->relid, sm->condition, "?", sm->path), stored);
	alloc_restore_table_owner(&sw);
}

PG_FUNCTION_INFO_V1(allocation_condition_still_means);
Datum
allocation_condition_still_means(PG_FUNCTION_ARGS)
{
	StillMeans	sm;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_BOOL(true);
	sm.condition = text_to_cstring(PG_GETARG_TEXT_PP(0));
	/* an unknown value is an error; a condition that no longer compiles only "does not mean it" */
	stored_condition(text_to_cstring(PG_GETARG_TEXT_PP(1)), &sm.sc);
	sm.relid = PG_GETARG_OID(2);
	sm.path = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	sm.same = false;
	if (!alloc_try(still_means, &sm, NULL))
		sm.same = false;
	PG_RETURN_BOOL(sm.same);
}
