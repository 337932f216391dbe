/*
 * territory_index.c
 *		The territory index: which territories cover a point.
 *
 * Each backend keeps the territories' attributes (TerritoryInfo, sorted by
 * id) and finds the territories of a point in one of three modes:
 *   shared   the polygons live once per cluster in dynamic shared memory
 *            (allocation in shared_preload_libraries; territory_shared.c);
 *   backend  the polygons live in this backend's memory (not preloaded, or
 *            the shared build could not be used; cache_stats() says why);
 *   indexed  no polygons in memory: a GiST-indexed ST_Covers query per
 *            decision (fallback_lookup), above allocation.territory_cache_max.
 * The polygons are laid out the same way in both memory modes
 * (territory_geom.c: offsets, no pointers).
 * Hits are ordered by priority DESC, id ASC: the first is the winner.
 *
 * Which shape a backend decides with: after a territory change (relcache
 * invalidation, at the start of its next decision) a backend reads the
 * territories again with the latest snapshot -- as it always did, whatever
 * the statement's snapshot, also in REPEATABLE READ: the newest committed
 * shape, never older than what any snapshot of the backend sees -- and
 * computes the key of the row versions read (id, xmin, ctid of every row).
 * It uses a shared build only if that build was made from the same row
 * versions (same key, same ids), so the shared polygons are exactly the ones
 * its own snapshot read: neither older nor newer.  A transaction that
 * changed the territories itself builds a private index (its rows are not
 * committed), and returns to the shared one after it ends.
 *
 * The polygons take about 28 bytes per vertex.  allocation.territory_cache_max
 * bounds them (the shared copy counts once, against the bound of the backend
 * that uses it): a build that would exceed it (or a bound of 0) keeps only
 * the attributes, and lookups run fallback_lookup, which gives the same
 * answers at the cost of an SPI query per decision.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "portability/instr_time.h"
#include "storage/itemptr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "allocation.h"
#include "stat.h"
#include "territory_shared.h"

typedef enum TIndexMode
{
	TI_SHARED,
	TI_BACKEND,
	TI_INDEXED
} TIndexMode;

static const char *const mode_names[] = {"shared", "backend", "indexed"};

typedef struct TIndex
{
	MemoryContext cxt;
	int			n;
	TerritoryInfo *infos;		/* all territories, sorted by id */
	uint64		key;			/* identity of the row versions read */
	TIndexMode	mode;
	char	   *reason;
	/* the polygons, in the shared area or in this backend (cxt) */
	const GridEntry *entries;
	char	  **blobs;			/* backend mode: each entry's blob */
	GridShape	grid;
	const int32 *cell_start;
	const int32 *cell_items;	/* entry numbers, in winning order */
	int64		nvertices;
	Size		index_bytes;	/* the polygons (shared or local) */
	bool		over_limit;		/* they exceeded the bound */
	Size		limit;
	double		build_ms;
	TSharedRef	ref;			/* shared mode: the build used */
} TIndex;

static TIndex *tindex = NULL;
static bool tindex_stale = true;
static bool territory_changed_in_xact = false;

/* The next decision reads the territories again */
void
tindex_invalidate(void)
{
	tindex_stale = true;
}

/* This transaction wrote allocation.territory: its index stays private */
void
tindex_note_change(void)
{
	territory_changed_in_xact = true;
	tindex_stale = true;
}

/* Transaction end: drop the shared pin; after own changes, read again */
void
tindex_xact_end(void)
{
	if (territory_changed_in_xact)
		tindex_stale = true;
	territory_changed_in_xact = false;
	tshared_xact_end();
}

/* identity of one territory row version, hashed into the index's key */
typedef struct RowIdentity
{
	int64		id;
	uint32		xmin;
	uint32		block;
	uint32		offset;
	uint32		pad;
} RowIdentity;

/*
 * Reads every territory's attributes into ix (SPI connected, the snapshot
 * pushed), and the key of the row versions read.
 */
