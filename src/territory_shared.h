/*
 * territory_shared.h
 *		Territory index: the position-independent layout of the polygons
 *		(shared by the per-backend and the shared-memory index) and the
 *		registry of shared builds (territory_shared.c).
 *
 * Everything that may live in dynamic shared memory holds offsets (from the
 * start of its own chunk) or dsa_pointers, never an address: every backend
 * maps the area at a different address.
 */
#ifndef TERRITORY_SHARED_H
#define TERRITORY_SHARED_H

#include "utils/dsa.h"

/* one ring: a winding-number test over the edges of one horizontal band */
typedef struct GeomRing
{
	int32		npts;			/* including the closing point */
	int32		nbands;
	double		band_h;
	double		minx,
				miny,
				maxx,
				maxy;
	Size		xy_off;			/* double[2 * npts] */
	Size		band_start_off; /* int32[nbands + 1] into band_edges */
	Size		band_edges_off; /* int32[]: edge numbers per band */
} GeomRing;

typedef struct GeomPoly
{
	int32		nrings;			/* the first is the shell, the rest holes */
	int32		first_ring;
} GeomPoly;

/* one territory's polygons in one chunk: header, polys, rings, then data */
typedef struct GeomBlob
{
	int32		npolys;
	int32		nrings;
	Size		size;
} GeomBlob;

#define BLOB_POLYS(b) ((const GeomPoly *) ((const char *) (b) + MAXALIGN(sizeof(GeomBlob))))
#define BLOB_RINGS(b) ((const GeomRing *) ((const char *) BLOB_POLYS(b) + MAXALIGN(sizeof(GeomPoly) * (b)->npolys)))

/* a territory's bounding box and (in shared memory) its blob */
typedef struct GridEntry
{
	double		minx,
				miny,
				maxx,
				maxy;
	dsa_pointer blob;			/* InvalidDsaPointer: no polygons, or local */
} GridEntry;

/* a uniform grid over the territories' bounding boxes */
typedef struct GridShape
{
	int32		gx,
				gy;
	double		minx,
				miny,
				maxx,
				maxy,
				cw,
				ch;
} GridShape;

#define CELL_X(g, x) Min((g)->gx - 1, Max(0, (int) floor(((x) - (g)->minx) / (g)->cw)))
#define CELL_Y(g, y) Min((g)->gy - 1, Max(0, (int) floor(((y) - (g)->miny) / (g)->ch)))

/* a complete shared build, in dynamic shared memory */
typedef struct SharedBuild
{
	int32		n;				/* territories, sorted by id */
	GridShape	grid;
	int64		nvertices;
	Size		bytes;			/* all its chunks */
	dsa_pointer entries;		/* GridEntry[n] */
	dsa_pointer ids;			/* int64[n], to check a build against the rows read */
	dsa_pointer cell_start;		/* int32[gx * gy + 1] */
	dsa_pointer cell_items;		/* int32[]: entry numbers, in winning order */
} SharedBuild;

/* which build a backend uses: a registry slot and its generation */
typedef struct TSharedRef
{
	int			slot;			/* -1: none */
	uint64		seq;
} TSharedRef;

typedef struct TSharedStats
{
	int			builds;			/* live builds in this database */
	int			users;			/* backends whose index is this build */
	int			pins;			/* transactions using it now */
	Size		area_bytes;		/* every live build */
	uint64		published;		/* builds published since the server started */
} TSharedStats;

/* where a build puts its chunks: this backend's memory or the shared area */
typedef struct GeomSink
{
	dsa_area   *area;			/* NULL: allocate in cxt */
	MemoryContext cxt;
	Size		bytes;
	Size		limit;
	bool		oom;			/* the shared area could not grow */
} GeomSink;

/* territory_geom.c */
extern char *sink_alloc(GeomSink *s, Size size, dsa_pointer *dp);
extern bool sink_full(GeomSink *s);
extern bool geom_read(int nterr, const TerritoryInfo *infos, GridEntry *entries, char **blobs,
					  GeomSink *sink, int64 *nvertices);
extern void grid_build(int n, const TerritoryInfo *infos, const GridEntry *entries, GridShape *ix,
					   int32 **cell_start_out, int32 **cell_items_out);
extern bool blob_covers(const GeomBlob *blob, double px, double py);

/* territory_shared.c */
extern void tshared_init(void);
extern bool tshared_available(void);
extern dsa_area *tshared_area(void);
extern SharedBuild *tshared_find(Oid relid, uint64 key, int32 n, TSharedRef *ref);
extern bool tshared_publish(Oid relid, uint64 key, int32 n, dsa_pointer build, double build_ms,
							TSharedRef *ref, SharedBuild **found);
extern bool tshared_pin(const TSharedRef *ref);
extern void tshared_detach(TSharedRef *ref);
extern void tshared_xact_end(void);
extern void tshared_lock_build(Oid relid);
extern void tshared_unlock_build(Oid relid);
extern void tshared_free_build(dsa_area *area, dsa_pointer dp);
extern void tshared_set_pending(dsa_pointer dp);
extern void tshared_stats(const TSharedRef *ref, TSharedStats *st);

#endif							/* TERRITORY_SHARED_H */
