/*
 * duplicates.c
 *		Duplicate customer detection on the write path (撞单).
 *
 * Every managed customer with a name, phone or credit code has a row in
 * allocation.identity (normalized values).  Exact identities (a valid credit
 * code, a normalized phone) are arbitrated by the primary key of
 * allocation.identity_key: the first customer holding a value owns its row,
 * and a second writer -- also a concurrent one, which waits for the first
 * transaction like any unique index insert -- learns who holds it.  Fuzzy
 * matches compare normalized names with pg_trgm (found through its GIN
 * index) within a radius; writers of one neighbourhood are serialized by
 * advisory locks on grid cells and look with a new snapshot, so the second
 * of two concurrent spellings sees the first (fuzzy_lock_neighbourhood).
 * Messages name the other customer only to roles that can see it.
 *
 * Only tables with a duplicate policy pay for this (allocation.set_duplicate_policy).
 *
 * A new customer's identity is registered in C (register_identity_direct):
 * index probes, speculative inserts and tuple locks -- the protocol of the
 * PL/pgSQL registration's INSERT ... ON CONFLICT DO NOTHING and SELECT ...
 * FOR KEY SHARE -- without an SPI query per row.  Updates and the rare cases
 * (an identity row of the key exists, a stale holder) use the SQL path.
 */
#include "postgres.h"

#include <math.h>

#include "access/genam.h"
#include "access/heapam.h"
#include "access/xact.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/guc.h"
#include "utils/acl.h"
#include "utils/rls.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "allocation.h"
#include "frame.h"

/* the identity values of a customer, normalized (NULL = none) */
static void
read_identity(Customer *c, char **code, char **phone, char **name)
{
	*code = *phone = *name = NULL;
	if (c->attr[ATTR_CREDIT])
		*code = credit_code_normalize(c->attr[ATTR_CREDIT]);	/* upper case, no blanks; NULL if invalid */
	if (c->attr[ATTR_PHONE])
	{
		Datum		d;
		LOCAL_FCINFO(fcinfo, 1);

		InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = CStringGetTextDatum(c->attr[ATTR_PHONE]);
		fcinfo->args[0].isnull = false;
		d = allocation_normalize_phone(fcinfo);
		if (!fcinfo->isnull)
			*phone = TextDatumGetCString(d);
	}
	if (c->attr[ATTR_NAME])
	{
		char	   *n = TextDatumGetCString(DirectFunctionCall1(allocation_normalize_name,
																CStringGetTextDatum(c->attr[ATTR_NAME])));

		if (n[0] != '\0')
			*name = n;
	}
}

static double
distance_m(double lon1, double lat1, double lon2, double lat2)
{
	double		rad = M_PI / 180.0;
	double		dlat = (lat2 - lat1) * rad,
				dlon = (lon2 - lon1) * rad;
	double		a = sin(dlat / 2) * sin(dlat / 2) +
		cos(lat1 * rad) * cos(lat2 * rad) * sin(dlon / 2) * sin(dlon / 2);

	return 2 * 6371008.8 * asin(Min(1.0, sqrt(a)));
}

