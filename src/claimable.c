/*
 * claimable.c
 *		The rep's pool screen: the pool customers of a managed table nearest
 *		to a point, read as the table's owner with its GiST index (KNN).
 *
 * The claim checks themselves are set-based SQL (sql_src/74_claimable.sql,
 * allocation._claim_screen); this file only walks the customer table in
 * distance order, which needs the table's own location column and index and
 * must run as the table's owner (never as the extension owner), like every
 * other read of a customer table (allocation._table_rows in claims.c).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/tuplestore.h"

#include "allocation.h"

/*
 * _table_nearest(tbl, near, lim, skip): the keys of the table's customers
 * whose owner column is NULL (the public pool), nearest to near first (the
 * location column's <-> distance, in its SRID's units; rows without a
 * location last), lim rows after the first skip.  No tie-break: a second sort
 * key would stop the planner from using the GiST index's distance order.  Internal: run
 * by the extension owner, it reads the table as the table's owner.
 */
PG_FUNCTION_INFO_V1(allocation_table_nearest);
Datum
allocation_table_nearest(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ManagedTable *mt;
	StringInfoData sql;
	AllocOwnerSwitch osw;
	Oid			types[3];
	Datum		vals[3];
	Tuplestorestate *ts;
	TupleDesc	tupdesc;
	MemoryContext oldcxt;
	const char *key,
			   *loc,
			   *owner,
			   *op;
	int32		lim,
				skip;
	uint64		r;

	alloc_lookup_oids();
	if (GetUserId() != alloc_oids.schema_owner && !superuser())
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("allocation._table_nearest() is internal")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("allocation._table_nearest() needs a table, a point, a count and an offset")));
	lim = PG_GETARG_INT32(2);
	skip = PG_GETARG_INT32(3);
	if (lim < 0 || skip < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("allocation._table_nearest() needs a count and an offset of at least 0")));
	mt = config_get_table(PG_GETARG_OID(0), false);
	if (mt->loc_att == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("table %s has no location column", mt->name),
				 errdetail("It was managed without a location column, so its customers cannot be ordered by distance."),
				 errhint("Call it without a point (newest first), or manage the table with a location column.")));

	key = quote_identifier(NameStr(TupleDescAttr(mt->tupdesc, mt->key_att - 1)->attname));
	loc = quote_identifier(NameStr(TupleDescAttr(mt->tupdesc, mt->loc_att - 1)->attname));
	owner = quote_identifier(NameStr(TupleDescAttr(mt->tupdesc, mt->owner_att - 1)->attname));
	op = psprintf("OPERATOR(%s.<->)", quote_identifier(get_namespace_name(alloc_oids.postgis_schema)));
	initStringInfo(&sql);
	/* ORDER BY the distance operator alone: a GiST index on the location column serves it (KNN) */
	appendStringInfo(&sql,
					 "SELECT t.%s::pg_catalog.text, (t.%s %s $1)::pg_catalog.float8 FROM %s t"
					 " WHERE t.%s IS NULL ORDER BY t.%s %s $1 LIMIT $2 OFFSET $3",
					 key, loc, op, mt->name, owner, loc, op);
	types[0] = alloc_geometry_type();
	types[1] = INT8OID;
	types[2] = INT8OID;
	vals[0] = PG_GETARG_DATUM(1);
	vals[1] = Int64GetDatum((int64) lim);
	vals[2] = Int64GetDatum((int64) skip);

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) || !(rsinfo->allowedModes & SFRM_Materialize))
		elog(ERROR, "allocation._table_nearest() must be called in a context that accepts a set");
	oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	tupdesc = CreateTemplateTupleDesc(2);
	TupleDescInitEntry(tupdesc, 1, "key", TEXTOID, -1, 0);
	TupleDescInitEntry(tupdesc, 2, "distance", FLOAT8OID, -1, 0);
	tupdesc = BlessTupleDesc(tupdesc);
	ts = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(oldcxt);

	/* (a read runs no triggers: temporary objects are not refused here) */
	alloc_become_table_owner(mt->relid, &osw);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args(sql.data, 3, types, vals, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "reading a customer table failed");
		for (r = 0; r < SPI_processed; r++)
		{
			Datum		d[2];
			bool		isnull[2];

			d[0] = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull[0]);
			d[1] = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull[1]);
			oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
			tuplestore_putvalues(ts, tupdesc, d, isnull);
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
 * allocation._table_held(tbl, rep, tier): how many customers of a managed
 * table rep holds now whose tier is tier -- the table's own owner and tier
 * columns, read as the table's owner (the owner column is the current
 * ownership: the engine keeps it equal to its records).  The claim policy's
 * max_held of one tier counts with it: a btree on the owner column serves it,
 * where counting from the ownership history would read every event.  0 for
 * a table without a tier column.
 */
PG_FUNCTION_INFO_V1(allocation_table_held);
Datum
allocation_table_held(PG_FUNCTION_ARGS)
{
	ManagedTable *mt;
	AllocOwnerSwitch osw;
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		vals[2];
	char	   *sql;
	int64		n = 0;

	alloc_lookup_oids();
	if (GetUserId() != alloc_oids.schema_owner && !superuser())
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("allocation._table_held() is internal")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_INT64(0);
	mt = config_get_table(PG_GETARG_OID(0), false);
	if (mt->attr_att[ATTR_TIER] == InvalidAttrNumber)
		PG_RETURN_INT64(0);
	sql = psprintf("SELECT count(*) FROM %s t WHERE t.%s = $1 AND t.%s::pg_catalog.text = $2",
				   mt->name,
				   quote_identifier(NameStr(TupleDescAttr(mt->tupdesc, mt->owner_att - 1)->attname)),
				   quote_identifier(NameStr(TupleDescAttr(mt->tupdesc, mt->attr_att[ATTR_TIER] - 1)->attname)));
	vals[0] = PG_GETARG_DATUM(1);
	vals[1] = PG_GETARG_DATUM(2);
	alloc_become_table_owner(mt->relid, &osw);
	PG_TRY();
	{
		bool		isnull;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args(sql, 2, types, vals, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "counting a rep's customers failed");
		n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_finish();
	}
	PG_FINALLY();
	{
		alloc_restore_table_owner(&osw);
	}
	PG_END_TRY();
	PG_RETURN_INT64(n);
}
