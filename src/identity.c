/*
 * identity.c
 *		Customer identity: normalized names and phone numbers, and the check
 *		character of the unified social credit code (统一社会信用代码,
 *		GB 32100-2015).  normalize_phone() and credit_code_is_valid() are
 *		IMMUTABLE; normalize_name(text) is STABLE: it strips the terms of
 *		allocation.name_term, which the DBA can extend.
 *
 * The term list is read once per backend (a heap scan, no SPI) and kept
 * until allocation.name_term changes: its statement trigger zz_invalidate
 * sends a relcache invalidation that reaches name_terms_relcache() through
 * allocation.c's relcache callback.
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/unicode_norm.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "parser/parse_relation.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "allocation.h"

/* A term of allocation.name_term, normalized */
typedef struct NameTerm
{
	char	   *term;			/* normalized text */
	int			len;			/* bytes */
	char	   *canonical;		/* entity terms: what stays in the name; NULL = stripped */
} NameTerm;

/* the cached term list (longest first) */
static NameTerm *cached_terms = NULL;
static int	cached_nterms = 0;
static bool cached_valid = false;
static uint64 cached_generation = 0;	/* counts invalidations */
static Oid	cached_relid = InvalidOid;
static MemoryContext cached_cxt = NULL;

/* Whether a code point separates words or is punctuation (dropped) */
static bool
is_noise(pg_wchar c)
{
	if (c < 0x80)
		return !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
	return c == 0x00A0 || c == 0x00B7 ||	/* no-break space, middle dot */
		(c >= 0x2000 && c <= 0x206F) ||	/* general punctuation, spaces */
		(c >= 0x3000 && c <= 0x303F) ||	/* CJK symbols and punctuation */
		c == 0x30FB ||			/* katakana middle dot */
		(c >= 0xFE30 && c <= 0xFE4F) ||	/* CJK compatibility forms */
		(c >= 0xFE50 && c <= 0xFE6F);	/* small form variants */
}

/* Full-width ASCII to half-width, ASCII upper to lower */
static pg_wchar
fold(pg_wchar c)
{
	if (c >= 0xFF01 && c <= 0xFF5E)
		c -= 0xFEE0;
	else if (c == 0x3000)
		c = ' ';
	if (c >= 'A' && c <= 'Z')
		c += 'a' - 'A';
	return c;
}

/*
 * Whether s ends with term and at least two characters stay before it (a
 * name is never reduced to a single character: in 金农药 the 农药 is part of
 * the name); then cuts it off.
 */
static bool
strip_term(StringInfo s, const NameTerm *t)
{
	if (t->len == 0 || s->len <= t->len || memcmp(s->data + s->len - t->len, t->term, t->len) != 0)
		return false;
	if (pg_mbstrlen_with_len(s->data, s->len - t->len) < 2)
		return false;
	s->len -= t->len;
	s->data[s->len] = '\0';
	return true;
}

/* Case, width, blanks and punctuation folded away */
static void
fold_name(const char *src, int len, StringInfo out)
{
	bool		utf8 = (GetDatabaseEncoding() == PG_UTF8);
	int			i = 0;

	while (i < len)
	{
		pg_wchar	c;
		int			l;

		if (utf8)
		{
			l = pg_utf_mblen((const unsigned char *) src + i);
			if (i + l > len)
				break;
			c = utf8_to_unicode((const unsigned char *) src + i);
		}
		else
		{
			/* other encodings: only ASCII is folded; everything else is kept as is */
			l = pg_mblen(src + i);
			c = (l == 1) ? (unsigned char) src[i] : 0x10FFFF;
		}
		if (utf8 || (l == 1 && c < 0x80))
		{
			c = fold(c);
			if (!is_noise(c))
			{
				if (utf8)
				{
					unsigned char buf[8];

					unicode_to_utf8(c, buf);
					appendBinaryStringInfo(out, (char *) buf, pg_utf_mblen(buf));
				}
				else
					appendStringInfoChar(out, (char) c);
			}
		}
		else
			appendBinaryStringInfo(out, src + i, l);
		i += l;
	}
}

