/*
 * territory_index.c
 *		Per-backend in-memory index of territory polygons.
 *
 * Built once per backend (and again after a territory change, signalled by a
 * relcache invalidation) from ST_AsBinary of every territory.  A lookup:
 *   1. a uniform grid over the territories' bounding boxes gives candidates;
 *   2. each candidate ring is tested with a winding-number point-in-polygon
 *      test restricted to the edges of one horizontal band (each ring's edges
 *      are bucketed by y), so the cost does not grow with the vertex count;
 *   3. a point on an edge or vertex is covered (ST_Covers semantics), using
 *      the same orientation determinant as PostGIS, so borders agree exactly.
 * Hits are ordered by priority DESC, id ASC: the first is the winner.
 *
 * The polygons take about 28 bytes per vertex in every backend that decides.
 * allocation.territory_cache_max bounds that: a build that would exceed it
 * (or a bound of 0) keeps only the territories' attributes, and lookups run
 * a GiST-indexed ST_Covers query instead (fallback_lookup), which gives the
 * same answers at the cost of an SPI query per decision.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "portability/instr_time.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "allocation.h"
#include "stat.h"

typedef struct Ring
{
	int			npts;			/* including the closing point */
	double	   *xy;
	double		minx,
				miny,
				maxx,
				maxy;
	int			nbands;
	double		band_h;
	int32	   *band_start;		/* nbands + 1 offsets into band_edges */
	int32	   *band_edges;
} Ring;

typedef struct Poly
{
	int			nrings;			/* rings[0] is the shell, the rest holes */
	Ring	   *rings;
} Poly;

typedef struct TEntry
{
	TerritoryInfo info;
	int			npolys;
	Poly	   *polys;
	double		minx,
				miny,
				maxx,
				maxy;
} TEntry;

typedef struct TIndex
{
	MemoryContext cxt;
	int			n;				/* all territories, sorted by id */
	TEntry	   *entries;
	/* grid over the bounding boxes of territories with a geometry */
	int			gx,
				gy;
	double		minx,
				miny,
				maxx,
				maxy;
	double		cw,
				ch;
	int32	   *cell_start;
	int32	   *cell_items;		/* entry indexes, in winning order */
	int64		nvertices;
	bool		in_memory;		/* false: polygons not loaded, fallback_lookup */
	bool		over_limit;		/* they were, but exceeded the bound */
	Size		limit;
	double		build_ms;
} TIndex;

static TIndex *tindex = NULL;
static bool tindex_stale = true;

void
tindex_invalidate(void)
{
	tindex_stale = true;
}


/* ---------- WKB reading ---------- */

typedef struct WkbReader
{
	const unsigned char *p;
	Size		len;
	Size		off;
	bool		le;
} WkbReader;

static uint32
wkb_u32(WkbReader *r)
{
	const unsigned char *p;
	uint32		v;

	if (r->off + 4 > r->len)
		elog(ERROR, "truncated territory WKB");
	p = r->p + r->off;
	r->off += 4;
	if (r->le)
		v = (uint32) p[0] | ((uint32) p[1] << 8) | ((uint32) p[2] << 16) | ((uint32) p[3] << 24);
	else
		v = (uint32) p[3] | ((uint32) p[2] << 8) | ((uint32) p[1] << 16) | ((uint32) p[0] << 24);
	return v;
}

static double
wkb_f64(WkbReader *r)
{
	unsigned char b[8];
	double		d;
	int			i;
#ifdef WORDS_BIGENDIAN
	bool		swap = r->le;
#else
	bool		swap = !r->le;
#endif

	if (r->off + 8 > r->len)
		elog(ERROR, "truncated territory WKB");
	for (i = 0; i < 8; i++)
		b[i] = swap ? r->p[r->off + 7 - i] : r->p[r->off + i];
	r->off += 8;
	memcpy(&d, b, 8);
	return d;
}

static void
wkb_header(WkbReader *r, uint32 expect)
{
	uint32		type;

	if (r->off >= r->len)
		elog(ERROR, "truncated territory WKB");
	r->le = (r->p[r->off] == 1);
	r->off++;
	type = wkb_u32(r);
	if (type != expect)
		elog(ERROR, "unexpected WKB type %u in territory geometry (expected %u)", type, expect);
}

