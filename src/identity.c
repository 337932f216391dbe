/*
 * identity.c
 *		Customer identity: normalized names and phone numbers, and the check
 *		character of the unified social credit code (统一社会信用代码,
 *		GB 32100-2015).  All IMMUTABLE, STRICT, PARALLEL SAFE: usable in
 *		indexes and in duplicate detection.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/unicode_norm.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "allocation.h"

/* Legal forms and trade words that do not tell two dealers apart */
static const char *const default_suffixes[] = {
	"股份有限公司", "有限责任公司", "有限公司", "分公司", "公司",
	"农资经营部", "农资店", "农资部", "经营部", "门市部", "营业部", "服务部",
	"专业合作社", "合作社", "商行", "商店", "批发部", "个体户", "农资",
	"coltd", "limited", "ltd", "inc", "llc",	/* already normalized: no punctuation */
	NULL
};

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

/* Whether s ends with suffix (byte-wise) and something remains before it */
static bool
strip_suffix(StringInfo s, const char *suffix)
{
	int			n = strlen(suffix);

	if (n == 0 || s->len <= n || memcmp(s->data + s->len - n, suffix, n) != 0)
		return false;
	s->len -= n;
	s->data[s->len] = '\0';
	return true;
}

static text *
normalize_name_internal(text *in, const char *const *suffixes, int nsuffixes)
{
	char	   *src = text_to_cstring(in);
	int			len = strlen(src);
	StringInfoData out;
	bool		utf8 = (GetDatabaseEncoding() == PG_UTF8);
	int			i = 0;
	bool		again;

	initStringInfo(&out);
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
					appendBinaryStringInfo(&out, (char *) buf, pg_utf_mblen(buf));
				}
				else
					appendStringInfoChar(&out, (char) c);
			}
		}
		else
			appendBinaryStringInfo(&out, src + i, l);
		i += l;
	}

	/* legal forms and trade words at the end, repeatedly, longest first in the list */
	do
	{
		int			k;

		again = false;
		for (k = 0; k < nsuffixes; k++)
			if (suffixes[k] && strip_suffix(&out, suffixes[k]))
			{
				again = true;
				break;
			}
	} while (again);

	return cstring_to_text_with_len(out.data, out.len);
}

/* normalize_name(text): the default suffix list */
PG_FUNCTION_INFO_V1(allocation_normalize_name);
Datum
allocation_normalize_name(PG_FUNCTION_ARGS)
{
	int			n = 0;

	while (default_suffixes[n])
		n++;
	PG_RETURN_TEXT_P(normalize_name_internal(PG_GETARG_TEXT_PP(0), default_suffixes, n));
}

/* normalize_name(text, suffixes text[]): a custom suffix list (themselves normalized) */
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
	const char **sfx;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	sfx = palloc(sizeof(char *) * (n + 1));
	for (i = 0; i < n; i++)
		if (!nulls[i])
		{
			/* suffixes are compared in normalized form, without stripping */
			text	   *t = normalize_name_internal(DatumGetTextPP(elems[i]), NULL, 0);

			sfx[k++] = text_to_cstring(t);
		}
	sfx[k] = NULL;
	PG_RETURN_TEXT_P(normalize_name_internal(PG_GETARG_TEXT_PP(0), sfx, k));
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
 * credit_code_is_valid(text): 18 characters from the code's alphabet (digits
 * and upper-case letters without I, O, S, V, Z), the last one the GB
 * 32100-2015 check character over the first 17 (weights 3^i mod 31).
 */
PG_FUNCTION_INFO_V1(allocation_credit_code_is_valid);
Datum
allocation_credit_code_is_valid(PG_FUNCTION_ARGS)
{
	static const char alphabet[] = "0123456789ABCDEFGHJKLMNPQRTUWXY";
	static const int weights[17] = {1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28};
	text	   *t = PG_GETARG_TEXT_PP(0);
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	int			sum = 0,
				i,
				check;
	const char *p;

	if (len != 18)
		PG_RETURN_BOOL(false);
	for (i = 0; i < 17; i++)
	{
		if (s[i] == '\0' || (p = strchr(alphabet, s[i])) == NULL)
			PG_RETURN_BOOL(false);
		sum += (int) (p - alphabet) * weights[i];
	}
	check = 31 - sum % 31;
	if (check == 31)
		check = 0;
	PG_RETURN_BOOL(s[17] == alphabet[check]);
}
