/*
 * datum.h
 *		Geodetic datums of customer locations: WGS 84, GCJ-02, BD-09.
 */
#ifndef ALLOCATION_DATUM_H
#define ALLOCATION_DATUM_H

#include "postgres.h"

/* the datum a managed table's location column is in (managed_table.location_datum) */
typedef enum AllocDatum
{
	DATUM_WGS84 = 'w',
	DATUM_GCJ02 = 'g',
	DATUM_BD09 = 'b'
} AllocDatum;

/* 'wgs84', 'gcj02', 'bd09' -> datum; false for anything else */
extern bool datum_parse(const char *name, AllocDatum *d);
extern const char *datum_name(AllocDatum d);

/* lon/lat in degrees, converted in place */
extern void datum_to_wgs84(AllocDatum d, double *lon, double *lat);
extern void datum_from_wgs84(AllocDatum d, double *lon, double *lat);

/* whether GCJ-02 applies at (lon, lat): the usual mainland box */
extern bool datum_in_china(double lon, double lat);

#endif							/* ALLOCATION_DATUM_H */