/* The schema pg_trgm is installed in (error when it is not installed); inside SPI */
static char *
trgm_schema(void)
{
	static Oid	cached_ext = InvalidOid;
	static char *cached_schema = NULL;
	Oid			ext = get_extension_oid("pg_trgm", true);

	if (!OidIsValid(ext))
		ereport(ERROR,
				(errcode(MAKE_SQLSTATE('L', 'A', '0', '7', '2')),
				 errmsg("fuzzy duplicate detection needs the pg_trgm extension"),
				 errdetail("A managed table has a fuzzy duplicate action, but pg_trgm is not installed."),
				 errhint("CREATE EXTENSION pg_trgm, or set the fuzzy action to off with allocation.set_duplicate_policy().")));
	if (ext != cached_ext || cached_schema == NULL)
	{
		Oid			types[1] = {OIDOID};
		Datum		vals[1] = {ObjectIdGetDatum(ext)};

		if (SPI_execute_with_args("SELECT n.nspname::text FROM pg_catalog.pg_extension e"
								  " JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.oid = $1",
								  1, types, vals, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "looking up the schema of pg_trgm failed");
		if (cached_schema)
			pfree(cached_schema);
		cached_schema = MemoryContextStrdup(TopMemoryContext, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		cached_ext = ext;
	}
	return cached_schema;
}

/* Registers the customer's identity; finds an exact holder of the same value */
static bool
register_identity(ManagedTable *mt, Customer *c, const char *code, const char *phone,
				  const char *name, DupMatch *m)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[7] = {INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, FLOAT8OID, FLOAT8OID};
	Datum		vals[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		found = false;

	if (plan == NULL)
	{
		plan = SPI_prepare("SELECT match, other_key, value FROM allocation._identity_register($1, $2, $3, $4, $5, $6, $7)",
						   7, types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare of the identity registration failed");
		SPI_keepplan(plan);
	}
	vals[0] = Int32GetDatum(mt->id);
	vals[1] = CStringGetTextDatum(c->key);
#define TXT(i, s) do { if (s) vals[i] = CStringGetTextDatum(s); else nulls[i] = 'n'; } while (0)
	TXT(2, code);
	TXT(3, phone);
	TXT(4, name);
#undef TXT
	if (c->loc.present)
	{
		vals[5] = Float8GetDatum(c->loc.x);
		vals[6] = Float8GetDatum(c->loc.y);
	}
	else
		nulls[5] = nulls[6] = 'n';
	if (SPI_execute_plan(plan, vals, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "registering the customer identity failed");
	if (SPI_processed > 0)
	{
		HeapTuple	t = SPI_tuptable->vals[0];
		TupleDesc	td = SPI_tuptable->tupdesc;

		m->match = strcmp(SPI_getvalue(t, td, 1), "credit_code") == 0 ? "credit_code" : "phone";
		m->other_key = SPI_getvalue(t, td, 2);
		m->value = SPI_getvalue(t, td, 3);
		m->similarity = 1.0;
		found = true;
	}
	return found;
}


/* ---------- the C registration of a new customer ---------- */

/* the columns the C registration fills, in the order of its value arrays */
static const char *const identity_columns[] = {"managed_id", "key", "credit_code", "phone", "name_norm", "lon", "lat", NULL};
static const char *const identity_key_columns[] = {"managed_id", "kind", "value", "key", NULL};

/*
 * A writer of an engine table for this row: the statement's (kept open by its
 * frame), or one of its own (*own: the caller closes it).  NULL when the table
 * cannot be written directly (a DBA's trigger on it: the SQL path fires it).
 */
static RowWriter *
identity_writer(const char *relname, const char *const *cols, bool *own)
{
	Oid			relid = get_relname_relid(relname, alloc_oids.schema);
	bool		usable;
	RowWriter  *w = frame_writer(relid, cols, &usable);

	*own = (w == NULL && usable);
	if (*own)
		w = writer_open(relid, 0, NULL, cols);
	return w;
}

/* Scan keys for a primary key prefix: (managed_id integer, text, text) */
static void
pk_scankeys(Relation idx, ScanKey sk, int nkeys, Datum *keys)
{
	int			i;

	for (i = 0; i < nkeys; i++)
		ScanKeyEntryInitialize(&sk[i], 0, i + 1, BTEqualStrategyNumber, InvalidOid,
							   idx->rd_indcollation[i], i == 0 ? F_INT4EQ : F_TEXTEQ, keys[i]);
}

/* Whether a customer has an identity row (committed or this transaction's) */
static bool
identity_exists(int32 managed_id, const char *key)
{
	Relation	rel = table_open(get_relname_relid("identity", alloc_oids.schema), RowExclusiveLock);
	Relation	idx = index_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock);
	ScanKeyData sk[2];
	Datum		keys[2] = {Int32GetDatum(managed_id), CStringGetTextDatum(key)};
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	IndexScanDesc scan;
	bool		found;

	pk_scankeys(idx, sk, 2, keys);
	scan = index_beginscan(rel, idx, SnapshotSelf, 2, 0);
	index_rescan(scan, sk, 2, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	table_close(rel, NoLock);
	return found;
}

/*
 * allocation._identity_holder() in C: the customer holding (kind, value),
 * this one when nobody does.  The protocol of INSERT ... ON CONFLICT DO
 * NOTHING followed by SELECT ... FOR KEY SHARE: a row of a transaction in
 * progress is waited for and looked at again; a committed holder's row is
 * share-locked, so deleting that customer waits for this transaction; when
 * nobody holds the value it is taken by a speculative insert, which loses
 * cleanly to a concurrent one.  Returns NULL when the value kept changing
 * hands (the caller then uses the SQL registration).
 */
static char *
take_or_read_holder(int32 managed_id, const char *kind, const char *value, const char *key)
{
	bool		own;
	RowWriter  *w = identity_writer("identity_key", identity_key_columns, &own);
	Relation	rel;
	Relation	idx;
	TupleTableSlot *slot;
	Datum		keys[3];
	ScanKeyData sk[3];
	char	   *holder = NULL;
	int			attempt;
	AttrNumber	key_att;

	if (w == NULL)
		return NULL;
	rel = writer_relation(w);
	idx = index_open(RelationGetPrimaryKeyIndex(rel), RowExclusiveLock);
	slot = table_slot_create(rel, NULL);
	key_att = attnameAttNum(rel, "key", false);
	keys[0] = Int32GetDatum(managed_id);
	keys[1] = CStringGetTextDatum(kind);
	keys[2] = CStringGetTextDatum(value);
	for (attempt = 0; attempt < 5 && holder == NULL; attempt++)
	{
		SnapshotData dirty;
		IndexScanDesc scan;
		bool		found;

		InitDirtySnapshot(dirty);
		pk_scankeys(idx, sk, 3, keys);
		scan = index_beginscan(rel, idx, &dirty, 3, 0);
		index_rescan(scan, sk, 3, NULL, 0);
		found = index_getnext_slot(scan, ForwardScanDirection, slot);
		index_endscan(scan);
		if (found)
		{
			ItemPointerData tid = slot->tts_tid;
			bool		isnull;
			TransactionId xmin;

			if (TransactionIdIsValid(dirty.xmin) || TransactionIdIsValid(dirty.xmax))
			{
				/* written or removed by a transaction in progress: wait (no pin held), look again */
				ExecClearTuple(slot);
				if (dirty.speculativeToken)
					SpeculativeInsertionWait(dirty.xmin, dirty.speculativeToken);
				else
					XactLockTableWait(TransactionIdIsValid(dirty.xmin) ? dirty.xmin : dirty.xmax,
									  rel, &tid, XLTW_InsertIndex);
				continue;
			}
			xmin = DatumGetTransactionId(slot_getsysattr(slot, MinTransactionIdAttributeNumber, &isnull));
			if (!TransactionIdIsCurrentTransactionId(xmin))
			{
				TM_FailureData tmfd;
				TM_Result	res;

				ExecClearTuple(slot);
				res = table_tuple_lock(rel, &tid, GetActiveSnapshot(), slot, GetCurrentCommandId(false),
									   LockTupleKeyShare, LockWaitBlock, 0, &tmfd);
				if (res != TM_Ok)
				{
					ExecClearTuple(slot);
					continue;	/* moved or removed meanwhile: look again */
				}
			}
			holder = TextDatumGetCString(slot_getattr(slot, key_att, &isnull));
			ExecClearTuple(slot);
		}
		else
		{
			Datum		v[4] = {keys[0], keys[1], keys[2], CStringGetTextDatum(key)};
			bool		n[4] = {false, false, false, false};

			if (writer_insert_speculative(w, v, n))
				holder = pstrdup(key);
			/* else: a concurrent writer took it first: look again (waits for it) */
		}
	}
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, RowExclusiveLock);
	if (own)
		writer_close(w);
	return holder;
}

/*
 * register_identity() for a new customer, in C.  Returns false with
 * *fallback set when the case needs the SQL registration (an identity row of
 * this key exists, a holder whose customer is gone, a value that kept
 * changing hands); what was written is then completed by the SQL path,
 * which upserts.
 */
static bool
register_identity_direct(ManagedTable *mt, Customer *c, const char *code, const char *phone,
						 const char *name, DupMatch *m, bool *fallback)
{
	const char *kinds[2] = {"credit_code", "phone"};
	const char *values[2] = {code, phone};
	int			i;

	*fallback = true;
	alloc_lookup_oids();
	{
		bool		own;
		RowWriter  *w = identity_writer("identity", identity_columns, &own);
		Datum		v[7];
		bool		n[7] = {false, false, code == NULL, phone == NULL, name == NULL, !c->loc.present, !c->loc.present};
		bool		ok;

		if (w == NULL)
			return false;
		v[0] = Int32GetDatum(mt->id);
		v[1] = CStringGetTextDatum(c->key);
		v[2] = code ? CStringGetTextDatum(code) : (Datum) 0;
		v[3] = phone ? CStringGetTextDatum(phone) : (Datum) 0;
		v[4] = name ? CStringGetTextDatum(name) : (Datum) 0;
		v[5] = Float8GetDatum(c->loc.x);
		v[6] = Float8GetDatum(c->loc.y);
		ok = writer_insert_speculative(w, v, n);
		if (own)
			writer_close(w);
		if (!ok)
			return false;		/* an identity row of this key exists: SQL upserts it */
	}
	for (i = 0; i < 2; i++)
	{
		char	   *holder;

		if (values[i] == NULL)
			continue;
		holder = take_or_read_holder(mt->id, kinds[i], values[i], c->key);
		if (holder == NULL)
			return false;
		if (strcmp(holder, c->key) == 0)
			continue;
		if (!identity_exists(mt->id, holder))
			return false;		/* its customer is gone: SQL moves the value (rare) */
		{
			Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
			Datum		args[3];
			bool		isnull;

			args[0] = Int32GetDatum(mt->id);
			args[1] = CStringGetTextDatum(c->key);
			args[2] = CStringGetTextDatum(holder);
			if (SPI_execute_with_args("SELECT allocation._duplicate_decided($1, $2, $3)", 3, types, args,
									  NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
				elog(ERROR, "reading duplicate decisions failed");
			if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
				continue;
		}
		*fallback = false;
		m->match = kinds[i];
		m->other_key = holder;
		m->value = pstrdup(values[i]);
		m->similarity = 1.0;
		return true;
	}
	*fallback = false;
	return false;
}

/*
 * Serializing the fuzzy check.  Two spellings of one dealer (丰收农资店,
 * 丰收农资商店) written at the same moment share no key an index could
 * arbitrate, so before looking for similar names a writer takes
 * transaction-level advisory locks on its neighbourhood: the cells of a
 * fixed grid that the match radius around its point touches.  Cells are 2 x
 * within_m high; each row of cells has its own width, at least 2 x within_m
 * everywhere in the row, so a radius touches at most 2 rows of at most 3
 * cells.  If A and B are within within_m of each other, A's box covers B's
 * point, so both lock the cell that contains B: the second writer waits
 * until the first one's transaction ends.  Without a radius (within_m NULL)
 * the whole table is one neighbourhood.  The locks live in a key space of
 * their own (advisory lock tag: database, managed table id, cell hash, and
 * field 4 = 0x4C41 'LA', which pg_advisory_lock() never uses) and are taken
 * in ascending key order, so two writers never take them crosswise; a hash
 * collision merely makes two far cells share a lock.
 *
 * The lookup that follows the lock must see what the previous holder
 * committed, which the statement's snapshot (taken before the wait) does
 * not: it runs with a new snapshot (GetLatestSnapshot).  Under REPEATABLE
 * READ or SERIALIZABLE a match that the transaction's own snapshot cannot see
 * is a serialization failure (40001), as for INSERT ... ON CONFLICT.
 * Tables without a fuzzy action take no lock.
 */
#define FUZZY_LOCK_SPACE 0x4C41

static int
cmp_uint32(const void *a, const void *b)
{
	uint32		x = *(const uint32 *) a,
				y = *(const uint32 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

static void
fuzzy_lock_neighbourhood(ManagedTable *mt, Customer *c)
{
	uint32		keys[32];
	int			n = 0,
				i;

	if (mt->within_m > 0)
	{
		double		rad = M_PI / 180.0;
		double		r = mt->within_m;
		/* degrees of latitude for r metres: at most r / 111195 on the sphere of distance_m() */
		double		dlat = r / 111000.0;
		double		cell_lat = Min(2.0 * dlat, 180.0);
		double		lat0 = c->loc.y - dlat,
					lat1 = c->loc.y + dlat;
		double		polar = Min(Max(fabs(lat0), fabs(lat1)), 90.0);
		double		dlon = Min(r / (111000.0 * Max(cos(polar * rad), 0.01)), 180.0);
		int64		row,
					row0 = (int64) floor((lat0 + 90.0) / cell_lat),
					row1 = (int64) floor((lat1 + 90.0) / cell_lat);

		for (row = row0; row <= row1; row++)
		{
			double		edge = Min(Max(fabs(row * cell_lat - 90.0), fabs((row + 1) * cell_lat - 90.0)), 90.0);
			double		cell_lon = Min(cell_lat / Max(cos(edge * rad), 0.01), 360.0);
			int64		col,
						col0 = (int64) floor((c->loc.x - dlon + 180.0) / cell_lon),
						col1 = (int64) floor((c->loc.x + dlon + 180.0) / cell_lon);

			for (col = col0; col <= col1 && n < lengthof(keys); col++)
				keys[n++] = hash_combine(hash_uint32((uint32) row), hash_uint32((uint32) col));
		}
		if (n == lengthof(keys))
			elog(ERROR, "fuzzy duplicate lock: too many grid cells");	/* cannot happen */
	}
	else
		keys[n++] = 0;
	qsort(keys, n, sizeof(uint32), cmp_uint32);
	for (i = 0; i < n; i++)
	{
		LOCKTAG		tag;

		if (i > 0 && keys[i] == keys[i - 1])
			continue;
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) mt->id, keys[i], FUZZY_LOCK_SPACE);
		(void) LockAcquire(&tag, ExclusiveLock, false, false);
	}
}

/* The most similar other name within the radius */
static bool
fuzzy_match(ManagedTable *mt, Customer *c, const char *name, DupMatch *m)
{
	static SPIPlanPtr plan = NULL;
	static char *plan_schema = NULL;
	char	   *schema = trgm_schema();
	Oid			types[6] = {INT4OID, TEXTOID, TEXTOID, FLOAT8OID, FLOAT8OID, FLOAT8OID};
	Datum		vals[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	char		thr[32];
	uint64		i;
	bool		found = false;
	const char *entity;

	if (mt->within_m > 0 && !c->loc.present)
		return false;			/* "within N metres" cannot be decided */
	fuzzy_lock_neighbourhood(mt, c);
	entity = name_entity(name);
	if (plan == NULL || plan_schema == NULL || strcmp(plan_schema, schema) != 0)
	{
		const char *q = quote_identifier(schema);
		char	   *sql;

		if (plan)
			SPI_freeplan(plan);
		plan = NULL;
		sql = psprintf("SELECT i.key, %s.similarity(i.name_norm, $3)::float8 AS sim, i.lon, i.lat, i.name_norm"
					   "  FROM allocation.identity i"
					   " WHERE i.managed_id = $1 AND i.key <> $2 AND i.name_norm OPERATOR(%s.%%) $3"
					   "   AND NOT allocation._duplicate_decided($1, $2, i.key)"
					   "   AND ($4 IS NULL OR (i.lon IS NOT NULL AND abs(i.lat - $6) <= $4 / 111000.0"
					   "        AND abs(i.lon - $5) <= $4 / (111000.0 * greatest(cos(radians($6)), 0.01))))"
					   " ORDER BY sim DESC, i.key LIMIT 50", q, q);
		plan = SPI_prepare(sql, 6, types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare of the fuzzy name match failed");
		SPI_keepplan(plan);
		if (plan_schema)
			pfree(plan_schema);
		plan_schema = MemoryContextStrdup(TopMemoryContext, schema);
	}
	/* the trigram index finds names at least this similar */
	snprintf(thr, sizeof(thr), "%g", mt->name_similarity);
	(void) set_config_option("pg_trgm.similarity_threshold", thr, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	vals[0] = Int32GetDatum(mt->id);
	vals[1] = CStringGetTextDatum(c->key);
	vals[2] = CStringGetTextDatum(name);
	if (mt->within_m > 0)
	{
		/* a box 1.1 times the radius; the exact distance is checked below */
		vals[3] = Float8GetDatum(mt->within_m * 1.1);
		vals[4] = Float8GetDatum(c->loc.x);
		vals[5] = Float8GetDatum(c->loc.y);
	}
	else
		nulls[3] = nulls[4] = nulls[5] = 'n';
	/* a new snapshot: sees what the writers this one waited for committed */
	if (SPI_execute_snapshot(plan, vals, nulls, GetLatestSnapshot(), InvalidSnapshot,
							 false, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "fuzzy duplicate lookup failed");
	for (i = 0; i < SPI_processed && !found; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		n1,
					n2;
		double		sim = DatumGetFloat8(SPI_getbinval(t, td, 2, &n1));
		Datum		lon = SPI_getbinval(t, td, 3, &n1);
		Datum		lat = SPI_getbinval(t, td, 4, &n2);

		if (sim < mt->name_similarity)
			break;
		if (mt->within_m > 0 &&
			(n1 || n2 || distance_m(c->loc.x, c->loc.y, DatumGetFloat8(lon), DatumGetFloat8(lat)) > mt->within_m))
			continue;
		{
			/* a cooperative (合作社) is not the shop of the same name */
			char	   *other = SPI_getvalue(t, td, 5);
			const char *other_entity = other ? name_entity(other) : NULL;

			if ((entity == NULL) != (other_entity == NULL) ||
				(entity && strcmp(entity, other_entity) != 0))
				continue;
		}
		m->match = "name";
		m->other_key = SPI_getvalue(t, td, 1);
		m->value = pstrdup(name);
		m->similarity = sim;
		found = true;
	}
	if (found && IsolationUsesXactSnapshot())
	{
		Oid			t2[2] = {INT4OID, TEXTOID};
		Datum		v2[2] = {Int32GetDatum(mt->id), CStringGetTextDatum(m->other_key)};

		/* read with the transaction's snapshot: can it see the match? */
		if (SPI_execute_with_args("SELECT 1 FROM allocation.identity WHERE managed_id = $1 AND key = $2",
								  2, t2, v2, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "fuzzy duplicate lookup failed");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to a concurrent registration of a similar customer"),
					 errdetail("A customer with a similar name nearby was registered by a transaction that committed after this transaction's snapshot."),
					 errhint("Retry the transaction.")));
	}
	return found;
}

/*
 * Who holds the other customer now, for the message.  Read with a new
 * snapshot (read_only = false): the holder may have committed while this
 * writer waited for it, after the statement's snapshot was taken.  Returns
 * the holding rep's id (0 = none).
 */
static int64
describe_owner(ManagedTable *mt, DupMatch *m)
{
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		vals[2];
	int64		rep_id = 0;

	vals[0] = Int32GetDatum(mt->id);
	vals[1] = CStringGetTextDatum(m->other_key);
	if (SPI_execute_with_args("SELECT a.rep_id, r.code, r.name, a.valid_from::text, i.xmin"
							  "  FROM allocation.identity i"
							  "  LEFT JOIN LATERAL allocation._current(i.managed_id, i.key) a ON true"
							  "  LEFT JOIN allocation.rep r ON r.id = a.rep_id"
							  " WHERE i.managed_id = $1 AND i.key = $2",
							  2, types, vals, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading the owner of a duplicate failed");
	m->owner = NULL;
	m->since = NULL;
	if (SPI_processed > 0)
	{
		HeapTuple	t = SPI_tuptable->vals[0];
		TupleDesc	td = SPI_tuptable->tupdesc;
		char	   *rep = SPI_getvalue(t, td, 1);
		bool		isnull;

		m->since = SPI_getvalue(t, td, 4);
		if (rep)
		{
			rep_id = DatumGetInt64(SPI_getbinval(t, td, 1, &isnull));
			m->owner = psprintf("rep %s (%s, id %s)", SPI_getvalue(t, td, 2), SPI_getvalue(t, td, 3), rep);
		}
		else if (m->since)
			m->owner = pstrdup("nobody (public pool)");
		else
		{
			TransactionId xmin = DatumGetTransactionId(SPI_getbinval(t, td, 5, &isnull));

			/* no ownership record yet: the statement that registered it is still running */
			m->owner = pstrdup(TransactionIdIsCurrentTransactionId(xmin) ?
							   "nobody yet (registered earlier in this same statement)" :
							   "nobody yet (its ownership record is not written)");
		}
	}
	else
		m->owner = pstrdup("nobody (the customer is being deleted)");
	return rep_id;
}

/*
 * Whether the writer may not see the other customer: then its messages name
 * neither the customer nor its holder (the audit event keeps both).  A role
 * without SELECT on the table sees no row; under row-level security (see
 * enable_rep_security) a rep's login sees only its own customers, and with
 * other policies than the engine's the engine cannot tell, so it redacts.
 */
static void
set_redaction(Oid viewer, ManagedTable *mt, int64 holder, DupMatch *m)
{
	Oid			types[2] = {OIDOID, OIDOID};
	Datum		vals[2] = {ObjectIdGetDatum(viewer), ObjectIdGetDatum(mt->relid)};
	bool		no_rep;
	bool		isnull;
	bool		rep_policy;
	int64		rep;

	if (SPI_execute_with_args("SELECT (SELECT r.id FROM allocation.rep r WHERE r.login = pg_catalog.pg_get_userbyid($1)),"
							  " EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = $2"
							  "          AND p.polname = 'allocation_rep_read')",
							  2, types, vals, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "reading the writer's rep failed");
	rep = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &no_rep));
	rep_policy = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	m->other_rep = holder != 0 && (no_rep || holder != rep);
	if (pg_class_aclcheck(mt->relid, viewer, ACL_SELECT) != ACLCHECK_OK)
		m->redact = true;		/* sees no row at all */
	else if (check_enable_rls(mt->relid, viewer, true) != RLS_ENABLED)
		m->redact = false;		/* sees every row */
	else if (!rep_policy)
		m->redact = true;		/* policies the engine cannot read */
	else
		m->redact = !no_rep && holder != rep;	/* a rep sees its own customers, other roles all */
}

/*
 * Checks a new or changed customer for duplicates and registers its
 * identity.  Returns true with *m filled (and m->action set) when another
 * customer matches; a 'block' action raises the error here.
 */
bool
dup_check(ManagedTable *mt, Customer *c, DupMatch *m, bool new_row)
{
	AllocUserSwitch sw;
	char	   *code,
			   *phone,
			   *name;
	bool		found = false;

	MemoryContext caller = CurrentMemoryContext;

	Oid			viewer;

	memset(m, 0, sizeof(*m));
	if (mt->dup_exact == 'o' && mt->dup_fuzzy == 'o')
		return false;
	read_identity(c, &code, &phone, &name);
	viewer = alloc_actor_id();	/* before the switch to the extension owner */
	alloc_spi_begin(&sw);
	m->registered = true;
	{
		bool		fallback = true;

		/*
		 * A transaction-snapshot isolation level takes the SQL path: there
		 * a holder committed after the snapshot is a serialization failure
		 * (40001), as for INSERT ... ON CONFLICT.
		 */
		if (new_row && !IsolationUsesXactSnapshot())
			found = register_identity_direct(mt, c, code, phone, name, m, &fallback);
		if (fallback)
			found = register_identity(mt, c, code, phone, name, m);
	}
	if (found)
		m->action = mt->dup_exact;
	if (found && m->action == 'o')
		found = false;
	if (!found && mt->dup_fuzzy != 'o' && name)
	{
		found = fuzzy_match(mt, c, name, m);
		if (found)
			m->action = mt->dup_fuzzy;
	}
	if (found)
	{
		int64		holder = describe_owner(mt, m);

		set_redaction(viewer, mt, holder, m);
		/* SPI's memory goes away at SPI_finish: keep the strings */
#define KEEP(f) (m->f = m->f ? MemoryContextStrdup(caller, m->f) : NULL)
		KEEP(other_key);
		KEEP(value);
		KEEP(owner);
		KEEP(since);
#undef KEEP
	}
	alloc_spi_end(&sw);
	if (!found)
	{
		m->action = 0;
		return false;
	}

	if (m->action == 'b')
	{
		bool		fuzzy = strcmp(m->match, "name") == 0;
		const char *what = strcmp(m->match, "credit_code") == 0 ? "credit code" :
			strcmp(m->match, "phone") == 0 ? "phone" : "name";
		const char *near = mt->within_m > 0 ? psprintf(" within %.0f m", mt->within_m) : "";

		alloc_duplicate_blocked_event(mt, c->key, m);
		if (m->redact)
			ereport(ERROR,
					(errcode(fuzzy ? ERRCODE_ALLOC_DUPLICATE_FUZZY : ERRCODE_ALLOC_DUPLICATE),
					 errmsg("customer %s duplicates another customer of %s (%s)", c->key, mt->name, dup_match_words(m->match)),
					 fuzzy ?
					 errdetail("Its normalized name \"%s\" is %.0f%% similar to the name of another customer%s, %s.",
							   m->value, m->similarity * 100, near, dup_hidden_holder(m)) :
					 errdetail("Another customer (%s) already has %s %s.", dup_hidden_holder(m), what, m->value),
					 errhint("Ask a manager: the refused write is recorded in allocation.event (duplicate_blocked) with the customer it duplicates.")));
		ereport(ERROR,
				(errcode(fuzzy ? ERRCODE_ALLOC_DUPLICATE_FUZZY : ERRCODE_ALLOC_DUPLICATE),
				 errmsg("customer %s duplicates customer %s of %s (%s)", c->key, m->other_key, mt->name, dup_match_words(m->match)),
				 fuzzy ?
				 errdetail("Its normalized name \"%s\" is %.0f%% similar to customer %s's%s; customer %s is held by %s%s%s.",
						   m->value, m->similarity * 100, m->other_key, near,
						   m->other_key, m->owner, m->since ? " since " : "", m->since ? m->since : "") :
				 errdetail("Customer %s already has %s %s; it is held by %s%s%s.",
						   m->other_key, what, m->value, m->owner, m->since ? " since " : "", m->since ? m->since : ""),
				 errhint("Update customer %s instead of registering the dealer again; if they are different customers, ask a manager (allocation.set_duplicate_policy, or correct the %s).",
						 m->other_key, what)));
	}
	return true;
}

/* How a hidden customer's holder reads in a redacted message */
const char *
dup_hidden_holder(DupMatch *m)
{
	return m->other_rep ? "held by another rep" : "which you cannot see";
}
