/*
 * allocation.c
 *		Module wiring: GUCs, hooks, transaction callbacks, cache invalidation.
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
#include "frame.h"
#include "record.h"
#include "stat.h"

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
		(relid == alloc_oids.new_rep_policy && OidIsValid(relid)) || config_known_relid(relid))
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
		frames_reset_all();
		record_reset_all();
		alloc_actor_override = InvalidOid;
		alloc_change = NULL;
		assign_reset_locks();
		assign_forget_bases();
		alloc_decision_depth = 0;
		tindex_xact_end();
		realign_xact_end();
	}
}

/* Subtransaction abort: its counter writes and locks are gone, re-read them */
static void
alloc_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		assign_forget_bases();
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
	alloc_stat_init();
	MarkGUCPrefixReserved("allocation");

	CacheRegisterRelcacheCallback(alloc_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, alloc_namespace_callback, (Datum) 0);
	RegisterXactCallback(alloc_xact_callback, NULL);
	RegisterSubXactCallback(alloc_subxact_callback, NULL);
	onconflict_init();
	tshared_init();
	alloc_audit_init();
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