/* Buckets a ring's edges by horizontal band */
static void
ring_build_bands(Ring *ring)
{
	int			nedges = ring->npts - 1;
	int			nb;
	int32	   *count;
	int			e,
				b;

	nb = nedges / 4;
	if (nb < 1)
		nb = 1;
	if (nb > 65536)
		nb = 65536;
	ring->nbands = nb;
	ring->band_h = (ring->maxy - ring->miny) / nb;
	if (!(ring->band_h > 0))
	{
		ring->nbands = nb = 1;
		ring->band_h = 1.0;
	}
	ring->band_start = palloc0(sizeof(int32) * (nb + 1));
	count = ring->band_start;

#define BAND_OF(y) \
	Min(nb - 1, Max(0, (int) floor(((y) - ring->miny) / ring->band_h)))

	for (e = 0; e < nedges; e++)
	{
		double		y1 = ring->xy[2 * e + 1],
					y2 = ring->xy[2 * e + 3];
		int			b1 = BAND_OF(Min(y1, y2)),
					b2 = BAND_OF(Max(y1, y2));

		for (b = b1; b <= b2; b++)
			count[b + 1]++;
	}
	for (b = 0; b < nb; b++)
		ring->band_start[b + 1] += ring->band_start[b];
	ring->band_edges = palloc(sizeof(int32) * Max(1, ring->band_start[nb]));
	{
		int32	   *fill = palloc(sizeof(int32) * nb);

		memcpy(fill, ring->band_start, sizeof(int32) * nb);
		for (e = 0; e < nedges; e++)
		{
			double		y1 = ring->xy[2 * e + 1],
						y2 = ring->xy[2 * e + 3];
			int			b1 = BAND_OF(Min(y1, y2)),
						b2 = BAND_OF(Max(y1, y2));

			for (b = b1; b <= b2; b++)
				ring->band_edges[fill[b]++] = e;
		}
		pfree(fill);
	}
}

static void
read_ring(WkbReader *r, Ring *ring)
{
	uint32		npts = wkb_u32(r);
	uint32		i;

	if (npts < 4)
		elog(ERROR, "territory ring with %u points", npts);
	ring->npts = npts;
	ring->xy = palloc(sizeof(double) * 2 * npts);
	ring->minx = ring->miny = INFINITY;
	ring->maxx = ring->maxy = -INFINITY;
	for (i = 0; i < npts; i++)
	{
		double		x = wkb_f64(r),
					y = wkb_f64(r);

		ring->xy[2 * i] = x;
		ring->xy[2 * i + 1] = y;
		ring->minx = Min(ring->minx, x);
		ring->maxx = Max(ring->maxx, x);
		ring->miny = Min(ring->miny, y);
		ring->maxy = Max(ring->maxy, y);
	}
	ring_build_bands(ring);
}

static int64
read_multipolygon(bytea *wkb, TEntry *t)
{
	WkbReader	r;
	uint32		np,
				i,
				j;
	int64		nv = 0;

	r.p = (const unsigned char *) VARDATA_ANY(wkb);
	r.len = VARSIZE_ANY_EXHDR(wkb);
	r.off = 0;
	wkb_header(&r, 6);
	np = wkb_u32(&r);
	t->npolys = np;
	t->polys = palloc0(sizeof(Poly) * Max(np, 1));
	t->minx = t->miny = INFINITY;
	t->maxx = t->maxy = -INFINITY;
	for (i = 0; i < np; i++)
	{
		Poly	   *p = &t->polys[i];

		wkb_header(&r, 3);
		p->nrings = wkb_u32(&r);
		p->rings = palloc0(sizeof(Ring) * Max(p->nrings, 1));
		for (j = 0; j < (uint32) p->nrings; j++)
		{
			read_ring(&r, &p->rings[j]);
			nv += p->rings[j].npts;
		}
		if (p->nrings > 0)
		{
			t->minx = Min(t->minx, p->rings[0].minx);
			t->miny = Min(t->miny, p->rings[0].miny);
			t->maxx = Max(t->maxx, p->rings[0].maxx);
			t->maxy = Max(t->maxy, p->rings[0].maxy);
		}
	}
	return nv;
}

/* ---------- point in polygon ---------- */

#define PIP_OUTSIDE 0
#define PIP_INSIDE 1
#define PIP_BOUNDARY 2

