/*
 * explain.c
 *		allocation.explain(): the decision trace of a stored or hypothetical
 *		customer, produced by the trigger's own decision code in dry-run mode
 *		(no reservation, no round-robin advance, no writes).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/resowner.h"

#include "utils/acl.h"
#include "storage/itemptr.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/lsyscache.h"

#include "allocation.h"
#include "datum.h"

static void
json_kv_str(StringInfo buf, const char *key, const char *val, bool comma)
{
	if (comma)
		appendStringInfoString(buf, ", ");
	escape_json(buf, key);
	appendStringInfoString(buf, ": ");
	json_str_or_null(buf, val);
}

static void
json_kv_int(StringInfo buf, const char *key, int64 val, bool isnull, bool comma)
{
	if (comma)
		appendStringInfoString(buf, ", ");
	escape_json(buf, key);
	if (isnull)
		appendStringInfoString(buf, ": null");
	else
		appendStringInfo(buf, ": " INT64_FORMAT, val);
}

static HeapTuple fetch_row_inner(const char *sql, Oid argtype, Datum arg, ItemPointer tid);

/*
 * Runs a one-row query returning a row of the table's type (and, when tid is
 * not NULL, its ctid as the second column); copies it out.  It runs as the
 * table's owner, security-restricted (owner.c): casts to the table's domains
 * and the row type's input run the table owner's code.
 */
static HeapTuple
fetch_row(ManagedTable *mt, const char *sql, Oid argtype, Datum arg, ItemPointer tid)
{
	HeapTuple	result;
	AllocOwnerSwitch sw;

	alloc_become_role(mt->owner, &sw);
	PG_TRY();
	{
		result = fetch_row_inner(sql, argtype, arg, tid);
	}
	PG_FINALLY();
	{
		alloc_restore_table_owner(&sw);
	}
	PG_END_TRY();
	return result;
}

static HeapTuple
fetch_row_inner(const char *sql, Oid argtype, Datum arg, ItemPointer tid)
{
	HeapTuple	result = NULL;
	Datum		d;
	bool		isnull;
	MemoryContext caller = CurrentMemoryContext;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(sql, 1, &argtype, &arg, NULL, true, 2) != SPI_OK_SELECT)
		elog(ERROR, "explain: reading the customer failed");
	if (SPI_processed > 0)
	{
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
		{
			/*
			 * Copied (and detoasted) into the caller's memory: anything
			 * palloc'd here while connected lives in SPI's memory, which
			 * SPI_finish frees -- a later SPI call would reuse it.
			 */
			MemoryContext old = MemoryContextSwitchTo(caller);
			HeapTupleHeader hdr = DatumGetHeapTupleHeaderCopy(d);

			result = palloc(sizeof(HeapTupleData));
			result->t_len = HeapTupleHeaderGetDatumLength(hdr);
			ItemPointerSetInvalid(&result->t_self);
			result->t_tableOid = InvalidOid;
			result->t_data = hdr;
			MemoryContextSwitchTo(old);
			if (tid)
			{
				Datum		t = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

				ItemPointerCopy((ItemPointer) DatumGetPointer(t), tid);
			}
		}
	}
	SPI_finish();
	return result;
}

static Datum explain_tuple_inner(ManagedTable *mt, HeapTuple tup, bool hypothetical);

/* The decision trace of one row (a decision in progress: caches are kept) */
static Datum
explain_tuple(ManagedTable *mt, HeapTuple tup, bool hypothetical)
{
	Datum		result;

	alloc_decision_depth++;
	PG_TRY();
	{
		result = explain_tuple_inner(mt, tup, hypothetical);
	}
	PG_FINALLY();
	{
		alloc_decision_depth--;
	}
	PG_END_TRY();
	return result;
}

