/*
 * allocation.c
 *		Module wiring: GUCs, cache invalidation, user switching, PostGIS lookups.
 *
 * _PG_init only registers things; the work lives in the other files.
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
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/resowner.h"

#include "allocation.h"

PG_MODULE_MAGIC;

void		_PG_init(void);


AllocationOids alloc_oids;

/* Relcache invalidation: drop whichever cache depends on the relation */
static void
alloc_relcache_callback(Datum arg, Oid relid)
{
	name_terms_relcache(relid);
	if (!OidIsValid(relid))
	{
		config_invalidate();
		tindex_invalidate();
		gateway_forget_rep();
		alloc_oids.valid = false;
		return;
	}
	if (!alloc_oids.valid)
		return;
	if (relid == alloc_oids.territory)
		tindex_invalidate();
	if (relid == alloc_oids.rep)
		gateway_forget_rep();
	if (relid == alloc_oids.team || relid == alloc_oids.rep ||
		relid == alloc_oids.rule || relid == alloc_oids.managed_table ||
		config_known_relid(relid))
		config_invalidate();
}

/* A schema changed (e.g. DROP/CREATE EXTENSION): forget the cached OIDs */
static void
alloc_namespace_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	alloc_oids.valid = false;
	config_invalidate();
	tindex_invalidate();
	name_terms_invalidate();
}

/* Transaction end: forget per-statement batches */
static void
alloc_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PREPARE)
	{
		trigger_reset_all();
		alloc_actor_override = InvalidOid;
		alloc_change = NULL;
		assign_reset_locks();
		assign_forget_bases();
		alloc_decision_depth = 0;
		tindex_xact_end();
	}
}

static char *allocation_claim_timezone = NULL;

/* allocation.territory_cache_max: a new bound applies at the next decision */
int			alloc_territory_cache_max_kb = 262144;

static void
assign_territory_cache_max(int newval, void *extra)
{
	tindex_invalidate();
}

/* allocation.claim_timezone must name a time zone PostgreSQL knows */
static bool
check_claim_timezone(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0' || pg_tzset(*newval) == NULL)
	{
		GUC_check_errdetail("\"%s\" is not a time zone name known to PostgreSQL.", *newval ? *newval : "");
		GUC_check_errhint("Use a name from pg_timezone_names, such as Asia/Shanghai.");
		return false;
	}
	return true;
}

void
_PG_init(void)
{
	DefineCustomStringVariable("allocation.claim_timezone",
							   "Time zone whose calendar day the daily claim limit counts in.",
							   "Only a superuser can change it (ALTER SYSTEM / ALTER DATABASE), so a session cannot move its claims to another day.",
							   &allocation_claim_timezone, "Asia/Shanghai",
							   PGC_SUSET, 0, check_claim_timezone, NULL, NULL);
	DefineCustomIntVariable("allocation.territory_cache_max",
							"Largest in-memory territory index a backend builds.",
							"Above it (and at 0) the backend keeps only the territories' attributes in memory and finds the territories of a point with a GiST-indexed ST_Covers query per row: slower, same answers.",
							&alloc_territory_cache_max_kb, 262144, 0, MAX_KILOBYTES,
							PGC_SUSET, GUC_UNIT_KB, NULL, assign_territory_cache_max, NULL);
	MarkGUCPrefixReserved("allocation");

	CacheRegisterRelcacheCallback(alloc_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, alloc_namespace_callback, (Datum) 0);
	RegisterXactCallback(alloc_xact_callback, NULL);
	tshared_init();
}

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

/* Statement trigger on configuration tables: invalidate every backend's cache */
PG_FUNCTION_INFO_V1(allocation_invalidate);
Datum
allocation_invalidate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "allocation_invalidate: not called by trigger manager");
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	alloc_lookup_oids();
	if (RelationGetRelid(trigdata->tg_relation) == alloc_oids.territory)
		tindex_note_change();
	PG_RETURN_POINTER(NULL);
}
