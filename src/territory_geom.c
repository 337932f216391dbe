/*
 * territory_geom.c
 *		The territory index's polygons: WKB parsing, the position-independent
 *		layout (GeomBlob), the point-in-polygon test and the grid.
 *
 * A lookup:
 *   1. a uniform grid over the territories' bounding boxes gives candidates;
 *   2. each candidate ring is tested with a winding-number point-in-polygon
 *      test restricted to the edges of one horizontal band (each ring's edges
 *      are bucketed by y), so the cost does not grow with the vertex count;
 *   3. a point on an edge or vertex is covered (ST_Covers semantics), using
 *      the same orientation determinant as PostGIS, so borders agree exactly.
 * The same layout serves the per-backend index (palloc) and the shared one
 * (dynamic shared memory): offsets from the start of each chunk, no pointers.
 */
#include "postgres.h"

#include <math.h>

#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "allocation.h"
#include "territory_shared.h"

/* a ring as parsed, before it is laid out in a blob */
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

typedef struct Parsed
{
	int			npolys;
	Poly	   *polys;
	double		minx,
				miny,
				maxx,
				maxy;
} Parsed;

/* ---------- WKB reading ---------- */

typedef struct WkbReader
{
	const unsigned char *p;
	Size		len;
	Size		off;
	bool		le;
} WkbReader;

/* Next little- or big-endian uint32 of the WKB */
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

/* Next float8 of the WKB */
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

/* Byte order and type of the next WKB geometry, which must be expect */
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

/* Reads one ring's points and buckets its edges */
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

/* Parses a MultiPolygon's WKB (in CurrentMemoryContext); returns its vertex count */
static int64
read_multipolygon(bytea *wkb, Parsed *t)
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

/* A chunk of size bytes from the sink; NULL when the shared area is exhausted */
char *
sink_alloc(GeomSink *s, Size size, dsa_pointer *dp)
{
	*dp = InvalidDsaPointer;
	s->bytes += size;
	if (s->area == NULL)
		return MemoryContextAllocHuge(s->cxt, size);
	*dp = dsa_allocate_extended(s->area, size, DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM);
	if (!DsaPointerIsValid(*dp))
	{
		s->oom = true;
		return NULL;
	}
	return dsa_get_address(s->area, *dp);
}

/* Whether the build outgrew its bound (or the shared area) */
bool
sink_full(GeomSink *s)
{
	if (s->oom)
		return true;
	if (s->area != NULL)
		return s->bytes > s->limit;
	return MemoryContextMemAllocated(s->cxt, true) > s->limit;
}

/* Lays one territory's parsed polygons out in one chunk (offsets only) */
static char *
blob_write(GeomSink *sink, const Parsed *t, dsa_pointer *dp)
{
	int			i,
				j,
				k = 0,
				nr = 0;
	Size		off,
				size;
	char	   *buf;
	GeomBlob   *b;
	GeomPoly   *gp;
	GeomRing   *gr;

	for (i = 0; i < t->npolys; i++)
		nr += t->polys[i].nrings;
	off = MAXALIGN(sizeof(GeomBlob)) + MAXALIGN(sizeof(GeomPoly) * t->npolys) +
		MAXALIGN(sizeof(GeomRing) * nr);
	size = off;
	for (i = 0; i < t->npolys; i++)
		for (j = 0; j < t->polys[i].nrings; j++)
		{
			const Ring *r = &t->polys[i].rings[j];

			size += MAXALIGN(sizeof(double) * 2 * r->npts) + MAXALIGN(sizeof(int32) * (r->nbands + 1)) +
				MAXALIGN(sizeof(int32) * Max(1, r->band_start[r->nbands]));
		}
	buf = sink_alloc(sink, size, dp);
	if (buf == NULL)
		return NULL;
	b = (GeomBlob *) buf;
	b->npolys = t->npolys;
	b->nrings = nr;
	b->size = size;
	gp = (GeomPoly *) (buf + MAXALIGN(sizeof(GeomBlob)));
	gr = (GeomRing *) ((char *) gp + MAXALIGN(sizeof(GeomPoly) * t->npolys));
	for (i = 0; i < t->npolys; i++)
	{
		gp[i].nrings = t->polys[i].nrings;
		gp[i].first_ring = k;
		for (j = 0; j < t->polys[i].nrings; j++, k++)
		{
			const Ring *r = &t->polys[i].rings[j];
			GeomRing   *g = &gr[k];
			Size		nb = sizeof(int32) * Max(1, r->band_start[r->nbands]);

			g->npts = r->npts;
			g->nbands = r->nbands;
			g->band_h = r->band_h;
			g->minx = r->minx;
			g->miny = r->miny;
			g->maxx = r->maxx;
			g->maxy = r->maxy;
			g->xy_off = off;
			memcpy(buf + off, r->xy, sizeof(double) * 2 * r->npts);
			off += MAXALIGN(sizeof(double) * 2 * r->npts);
			g->band_start_off = off;
			memcpy(buf + off, r->band_start, sizeof(int32) * (r->nbands + 1));
			off += MAXALIGN(sizeof(int32) * (r->nbands + 1));
			g->band_edges_off = off;
			memcpy(buf + off, r->band_edges, nb);
			off += MAXALIGN(nb);
		}
	}
	Assert(off == size);
	return buf;
}