/*
 * The folded name without the terms at its end, repeatedly, longest first
 * (丰收东1号农化有限公司: 有限公司, then 农化).  An entity term (合作社, ...)
 * is taken off too, but its canonical form is put back at the end: a
 * cooperative keeps telling itself apart from a shop of the same name.
 */
static text *
normalize_name_internal(text *in, const NameTerm *terms, int nterms)
{
	StringInfoData out;
	const char *entity = NULL;
	bool		again;

	initStringInfo(&out);
	fold_name(VARDATA_ANY(in), VARSIZE_ANY_EXHDR(in), &out);
	do
	{
		int			k;

		again = false;
		for (k = 0; k < nterms; k++)
			if (strip_term(&out, &terms[k]))
			{
				if (terms[k].canonical && entity == NULL)
					entity = terms[k].canonical;
				again = true;
				break;
			}
	} while (again);
	if (entity)
		appendStringInfoString(&out, entity);
	return cstring_to_text_with_len(out.data, out.len);
}

/* A term in normalized form (as names are compared) */
static char *
fold_term(const char *t)
{
	StringInfoData s;

	initStringInfo(&s);
	fold_name(t, strlen(t), &s);
	return s.data;
}

static int
cmp_term_len(const void *a, const void *b)
{
	const NameTerm *x = a,
			   *y = b;

	if (x->len != y->len)
		return y->len - x->len;
	return strcmp(x->term, y->term);
}

/* Relcache invalidation (allocation.c): the term table changed, or everything did */
void
name_terms_relcache(Oid relid)
{
	if (!OidIsValid(relid) || relid == cached_relid)
	{
		cached_valid = false;
		cached_generation++;
	}
}

void
name_terms_invalidate(void)
{
	cached_valid = false;
	cached_relid = InvalidOid;
	cached_generation++;
}

/*
 * The terms of allocation.name_term, read with a heap scan (no SPI, no
 * privilege check: the list is the engine's configuration, readable by every
 * caller of normalize_name) and cached until the table changes.  The latest
 * committed list is read, as the configuration cache does, so a statement
 * that started before a change does not cache the old list for good.  In a
 * parallel worker (no new snapshot can be taken) the statement's snapshot
 * is used and the list is not kept.
 */