static void
attrs_read(TIndex *ix)
{
	MemoryContext old;
	uint64		i;
	uint64		key;

	if (SPI_execute("SELECT id, coalesce(parent_id, 0), priority, exclusive, coalesce(owner_rep_id, 0),"
					" coalesce(owner_team_id, 0), code, name, crop_zones, xmin, ctid"
					" FROM allocation.territory ORDER BY id", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read allocation.territory");
	old = MemoryContextSwitchTo(ix->cxt);
	ix->n = (int) SPI_processed;
	ix->infos = palloc0(sizeof(TerritoryInfo) * Max(ix->n, 1));
	key = (uint64) ix->n;
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		TerritoryInfo *t = &ix->infos[i];
		bool		isnull;
		ItemPointer tid;
		RowIdentity rid;

		t->id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
		t->parent_id = DatumGetInt64(SPI_getbinval(tup, td, 2, &isnull));
		t->priority = DatumGetInt32(SPI_getbinval(tup, td, 3, &isnull));
		t->exclusive = DatumGetBool(SPI_getbinval(tup, td, 4, &isnull));
		t->owner_rep = DatumGetInt64(SPI_getbinval(tup, td, 5, &isnull));
		t->owner_team = DatumGetInt64(SPI_getbinval(tup, td, 6, &isnull));
		t->code = SPI_getvalue(tup, td, 7);
		t->name = SPI_getvalue(tup, td, 8);
		{
			TextSet		z = textset_from_datum(SPI_getbinval(tup, td, 9, &isnull), isnull);

			t->nzones = Max(z.n, 0);
			t->zones = z.items;
		}
		memset(&rid, 0, sizeof(rid));
		rid.id = t->id;
		rid.xmin = DatumGetTransactionId(SPI_getbinval(tup, td, 10, &isnull));
		tid = (ItemPointer) DatumGetPointer(SPI_getbinval(tup, td, 11, &isnull));
		rid.block = ItemPointerGetBlockNumberNoCheck(tid);
		rid.offset = ItemPointerGetOffsetNumberNoCheck(tid);
		key = hash_combine64(key, hash_bytes_extended((const unsigned char *) &rid, sizeof(rid), 0));
	}
	ix->key = key;
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Whether the polygons cannot fit the bound, from their stored size alone
 * (pg_column_size reads no TOAST data): the index takes at least 1.25 times
 * the coordinates' bytes (16 per vertex, plus at least 4 per edge for the
 * bands).  Spares a backend over the bound from reading polygons up to it,
 * then dropping them, after every territory change.
 */
static bool
polygons_surely_exceed(Size limit)
{
	bool		isnull;
	double		stored;

	if (SPI_execute("SELECT coalesce(sum(pg_catalog.pg_column_size(geom)), 0)::float8 FROM allocation.territory",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not size allocation.territory");
	stored = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return stored * 1.25 > (double) limit;
}

/* No polygons in memory: lookups take the indexed path */
static void
set_indexed(TIndex *ix, bool over, const char *reason)
{
	ix->mode = TI_INDEXED;
	ix->over_limit = over;
	ix->reason = MemoryContextStrdup(ix->cxt, reason);
}

/* Backend mode: the polygons in this backend's memory, bounded like before */
static void
backend_load(TIndex *ix, const char *why)
{
	MemoryContext pcxt,
				old;
	GeomSink	sink;
	GridEntry  *entries;
	int32	   *cs,
			   *ci;
	bool		ok;

	if (polygons_surely_exceed(ix->limit))
	{
		set_indexed(ix, true, "the polygons exceed allocation.territory_cache_max");
		return;
	}
	pcxt = AllocSetContextCreate(ix->cxt, "allocation territory polygons", ALLOCSET_DEFAULT_SIZES);
	memset(&sink, 0, sizeof(sink));
	sink.cxt = pcxt;
	sink.limit = ix->limit;
	entries = MemoryContextAllocZero(pcxt, sizeof(GridEntry) * Max(ix->n, 1));
	ix->blobs = MemoryContextAllocZero(pcxt, sizeof(char *) * Max(ix->n, 1));
	ok = geom_read(ix->n, ix->infos, entries, ix->blobs, &sink, &ix->nvertices);
	if (ok)
	{
		old = MemoryContextSwitchTo(pcxt);
		grid_build(ix->n, ix->infos, entries, &ix->grid, &cs, &ci);
		MemoryContextSwitchTo(old);
		ok = !sink_full(&sink);
	}
	if (!ok)
	{
		MemoryContextDelete(pcxt);
		ix->blobs = NULL;
		ix->nvertices = 0;
		set_indexed(ix, true, "the polygons exceed allocation.territory_cache_max");
		return;
	}
	ix->entries = entries;
	ix->cell_start = cs;
	ix->cell_items = ci;
	ix->index_bytes = MemoryContextMemAllocated(pcxt, true);
	ix->mode = TI_BACKEND;
	ix->reason = MemoryContextStrdup(ix->cxt, why);
}

/* Points ix at a shared build's polygons (addresses of this backend's mapping) */
static void
view_shared(TIndex *ix, SharedBuild *b)
{
	dsa_area   *a = tshared_area();
	const int64 *ids = dsa_get_address(a, b->ids);
	int			i;

	for (i = 0; i < ix->n; i++)
		if (ids[i] != ix->infos[i].id)
			elog(ERROR, "shared territory index does not match the territories read");
	ix->entries = dsa_get_address(a, b->entries);
	ix->cell_start = dsa_get_address(a, b->cell_start);
	ix->cell_items = dsa_get_address(a, b->cell_items);
	ix->grid = b->grid;
	ix->nvertices = b->nvertices;
	ix->index_bytes = b->bytes;
	ix->mode = TI_SHARED;
}

/*
 * Lays the polygons out in the shared area and publishes them under ix's
 * key.  NULL (with *why) when they do not fit or cannot be published; a
 * build that errors half-way is freed at the end of the transaction.
 */
static SharedBuild *
shared_build(TIndex *ix, const char **why, bool *over)
{
	dsa_area   *a = tshared_area();
	GeomSink	sink;
	dsa_pointer dp;
	SharedBuild *b;
	SharedBuild *found;
	GridEntry  *entries;
	int64	   *ids;
	int32	   *cs,
			   *ci;
	char	   *dst;
	bool		ok;
	int			i;
	instr_time	t0,
				t1;

	INSTR_TIME_SET_CURRENT(t0);
	memset(&sink, 0, sizeof(sink));
	sink.area = a;
	sink.limit = ix->limit;
	dst = sink_alloc(&sink, sizeof(SharedBuild), &dp);
	if (dst == NULL)
	{
		*why = "the dynamic shared memory area could not grow: a private index";
		return NULL;
	}
	memset(dst, 0, sizeof(SharedBuild));
	tshared_set_pending(dp);
	b = (SharedBuild *) dst;
	entries = (GridEntry *) sink_alloc(&sink, sizeof(GridEntry) * Max(ix->n, 1), &b->entries);
	ok = (entries != NULL);
	if (ok)
	{
		b->n = ix->n;
		for (i = 0; i < ix->n; i++)
			entries[i].blob = InvalidDsaPointer;
		ids = (int64 *) sink_alloc(&sink, sizeof(int64) * Max(ix->n, 1), &b->ids);
		ok = (ids != NULL);
		for (i = 0; ok && i < ix->n; i++)
			ids[i] = ix->infos[i].id;
	}
	ok = ok && geom_read(ix->n, ix->infos, entries, NULL, &sink, &ix->nvertices);
	if (ok)
	{
		Size		ncells;
		char	   *p1,
				   *p2;

		grid_build(ix->n, ix->infos, entries, &ix->grid, &cs, &ci);
		ncells = (Size) ix->grid.gx * ix->grid.gy;
		p1 = sink_alloc(&sink, sizeof(int32) * (ncells + 1), &b->cell_start);
		p2 = p1 ? sink_alloc(&sink, sizeof(int32) * Max(1, cs[ncells]), &b->cell_items) : NULL;
		ok = (p2 != NULL) && !sink_full(&sink);
		if (ok)
		{
			memcpy(p1, cs, sizeof(int32) * (ncells + 1));
			memcpy(p2, ci, sizeof(int32) * Max(1, cs[ncells]));
		}
		pfree(cs);
		pfree(ci);
	}
	if (!ok)
	{
		*over = !sink.oom;
		*why = sink.oom ? "the dynamic shared memory area could not grow: a private index"
			: "the polygons exceed allocation.territory_cache_max";
		tshared_free_build(a, dp);
		tshared_set_pending(InvalidDsaPointer);
		ix->nvertices = 0;
		return NULL;
	}
	b->grid = ix->grid;
	b->nvertices = ix->nvertices;
	b->bytes = sink.bytes;
	INSTR_TIME_SET_CURRENT(t1);
	INSTR_TIME_SUBTRACT(t1, t0);
	if (!tshared_publish(alloc_oids.territory, ix->key, ix->n, dp, INSTR_TIME_GET_MILLISEC(t1),
						 &ix->ref, &found))
	{
		*why = "every slot of the shared registry is in use: a private index";
		tshared_free_build(a, dp);
		tshared_set_pending(InvalidDsaPointer);
		ix->nvertices = 0;
		return NULL;
	}
	tshared_set_pending(InvalidDsaPointer);
	if (found == NULL)
		alloc_stat_index_build(INSTR_TIME_GET_MILLISEC(t1), sink.bytes, ix->n, true);
	return found ? found : b;
}

/*
 * Shared mode: attaches the build of the row versions ix read, or builds it
 * (one backend at a time).  false (with *why) to fall back to a private index.
 */
static bool
shared_load(TIndex *ix, const char **why)
{
	Oid			relid = alloc_oids.territory;
	SharedBuild *b;
	bool		over = false;

	b = tshared_find(relid, ix->key, ix->n, &ix->ref);
	if (b == NULL)
	{
		tshared_lock_build(relid);
		/* another backend may have built it while this one waited */
		b = tshared_find(relid, ix->key, ix->n, &ix->ref);
		if (b == NULL)
		{
			if (polygons_surely_exceed(ix->limit))
			{
				tshared_unlock_build(relid);
				set_indexed(ix, true, "the polygons exceed allocation.territory_cache_max");
				return true;
			}
			b = shared_build(ix, why, &over);
		}
		tshared_unlock_build(relid);
		if (b == NULL && over)
		{
			set_indexed(ix, true, *why);
			return true;
		}
		if (b == NULL)
			return false;
	}
	if (b->bytes > ix->limit)
	{
		tshared_detach(&ix->ref);
		set_indexed(ix, true, "the shared index exceeds this backend's allocation.territory_cache_max");
		return true;
	}
	view_shared(ix, b);
	ix->reason = MemoryContextStrdup(ix->cxt, "allocation is preloaded: one index per cluster");
	return true;
}

/* Reads the territories (latest snapshot) and loads their polygons in the mode that applies */
static TIndex *
tindex_read(void)
{
	MemoryContext cxt;
	AllocUserSwitch sw;
	TIndex	   *ix;
	const char *why;

	/* a child of the caller's memory until complete: an error frees it with the transaction */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "allocation territory index",
								ALLOCSET_DEFAULT_SIZES);
	ix = MemoryContextAllocZero(cxt, sizeof(TIndex));
	ix->cxt = cxt;
	ix->ref.slot = -1;
	ix->limit = (Size) alloc_territory_cache_max_kb * 1024;
	alloc_spi_begin(&sw);
	/* read the latest committed territories, whatever the statement's snapshot */
	PushActiveSnapshot(GetLatestSnapshot());
	attrs_read(ix);
	if (ix->limit == 0)
		set_indexed(ix, false, "allocation.territory_cache_max is 0");
	else
	{
		if (!tshared_available())
			why = "allocation is not in shared_preload_libraries: one index per backend";
		else if (territory_changed_in_xact)
			why = "this transaction changed the territories: a private index until it ends";
		else if (shared_load(ix, &why))
			why = NULL;
		if (why != NULL)
			backend_load(ix, why);
	}
	PopActiveSnapshot();
	alloc_spi_end(&sw);
	MemoryContextSetParent(cxt, CacheMemoryContext);
	return ix;
}

/* Builds the index; the previous one is freed (and its shared build left) */
static void
tindex_build_inner(void)
{
	TIndex	   *ix;
	instr_time	t0,
				t1;

	INSTR_TIME_SET_CURRENT(t0);
	/* an invalidation arriving while we read marks the new index stale again */
	tindex_stale = false;
	ix = tindex_read();
	INSTR_TIME_SET_CURRENT(t1);
	INSTR_TIME_SUBTRACT(t1, t0);
	ix->build_ms = INSTR_TIME_GET_MILLISEC(t1);
	/* allocation.stat: a private build (a shared one counts where it is made) */
	if (ix->mode != TI_SHARED)
		alloc_stat_index_build(ix->build_ms, ix->index_bytes, ix->n, ix->mode != TI_INDEXED);

	if (tindex)
	{
		if (tindex->mode == TI_SHARED &&
			!(ix->mode == TI_SHARED && ix->ref.slot == tindex->ref.slot && ix->ref.seq == tindex->ref.seq))
			tshared_detach(&tindex->ref);
		MemoryContextDelete(tindex->cxt);
	}
	tindex = ix;
}

/* Builds the cache; on error the old one stays marked stale */
static void
tindex_build(void)
{
	PG_TRY();
	{
		tindex_build_inner();
	}
	PG_CATCH();
	{
		tindex_stale = true;
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* Rebuilds a stale index; called at the start of each decision only */
void
tindex_prepare(void)
{
	if (tindex == NULL || (tindex_stale && alloc_decision_depth == 0))
		tindex_build();
	else if (tindex->mode == TI_SHARED && !tshared_pin(&tindex->ref))
		tindex_build();			/* its shared build was freed while this backend was idle */
}

/* An index usable now (its shared build pinned for this transaction) */
static inline void
tindex_ensure(void)
{
	if (tindex == NULL)
		tindex_build();
	else if (tindex->mode == TI_SHARED && !tshared_pin(&tindex->ref))
		tindex_build();
}

/*
 * The indexed path, for a backend whose polygons are not in memory: the
 * territory table's GiST index answers ST_Covers (the predicate the memory
 * index reproduces), the latest committed territories as the memory index
 * would have read them, in winning order.
 */
static int
fallback_lookup(double x, double y, TerritoryInfo **hits, int maxhits)
{
	static SPIPlanPtr plan = NULL;
	AllocUserSwitch sw;
	Oid			types[2] = {FLOAT8OID, FLOAT8OID};
	Datum		args[2];
	uint64		i;
	int			n = 0;

	alloc_stat_fallback();
	args[0] = Float8GetDatum(x);
	args[1] = Float8GetDatum(y);
	alloc_spi_begin(&sw);
	PushActiveSnapshot(GetLatestSnapshot());
	if (plan == NULL)
	{
		const char *pg = quote_identifier(get_namespace_name(alloc_oids.postgis_schema));
		SPIPlanPtr	p = SPI_prepare(psprintf("SELECT t.id FROM allocation.territory t"
											 " WHERE %s.st_covers(t.geom, %s.st_setsrid(%s.st_makepoint($1, $2), 4326))"
											 " ORDER BY t.priority DESC, t.id LIMIT %d",
											 pg, pg, pg, ALLOC_MAX_HITS),
									2, types);

		if (p == NULL)
			elog(ERROR, "SPI_prepare of the territory lookup failed");
		SPI_keepplan(p);
		plan = p;
	}
	if (SPI_execute_plan(plan, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "territory lookup failed");
	for (i = 0; i < SPI_processed && n < maxhits; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		TerritoryInfo *t = tindex_get(id);

		/* committed after this backend read the attributes: known from its next statement */
		if (t != NULL)
			hits[n++] = t;
	}
	PopActiveSnapshot();
	alloc_spi_end(&sw);
	return n;
}

/*
 * Territories covering (x, y), in winning order.  Only call at the start of
 * a decision: a rebuild frees the previous index.
 */
int
tindex_lookup(double x, double y, TerritoryInfo **hits, int maxhits)
{
	TIndex	   *ix;
	dsa_area   *a = NULL;
	int			cell,
				k,
				n = 0;

	tindex_ensure();
	ix = tindex;
	if (ix->mode == TI_INDEXED)
		return fallback_lookup(x, y, hits, maxhits);
	if (x < ix->grid.minx || x > ix->grid.maxx || y < ix->grid.miny || y > ix->grid.maxy)
		return 0;
	if (ix->mode == TI_SHARED)
		a = tshared_area();
	cell = CELL_Y(&ix->grid, y) * ix->grid.gx + CELL_X(&ix->grid, x);
	for (k = ix->cell_start[cell]; k < ix->cell_start[cell + 1] && n < maxhits; k++)
	{
		int			i = ix->cell_items[k];
		const GridEntry *t = &ix->entries[i];
		const GeomBlob *blob;

		if (x < t->minx || x > t->maxx || y < t->miny || y > t->maxy)
			continue;
		blob = a ? (const GeomBlob *) dsa_get_address(a, t->blob) : (const GeomBlob *) ix->blobs[i];
		if (blob != NULL && blob_covers(blob, x, y))
			hits[n++] = &ix->infos[i];
	}
	return n;
}

/* bsearch comparison of an id with a TerritoryInfo */
static int
info_id_cmp(const void *key, const void *elem)
{
	int64		id = *(const int64 *) key;
	const TerritoryInfo *t = (const TerritoryInfo *) elem;

	return id < t->id ? -1 : (id > t->id ? 1 : 0);
}

/* The territory with this id (NULL if none) */
TerritoryInfo *
tindex_get(int64 id)
{
	tindex_ensure();
	return bsearch(&id, tindex->infos, tindex->n, sizeof(TerritoryInfo), info_id_cmp);
}

/* Whether territory_id is scope_id or one of its descendants */
bool
tindex_is_within(int64 territory_id, int64 scope_id)
{
	int			depth = 0;

	while (territory_id != 0 && depth++ < 256)
	{
		TerritoryInfo *t;

		if (territory_id == scope_id)
			return true;
		t = tindex_get(territory_id);
		if (t == NULL)
			return false;
		territory_id = t->parent_id;
	}
	return false;
}

/* This backend's index, for cache_stats() */
void
tindex_stats(TIndexStats *st)
{
	TSharedStats ss;

	tindex_prepare();
	st->territories = tindex->n;
	st->vertices = tindex->nvertices;
	st->backend_bytes = MemoryContextMemAllocated(tindex->cxt, true);
	st->bytes = tindex->mode == TI_SHARED ? tindex->index_bytes : st->backend_bytes;
	st->in_memory = tindex->mode != TI_INDEXED;
	st->over_limit = tindex->over_limit;
	st->limit = tindex->limit;
	st->build_ms = tindex->build_ms;
	st->index_mode = mode_names[tindex->mode];
	st->reason = tindex->reason;
	st->version = tindex->key;
	st->preloaded = tshared_available();
	tshared_stats(&tindex->ref, &ss);
	st->shared_bytes = tindex->mode == TI_SHARED ? tindex->index_bytes : 0;
	st->shared_builds = ss.builds;
	st->shared_total_bytes = ss.area_bytes;
	st->attached_backends = ss.users;
	st->shared_builds_made = (int64) ss.published;
}
