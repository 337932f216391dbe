/*-------------------------------------------------------------------------
 *
 * roundrobin.c
 *		The round-robin policy's state: each team's persistent cursor
 *		(allocation.rr_cursor), the cursors a realignment preview simulates,
 *		and new reps' minimum share of the fresh leads (allocation.rr_share).
 *		assign.c orders the candidates; this file says whose turn it is.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/hsearch.h"

#include "allocation.h"
#include "capacity.h"

/*
 * A realignment preview (realign.c) simulates its moves in dry-run decisions:
 * the cursor each team's round robin would have reached, by team id.
 */
typedef struct DryCursor
{
	int64		team_id;		/* hash key */
	int64		last;
} DryCursor;

HTAB	   *assign_dry_rr = NULL;

/* The simulated apply served rep_id for team_id (a preview's move) */
void
assign_dry_rr_served(int64 team_id, int64 rep_id)
{
	DryCursor  *dc;

	if (assign_dry_rr == NULL)
		return;
	dc = hash_search(assign_dry_rr, &team_id, HASH_ENTER, NULL);
	dc->last = rep_id;
}

/*
 * The rep a team's round robin served last (0 = none).  Unless dry, the
 * cursor row is locked (created if missing) so concurrent inserts into the
 * same team take turns.
 */
int64
rr_last(int64 team_id, bool lock)
{
	static SPIPlanPtr plan_rr_next = NULL;
	static SPIPlanPtr plan_rr_peek = NULL;
	AllocUserSwitch sw;
	Oid			types[1] = {INT8OID};
	Datum		vals[1];
	int64		last = 0;
	int			rc;
	DryCursor  *dc = NULL;
	bool		found = false;

	if (!lock && assign_dry_rr != NULL)
	{
		/* a preview: the simulated cursor, read once per team */
		dc = hash_search(assign_dry_rr, &team_id, HASH_ENTER, &found);
		if (found)
			return dc->last;
	}
	alloc_spi_begin(&sw);
	vals[0] = Int64GetDatum(team_id);
	if (lock && capacity_holds_counters())
	{
		/* holding counters: take the cursor only if it is free */
		static SPIPlanPtr plan_rr_try = NULL;

		rc = SPI_execute_plan(alloc_keep_plan(&plan_rr_try,
										"SELECT last_rep_id FROM allocation.rr_cursor WHERE team_id = $1"
										" FOR UPDATE SKIP LOCKED", 1, types), vals, NULL, false, 1);
		if (rc >= 0 && SPI_processed == 0)
			rc = SPI_execute_plan(alloc_keep_plan(&plan_rr_peek,
											"SELECT last_rep_id FROM allocation.rr_cursor WHERE team_id = $1",
											1, types), vals, NULL, true, 1);
	}
	else if (lock)
		rc = SPI_execute_plan(alloc_keep_plan(&plan_rr_next,
										"INSERT INTO allocation.rr_cursor AS c (team_id, last_rep_id) VALUES ($1, 0)"
										" ON CONFLICT (team_id) DO UPDATE SET last_rep_id = c.last_rep_id"
										" RETURNING c.last_rep_id",
										1, types), vals, NULL, false, 1);
	else
		rc = SPI_execute_plan(alloc_keep_plan(&plan_rr_peek,
										"SELECT last_rep_id FROM allocation.rr_cursor WHERE team_id = $1",
										1, types), vals, NULL, true, 1);
	if (rc < 0)
		elog(ERROR, "round-robin cursor failed: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
	{
		bool		isnull;

		last = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	alloc_spi_end(&sw);
	if (dc)
		dc->last = last;
	return last;
}

/*
 * Records the rep a team's round robin served; while a new-rep policy has a
 * min_share, also the team's count of fresh leads and a new rep's (whose
 * rr_share row allocation._rr_behind made at its first turn).  A new rep
 * served out of turn for its minimum share leaves the cursor where it was:
 * the others' turns come as they would have.
 */
void
rr_served(int64 team_id, int64 rep_id, bool out_of_turn)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr plan_count = NULL;
	AllocUserSwitch sw;
	Oid			types[3] = {INT8OID, INT8OID, BOOLOID};
	Datum		vals[3];
	bool		count = config_min_share();
	int			rc;

	alloc_spi_begin(&sw);
	vals[0] = Int64GetDatum(team_id);
	vals[1] = Int64GetDatum(rep_id);
	vals[2] = BoolGetDatum(out_of_turn);
	if (count)
		rc = SPI_execute_plan(alloc_keep_plan(&plan_count,
										"WITH c AS (UPDATE allocation.rr_cursor"
										"            SET last_rep_id = CASE WHEN $3 THEN last_rep_id ELSE $2 END, served = served + 1"
										"            WHERE team_id = (SELECT team_id FROM allocation.rr_cursor WHERE team_id = $1"
										"                             FOR UPDATE SKIP LOCKED)"
										"            RETURNING served)"
										" UPDATE allocation.rr_share s SET served = s.served + 1"
										"  WHERE s.team_id = $1 AND s.rep_id = $2 AND EXISTS (SELECT 1 FROM c)",
										3, types), vals, NULL, false, 0);
	else
		rc = SPI_execute_plan(alloc_keep_plan(&plan, "UPDATE allocation.rr_cursor SET last_rep_id = $2"
										" WHERE team_id = (SELECT team_id FROM allocation.rr_cursor WHERE team_id = $1"
										"                  FOR UPDATE SKIP LOCKED)",
										2, types), vals, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "round-robin cursor update failed");
	alloc_spi_end(&sw);
}

/*
 * A new rep in its ramp-up whose share of the team's round-robin leads would
 * fall below its policy's min_share is served first (allocation._rr_behind
 * picks the one furthest behind).  Returns its position in cand_ids, or -1.
 */
int
rr_new_rep_first(int64 team_id, const int64 *cand_ids, int n, bool dry_run, const char **note)
{
	static SPIPlanPtr plan = NULL;
	AllocUserSwitch sw;
	Oid			types[3] = {INT8OID, INT8ARRAYOID, BOOLOID};
	Datum		vals[3];
	Datum	   *ids = palloc(sizeof(Datum) * n);
	int			i,
				pos = -1;

	for (i = 0; i < n; i++)
		ids[i] = Int64GetDatum(cand_ids[i]);
	alloc_spi_begin(&sw);
	vals[0] = Int64GetDatum(team_id);
	vals[1] = PointerGetDatum(construct_array(ids, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	vals[2] = BoolGetDatum(!dry_run);
	if (SPI_execute_plan(alloc_keep_plan(&plan,
								   "SELECT rep_id, served, team_served, min_share"
								   " FROM allocation._rr_behind($1, $2, now(), $3)", 3, types),
						 vals, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "round-robin share check failed");
	if (SPI_processed > 0)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));

		for (i = 0; i < n; i++)
			if (cand_ids[i] == id)
				pos = i;
		if (pos >= 0 && note)
			*note = psprintf("new rep %s is served first: %s of the %s fresh leads since its first turn, below its minimum share %s",
							 config_get_rep(id)->code, SPI_getvalue(tup, td, 2), SPI_getvalue(tup, td, 3),
							 SPI_getvalue(tup, td, 4));
	}
	alloc_spi_end(&sw);
	return pos;
}
