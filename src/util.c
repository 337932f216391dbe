/*
 * util.c
 *		The bottom layer every other file may use: the extension's catalog
 *		OIDs, running as the extension owner (SPI with a pinned search_path),
 *		the role events name, error capture, small formatting helpers.
 *		It calls no other file of the extension.
 */
#include "postgres.h"

#include "pgtime.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/resowner.h"

#include "allocation.h"

/* Schema of an installed extension (not exported by PostgreSQL 15) */
static Oid
extension_schema(const char *extname)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			result = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum(extname));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		result = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (!OidIsValid(result))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"%s\" is not installed", extname),
				 errhint("CREATE EXTENSION %s;", extname)));
	return result;
}

/* Resolves the OIDs of the extension's schema and tables */
void
alloc_lookup_oids(void)
{
	Oid			nsp;
	HeapTuple	tup;

	if (alloc_oids.valid)
		return;
	nsp = get_namespace_oid("allocation", false);
	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for namespace %u", nsp);
	alloc_oids.schema_owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	alloc_oids.schema = nsp;
	alloc_oids.team = get_relname_relid("team", nsp);
	alloc_oids.rep = get_relname_relid("rep", nsp);
	alloc_oids.territory = get_relname_relid("territory", nsp);
	alloc_oids.rule = get_relname_relid("rule", nsp);
	alloc_oids.managed_table = get_relname_relid("managed_table", nsp);
	alloc_oids.new_rep_policy = get_relname_relid("new_rep_policy", nsp);
	alloc_oids.postgis_schema = extension_schema("postgis");
	alloc_oids.valid = true;
}

/* Set by claim()/release() around their work so that events name the caller */
Oid			alloc_actor_override = InvalidOid;

/*
 * The role events name: the caller recorded by a gateway or claim(); else
 * the current role -- unless that is the extension owner running one of its
 * SECURITY DEFINER functions, then the role that called it (SET ROLE's, or
 * the session user: GetOuterUserId() is not changed by SECURITY DEFINER).
 */
Oid
alloc_actor_id(void)
{
	Oid			user;

	if (OidIsValid(alloc_actor_override))
		return alloc_actor_override;
	user = GetUserId();
	alloc_lookup_oids();
	if (user == alloc_oids.schema_owner)
		return GetOuterUserId();
	return user;
}

/*
 * Internal reads and writes run as the owner of the allocation schema with a
 * pinned search_path, so application roles need no grants on the engine's
 * tables and cannot redirect its queries.
 */
void
alloc_become_owner(AllocUserSwitch *sw)
{
	alloc_lookup_oids();
	GetUserIdAndSecContext(&sw->save_userid, &sw->save_sec);
	SetUserIdAndSecContext(alloc_oids.schema_owner,
						   sw->save_sec | SECURITY_LOCAL_USERID_CHANGE);
	sw->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

void
alloc_restore_user(AllocUserSwitch *sw)
{
	AtEOXact_GUC(true, sw->save_nestlevel);
	SetUserIdAndSecContext(sw->save_userid, sw->save_sec);
}

/*
 * Runs fn(arg) in a subtransaction; on error rolls it back and returns
 * false, with the error in *err when err is not NULL.
 */
bool
alloc_try(void (*fn) (void *arg), void *arg, ErrorData **err)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	bool		ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		if (err)
			*err = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return ok;
}

/* SPI session run as the extension owner (see alloc_become_owner) */
void
alloc_spi_begin(AllocUserSwitch *sw)
{
	alloc_become_owner(sw);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
alloc_spi_end(AllocUserSwitch *sw)
{
	SPI_finish();
	alloc_restore_user(sw);
}

/* A PostGIS function, looked up in the schema PostGIS is installed in */
Oid
alloc_postgis_func(const char *name, int nargs, Oid *argtypes)
{
	List	   *qname;

	alloc_lookup_oids();
	qname = list_make2(makeString(get_namespace_name(alloc_oids.postgis_schema)),
					   makeString(pstrdup(name)));
	return LookupFuncName(qname, nargs, argtypes, false);
}

Oid
alloc_geometry_type(void)
{
	alloc_lookup_oids();
	return GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
						   CStringGetDatum("geometry"),
						   ObjectIdGetDatum(alloc_oids.postgis_schema));
}

/* An SPI plan prepared once per backend and kept in *slot */
SPIPlanPtr
alloc_keep_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *types)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, types);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*slot = p;
	}
	return *slot;
}


/* A JSON string, or null */
void
json_str_or_null(StringInfo buf, const char *s)
{
	if (s)
		escape_json(buf, s);
	else
		appendStringInfoString(buf, "null");
}

/* How a match reads in messages: "same credit code", "same phone", "similar name" */
const char *
dup_match_words(const char *match)
{
	return strcmp(match, "credit_code") == 0 ? "same credit code" :
		strcmp(match, "phone") == 0 ? "same phone" : "similar name";
}
