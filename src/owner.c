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

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/pg_db_role_setting.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/fmgroids.h"
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

/* search_path of one pg_db_role_setting row (ALTER ROLE/DATABASE ... SET), NULL = none */
static char *
role_setting_search_path(Oid db, Oid role)
{
	Relation	rel;
	ScanKeyData keys[2];
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *result = NULL;

	rel = table_open(DbRoleSettingRelationId, AccessShareLock);
	ScanKeyInit(&keys[0], Anum_pg_db_role_setting_setdatabase, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(db));
	ScanKeyInit(&keys[1], Anum_pg_db_role_setting_setrole, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(role));
	scan = systable_beginscan(rel, DbRoleSettingDatidRolidIndexId, true, NULL, 2, keys);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_db_role_setting_setconfig, RelationGetDescr(rel), &isnull);

		if (!isnull)
		{
			Datum	   *elems;
			bool	   *nulls;
			int			n,
						i;

			deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
			for (i = 0; i < n; i++)
			{
				char	   *c;

				if (nulls[i])
					continue;
				c = TextDatumGetCString(elems[i]);
				if (strncmp(c, "search_path=", 12) == 0)
					result = pstrdup(c + 12);
			}
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return result;
}

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
	static TimestampTz cached_reload = 0;
	AllocUserSwitch sw;
	char	   *path;

	/* once per transaction and owner (no query: a catalog index probe or four) */
	if (cached_path && cached_role == role && cached_lxid == MyProc->lxid && cached_reload == PgReloadTime)
		return cached_path;
	/* precedence as at login: database and role, role, database, everyone */
	path = role_setting_search_path(MyDatabaseId, role);
	if (path == NULL)
		path = role_setting_search_path(InvalidOid, role);
	if (path == NULL)
		path = role_setting_search_path(MyDatabaseId, InvalidOid);
	if (path == NULL)
		path = role_setting_search_path(InvalidOid, InvalidOid);
	if (path == NULL)
	{
		/*
		 * No role or database setting applies: the configured value
		 * (postgresql.conf, ALTER SYSTEM) -- never this session's reset value,
		 * which the connecting client can choose.  Read again after a reload.
		 */
		if (conf_path == NULL || conf_time != PgReloadTime)
		{
			alloc_spi_begin(&sw);
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
			alloc_spi_end(&sw);
		}
		path = conf_path;
	}
	path = MemoryContextStrdup(TopMemoryContext, psprintf("%s, pg_temp", path));
	if (cached_path)
		pfree(cached_path);
	cached_path = path;
	cached_role = role;
	cached_lxid = MyProc->lxid;
	cached_reload = PgReloadTime;
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

/*
 * Becomes the role that called the engine (a manager's own decision runs
 * with that manager's rights, not restricted, with the search_path in
 * force).  Undo with alloc_restore_table_owner().
 */
void
alloc_become_caller(Oid role, AllocOwnerSwitch *sw)
{
	GetUserIdAndSecContext(&sw->save_userid, &sw->save_sec);
	sw->nest = NewGUCNestLevel();
	SetUserIdAndSecContext(role, sw->save_sec | SECURITY_LOCAL_USERID_CHANGE);
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

