/*-------------------------------------------------------------------------
 *
 * state.c
 *		What the registry says about one customer on the UPDATE path: whether
 *		a person set its current ownership (a pin), and its open ownership
 *		dispute.  trigger.c asks only when an UPDATE would move a customer
 *		(the owner column changed, or a rule re-evaluation); never on INSERT.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "allocation.h"
#include "frame.h"

/* Whether the customer's current ownership was set by a person */
bool
registry_pinned(ManagedTable *mt, const char *key)
{
	static SPIPlanPtr plan = NULL;
	AllocUserSwitch sw;
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		vals[2];
	bool		pinned = false;
	bool		found;

	alloc_spi_begin(&sw);
	if (plan == NULL)
	{
		plan = SPI_prepare("SELECT pinned FROM allocation.customer_state"
						   " WHERE managed_id = $1 AND key = $2", 2, types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed");
		SPI_keepplan(plan);
	}
	vals[0] = Int32GetDatum(mt->id);
	vals[1] = CStringGetTextDatum(key);
	if (SPI_execute_plan(plan, vals, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading the customer's ownership state failed");
	found = SPI_processed > 0;
	if (found)
	{
		bool		isnull;

		pinned = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	alloc_spi_end(&sw);
	if (!found)
	{
		/* inserted by a statement still running (e.g. updated by an AFTER trigger) */
		Frame	   *f;

		for (f = frames; f; f = f->prev)
		{
			int			j = frame_newest_entry(f, mt->relid, key);

			if (j >= 0)
				return f->entries[j].pinned;
		}
	}
	return pinned;
}

/*
 * The open ownership dispute of a customer (allocation.ownership_dispute), 0
 * when none.  Asked only on the rare paths that would move a customer (an
 * UPDATE of the owner column, a rule re-evaluation), never on INSERT.  It
 * reads with a fresh snapshot: a dispute opened by a transaction that
 * committed while this UPDATE waited for the row lock counts.
 */
int64
open_dispute_id(ManagedTable *mt, const char *key)
{
	static SPIPlanPtr plan = NULL;
	AllocUserSwitch sw;
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		vals[2];
	int64		id = 0;

	/* under SQL version 1.0 (the library updated, ALTER EXTENSION not yet run) there are none */
	alloc_lookup_oids();
	if (!OidIsValid(get_relname_relid("ownership_dispute", alloc_oids.schema)))
		return 0;
	alloc_spi_begin(&sw);
	if (plan == NULL)
	{
		plan = SPI_prepare("SELECT id FROM allocation.ownership_dispute"
						   " WHERE managed_id = $1 AND key = $2 AND status = 'open'", 2, types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed");
		SPI_keepplan(plan);
	}
	vals[0] = Int32GetDatum(mt->id);
	vals[1] = CStringGetTextDatum(key);
	/*
	 * READ COMMITTED: a new snapshot per query.  REPEATABLE READ and
	 * SERIALIZABLE: the latest snapshot, not the transaction's, so a dispute
	 * opened (and committed) after this transaction began still freezes the
	 * customer (opening only locks the customer's row, which raises no
	 * serialization error for this UPDATE).
	 */
	if (IsolationUsesXactSnapshot()
		? SPI_execute_snapshot(plan, vals, NULL, GetLatestSnapshot(), InvalidSnapshot, true, false, 1) != SPI_OK_SELECT
		: SPI_execute_plan(plan, vals, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading the customer's ownership disputes failed");
	if (SPI_processed > 0)
	{
		bool		isnull;

		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	alloc_spi_end(&sw);
	return id;
}