static const NameTerm *
name_terms(int *n)
{
	Oid			nsp,
				relid;
	Relation	rel;
	TableScanDesc scan;
	TupleTableSlot *slot;
	Snapshot	snap;
	bool		keep = !IsInParallelMode();
	MemoryContext cxt,
				old;
	AttrNumber	a_term,
				a_kind,
				a_canon;
	NameTerm   *terms;
	int			nterms = 0,
				size = 64;
	uint64		generation;

	if (cached_valid && cached_terms)
	{
		*n = cached_nterms;
		return cached_terms;
	}
	nsp = get_namespace_oid("allocation", true);
	relid = OidIsValid(nsp) ? get_relname_relid("name_term", nsp) : InvalidOid;
	if (!OidIsValid(relid))
	{
		*n = 0;
		return NULL;
	}
	rel = table_open(relid, AccessShareLock);
	/* an invalidation that arrives from here on (while detoasting, say) makes this list stale */
	cached_relid = relid;
	generation = cached_generation;
	cxt = AllocSetContextCreate(keep ? CacheMemoryContext : CurrentMemoryContext,
								"allocation name terms", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	a_term = attnameAttNum(rel, "term", false);
	a_kind = attnameAttNum(rel, "kind", false);
	a_canon = attnameAttNum(rel, "canonical", false);
	terms = palloc(sizeof(NameTerm) * size);
	snap = keep ? RegisterSnapshot(GetLatestSnapshot()) : GetActiveSnapshot();
	scan = table_beginscan(rel, snap, 0, NULL);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		n1,
					n2,
					n3;
		Datum		t = slot_getattr(slot, a_term, &n1);
		Datum		k = slot_getattr(slot, a_kind, &n2);
		Datum		c = slot_getattr(slot, a_canon, &n3);
		NameTerm   *nt;

		if (n1 || n2)
			continue;
		if (nterms == size)
		{
			size *= 2;
			terms = repalloc(terms, sizeof(NameTerm) * size);
		}
		nt = &terms[nterms];
		nt->term = fold_term(TextDatumGetCString(t));
		nt->len = strlen(nt->term);
		nt->canonical = NULL;
		if (strcmp(TextDatumGetCString(k), "entity_term") == 0)
			nt->canonical = fold_term(n3 ? TextDatumGetCString(t) : TextDatumGetCString(c));
		if (nt->len > 0)
			nterms++;
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	if (keep)
		UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
	qsort(terms, nterms, sizeof(NameTerm), cmp_term_len);
	MemoryContextSwitchTo(old);
	if (keep)
	{
		if (cached_cxt)
			MemoryContextDelete(cached_cxt);
		cached_cxt = cxt;
		cached_terms = terms;
		cached_nterms = nterms;
		cached_valid = (generation == cached_generation);
	}
	*n = nterms;
	return terms;
}

/*
 * The canonical entity term a normalized name ends with (合作社 for
 * 绿丰种植合作社), NULL when none: names of different entities never match.
 */
const char *
name_entity(const char *norm)
{
	int			n,
				k,
				len = strlen(norm);
	const NameTerm *t = name_terms(&n);

	for (k = 0; k < n; k++)
	{
		int			cl;

		if (t[k].canonical == NULL)
			continue;
		cl = strlen(t[k].canonical);
		if (len > cl && memcmp(norm + len - cl, t[k].canonical, cl) == 0)
			return t[k].canonical;
	}
	return NULL;
}

/* normalize_name(text): the terms of allocation.name_term */
PG_FUNCTION_INFO_V1(allocation_normalize_name);
Datum
allocation_normalize_name(PG_FUNCTION_ARGS)
{
	int			n;
	const NameTerm *t = name_terms(&n);

	PG_RETURN_TEXT_P(normalize_name_internal(PG_GETARG_TEXT_PP(0), t, n));
}

/* normalize_name(text, suffixes text[]): a custom suffix list, all stripped */
PG_FUNCTION_INFO_V1(allocation_normalize_name_with);
Datum
allocation_normalize_name_with(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i,
				k = 0;
	NameTerm   *t;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	t = palloc(sizeof(NameTerm) * (n + 1));
	for (i = 0; i < n; i++)
		if (!nulls[i])
		{
			/* suffixes are compared in normalized form */
			t[k].term = fold_term(TextDatumGetCString(elems[i]));
			t[k].len = strlen(t[k].term);
			t[k].canonical = NULL;
			k++;
		}
	qsort(t, k, sizeof(NameTerm), cmp_term_len);
	PG_RETURN_TEXT_P(normalize_name_internal(PG_GETARG_TEXT_PP(0), t, k));
}

/*
 * normalize_phone(text): digits of a Chinese phone number, or NULL when the
 * text is no such number.  Mobile: 11 digits starting with 1 (+86 / 0086 / 86
 * dropped).  Landline: area code with its leading 0 plus 7-8 digits
 * (+86 731 ... becomes 0731...).
 */
PG_FUNCTION_INFO_V1(allocation_normalize_phone);
Datum
allocation_normalize_phone(PG_FUNCTION_ARGS)
{
	char	   *src = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char		digits[64];
	int			n = 0,
				i;
	bool		international = false;
	char	   *d;

	for (i = 0; src[i];)
	{
		pg_wchar	c;
		int			l;

		if (GetDatabaseEncoding() == PG_UTF8)
		{
			l = pg_utf_mblen((const unsigned char *) src + i);
			c = fold(utf8_to_unicode((const unsigned char *) src + i));
		}
		else
		{
			l = pg_mblen(src + i);
			c = (l == 1) ? (unsigned char) src[i] : 0x10FFFF;
		}
		i += l;
		if (c >= '0' && c <= '9')
		{
			if (n >= (int) sizeof(digits) - 1)
				PG_RETURN_NULL();
			digits[n++] = (char) c;
		}
		else if (c == '+' && n == 0 && !international)
			international = true;
		else if (c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' || c == '/')
			continue;
		else
			PG_RETURN_NULL();	/* letters, extensions: not a plain number */
	}
	digits[n] = '\0';
	d = digits;
	/* country code */
	if (strncmp(d, "0086", 4) == 0)
	{
		d += 4;
		international = true;
	}
	else if ((international || strlen(d) > 11) && strncmp(d, "86", 2) == 0)
	{
		d += 2;
		international = true;
	}
	else if (international)
		PG_RETURN_NULL();		/* another country */
	n = strlen(d);
	if (n == 11 && d[0] == '1' && d[1] >= '3' && d[1] <= '9')
		PG_RETURN_TEXT_P(cstring_to_text(d));
	if (international && d[0] != '0' && n >= 9 && n <= 11)
	{
		/* +86 731 88888888: the area code loses its 0 abroad */
		char	   *withzero = psprintf("0%s", d);

		PG_RETURN_TEXT_P(cstring_to_text(withzero));
	}
	if (d[0] == '0' && d[1] != '0' && n >= 10 && n <= 12)
		PG_RETURN_TEXT_P(cstring_to_text(d));
	PG_RETURN_NULL();
}

/*
 * A unified social credit code as it is compared: full-width characters
 * folded, blanks (spaces, tabs, ideographic spaces) removed, letters upper
 * case -- and then valid: 18 characters from the code's alphabet (digits and
 * upper-case letters without I, O, S, V, Z), the last one the GB 32100-2015
 * check character over the first 17 (weights 3^i mod 31).  NULL when the
 * code is not valid.  The one place codes are normalized: the write path,
 * the identity rebuild and credit_code_is_valid() all use it.
 */
char *
credit_code_normalize(const char *src)
{
	static const char alphabet[] = "0123456789ABCDEFGHJKLMNPQRTUWXY";
	static const int weights[17] = {1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28};
	char		code[19];
	int			n = 0,
				sum = 0,
				i,
				check;
	bool		utf8 = (GetDatabaseEncoding() == PG_UTF8);
	const char *p;

	for (i = 0; src[i];)
	{
		pg_wchar	c;
		int			l;

		if (utf8)
		{
			l = pg_utf_mblen((const unsigned char *) src + i);
			c = utf8_to_unicode((const unsigned char *) src + i);
			if (c >= 0xFF01 && c <= 0xFF5E)
				c -= 0xFEE0;
		}
		else
		{
			l = pg_mblen(src + i);
			c = (l == 1) ? (unsigned char) src[i] : 0x10FFFF;
		}
		i += l;
		if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0x3000 || c == 0x00A0)
			continue;
		if (c >= 0x80 || n == 18)
			return NULL;
		code[n++] = pg_ascii_toupper((unsigned char) c);
	}
	code[n] = '\0';
	if (n != 18)
		return NULL;
	for (i = 0; i < 17; i++)
	{
		if ((p = strchr(alphabet, code[i])) == NULL)
			return NULL;
		sum += (int) (p - alphabet) * weights[i];
	}
	check = 31 - sum % 31;
	if (check == 31)
		check = 0;
	return code[17] == alphabet[check] ? pstrdup(code) : NULL;
}

/* credit_code_is_valid(text): whether the code, normalized, is valid */
PG_FUNCTION_INFO_V1(allocation_credit_code_is_valid);
Datum
allocation_credit_code_is_valid(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(credit_code_normalize(text_to_cstring(PG_GETARG_TEXT_PP(0))) != NULL);
}

/* _credit_code(text): the normalized code, NULL when it is not valid (the identity rebuild) */
PG_FUNCTION_INFO_V1(allocation_credit_code);
Datum
allocation_credit_code(PG_FUNCTION_ARGS)
{
	char	   *c = credit_code_normalize(text_to_cstring(PG_GETARG_TEXT_PP(0)));

	if (c == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(c));
}
