/*
 * location.c
 *		Reads a customer's location (a PostGIS point) into plain doubles.
 *
 * The geometry is serialized through PostGIS's own ST_AsEWKB (a direct fmgr
 * call, no SPI) and the 21-29 bytes are parsed here.  Points in another SRID
 * are transformed with ST_Transform; an SRID unknown to spatial_ref_sys is an
 * error (checked once per backend and SRID).
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "allocation.h"
#include "datum.h"

#define WKB_SRID_FLAG	0x20000000
#define WKB_Z_FLAG		0x80000000
#define WKB_M_FLAG		0x40000000

static FmgrInfo asewkb_finfo;
static FmgrInfo transform_finfo;
static bool finfo_ready = false;

#define MAX_KNOWN_SRIDS 16
static int32 known_srids[MAX_KNOWN_SRIDS];
static int	nknown_srids = 0;

static void
location_init(void)
{
	Oid			geom = alloc_geometry_type();
	Oid			args2[2];

	if (finfo_ready)
		return;
	fmgr_info_cxt(alloc_postgis_func("st_asewkb", 1, &geom), &asewkb_finfo, TopMemoryContext);
	args2[0] = geom;
	args2[1] = INT4OID;
	fmgr_info_cxt(alloc_postgis_func("st_transform", 2, args2), &transform_finfo, TopMemoryContext);
	finfo_ready = true;
}

/* Whether spatial_ref_sys knows an SRID (cached per backend) */
static bool
srid_is_known(int32 srid)
{
	AllocUserSwitch sw;
	char	   *sql;
	bool		found;
	int			i;

	for (i = 0; i < nknown_srids; i++)
		if (known_srids[i] == srid)
			return true;

	alloc_spi_begin(&sw);
	sql = psprintf("SELECT 1 FROM %s.spatial_ref_sys WHERE srid = %d",
				   quote_identifier(get_namespace_name(alloc_oids.postgis_schema)), srid);
	if (SPI_execute(sql, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "spatial_ref_sys lookup failed");
	found = SPI_processed > 0;
	alloc_spi_end(&sw);

	if (found && nknown_srids < MAX_KNOWN_SRIDS)
		known_srids[nknown_srids++] = srid;
	return found;
}

static uint32
read_u32(const unsigned char *p, bool le)
{
	return le ? ((uint32) p[0] | ((uint32) p[1] << 8) | ((uint32) p[2] << 16) | ((uint32) p[3] << 24))
		: ((uint32) p[3] | ((uint32) p[2] << 8) | ((uint32) p[1] << 16) | ((uint32) p[0] << 24));
}

static double
read_f64(const unsigned char *p, bool le)
{
	unsigned char b[8];
	double		d;
	int			i;

#ifdef WORDS_BIGENDIAN
	bool		swap = le;
#else
	bool		swap = !le;
#endif
	for (i = 0; i < 8; i++)
		b[i] = swap ? p[7 - i] : p[i];
	memcpy(&d, b, 8);
	return d;
}

/* Parses EWKB of a point; returns false when the geometry is not a point */
static bool
parse_ewkb_point(bytea *wkb, AllocPoint *pt)
{
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(wkb);
	Size		len = VARSIZE_ANY_EXHDR(wkb);
	bool		le;
	uint32		type;
	Size		off = 5;

	if (len < 5)
		return false;
	le = (p[0] == 1);
	type = read_u32(p + 1, le);
	pt->srid = 0;
	if (type & WKB_SRID_FLAG)
	{
		if (len < off + 4)
			return false;
		pt->srid = (int32) read_u32(p + off, le);
		off += 4;
	}
	if ((type & 0x0FFFFFFF) != 1)
		return false;
	if (len < off + 16)
		return false;
	pt->x = read_f64(p + off, le);
	pt->y = read_f64(p + off + 8, le);
	pt->present = !(isnan(pt->x) || isnan(pt->y));
	return true;
}

/*
 * Reads a location datum into pt, in EPSG:4326 on the WGS 84 datum: points
 * in another SRID are transformed, then coordinates of a GCJ-02 or BD-09
 * column converted (datum.c).  The coordinates as stored stay in
 * pt->stored_x/y for explain().  NULL handling is the caller's (pass only
 * non-NULL datums).
 */
void
alloc_read_point(Datum geom, AllocPoint *pt, const char *table_name, char datum)
{
	bytea	   *wkb;
	int32		srid;

	location_init();
	wkb = DatumGetByteaPP(FunctionCall1(&asewkb_finfo, geom));
	pt->present = false;
	if (!parse_ewkb_point(wkb, pt))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_NOT_POINT),
				 errmsg("customer location must be a point"),
				 errdetail("A location of table %s holds a geometry that is not a POINT.", table_name),
				 errhint("Store the customer's position as a point, e.g. ST_SetSRID(ST_MakePoint(lon, lat), 4326).")));
	srid = pt->srid;
	pt->datum = datum;
	pt->stored_x = pt->x;
	pt->stored_y = pt->y;
	if (!pt->present)
		return;
	if (srid == 4326)
	{
		if (datum != DATUM_WGS84)
			datum_to_wgs84((AllocDatum) datum, &pt->x, &pt->y);
		return;
	}
	if (srid == 0)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_UNKNOWN_SRID),
				 errmsg("customer location has no SRID"),
				 errdetail("A point of table %s was stored with SRID 0, so its coordinates cannot be placed on the territory map.", table_name),
				 errhint("Give the point an SRID, e.g. ST_SetSRID(ST_MakePoint(lon, lat), 4326), or declare the column as geometry(Point, 4326).")));
	if (!srid_is_known(srid))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_UNKNOWN_SRID),
				 errmsg("customer location has unknown SRID %d", srid),
				 errdetail("SRID %d is not in spatial_ref_sys, so the point cannot be transformed to EPSG:4326.", srid),
				 errhint("Use EPSG:4326, or another SRID listed in spatial_ref_sys.")));
	geom = FunctionCall2(&transform_finfo, geom, Int32GetDatum(4326));
	wkb = DatumGetByteaPP(FunctionCall1(&asewkb_finfo, geom));
	if (!parse_ewkb_point(wkb, pt))
		elog(ERROR, "transformed location is not a point");
	pt->srid = srid;
	if (datum != DATUM_WGS84)
		datum_to_wgs84((AllocDatum) datum, &pt->x, &pt->y);
}