static Datum
explain_tuple_inner(ManagedTable *mt, HeapTuple tup, bool hypothetical)
{
	Customer	c;
	Decision	d;
	Trace		tr;
	StringInfoData out;
	int			i;
	bool		isnull;
	Datum		owner;
	RepInfo    *rep;

	assign_read_customer(mt, tup, &c, hypothetical);
	owner = heap_getattr(tup, mt->owner_att, mt->tupdesc, &isnull);
	/* a stored customer is explained as a re-evaluation: its owner keeps its slot */
	if (!isnull)
		c.current_owner = mt->owner_type == INT4OID ? DatumGetInt32(owner) : DatumGetInt64(owner);
	/* a customer with a key: its pending suggestion's slot and former owners in cooldown, as the trigger */
	assign_read_history(mt, &c);
	initStringInfo(&tr.rules);
	initStringInfo(&tr.cur);
	tr.nrules = 0;
	tr.ncand = 0;
	assign_decide(mt, tup, &c, &d, true, &tr);

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	json_kv_str(&out, "table", mt->name, false);
	json_kv_str(&out, "key", c.key, true);
	appendStringInfo(&out, ", \"hypothetical\": %s", hypothetical ? "true" : "false");

	json_kv_int(&out, "current_owner", c.current_owner, c.current_owner == 0, true);

	appendStringInfoString(&out, ", \"customer\": {");
	json_kv_str(&out, "tier", c.attr[ATTR_TIER], false);
	json_kv_str(&out, "crop", c.attr[ATTR_CROP], true);
	json_kv_str(&out, "business_type", c.attr[ATTR_BTYPE], true);
	appendStringInfoString(&out, ", \"tags\": [");
	for (i = 0; i < c.ntags; i++)
	{
		if (i)
			appendStringInfoChar(&out, ',');
		escape_json(&out, c.tags[i]);
	}
	appendStringInfoString(&out, "], \"location\": ");
	if (c.loc.present && c.loc.datum != DATUM_WGS84)
		/* GCJ-02 / BD-09: the position looked up (WGS 84) and the one stored */
		appendStringInfo(&out, "{\"lon\": %.9g, \"lat\": %.9g, \"srid\": 4326, \"datum\": \"wgs84\", "
						 "\"as_stored\": {\"lon\": %.9g, \"lat\": %.9g, \"srid\": %d, \"datum\": \"%s\"}}",
						 c.loc.x, c.loc.y, c.loc.stored_x, c.loc.stored_y, c.loc.srid,
						 datum_name((AllocDatum) c.loc.datum));
	else if (c.loc.present)
		appendStringInfo(&out, "{\"lon\": %.9g, \"lat\": %.9g, \"srid\": %d}", c.loc.x, c.loc.y, c.loc.srid);
	else
		appendStringInfoString(&out, "null");
	appendStringInfoChar(&out, '}');

	appendStringInfoString(&out, ", \"territories\": [");
	for (i = 0; i < c.nterr; i++)
	{
		TerritoryInfo *t = c.terr[i];

		if (i)
			appendStringInfoChar(&out, ',');
		appendStringInfoChar(&out, '{');
		json_kv_int(&out, "id", t->id, false, false);
		json_kv_str(&out, "code", t->code, true);
		json_kv_str(&out, "name", t->name, true);
		json_kv_int(&out, "priority", t->priority, false, true);
		appendStringInfo(&out, ", \"exclusive\": %s", t->exclusive ? "true" : "false");
		json_kv_int(&out, "owner_rep_id", t->owner_rep, t->owner_rep == 0, true);
		json_kv_int(&out, "owner_team_id", t->owner_team, t->owner_team == 0, true);
		appendStringInfo(&out, ", \"winner\": %s", i == 0 ? "true" : "false");
		appendStringInfoChar(&out, '}');
	}
	appendStringInfoString(&out, "]");
	appendStringInfoString(&out, ", \"tie_break\": \"territories: priority DESC, id ASC; candidates: policy order, then rep id ASC\"");
	appendStringInfo(&out, ", \"rules\": [%s]", tr.rules.data);

	appendStringInfoString(&out, ", \"result\": {");
	json_kv_str(&out, "outcome", d.kind == DECISION_ASSIGN ? "assign" :
				d.kind == DECISION_SUGGEST ? "suggest" : "pool", false);
	rep = d.rep_id ? config_get_rep(d.rep_id) : NULL;
	json_kv_int(&out, "rep_id", d.rep_id, d.rep_id == 0, true);
	json_kv_str(&out, "rep", rep ? rep->code : NULL, true);
	json_kv_int(&out, "team_id", d.team_id, d.team_id == 0, true);
	json_kv_int(&out, "rule_id", d.rule_id, d.rule_id == 0, true);
	json_kv_int(&out, "territory_id", d.territory_id, d.territory_id == 0, true);
	json_kv_str(&out, "reason", d.reason, true);
	appendStringInfoString(&out, "}}");

	return DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data));
}