static int
ring_locate(const Ring *ring, double px, double py)
{
	int			b,
				k,
				wn = 0;

	if (px < ring->minx || px > ring->maxx || py < ring->miny || py > ring->maxy)
		return PIP_OUTSIDE;
	b = Min(ring->nbands - 1, Max(0, (int) floor((py - ring->miny) / ring->band_h)));
	for (k = ring->band_start[b]; k < ring->band_start[b + 1]; k++)
	{
		int			e = ring->band_edges[k];
		double		ax = ring->xy[2 * e],
					ay = ring->xy[2 * e + 1],
					bx = ring->xy[2 * e + 2],
					by = ring->xy[2 * e + 3];
		/* same determinant as PostGIS's lw_segment_side, opposite sign */
		double		side = (bx - ax) * (py - ay) - (px - ax) * (by - ay);

		if (side == 0.0 &&
			px >= Min(ax, bx) && px <= Max(ax, bx) &&
			py >= Min(ay, by) && py <= Max(ay, by))
			return PIP_BOUNDARY;
		if (ay <= py)
		{
			if (by > py && side > 0)
				wn++;
		}
		else if (by <= py && side < 0)
			wn--;
	}
	return wn != 0 ? PIP_INSIDE : PIP_OUTSIDE;
}

/* ST_Covers(territory, point) */
static bool
entry_covers(const TEntry *t, double px, double py)
{
	int			i,
				j;

	for (i = 0; i < t->npolys; i++)
	{
		const Poly *p = &t->polys[i];
		int			loc;
		bool		in_hole = false;

		if (p->nrings == 0)
			continue;
		loc = ring_locate(&p->rings[0], px, py);
		if (loc == PIP_OUTSIDE)
			continue;
		if (loc == PIP_BOUNDARY)
			return true;
		for (j = 1; j < p->nrings; j++)
		{
			int			h = ring_locate(&p->rings[j], px, py);

			if (h == PIP_BOUNDARY)
				return true;
			if (h == PIP_INSIDE)
			{
				in_hole = true;
				break;
			}
		}
		if (!in_hole)
			return true;
	}
	return false;
}

/* ---------- build ---------- */

static int
entry_order_cmp(const void *a, const void *b, void *arg)
{
	const TEntry *entries = (const TEntry *) arg;
	const TEntry *ta = &entries[*(const int32 *) a];
	const TEntry *tb = &entries[*(const int32 *) b];

	if (ta->info.priority != tb->info.priority)
		return ta->info.priority > tb->info.priority ? -1 : 1;
	if (ta->info.id != tb->info.id)
		return ta->info.id < tb->info.id ? -1 : 1;
	return 0;
}

static void
build_grid(TIndex *ix)
{
	int			i,
				ngeom = 0,
				cx,
				cy,
				g;
	int32	   *count;
	int32	   *fill;

	ix->minx = ix->miny = INFINITY;
	ix->maxx = ix->maxy = -INFINITY;
	for (i = 0; i < ix->n; i++)
	{
		TEntry	   *t = &ix->entries[i];

		if (t->npolys == 0 || !isfinite(t->minx))
			continue;
		ngeom++;
		ix->minx = Min(ix->minx, t->minx);
		ix->miny = Min(ix->miny, t->miny);
		ix->maxx = Max(ix->maxx, t->maxx);
		ix->maxy = Max(ix->maxy, t->maxy);
	}
	g = (int) ceil(sqrt((double) Max(ngeom, 1)) * 2);
	g = Max(1, Min(g, 1024));
	ix->gx = ix->gy = g;
	if (ngeom == 0)
	{
		ix->minx = ix->miny = 0;
		ix->maxx = ix->maxy = -1;	/* empty: every lookup misses */
	}
	ix->cw = (ix->maxx - ix->minx) / g;
	ix->ch = (ix->maxy - ix->miny) / g;
	if (!(ix->cw > 0))
		ix->cw = 1.0;
	if (!(ix->ch > 0))
		ix->ch = 1.0;

#define CELL_X(x) Min(ix->gx - 1, Max(0, (int) floor(((x) - ix->minx) / ix->cw)))
#define CELL_Y(y) Min(ix->gy - 1, Max(0, (int) floor(((y) - ix->miny) / ix->ch)))

	ix->cell_start = palloc0(sizeof(int32) * (ix->gx * ix->gy + 1));
	count = ix->cell_start;
	for (i = 0; i < ix->n; i++)
	{
		TEntry	   *t = &ix->entries[i];

		if (t->npolys == 0 || !isfinite(t->minx))
			continue;
		for (cy = CELL_Y(t->miny); cy <= CELL_Y(t->maxy); cy++)
			for (cx = CELL_X(t->minx); cx <= CELL_X(t->maxx); cx++)
				count[cy * ix->gx + cx + 1]++;
	}
	for (i = 0; i < ix->gx * ix->gy; i++)
		ix->cell_start[i + 1] += ix->cell_start[i];
	ix->cell_items = palloc(sizeof(int32) * Max(1, ix->cell_start[ix->gx * ix->gy]));
	fill = palloc(sizeof(int32) * ix->gx * ix->gy);
	memcpy(fill, ix->cell_start, sizeof(int32) * ix->gx * ix->gy);
	for (i = 0; i < ix->n; i++)
	{
		TEntry	   *t = &ix->entries[i];

		if (t->npolys == 0 || !isfinite(t->minx))
			continue;
		for (cy = CELL_Y(t->miny); cy <= CELL_Y(t->maxy); cy++)
			for (cx = CELL_X(t->minx); cx <= CELL_X(t->maxx); cx++)
				ix->cell_items[fill[cy * ix->gx + cx]++] = i;
	}
	pfree(fill);
	/* each cell's list in winning order, so hits come out sorted */
	for (i = 0; i < ix->gx * ix->gy; i++)
	{
		int			len = ix->cell_start[i + 1] - ix->cell_start[i];

		if (len > 1)
			qsort_arg(ix->cell_items + ix->cell_start[i], len, sizeof(int32),
					  entry_order_cmp, ix->entries);
	}
}

