/*
 * geojson.c
 *		Streaming split of a GeoJSON FeatureCollection given as text.
 *
 * A whole country's county outlines (~3,200 features, ~200 MB of GeoJSON)
 * cannot be handled as one jsonb: jsonb_in builds a tree of the whole
 * document (several times its size in memory) and a jsonb value is limited
 * to 255 MB. Here the text is lexed once with PostgreSQL's own JSON parser
 * (no tree, no copy of the input); each element of the top-level "features"
 * array is converted to jsonb on its own and written to a tuplestore, which
 * spills to a temporary file beyond work_mem. Peak memory is the input text
 * plus work_mem plus one feature, whatever the number of features.
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#define ERRCODE_ALLOC_NOT_GEOJSON	MAKE_SQLSTATE('L','A','0','0','1')

/* a byte range of the input */
typedef struct Span
{
	int			start;
	int			len;
} Span;

/* parser state: where the top-level members and the features are */
typedef struct SplitState
{
	JsonLexContext *lex;
	bool		top_is_object;	/* the document is an object */
	bool		in_features;	/* inside the value of top-level "features" */
	bool		features_is_array;
	int			member_start;	/* offset of the current top-level member's value */
	int			elem_start;		/* offset of the current feature */
	StringInfoData header;		/* the top-level members except "features", as JSON text */
	int			nheader;
	Span	   *features;		/* each feature's byte range */
	int			nfeatures;
	int			cap;
} SplitState;

PG_FUNCTION_INFO_V1(allocation_geojson_features);

/* Remembers whether the document is an object */
static void
split_object_start(void *state)
{
	SplitState *s = (SplitState *) state;

	if (s->lex->lex_level == 0)
		s->top_is_object = true;
}

/* Notes that the value of "features" is an array */
static void
split_array_start(void *state)
{
	SplitState *s = (SplitState *) state;

	if (s->in_features && s->lex->lex_level == 1)
		s->features_is_array = true;
}

/* A top-level member starts: remember where its value begins */
static void
split_field_start(void *state, char *fname, bool isnull)
{
	SplitState *s = (SplitState *) state;

	if (s->lex->lex_level != 1)
		return;
	s->member_start = s->lex->token_start - s->lex->input;
	s->in_features = (fname != NULL && strcmp(fname, "features") == 0);
}

/* A top-level member ends: copy it into the header (all but an array "features") */
static void
split_field_end(void *state, char *fname, bool isnull)
{
	SplitState *s = (SplitState *) state;
	int			end;

	if (s->lex->lex_level != 1)
		return;
	end = s->lex->prev_token_terminator - s->lex->input;
	if (s->nheader++ > 0)
		appendStringInfoString(&s->header, ", ");
	escape_json(&s->header, fname ? fname : "");
	appendStringInfoString(&s->header, ": ");
	if (s->in_features && s->features_is_array)
		appendStringInfo(&s->header, "%d", s->nfeatures);
	else
		appendBinaryStringInfo(&s->header, s->lex->input + s->member_start, end - s->member_start);
	s->in_features = false;
}

/* An element of "features" starts */
static void
split_element_start(void *state, bool isnull)
{
	SplitState *s = (SplitState *) state;

	if (s->in_features && s->features_is_array && s->lex->lex_level == 2)
		s->elem_start = s->lex->token_start - s->lex->input;
}

/* An element of "features" ends: remember its byte range */
static void
split_element_end(void *state, bool isnull)
{
	SplitState *s = (SplitState *) state;

	if (!(s->in_features && s->features_is_array && s->lex->lex_level == 2))
		return;
	if (s->nfeatures == s->cap)
	{
		s->cap *= 2;
		s->features = repalloc_huge(s->features, sizeof(Span) * s->cap);
	}
	s->features[s->nfeatures].start = s->elem_start;
	s->features[s->nfeatures].len = (s->lex->prev_token_terminator - s->lex->input) - s->elem_start;
	s->nfeatures++;
}

/* Converts a byte range of the input to jsonb */
static Datum
span_to_jsonb(const char *input, int start, int len)
{
	char	   *txt = pnstrdup(input + start, len);

	return DirectFunctionCall1(jsonb_in, CStringGetDatum(txt));
}

/*
 * allocation.geojson_features(geojson text) RETURNS TABLE (feature int, value jsonb)
 * Row 0: the document without its features (for a FeatureCollection: "type",
 * "crs", "name"..., with "features" replaced by their number); rows 1..n: the
 * features in file order. Not JSON: LA001 with the parser's detail.
 */
Datum
allocation_geojson_features(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	text	   *doc;
	char	   *input;
	int			inlen;
	JsonLexContext *lex;
	JsonSemAction sem;
	SplitState	s;
	JsonParseErrorType res;
	MemoryContext rowcxt,
				oldcxt;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0))
		return (Datum) 0;
	doc = PG_GETARG_TEXT_PP(0);
	input = VARDATA_ANY(doc);
	inlen = VARSIZE_ANY_EXHDR(doc);

	memset(&s, 0, sizeof(s));
	memset(&sem, 0, sizeof(sem));
	lex = makeJsonLexContextCstringLen(input, inlen, GetDatabaseEncoding(), true);
	s.lex = lex;
	s.cap = 1024;
	s.features = palloc(sizeof(Span) * s.cap);
	initStringInfo(&s.header);
	appendStringInfoChar(&s.header, '{');
	sem.semstate = &s;
	sem.object_start = split_object_start;
	sem.array_start = split_array_start;
	sem.object_field_start = split_field_start;
	sem.object_field_end = split_field_end;
	sem.array_element_start = split_element_start;
	sem.array_element_end = split_element_end;

	res = pg_parse_json(lex, &sem);
	if (res != JSON_SUCCESS)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_NOT_GEOJSON),
				 errmsg("input is not valid JSON"),
				 errdetail("Line %d: %s", lex->line_number, json_errdetail(res, lex)),
				 errhint("Export the layer from your GIS as GeoJSON (QGIS: Export > Save Features As > GeoJSON).")));
	appendStringInfoChar(&s.header, '}');

	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "geojson feature", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(rowcxt);
	values[0] = Int32GetDatum(0);
	if (s.top_is_object)
		values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(s.header.data));
	else
		values[1] = span_to_jsonb(input, 0, inlen);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	MemoryContextReset(rowcxt);

	for (i = 0; i < s.nfeatures; i++)
	{
		CHECK_FOR_INTERRUPTS();
		values[0] = Int32GetDatum(i + 1);
		values[1] = span_to_jsonb(input, s.features[i].start, s.features[i].len);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		MemoryContextReset(rowcxt);
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(rowcxt);
	return (Datum) 0;
}
