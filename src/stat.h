/*
 * stat.h
 *		Engine statistics for the DBA: shared counters behind the views
 *		allocation.stat and allocation.stat_index (stat.c).
 *
 * Collected only when the library is preloaded (shared_preload_libraries =
 * 'allocation'); otherwise every call below returns at once.  The hot path
 * adds to backend-local counters; they reach shared memory once per
 * statement (alloc_stat_statement), so no row takes a lock.
 */
#ifndef ALLOCATION_STAT_H
#define ALLOCATION_STAT_H

#include "postgres.h"

#include "portability/instr_time.h"

/* What a recorded row came to (the columns of allocation.stat) */
typedef enum AllocStatOutcome
{
	ASO_ASSIGNED,				/* given to a rep by a rule */
	ASO_MANUAL,					/* given to a rep by a person: owner on INSERT, reassign, claim, accepted suggestion, pin */
	ASO_POOLED,					/* left in or sent to the public pool (also released, recycled) */
	ASO_SUGGESTED,				/* a review-mode rule suggested a rep */
	ASO_DISPUTED,				/* possible duplicate: kept without an owner for a manager */
	ASO_UNCHANGED,				/* re-examined, owner kept */
	ASO_DELETED,				/* row deleted */
	ASO__N
} AllocStatOutcome;

/* true in a backend of a server that preloaded the library */
extern bool alloc_stat_on;
/* allocation.stat_track: a superuser can stop counting without a restart */
extern bool alloc_stat_track;

#define ALLOC_STAT_ACTIVE() (alloc_stat_on && alloc_stat_track)

/* Wiring: GUC, shared-memory hooks (called from _PG_init) */
extern void alloc_stat_init(void);

/* Start of a timed section (a row's decision, a statement's recording) */
static inline void
alloc_stat_start(instr_time *t0)
{
	if (ALLOC_STAT_ACTIVE())
		INSTR_TIME_SET_CURRENT(*t0);
	else
		INSTR_TIME_SET_ZERO(*t0);
}

/* End of the BEFORE row trigger; ok = false on the error path (counts engine refusals) */
extern void alloc_stat_decision(Oid relid, instr_time *t0, bool ok);

/* One row of a statement's batch, written directly (writer.c) or by _record_batch */
extern void alloc_stat_recorded(Oid relid, AllocStatOutcome outcome, bool direct);

/* End of a statement's recording: its time, and this backend's counts go to shared memory */
extern void alloc_stat_statement(Oid relid, instr_time *t0);

/* A territory index was built (this backend's or a shared one) */
extern void alloc_stat_index_build(double ms, Size bytes, int64 territories, bool in_memory);

/* A point looked up with the GiST-indexed query instead of the memory index */
extern void alloc_stat_fallback(void);

#endif							/* ALLOCATION_STAT_H */