typedef struct KeyInput
{
	ManagedTable *mt;
	const char *text;
} KeyInput;

static void
key_input(void *arg)
{
	KeyInput   *ki = (KeyInput *) arg;
	Form_pg_attribute att = TupleDescAttr(ki->mt->tupdesc, ki->mt->key_att - 1);
	Oid			infunc,
				ioparam;

	AllocOwnerSwitch sw;

	/* a domain's input runs its CHECKs: the table owner's code (undone by the subtransaction on error) */
	getTypeInputInfo(att->atttypid, &infunc, &ioparam);
	alloc_become_role(ki->mt->owner, &sw);
	(void) OidInputFunctionCall(infunc, (char *) ki->text, ioparam, att->atttypmod);
	alloc_restore_table_owner(&sw);
}

/* Whether text is valid input for the key column's type (no error escapes) */
static bool
key_input_ok(ManagedTable *mt, const char *s)
{
	KeyInput	ki = {mt, s};

	return alloc_try(key_input, &ki, NULL);
}

static char *
key_type_name(ManagedTable *mt)
{
	Form_pg_attribute att = TupleDescAttr(mt->tupdesc, mt->key_att - 1);

	return format_type_with_typemod(att->atttypid, att->atttypmod);
}

/*
 * Whether the caller may read the stored row at tid: SELECT on the table and
 * the table's row-level security, checked as the caller by the row's ctid
 * (a comparison that runs no code of the table's).  Without SELECT: 42501,
 * as reading the table would say.
 */
static bool
caller_sees_row(ManagedTable *mt, ItemPointer tid)
{
	Oid			types[1] = {TIDOID};
	Datum		vals[1] = {PointerGetDatum(tid)};
	bool		seen;

	if (pg_class_aclcheck(mt->relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, get_rel_name(mt->relid));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(psprintf("SELECT 1 FROM %s t WHERE t.ctid = $1", mt->name),
							  1, types, vals, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "explain: checking the caller's view of the customer failed");
	seen = SPI_processed > 0;
	SPI_finish();
	return seen;
}

PG_FUNCTION_INFO_V1(allocation_explain_key);
Datum
allocation_explain_key(PG_FUNCTION_ARGS)
{
	Oid			relid;
	text	   *key;
	ManagedTable *mt;
	HeapTuple	tup;
	char	   *sql;
	ItemPointerData tid;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	relid = PG_GETARG_OID(0);
	key = PG_GETARG_TEXT_PP(1);
	config_prepare();
	tindex_prepare();
	mt = config_get_table(relid, false);
	if (!key_input_ok(mt, text_to_cstring(key)))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_CUSTOMER_NOT_FOUND),
				 errmsg("customer %s not found in %s", text_to_cstring(key), mt->name),
				 errdetail("\"%s\" is not a valid %s, the type of the key column.", text_to_cstring(key), key_type_name(mt)),
				 errhint("For a hypothetical customer pass the row as jsonb: allocation.explain('%s', '{...}'::jsonb).",
						 mt->name)));
	sql = psprintf("SELECT t, t.ctid FROM %s t WHERE %s = $1::%s",
				   mt->name,
				   quote_identifier(NameStr(TupleDescAttr(mt->tupdesc, mt->key_att - 1)->attname)),
				   key_type_name(mt));
	tup = fetch_row(mt, sql, TEXTOID, PointerGetDatum(key), &tid);
	/* read as the table's owner; explained only if the caller may see the row (privileges, RLS) */
	if (tup != NULL && !caller_sees_row(mt, &tid))
		tup = NULL;
	if (tup == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_CUSTOMER_NOT_FOUND),
				 errmsg("customer %s not found in %s", text_to_cstring(key), mt->name),
				 errdetail("No row of %s has that key.", mt->name),
				 errhint("For a customer that is not stored pass the row as jsonb: allocation.explain('%s', '{...}'::jsonb).",
						 mt->name)));
	{
		/* a stored customer: also whether the current rep could claim it now */
		Datum		res = explain_tuple(mt, tup, false);
		Oid			types[3] = {JSONBOID, REGCLASSOID, TEXTOID};
		Datum		vals[3] = {res, ObjectIdGetDatum(relid), PointerGetDatum(key)};
		bool		isnull;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args("SELECT $1 || pg_catalog.jsonb_build_object('claim', allocation.explain_claim($2, $3))",
								  3, types, vals, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "explaining the claim checks failed");
		res = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		res = SPI_datumTransfer(res, false, -1);
		SPI_finish();
		PG_RETURN_DATUM(res);
	}
}

