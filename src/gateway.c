/*
 * gateway.c
 *		The engine's call context: who called a public function, and what an
 *		owner change the engine itself makes is about.
 *
 * Public functions that change the engine's state are thin C "gateways":
 * allocation.assign(...) is declared AS 'allocation_gateway', which records
 * the calling role, becomes the extension owner (search_path pinned to
 * pg_catalog, pg_temp) and runs the internal implementation
 * allocation._assign(...) with the same arguments.  The implementation
 * checks what the caller may do (allocation._actor(), _caller_owns()); internal
 * functions are executable by the extension owner only, so nobody can skip
 * those checks by calling an implementation directly.
 *
 * The caller and the change context live in this backend's memory only: no
 * setting a user can SET reaches them.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "allocation.h"

/* The owner change _owner_update() is making (NULL: none) */
AllocChange *alloc_change = NULL;

typedef struct GatewayCache
{
	FmgrInfo	impl;
	char	   *name;
} GatewayCache;

/* Finds allocation._<name>(same argument types) for the gateway function fn_oid */
static GatewayCache *
gateway_lookup(FmgrInfo *flinfo)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	GatewayCache *gc;
	Oid			impl;
	char	   *implname;

	alloc_lookup_oids();
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(flinfo->fn_oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", flinfo->fn_oid);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->pronamespace != alloc_oids.schema || proc->prosecdef)
		elog(ERROR, "allocation_gateway is for the extension's own SECURITY INVOKER functions");
	implname = psprintf("_%s", NameStr(proc->proname));
	impl = LookupFuncName(list_make2(makeString("allocation"), makeString(implname)),
						  proc->pronargs, proc->proargtypes.values, true);
	ReleaseSysCache(tup);
	if (!OidIsValid(impl) || get_func_namespace(impl) != alloc_oids.schema)
		elog(ERROR, "implementation allocation.%s of a gateway function is missing", implname);
	gc = MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(GatewayCache));
	fmgr_info_cxt(impl, &gc->impl, flinfo->fn_mcxt);
	gc->impl.fn_expr = flinfo->fn_expr;
	gc->name = MemoryContextStrdup(flinfo->fn_mcxt, implname);
	return gc;
}

/* A public function: runs allocation._<its name> as the extension owner for the caller */
PG_FUNCTION_INFO_V1(allocation_gateway);
Datum
allocation_gateway(PG_FUNCTION_ARGS)
{
	GatewayCache *gc = (GatewayCache *) fcinfo->flinfo->fn_extra;
	LOCAL_FCINFO(inner, FUNC_MAX_ARGS);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			save_modes = 0;
	Oid			save_actor = alloc_actor_override;
	AllocUserSwitch sw;
	Datum		result;
	int			i;

	if (gc == NULL)
	{
		gc = gateway_lookup(fcinfo->flinfo);
		fcinfo->flinfo->fn_extra = gc;
	}
	InitFunctionCallInfoData(*inner, &gc->impl, fcinfo->nargs, fcinfo->fncollation,
							 fcinfo->context, fcinfo->resultinfo);
	for (i = 0; i < fcinfo->nargs; i++)
		inner->args[i] = fcinfo->args[i];

	/* a set is materialized inside the call, while the switch holds */
	if (rsinfo && IsA(rsinfo, ReturnSetInfo))
	{
		save_modes = rsinfo->allowedModes;
		if (!(save_modes & SFRM_Materialize))
			elog(ERROR, "allocation.%s must be called in a context that accepts a set", gc->name + 1);
		rsinfo->allowedModes = SFRM_Materialize;
	}

	/*
	 * The role running the call is the caller -- unless it is the engine
	 * itself (the extension owner), calling on behalf of the caller it
	 * already recorded.
	 */
	alloc_lookup_oids();
	if (GetUserId() != alloc_oids.schema_owner || !OidIsValid(alloc_actor_override))
		alloc_actor_override = GetUserId();
	alloc_become_owner(&sw);
	PG_TRY();
	{
		result = FunctionCallInvoke(inner);
	}
	PG_CATCH();
	{
		alloc_actor_override = save_actor;
		PG_RE_THROW();
	}
	PG_END_TRY();
	alloc_restore_user(&sw);
	alloc_actor_override = save_actor;
	if (rsinfo && IsA(rsinfo, ReturnSetInfo))
		rsinfo->allowedModes = save_modes;
	fcinfo->isnull = inner->isnull;
	return result;
}

/* _actor(): the role the engine records (alloc_actor_id) */
PG_FUNCTION_INFO_V1(allocation_caller);
Datum
allocation_caller(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(GetUserNameFromId(alloc_actor_id(), false)));
}

/*
 * _caller_owns(tbl): whether the caller owns tbl (directly or by role
 * membership), as ALTER TABLE would require.  NULL for a missing relation.
 */
PG_FUNCTION_INFO_V1(allocation_caller_owns);
Datum
allocation_caller_owns(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);

	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		PG_RETURN_NULL();
	PG_RETURN_BOOL(has_privs_of_role(alloc_actor_id(), alloc_rel_owner(relid)));
}

/* The rep whose login is the role (0 = none); a few roles cached until allocation.rep changes */
#define REP_CACHE 4
static struct
{
	Oid			role;
	int64		rep;
}			rep_cache[REP_CACHE];
static int	rep_cache_n = 0;

void
gateway_forget_rep(void)
{
	rep_cache_n = 0;
}

int64
alloc_rep_of_role(Oid role)
{
	AllocUserSwitch sw;
	Oid			types[1] = {NAMEOID};
	Datum		vals[1];
	int64		rep = 0;
	int			i;

	for (i = 0; i < rep_cache_n; i++)
		if (rep_cache[i].role == role)
			return rep_cache[i].rep;
	vals[0] = DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(role, false)));
	alloc_spi_begin(&sw);
	if (SPI_execute_with_args("SELECT id FROM allocation.rep WHERE login = $1", 1, types, vals, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "looking up the rep of a role failed");
	if (SPI_processed > 0)
	{
		bool		isnull;

		rep = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	alloc_spi_end(&sw);
	if (rep_cache_n == REP_CACHE)
		rep_cache_n = 0;		/* simple: start over */
	rep_cache[rep_cache_n].role = role;
	rep_cache[rep_cache_n].rep = rep;
	rep_cache_n++;
	return rep;
}

/*
 * The rep acting in this session (0 = none): the current role's, else the
 * session user's -- a rep's login that SET ROLE to a group role is still
 * that rep.
 */
int64
alloc_acting_rep(void)
{
	int64		rep = alloc_rep_of_role(GetUserId());

	if (rep == 0 && GetSessionUserId() != GetUserId())
		rep = alloc_rep_of_role(GetSessionUserId());
	return rep;
}

/* current_rep_id(): the rep whose login is the current role (the caller, inside the engine) */
PG_FUNCTION_INFO_V1(allocation_current_rep_id);
Datum
allocation_current_rep_id(PG_FUNCTION_ARGS)
{
	int64		rep = alloc_rep_of_role(alloc_actor_id());

	if (rep == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(rep);
}
