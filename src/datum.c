/*
 * datum.c
 *		Customer locations captured on Chinese map SDKs: GCJ-02 (Amap/Gaode,
 *		Tencent, the "Mars" coordinates every licensed map of China uses) and
 *		BD-09 (Baidu), converted to WGS 84 before the territory lookup.
 *
 * GCJ-02 is WGS 84 plus a smooth offset of 100-700 m given by a published
 * formula (the one every open implementation uses); outside mainland China
 * (the usual bounding box) GCJ-02 equals WGS 84.  BD-09 is GCJ-02 plus a
 * second published offset.  Both formulas go one way (WGS 84 -> GCJ-02 ->
 * BD-09); their inverses have no closed form and are computed here by
 * fixed-point iteration: the offset changes by less than 0.3 % of a step per
 * step, so each iteration gains more than two decimal digits and the loop
 * stops when the residual is below 1e-12 degree (0.1 micrometre).  The
 * round-trip error measured over a 0.1-degree grid covering China is in
 * docs and in the 33_location_datum regress test.
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "allocation.h"
#include "datum.h"

#define GCJ_A		6378245.0	/* Krasovsky 1940 semi-major axis */
#define GCJ_EE		0.00669342162296594323	/* its first eccentricity squared */
#define BD_X_PI		(M_PI * 3000.0 / 180.0)
#define INV_EPS		1e-12		/* degrees: stop when the residual is below */
#define INV_MAX_ITER 30

bool
datum_parse(const char *name, AllocDatum *d)
{
	if (name == NULL)
		return false;
	if (strcmp(name, "wgs84") == 0)
		*d = DATUM_WGS84;
	else if (strcmp(name, "gcj02") == 0)
		*d = DATUM_GCJ02;
	else if (strcmp(name, "bd09") == 0)
		*d = DATUM_BD09;
	else
		return false;
	return true;
}

const char *
datum_name(AllocDatum d)
{
	switch (d)
	{
		case DATUM_GCJ02:
			return "gcj02";
		case DATUM_BD09:
			return "bd09";
		default:
			return "wgs84";
	}
}

/* The box outside which GCJ-02 is WGS 84 (the published out-of-China test) */
bool
datum_in_china(double lon, double lat)
{
	return !(lon < 72.004 || lon > 137.8347 || lat < 0.8293 || lat > 55.8271);
}

static double
gcj_lat_term(double x, double y)
{
	double		r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt(fabs(x));

	r += (20.0 * sin(6.0 * x * M_PI) + 20.0 * sin(2.0 * x * M_PI)) * 2.0 / 3.0;
	r += (20.0 * sin(y * M_PI) + 40.0 * sin(y / 3.0 * M_PI)) * 2.0 / 3.0;
	r += (160.0 * sin(y / 12.0 * M_PI) + 320.0 * sin(y * M_PI / 30.0)) * 2.0 / 3.0;
	return r;
}

static double
gcj_lon_term(double x, double y)
{
	double		r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt(fabs(x));

	r += (20.0 * sin(6.0 * x * M_PI) + 20.0 * sin(2.0 * x * M_PI)) * 2.0 / 3.0;
	r += (20.0 * sin(x * M_PI) + 40.0 * sin(x / 3.0 * M_PI)) * 2.0 / 3.0;
	r += (150.0 * sin(x / 12.0 * M_PI) + 300.0 * sin(x / 30.0 * M_PI)) * 2.0 / 3.0;
	return r;
}

/* The GCJ-02 offset (degrees) at a WGS 84 position, without the box test */
static void
gcj_offset(double lon, double lat, double *dlon, double *dlat)
{
	double		radlat = lat / 180.0 * M_PI;
	double		magic = sin(radlat);
	double		sqrtmagic;

	magic = 1.0 - GCJ_EE * magic * magic;
	sqrtmagic = sqrt(magic);
	*dlat = gcj_lat_term(lon - 105.0, lat - 35.0) * 180.0 /
		((GCJ_A * (1.0 - GCJ_EE)) / (magic * sqrtmagic) * M_PI);
	*dlon = gcj_lon_term(lon - 105.0, lat - 35.0) * 180.0 /
		(GCJ_A / sqrtmagic * cos(radlat) * M_PI);
}

static void
wgs_to_gcj(double *lon, double *lat)
{
	double		dlon,
				dlat;

	if (!datum_in_china(*lon, *lat))
		return;
	gcj_offset(*lon, *lat, &dlon, &dlat);
	*lon += dlon;
	*lat += dlat;
}

/*
 * GCJ-02 -> WGS 84: the WGS 84 point w whose GCJ-02 image is g, by the
 * iteration w <- g - offset(w).  Outside the box the point is its own image.
 */
