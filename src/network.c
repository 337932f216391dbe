/*
 * network.c: dealer networks (issue 13).  The rule policy follow_parent gives a
 * customer to the holder of its parent customer (the `parent` attribute: a
 * retailer's distributor), found by one probe of the key's unique index.
 */
#include "postgres.h"
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "allocation.h"

static bool network_probe(ManagedTable *mt, Datum parent, int64 *owner_out);

/* The parent's key, as a value of the key's type (its text form only when a rule reads it) */
void
network_read_parent(ManagedTable *mt, HeapTuple tuple, Customer *c)
{
	bool		isnull;
	Datum		d;

	if (mt->attr_att[ATTR_PARENT] == InvalidAttrNumber)
		return;
	d = heap_getattr(tuple, mt->attr_att[ATTR_PARENT], mt->tupdesc, &isnull);
	if (!isnull)
	{
		c->has_parent = true;
		c->parent = d;
	}
}

/* The parent's key as text (made once, only when a follow_parent rule reads it) */
const char *
network_parent_key(Customer *c)
{
	if (c->attr[ATTR_PARENT] == NULL && c->has_parent)
		c->attr[ATTR_PARENT] = OutputFunctionCall(&c->mt->attr_out[ATTR_PARENT], c->parent);
	return c->attr[ATTR_PARENT];
}

/*
 * The owner of a customer's parent (follow_parent): one probe of the key's
 * unique index, no SPI.  SnapshotSelf: a distributor inserted earlier by the
 * same statement (a COPY of a whole network) is found.  0 with *why when
 * there is none, the parent is the customer itself, or it is in the pool.
 */
int64
network_parent_owner(Customer *c, Trace *tr, const char **why)
{
	ManagedTable *mt = c->mt;
	int64		owner = 0;
	bool		found;

	if (!c->has_parent)
	{
		*why = mt->attr_att[ATTR_PARENT] == InvalidAttrNumber
			? "the table maps no parent attribute" : "the customer has no parent";
		return 0;
	}
	if (c->key && strcmp(c->key, network_parent_key(c)) == 0)
	{
		*why = "the customer is its own parent";
		return 0;
	}
	if (mt->partitioned)
		/* the parent may be stored in any partition (partition.c) */
		found = part_find_key(mt, c->parent, &owner, NULL);
	else if (!OidIsValid(mt->key_index))
	{
		*why = "the key column has no unique index to find the parent by";
		return 0;
	}
	else
		found = network_probe(mt, c->parent, &owner);
	if (!found)
		*why = tr ? psprintf("parent customer %s is not in the table", network_parent_key(c)) : "parent not found";
	else if (owner == 0)
		*why = tr ? psprintf("parent customer %s is in the public pool", network_parent_key(c)) : "parent in the pool";
	return owner;
}

/* One probe of the key's unique index of an unpartitioned table */
static bool
network_probe(ManagedTable *mt, Datum parent, int64 *owner_out)
{
	Relation	heap,
				idx;
	TupleTableSlot *slot;
	IndexScanDesc scan;
	ScanKeyData skey;
	int64		owner = 0;
	bool		found;

	heap = table_open(mt->relid, AccessShareLock);
	idx = index_open(mt->key_index, AccessShareLock);
	slot = table_slot_create(heap, NULL);
	scan = index_beginscan(heap, idx, SnapshotSelf, 1, 0);
	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid, mt->key_coll, mt->key_eq, parent);
	index_rescan(scan, &skey, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	if (found)
	{
		bool		isnull;
		Datum		d = slot_getattr(slot, mt->owner_att, &isnull);

		if (!isnull)
			owner = mt->owner_type == INT4OID ? DatumGetInt32(d) : DatumGetInt64(d);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	table_close(heap, AccessShareLock);
	*owner_out = owner;
	return found;
}