/* ---------- point in polygon ---------- */

#define PIP_OUTSIDE 0
#define PIP_INSIDE 1
#define PIP_BOUNDARY 2

/* Where (px, py) lies relative to one ring of a blob */
static int
ring_locate(const char *base, const GeomRing *ring, double px, double py)
{
	const double *xy;
	const int32 *band_start;
	const int32 *band_edges;
	int			b,
				k,
				wn = 0;

	if (px < ring->minx || px > ring->maxx || py < ring->miny || py > ring->maxy)
		return PIP_OUTSIDE;
	xy = (const double *) (base + ring->xy_off);
	band_start = (const int32 *) (base + ring->band_start_off);
	band_edges = (const int32 *) (base + ring->band_edges_off);
	b = Min(ring->nbands - 1, Max(0, (int) floor((py - ring->miny) / ring->band_h)));
	for (k = band_start[b]; k < band_start[b + 1]; k++)
	{
		int			e = band_edges[k];
		double		ax = xy[2 * e],
					ay = xy[2 * e + 1],
					bx = xy[2 * e + 2],
					by = xy[2 * e + 3];
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
bool
blob_covers(const GeomBlob *blob, double px, double py)
{
	const char *base = (const char *) blob;
	const GeomPoly *polys = BLOB_POLYS(blob);
	const GeomRing *rings = BLOB_RINGS(blob);
	int			i,
				j;

	for (i = 0; i < blob->npolys; i++)
	{
		const GeomPoly *p = &polys[i];
		int			loc;
		bool		in_hole = false;

		if (p->nrings == 0)
			continue;
		loc = ring_locate(base, &rings[p->first_ring], px, py);
		if (loc == PIP_OUTSIDE)
			continue;
		if (loc == PIP_BOUNDARY)
			return true;
		for (j = 1; j < p->nrings; j++)
		{
			int			h = ring_locate(base, &rings[p->first_ring + j], px, py);

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

/* ---------- grid ---------- */

/* Winning order of two entry numbers: priority DESC, id ASC */
static int
entry_order_cmp(const void *a, const void *b, void *arg)
{
	const TerritoryInfo *infos = (const TerritoryInfo *) arg;
	const TerritoryInfo *ta = &infos[*(const int32 *) a];
	const TerritoryInfo *tb = &infos[*(const int32 *) b];

	if (ta->priority != tb->priority)
		return ta->priority > tb->priority ? -1 : 1;
	if (ta->id != tb->id)
		return ta->id < tb->id ? -1 : 1;
	return 0;
}

#define HAS_GEOM(e) isfinite((e)->minx)

/*
 * The grid over the entries' bounding boxes: sets its extent and cell size,
 * returns the cell arrays (in CurrentMemoryContext).
 */
void
grid_build(int n, const TerritoryInfo *infos, const GridEntry *entries, GridShape *ix,
		   int32 **cell_start_out, int32 **cell_items_out)
{
	int			i,
				ngeom = 0,
				cx,
				cy,
				g,
				ncells;
	int32	   *cell_start;
	int32	   *cell_items;
	int32	   *fill;

	ix->minx = ix->miny = INFINITY;
	ix->maxx = ix->maxy = -INFINITY;
	for (i = 0; i < n; i++)
	{
		const GridEntry *t = &entries[i];

		if (!HAS_GEOM(t))
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
	ncells = g * g;
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

	cell_start = palloc0(sizeof(int32) * (ncells + 1));
	for (i = 0; i < n; i++)
	{
		const GridEntry *t = &entries[i];

		if (!HAS_GEOM(t))
			continue;
		for (cy = CELL_Y(ix, t->miny); cy <= CELL_Y(ix, t->maxy); cy++)
			for (cx = CELL_X(ix, t->minx); cx <= CELL_X(ix, t->maxx); cx++)
				cell_start[cy * ix->gx + cx + 1]++;
	}
	for (i = 0; i < ncells; i++)
		cell_start[i + 1] += cell_start[i];
	cell_items = palloc(sizeof(int32) * Max(1, cell_start[ncells]));
	fill = palloc(sizeof(int32) * ncells);
	memcpy(fill, cell_start, sizeof(int32) * ncells);
	for (i = 0; i < n; i++)
	{
		const GridEntry *t = &entries[i];

		if (!HAS_GEOM(t))
			continue;
		for (cy = CELL_Y(ix, t->miny); cy <= CELL_Y(ix, t->maxy); cy++)
			for (cx = CELL_X(ix, t->minx); cx <= CELL_X(ix, t->maxx); cx++)
				cell_items[fill[cy * ix->gx + cx]++] = i;
	}
	pfree(fill);
	/* each cell's list in winning order, so hits come out sorted */
	for (i = 0; i < ncells; i++)
	{
		int			len = cell_start[i + 1] - cell_start[i];

		if (len > 1)
			qsort_arg(cell_items + cell_start[i], len, sizeof(int32), entry_order_cmp, (void *) infos);
	}
	*cell_start_out = cell_start;
	*cell_items_out = cell_items;
}

/*
 * Reads the polygons into entries[] (and blobs[] in backend mode), in the
 * order of infos (read in the same snapshot); false when the sink is full.
 */
bool
geom_read(int nterr, const TerritoryInfo *infos, GridEntry *entries, char **blobs,
		  GeomSink *sink, int64 *nvertices)
{
	MemoryContext tmp,
				old;
	SPIPlanPtr	plan;
	Portal		cursor;
	char	   *sql;
	int			n = 0;
	bool		full = false;

	for (n = 0; n < nterr; n++)
	{
		entries[n].minx = entries[n].miny = INFINITY;
		entries[n].maxx = entries[n].maxy = -INFINITY;
		entries[n].blob = InvalidDsaPointer;
	}
	n = 0;
	sql = psprintf("SELECT id, %s.st_asbinary(geom, 'NDR') FROM allocation.territory ORDER BY id",
				   quote_identifier(get_namespace_name(alloc_oids.postgis_schema)));
	/* the rows come through a cursor: the polygons are bounded, not the whole result */
	plan = SPI_prepare(sql, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "could not read allocation.territory");
	cursor = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	tmp = AllocSetContextCreate(CurrentMemoryContext, "allocation territory parse",
								ALLOCSET_DEFAULT_SIZES);
	while (!full)
	{
		uint64		i;

		SPI_cursor_fetch(cursor, true, 64);
		if (SPI_processed == 0)
			break;
		for (i = 0; i < SPI_processed && !full; i++, n++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	td = SPI_tuptable->tupdesc;
			bool		isnull;
			Datum		g;
			Parsed		p;
			char	   *buf;
			GridEntry  *e = &entries[n];

			if (n >= nterr || DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull)) != infos[n].id)
				elog(ERROR, "allocation.territory changed while it was read");
			g = SPI_getbinval(tup, td, 2, &isnull);
			if (isnull)
				continue;
			old = MemoryContextSwitchTo(tmp);
			*nvertices += read_multipolygon(DatumGetByteaPP(g), &p);
			MemoryContextSwitchTo(old);
			buf = blob_write(sink, &p, &e->blob);
			MemoryContextReset(tmp);
			if (buf != NULL && p.npolys > 0 && isfinite(p.minx))
			{
				e->minx = p.minx;
				e->miny = p.miny;
				e->maxx = p.maxx;
				e->maxy = p.maxy;
			}
			if (blobs)
				blobs[n] = buf;
			full = sink_full(sink);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(cursor);
	MemoryContextDelete(tmp);
	if (!full && n != nterr)
		elog(ERROR, "allocation.territory changed while it was read");
	return !full;
}