static void
gcj_to_wgs(double *lon, double *lat)
{
	double		glon = *lon,
				glat = *lat,
				wlon = glon,
				wlat = glat;
	int			i;

	if (!datum_in_china(glon, glat))
		return;
	for (i = 0; i < INV_MAX_ITER; i++)
	{
		double		dlon,
					dlat,
					nlon,
					nlat;

		gcj_offset(wlon, wlat, &dlon, &dlat);
		nlon = glon - dlon;
		nlat = glat - dlat;
		if (fabs(nlon - wlon) < INV_EPS && fabs(nlat - wlat) < INV_EPS)
		{
			wlon = nlon;
			wlat = nlat;
			break;
		}
		wlon = nlon;
		wlat = nlat;
	}
	*lon = wlon;
	*lat = wlat;
}

static void
gcj_to_bd(double *lon, double *lat)
{
	double		x = *lon,
				y = *lat;
	double		z = sqrt(x * x + y * y) + 0.00002 * sin(y * BD_X_PI);
	double		theta = atan2(y, x) + 0.000003 * cos(x * BD_X_PI);

	*lon = z * cos(theta) + 0.0065;
	*lat = z * sin(theta) + 0.006;
}

/*
 * BD-09 -> GCJ-02: the published one-step inverse as the start, then
 * g <- g + (b - forward(g)) until the forward image matches b.
 */
static void
bd_to_gcj(double *lon, double *lat)
{
	double		blon = *lon,
				blat = *lat;
	double		x = blon - 0.0065,
				y = blat - 0.006;
	double		z = sqrt(x * x + y * y) - 0.00002 * sin(y * BD_X_PI);
	double		theta = atan2(y, x) - 0.000003 * cos(x * BD_X_PI);
	double		glon = z * cos(theta),
				glat = z * sin(theta);
	int			i;

	for (i = 0; i < INV_MAX_ITER; i++)
	{
		double		flon = glon,
					flat = glat;

		gcj_to_bd(&flon, &flat);
		glon += blon - flon;
		glat += blat - flat;
		if (fabs(blon - flon) < INV_EPS && fabs(blat - flat) < INV_EPS)
			break;
	}
	*lon = glon;
	*lat = glat;
}

void
datum_to_wgs84(AllocDatum d, double *lon, double *lat)
{
	if (d == DATUM_BD09)
		bd_to_gcj(lon, lat);
	if (d == DATUM_BD09 || d == DATUM_GCJ02)
		gcj_to_wgs(lon, lat);
}

void
datum_from_wgs84(AllocDatum d, double *lon, double *lat)
{
	if (d == DATUM_BD09 || d == DATUM_GCJ02)
		wgs_to_gcj(lon, lat);
	if (d == DATUM_BD09)
		gcj_to_bd(lon, lat);
}

static AllocDatum
datum_arg(text *t, const char *what)
{
	char	   *s = text_to_cstring(t);
	AllocDatum	d;

	if (!datum_parse(s, &d))
		ereport(ERROR,
				(errcode(MAKE_SQLSTATE('L', 'A', '0', '1', '7')),
				 errmsg("unknown location datum \"%s\"", s),
				 errdetail("The %s datum must be one of wgs84, gcj02 (Amap, Tencent and other licensed maps of China) or bd09 (Baidu).", what),
				 errhint("Use 'wgs84', 'gcj02' or 'bd09' (lower case).")));
	return d;
}

/*
 * allocation.datum_convert(lon, lat, from_datum, to_datum, OUT lon, OUT lat):
 * the conversion the engine applies to a managed table's locations, for
 * queries, checks and data cleaning.
 */
PG_FUNCTION_INFO_V1(allocation_datum_convert);
Datum
allocation_datum_convert(PG_FUNCTION_ARGS)
{
	double		lon = PG_GETARG_FLOAT8(0);
	double		lat = PG_GETARG_FLOAT8(1);
	AllocDatum	from = datum_arg(PG_GETARG_TEXT_PP(2), "source");
	AllocDatum	to = datum_arg(PG_GETARG_TEXT_PP(3), "target");
	TupleDesc	td;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &td) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "datum_convert must return a record");
	if (isnan(lon) || isnan(lat) || isinf(lon) || isinf(lat) || fabs(lat) > 90.0 || fabs(lon) > 180.0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("longitude %g, latitude %g is not a position on Earth", lon, lat),
				 errdetail("Longitude must be within [-180, 180] and latitude within [-90, 90] degrees."),
				 errhint("Pass longitude first, then latitude, in degrees.")));
	if (from != to)
	{
		datum_to_wgs84(from, &lon, &lat);
		datum_from_wgs84(to, &lon, &lat);
	}
	values[0] = Float8GetDatum(lon);
	values[1] = Float8GetDatum(lat);
	td = BlessTupleDesc(td);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(td, values, nulls)));
}