/*
 * Reads the territories into a new index.  With polygons, gives up (returns
 * NULL, nothing kept) as soon as the index outgrows limit bytes.
 */
static TIndex *
tindex_read(bool polygons, Size limit)
{
	MemoryContext cxt,
				old;
	AllocUserSwitch sw;
	TIndex	   *ix;
	char	   *sql;
	uint64		i;
	int			n;
	bool		over = false;
	SPIPlanPtr	plan;
	Portal		cursor;

	/* a child of the caller's memory until complete: an error frees it with the transaction */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "allocation territory index",
								ALLOCSET_DEFAULT_SIZES);
	alloc_spi_begin(&sw);
	/* read the latest committed territories, whatever the statement's snapshot */
	PushActiveSnapshot(GetLatestSnapshot());
	if (polygons)
		sql = psprintf("SELECT id, coalesce(parent_id, 0), priority, exclusive, coalesce(owner_rep_id, 0),"
					   " coalesce(owner_team_id, 0), code, name, %s.st_asbinary(geom, 'NDR'), crop_zones"
					   " FROM allocation.territory ORDER BY id",
					   quote_identifier(get_namespace_name(alloc_oids.postgis_schema)));
	else
		sql = "SELECT id, coalesce(parent_id, 0), priority, exclusive, coalesce(owner_rep_id, 0),"
			" coalesce(owner_team_id, 0), code, name, NULL::bytea, crop_zones"
			" FROM allocation.territory ORDER BY id";
	/* the rows come through a cursor: the polygons are bounded, not the whole result */
	if (SPI_execute("SELECT count(*)::integer FROM allocation.territory", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not count allocation.territory");
	{
		bool		isnull;

		n = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	plan = SPI_prepare(sql, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "could not read allocation.territory");
	cursor = SPI_cursor_open(NULL, plan, NULL, NULL, true);

	old = MemoryContextSwitchTo(cxt);
	ix = palloc0(sizeof(TIndex));
	ix->cxt = cxt;
	ix->in_memory = polygons;
	ix->limit = limit;
	ix->entries = palloc0(sizeof(TEntry) * Max(n, 1));
	while (!over)
	{
		SPI_cursor_fetch(cursor, true, 64);
		/* SPI calls return into the SPI procedure context: back to the index's */
		MemoryContextSwitchTo(cxt);
		if (SPI_processed == 0)
			break;
		for (i = 0; i < SPI_processed && !over; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	td = SPI_tuptable->tupdesc;
			TEntry	   *t;
			bool		isnull;
			Datum		g;

			if (ix->n == n)
				elog(ERROR, "allocation.territory changed while it was read");
			t = &ix->entries[ix->n++];
			t->info.id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
			t->info.parent_id = DatumGetInt64(SPI_getbinval(tup, td, 2, &isnull));
			t->info.priority = DatumGetInt32(SPI_getbinval(tup, td, 3, &isnull));
			t->info.exclusive = DatumGetBool(SPI_getbinval(tup, td, 4, &isnull));
			t->info.owner_rep = DatumGetInt64(SPI_getbinval(tup, td, 5, &isnull));
			t->info.owner_team = DatumGetInt64(SPI_getbinval(tup, td, 6, &isnull));
			t->info.code = SPI_getvalue(tup, td, 7);
			t->info.name = SPI_getvalue(tup, td, 8);
			{
				TextSet		z = textset_from_datum(SPI_getbinval(tup, td, 10, &isnull), isnull);

				t->info.nzones = Max(z.n, 0);
				t->info.zones = z.items;
			}
			g = SPI_getbinval(tup, td, 9, &isnull);
			if (!isnull)
			{
				ix->nvertices += read_multipolygon(DatumGetByteaPP(g), t);
				over = MemoryContextMemAllocated(cxt, true) > limit;
			}
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(cursor);
	MemoryContextSwitchTo(cxt);
	if (polygons && !over)
	{
		build_grid(ix);
		over = MemoryContextMemAllocated(cxt, true) > limit;
	}
	MemoryContextSwitchTo(old);
	PopActiveSnapshot();
	alloc_spi_end(&sw);
	if (over)
	{
		MemoryContextDelete(cxt);
		return NULL;
	}
	MemoryContextSetParent(cxt, CacheMemoryContext);
	return ix;
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
	AllocUserSwitch sw;
	bool		isnull;
	double		stored;

	alloc_spi_begin(&sw);
	PushActiveSnapshot(GetLatestSnapshot());
	if (SPI_execute("SELECT coalesce(sum(pg_catalog.pg_column_size(geom)), 0)::float8 FROM allocation.territory",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not size allocation.territory");
	stored = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	PopActiveSnapshot();
	alloc_spi_end(&sw);
	return stored * 1.25 > (double) limit;
}

static void
tindex_build_inner(void)
{
	TIndex	   *ix = NULL;
	Size		limit = (Size) alloc_territory_cache_max_kb * 1024;
	bool		over = false;
	instr_time	t0,
				t1;

	INSTR_TIME_SET_CURRENT(t0);
	/* an invalidation arriving while we read marks the new index stale again */
	tindex_stale = false;
	if (limit > 0 && polygons_surely_exceed(limit))
		over = true;
	else if (limit > 0)
	{
		ix = tindex_read(true, limit);
		over = (ix == NULL);
	}
	if (ix == NULL)
	{
		ix = tindex_read(false, limit);
		ix->over_limit = over;
	}
	INSTR_TIME_SET_CURRENT(t1);
	INSTR_TIME_SUBTRACT(t1, t0);
	ix->build_ms = INSTR_TIME_GET_MILLISEC(t1);
	alloc_stat_index_build(ix->build_ms, MemoryContextMemAllocated(ix->cxt, true), ix->n, ix->in_memory);

	if (tindex)
		MemoryContextDelete(tindex->cxt);
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
}

static inline void
tindex_ensure(void)
{
	if (tindex == NULL)
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
	int			cell,
				k,
				n = 0;

	tindex_ensure();
	if (!tindex->in_memory)
		return fallback_lookup(x, y, hits, maxhits);
	if (x < tindex->minx || x > tindex->maxx || y < tindex->miny || y > tindex->maxy)
		return 0;
	{
		TIndex	   *ix = tindex;

		cell = CELL_Y(y) * ix->gx + CELL_X(x);
		for (k = ix->cell_start[cell]; k < ix->cell_start[cell + 1] && n < maxhits; k++)
		{
			TEntry	   *t = &ix->entries[ix->cell_items[k]];

			if (x < t->minx || x > t->maxx || y < t->miny || y > t->maxy)
				continue;
			if (entry_covers(t, x, y))
				hits[n++] = &t->info;
		}
	}
	return n;
}

static int
entry_id_cmp(const void *key, const void *elem)
{
	int64		id = *(const int64 *) key;
	const TEntry *t = (const TEntry *) elem;

	return id < t->info.id ? -1 : (id > t->info.id ? 1 : 0);
}

TerritoryInfo *
tindex_get(int64 id)
{
	TEntry	   *t;

	tindex_ensure();
	t = bsearch(&id, tindex->entries, tindex->n, sizeof(TEntry), entry_id_cmp);
	return t ? &t->info : NULL;
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

void
tindex_stats(TIndexStats *st)
{
	tindex_prepare();
	st->territories = tindex->n;
	st->vertices = tindex->nvertices;
	st->bytes = MemoryContextMemAllocated(tindex->cxt, true);
	st->in_memory = tindex->in_memory;
	st->over_limit = tindex->over_limit;
	st->limit = tindex->limit;
	st->build_ms = tindex->build_ms;
}