PG_FUNCTION_INFO_V1(allocation_explain_row);
Datum
allocation_explain_row(PG_FUNCTION_ARGS)
{
	Oid			relid;
	ManagedTable *mt;
	HeapTuple	tup;
	char	   *sql;
	Jsonb	   *row;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	relid = PG_GETARG_OID(0);
	row = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_OBJECT(row))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_BAD_ROW),
				 errmsg("hypothetical customer must be a JSON object"),
				 errdetail("explain() got a JSON value that is not an object."),
				 errhint("Pass column names and values, e.g. '{\"tier\": \"retailer\", \"location\": \"SRID=4326;POINT(113.2 28.1)\"}'.")));
	config_prepare();
	tindex_prepare();
	mt = config_get_table(relid, false);
	sql = psprintf("SELECT pg_catalog.jsonb_populate_record(NULL::%s, $1)", mt->name);
	tup = fetch_row(mt, sql, JSONBOID, JsonbPGetDatum(row), NULL);
	if (tup == NULL)
		elog(ERROR, "jsonb_populate_record returned no row");
	PG_RETURN_DATUM(explain_tuple(mt, tup, true));
}

/* Memory and size of this backend's territory index (for bench/) */
PG_FUNCTION_INFO_V1(allocation_cache_stats);
Datum
allocation_cache_stats(PG_FUNCTION_ARGS)
{
	TIndexStats st;
	StringInfoData out;

	tindex_stats(&st);
	initStringInfo(&out);
	appendStringInfo(&out, "{\"mode\": \"%s\", \"territories\": " INT64_FORMAT ", \"vertices\": " INT64_FORMAT
					 ", \"bytes\": " INT64_FORMAT ", \"bytes_per_vertex\": %.2f, \"limit_bytes\": " INT64_FORMAT
					 ", \"over_limit\": %s, \"build_ms\": %.1f",
					 st.in_memory ? "memory" : "indexed", st.territories, st.vertices,
					 (int64) st.bytes, st.vertices > 0 ? (double) st.bytes / st.vertices : 0.0,
					 (int64) st.limit, st.over_limit ? "true" : "false", st.build_ms);
	appendStringInfo(&out, ", \"index_mode\": \"%s\", \"reason\": ", st.index_mode);
	escape_json(&out, st.reason ? st.reason : "");
	appendStringInfo(&out, ", \"preloaded\": %s, \"version\": \"%016" INT64_MODIFIER "x\", \"backend_bytes\": " INT64_FORMAT
					 ", \"shared_bytes\": " INT64_FORMAT ", \"shared_builds\": %d, \"shared_total_bytes\": " INT64_FORMAT
					 ", \"attached_backends\": %d, \"shared_builds_made\": " INT64_FORMAT "}",
					 st.preloaded ? "true" : "false", st.version, (int64) st.backend_bytes,
					 (int64) st.shared_bytes, st.shared_builds, (int64) st.shared_total_bytes,
					 st.attached_backends, st.shared_builds_made);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
