/*
 * owner.c
 *		Running a managed table's code as the table's owner.
 *
 * User-supplied code -- rule conditions and every function they call, the
 * table's triggers, casts and CHECKs of its domains -- never runs as the
 * extension owner or as whoever happens to trigger the engine: it runs as
 * the managed table's owner, as a security-restricted operation, with the
 * owner's default search_path (pg_temp last).  That holds at compile time
 * (constant folding in expression_planner() can call IMMUTABLE functions),
 * at evaluation time and in explain().
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "allocation.h"

/*
 * The search_path a role's sessions start with in this database (ALTER ROLE
 * ... SET, ALTER DATABASE ... SET, or the built-in default), with pg_temp
 * appended so that temporary objects come last.
 */
static char *
owner_search_path(Oid role)
{
	static Oid	cached_role = InvalidOid;
	static LocalTransactionId cached_lxid = InvalidLocalTransactionId;
	static char *cached_path = NULL;
	static char *conf_path = NULL;
	static TimestampTz conf_time = 0;
	AllocUserSwitch sw;
	Oid			types[2] = {OIDOID, OIDOID};
	Datum		vals[2] = {ObjectIdGetDatum(role), ObjectIdGetDatum(MyDatabaseId)};
	char	   *path;

	/* once per transaction and owner */
	if (cached_path && cached_role == role && cached_lxid == MyProc->lxid && conf_time == PgReloadTime)
		return cached_path;
	alloc_spi_begin(&sw);
	if (SPI_execute_with_args("SELECT (SELECT substr(c, 13) FROM pg_catalog.pg_db_role_setting s, unnest(s.setconfig) c"
							  "         WHERE s.setrole IN ($1, 0) AND s.setdatabase IN ($2, 0)"
							  "           AND c LIKE 'search\\_path=%'"
							  "         ORDER BY s.setrole = 0, s.setdatabase = 0 LIMIT 1)",
							  2, types, vals, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "reading the default search_path of the table owner failed");
	path = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (path == NULL)
	{
		/*
		 * No role or database setting applies: the configured value
		 * (postgresql.conf, ALTER SYSTEM) -- never this session's reset value,
		 * which the connecting client can choose.  Read again after a reload.
		 */
		if (conf_path == NULL || conf_time != PgReloadTime)
		{
			if (SPI_execute("SELECT coalesce((SELECT f.setting FROM pg_catalog.pg_file_settings f"
							" WHERE f.name = 'search_path' AND f.applied ORDER BY f.seqno DESC LIMIT 1),"
							" (SELECT boot_val FROM pg_catalog.pg_settings WHERE name = 'search_path'))",
							true, 1) != SPI_OK_SELECT || SPI_processed != 1)
				elog(ERROR, "reading the configured search_path failed");
			if (conf_path)
				pfree(conf_path);
			conf_path = MemoryContextStrdup(TopMemoryContext,
											SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
			conf_time = PgReloadTime;
		}
		path = conf_path;
	}
	path = MemoryContextStrdup(TopMemoryContext, psprintf("%s, pg_temp", path));
	alloc_spi_end(&sw);
	if (cached_path)
		pfree(cached_path);
	cached_path = path;
	cached_role = role;
	cached_lxid = MyProc->lxid;
	return path;
}

/*
 * The engine never touches a customer table as the extension owner: a table
 * owner's code (casts and CHECKs of its domains, index expressions, triggers)
 * would run with the extension owner's rights.  Reads and the owner changes
 * run as the table's owner, as a security-restricted operation, with the
 * owner's default search_path and pg_temp last.  Owner changes (which run the
 * table's triggers) never run while the calling session has temporary
 * relations or types, which that code could otherwise pick up by an
 * unqualified name.
 */
void
alloc_refuse_temp_objects(const char *what)
{
	AllocUserSwitch sw;
	bool		isnull,
				any;
	Oid			temp_ns,
				temp_toast_ns;

	/* most sessions never create a temporary object */
	GetTempNamespaceState(&temp_ns, &temp_toast_ns);
	if (!OidIsValid(temp_ns))
		return;
	alloc_spi_begin(&sw);
	if (SPI_execute("SELECT pg_catalog.pg_my_temp_schema() <> 0 AND"
					" (EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.relnamespace = pg_catalog.pg_my_temp_schema())"
					"  OR EXISTS (SELECT 1 FROM pg_catalog.pg_type t WHERE t.typnamespace = pg_catalog.pg_my_temp_schema()))",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "checking for temporary objects failed");
	any = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	alloc_spi_end(&sw);
	if (any)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s cannot run in a session that has temporary tables or types", what),
				 errdetail("It runs the customer table's triggers as the table's owner; a temporary object could stand in for one of the owner's."),
				 errhint("Run it in a session without temporary objects (DISCARD TEMP).")));
}

/* The owner of a relation */
Oid
alloc_rel_owner(Oid relid)
{
	HeapTuple	tup;
	Oid			relowner;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	relowner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return relowner;
}

/*
 * Becomes role (a managed table's owner): security-restricted operation,
 * the role's default search_path.  Undo with alloc_restore_table_owner().
 */
void
alloc_become_role(Oid role, AllocOwnerSwitch *sw)
{
	char	   *search_path = owner_search_path(role);

	sw->nest = NewGUCNestLevel();
	(void) set_config_option("search_path", search_path, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	GetUserIdAndSecContext(&sw->save_userid, &sw->save_sec);
	SetUserIdAndSecContext(role, sw->save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
}

void
alloc_become_table_owner(Oid relid, AllocOwnerSwitch *sw)
{
	alloc_become_role(alloc_rel_owner(relid), sw);
}

void
alloc_restore_table_owner(AllocOwnerSwitch *sw)
{
	SetUserIdAndSecContext(sw->save_userid, sw->save_sec);
	/* false: settings the owner's code changed (even with is_local = false) are thrown away */
	AtEOXact_GUC(false, sw->nest);
}

