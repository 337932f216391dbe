/*-------------------------------------------------------------------------
 *
 * onconflict.c
 *	  Whether an INSERT ... ON CONFLICT may be running in this backend.
 *
 * The BEFORE INSERT trigger must not decide for a row that ON CONFLICT will
 * skip or turn into an UPDATE (it would take a slot and advance a cursor for
 * a customer that never arrives), so it probes the table's key index first.
 * That probe is a btree descent per row -- about a tenth of a managed
 * INSERT's cost -- and is useless for the common INSERT without ON CONFLICT,
 * where a taken key aborts the whole statement anyway.
 *
 * A trigger cannot see its statement's ON CONFLICT clause, so an executor
 * hook counts the executors alive in this backend whose plan has one.  The
 * count goes down when the executor's query memory is deleted -- normally
 * at ExecutorEnd, and on an error when the (sub)transaction's memory goes --
 * so an aborted statement cannot leave it wrong.  The trigger probes while
 * the count is above zero, and also while the hook may have missed an
 * executor: in the transaction that loaded the library (statements already
 * running then did not pass the hook).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/executor.h"
#include "nodes/plannodes.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "allocation.h"

static ExecutorStart_hook_type prev_executor_start = NULL;
static int	live_on_conflict = 0;
static bool hook_may_have_missed = true;

/* Whether a plan tree (or an init/sub plan) inserts with ON CONFLICT */
static bool
plan_has_on_conflict(Plan *plan)
{
	if (plan == NULL)
		return false;
	if (IsA(plan, ModifyTable) && ((ModifyTable *) plan)->onConflictAction != ONCONFLICT_NONE)
		return true;
	return plan_has_on_conflict(plan->lefttree) || plan_has_on_conflict(plan->righttree);
}

/* Memory callback of a counted executor: it is gone */
static void
on_conflict_executor_gone(void *arg)
{
	live_on_conflict--;
}

/* ExecutorStart hook: counts the executors whose statement has ON CONFLICT */
static void
onconflict_executor_start(QueryDesc *queryDesc, int eflags)
{
	PlannedStmt *ps = queryDesc->plannedstmt;
	bool		counted = false;
	ListCell   *lc;

	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);

	if (ps == NULL || (ps->commandType != CMD_INSERT && !ps->hasModifyingCTE))
		return;
	counted = plan_has_on_conflict(ps->planTree);
	foreach(lc, ps->subplans)
		counted = counted || plan_has_on_conflict((Plan *) lfirst(lc));
	if (counted && queryDesc->estate != NULL)
	{
		MemoryContextCallback *cb = MemoryContextAlloc(queryDesc->estate->es_query_cxt,
													   sizeof(MemoryContextCallback));

		cb->func = on_conflict_executor_gone;
		cb->arg = NULL;
		MemoryContextRegisterResetCallback(queryDesc->estate->es_query_cxt, cb);
		live_on_conflict++;
	}
}

/* Transaction end: every executor of the transaction has passed the hook since */
static void
onconflict_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		hook_may_have_missed = false;
}

/* Installs the hook (from _PG_init) */
void
onconflict_init(void)
{
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = onconflict_executor_start;
	RegisterXactCallback(onconflict_xact_callback, NULL);
	/* loaded at postmaster start: nothing can have run before the hook */
	hook_may_have_missed = !process_shared_preload_libraries_in_progress;
}

/* Whether an INSERT being executed now may carry ON CONFLICT (then: probe the key) */
bool
onconflict_possible(void)
{
	return live_on_conflict > 0 || hook_may_have_missed;
}
