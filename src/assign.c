/*
 * assign.c
 *		The decision engine: one function decides the owner of a customer row
 *		for the trigger (dry_run = false: reserves capacity) and for explain()
 *		(dry_run = true, with a trace: no side effects).
 *
 * Evaluation order (documented in README "How a decision is made"):
 *   1. territories covering the location, winner first (priority, lowest id);
 *   2. enabled rules applying to the table, by priority DESC, id ASC; a rule
 *      matches when every structured filter it sets matches and its SQL
 *      condition is true;
 *   3. a matching rule yields candidates (its rep, or its team's reps ordered
 *      by the policy); inactive reps, reps at capacity and reps barred by an
 *      exclusive territory are skipped;
 *   4. the first candidate whose capacity slot can be reserved wins (auto),
 *      or is suggested (suggest); a pool rule sends the customer to the pool;
 *      a rule with no available candidate falls through to the next rule;
 *   5. no rule decides: public pool, with the reason.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "access/xact.h"

#include "allocation.h"
#include "capacity.h"

/* ---------- reading the customer row ---------- */

void
assign_read_customer(ManagedTable *mt, HeapTuple tuple, Customer *c, bool hypothetical)
{
	bool		isnull;
	Datum		d;
	int			a;

	memset(c, 0, sizeof(Customer));
	d = heap_getattr(tuple, mt->key_att, mt->tupdesc, &isnull);
	if (isnull && hypothetical)
		c->key = NULL;
	else if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_BAD_ROW),
				 errmsg("customer key must not be NULL"),
				 errdetail("Table %s is managed with key column \"%s\"; every row needs a key to be registered.",
						   mt->name, NameStr(TupleDescAttr(mt->tupdesc, mt->key_att - 1)->attname)),
				 errhint("Declare the key column NOT NULL (or as the primary key).")));
	else
		c->key = OutputFunctionCall(&mt->key_out, d);

	for (a = ATTR_TIER; a <= ATTR_CREDIT; a++)
	{
		if (mt->attr_att[a] == InvalidAttrNumber || a == ATTR_TAGS)
			continue;
		/* identity columns are only read when a duplicate policy needs them */
		if (a >= ATTR_NAME && mt->dup_exact == 'o' && mt->dup_fuzzy == 'o')
			continue;
		d = heap_getattr(tuple, mt->attr_att[a], mt->tupdesc, &isnull);
		if (!isnull)
			c->attr[a] = OutputFunctionCall(&mt->attr_out[a], d);
	}
	if (mt->attr_att[ATTR_TAGS] != InvalidAttrNumber)
	{
		d = heap_getattr(tuple, mt->attr_att[ATTR_TAGS], mt->tupdesc, &isnull);
		if (!isnull)
		{
			ArrayType  *arr = DatumGetArrayTypeP(d);
			Datum	   *elems;
			bool	   *nulls;
			int			n,
						i;

			deconstruct_array(arr, ARR_ELEMTYPE(arr), -1, false, TYPALIGN_INT, &elems, &nulls, &n);
			c->tags = palloc(sizeof(char *) * Max(n, 1));
			for (i = 0; i < n; i++)
				if (!nulls[i])
					c->tags[c->ntags++] = TextDatumGetCString(elems[i]);
		}
	}
	c->mt = mt;
	network_read_parent(mt, tuple, c);
	if (mt->loc_att != InvalidAttrNumber)
	{
		d = heap_getattr(tuple, mt->loc_att, mt->tupdesc, &isnull);
		if (!isnull)
			alloc_read_point(d, &c->loc, mt->name, mt->loc_datum);
	}
	if (c->loc.present)
		c->nterr = tindex_lookup(c->loc.x, c->loc.y, c->terr, ALLOC_MAX_HITS);
}


/*
 * What re-evaluating a stored customer must know beyond its row: the rep its
 * pending suggestion names (that slot is reserved already), and its former
 * owners still inside their claim cooldown after a release or a recycle
 * (allocation.claim_policy.cooldown): the rules do not give it back to them.
 */
void
assign_read_history(ManagedTable *mt, Customer *c)
{
	static SPIPlanPtr plan = NULL;
	AllocUserSwitch sw;
	Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
	Datum		vals[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		isnull;
	Datum		d;

	c->suggested_rep = 0;
	c->ncooling = 0;
	c->cooling = NULL;
	if (c->key == NULL)
		return;
	vals[0] = Int32GetDatum(mt->id);
	vals[1] = CStringGetTextDatum(c->key);
	if (c->attr[ATTR_TIER])
		vals[2] = CStringGetTextDatum(c->attr[ATTR_TIER]);
	else
		nulls[2] = 'n';
	alloc_spi_begin(&sw);
	if (SPI_execute_plan(alloc_keep_plan(&plan,
								   "SELECT (SELECT s.rep_id FROM allocation.suggestion s"
								   "         WHERE s.managed_id = $1 AND s.key = $2 AND s.status = 'pending'),"
								   "       ARRAY(SELECT DISTINCT e.from_rep FROM allocation.event e"
								   "               CROSS JOIN LATERAL allocation.claim_limits(e.from_rep, $3) l"
								   "              WHERE e.key = $2 AND e.managed_id = $1 AND e.period = 'open'"
								   "                AND e.kind IN ('release', 'recycle') AND e.from_rep IS NOT NULL"
								   "                AND l.cooldown IS NOT NULL AND e.at + l.cooldown > pg_catalog.now()"
								   "              ORDER BY 1)",
								   3, types), vals, nulls, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "reading the customer's pending suggestion and cooldowns failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		c->suggested_rep = DatumGetInt64(d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
	{
		ArrayType  *arr = DatumGetArrayTypeP(d);
		Datum	   *el;
		bool	   *nl;
		int			ne,
					i;

		deconstruct_array(arr, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &el, &nl, &ne);
		c->cooling = SPI_palloc(sizeof(int64) * Max(ne, 1));	/* outlives SPI_finish */
		for (i = 0; i < ne; i++)
			if (!nl[i])
				c->cooling[c->ncooling++] = DatumGetInt64(el[i]);
	}
	alloc_spi_end(&sw);
}

static bool
in_cooldown(Customer *c, int64 rep_id)
{
	int			i;

	for (i = 0; i < c->ncooling; i++)
		if (c->cooling[i] == rep_id)
			return true;
	return false;
}

/* ---------- trace helpers (explain) ---------- */

static void
tr_textset(StringInfo buf, const TextSet *s)
{
	int			i;

	appendStringInfoChar(buf, '[');
	for (i = 0; i < s->n; i++)
	{
		if (i)
			appendStringInfoChar(buf, ',');
		escape_json(buf, s->items[i]);
	}
	appendStringInfoChar(buf, ']');
}

static void
tr_rule_begin(Trace *tr, RuleInfo *r)
{
	if (!tr)
		return;
	if (tr->nrules++)
		appendStringInfoChar(&tr->rules, ',');
	appendStringInfo(&tr->rules, "{\"rule_id\": " INT64_FORMAT ", \"rule\": ", r->id);
	escape_json(&tr->rules, r->name);
	appendStringInfo(&tr->rules, ", \"priority\": %d, \"mode\": \"%s\"", r->priority,
					 r->suggest ? "suggest" : "auto");
	resetStringInfo(&tr->cur);
	tr->ncand = 0;
}

static void
tr_rule_end(Trace *tr, bool matched, const char *why, const char *outcome, int64 chosen)
{
	if (!tr)
		return;
	appendStringInfo(&tr->rules, ", \"matched\": %s", matched ? "true" : "false");
	if (why)
	{
		appendStringInfoString(&tr->rules, ", \"why\": ");
		escape_json(&tr->rules, why);
	}
	if (matched)
	{
		appendStringInfo(&tr->rules, ", \"candidates\": [%s]", tr->cur.data);
		appendStringInfoString(&tr->rules, ", \"outcome\": ");
		json_str_or_null(&tr->rules, outcome);
		if (chosen)
			appendStringInfo(&tr->rules, ", \"chosen_rep_id\": " INT64_FORMAT, chosen);
	}
	appendStringInfoChar(&tr->rules, '}');
}

static void
tr_candidate(Trace *tr, int order, RepInfo *rep, int64 rep_id, int32 held, int32 reserved, bool available,
			 const char *why)
{
	if (!tr)
		return;
	if (tr->ncand++)
		appendStringInfoChar(&tr->cur, ',');
	appendStringInfo(&tr->cur, "{\"order\": %d, \"rep_id\": " INT64_FORMAT ", \"rep\": ", order, rep_id);
	json_str_or_null(&tr->cur, rep ? rep->code : NULL);
	appendStringInfo(&tr->cur, ", \"held\": %d, \"reserved\": %d, \"capacity\": ", held, reserved);
	if (rep && rep->capacity >= 0)
		appendStringInfo(&tr->cur, "%d", rep->capacity);
	else
		appendStringInfoString(&tr->cur, "null");
	if (rep && rep->capacity_note)
	{
		/* why the capacity is higher than the manager set: active rewards */
		appendStringInfoString(&tr->cur, ", \"capacity_reward\": ");
		escape_json(&tr->cur, rep->capacity_note);
	}
	appendStringInfo(&tr->cur, ", \"available\": %s", available ? "true" : "false");
	if (why)
	{
		appendStringInfoString(&tr->cur, ", \"why\": ");
		escape_json(&tr->cur, why);
	}
	appendStringInfoChar(&tr->cur, '}');
}

/* ---------- rule matching ---------- */

static bool
textset_contains(const TextSet *s, const char *v)
{
	int			i;

	if (v == NULL)
		return false;
	for (i = 0; i < s->n; i++)
		if (strcmp(s->items[i], v) == 0)
			return true;
	return false;
}

static char *
filter_mismatch(Trace *tr, const char *what, const char *value, const TextSet *set)
{
	StringInfoData b;

	if (!tr)
		return "structured filter";
	initStringInfo(&b);
	appendStringInfo(&b, "%s %s not in ", what, value ? value : "(none)");
	tr_textset(&b, set);
	return b.data;
}

/* The territory that decides exclusivity and ownership: the winner */
static TerritoryInfo *
primary_territory(Customer *c)
{
	return c->nterr > 0 ? c->terr[0] : NULL;
}

/*
 * Rule conditions run as the table's owner (owner.c).  The switch is taken
 * at the first condition of a decision and kept for the following ones; it
 * ends before anything else runs (candidates, reservations).
 */
typedef struct CondSwitch
{
	bool		active;
	AllocOwnerSwitch sw;
} CondSwitch;

static void
cond_switch_end(CondSwitch *cs)
{
	if (cs->active)
	{
		cs->active = false;
		alloc_restore_table_owner(&cs->sw);
	}
}

/* NULL when rule k matches the customer, else why not */
static const char *
rule_mismatch(ManagedTable *mt, int k, Customer *c, HeapTuple tuple, Trace *tr, CondSwitch *cs)
{
	RuleInfo   *r = mt->rules[k];
	int			i,
				j;

	if (r->tiers.n >= 0 && !textset_contains(&r->tiers, c->attr[ATTR_TIER]))
		return filter_mismatch(tr, "tier", c->attr[ATTR_TIER], &r->tiers);
	if (r->btypes.n >= 0 && !textset_contains(&r->btypes, c->attr[ATTR_BTYPE]))
		return filter_mismatch(tr, "business type", c->attr[ATTR_BTYPE], &r->btypes);
	if (r->crops.n >= 0 && !textset_contains(&r->crops, c->attr[ATTR_CROP]))
		return filter_mismatch(tr, "crop", c->attr[ATTR_CROP], &r->crops);
	if (r->zones.n >= 0)
	{
		TerritoryInfo *t = primary_territory(c);
		bool		any = false;

		for (i = 0; t && i < t->nzones && !any; i++)
			any = textset_contains(&r->zones, t->zones[i]);
		if (!any)
		{
			if (!tr)
				return "crop zone";
			if (t == NULL)
				return "crop zone filter: the customer is in no territory";
			return filter_mismatch(tr, "crop zones of territory", t->code, &r->zones);
		}
	}
	if (r->tags.n >= 0)
	{
		bool		any = false;

		for (i = 0; i < c->ntags && !any; i++)
			any = textset_contains(&r->tags, c->tags[i]);
		if (!any)
			return tr ? psprintf("no tag of the customer is in the rule's tags") : "tags";
	}
	if (r->territory_id != 0)
	{
		bool		inside = false;

		for (j = 0; j < c->nterr && !inside; j++)
			inside = tindex_is_within(c->terr[j]->id, r->territory_id);
		if (!inside)
		{
			if (!tr)
				return "territory";
			if (c->nterr == 0)
				return c->loc.present ? "the location is outside every territory" : "the customer has no location";
			return psprintf("not inside territory %s or its descendants",
							tindex_get(r->territory_id) ? tindex_get(r->territory_id)->code : "?");
		}
	}
	if (mt->cond_state[k])
	{
		bool		isnull;
		Datum		res;

		ExecStoreHeapTuple(tuple, mt->slot, false);
		mt->slot->tts_tableOid = mt->rel_here;
		mt->econtext->ecxt_scantuple = mt->slot;
		/* user code: as the table's owner, security-restricted (owner.c) */
		if (!cs->active && r->cond_user_code)
		{
			alloc_become_role(mt->owner, &cs->sw);
			cs->active = true;
		}
		res = ExecEvalExprSwitchContext(mt->cond_state[k], mt->econtext, &isnull);
		ResetExprContext(mt->econtext);
		ExecClearTuple(mt->slot);
		if (isnull || !DatumGetBool(res))
			return tr ? psprintf("condition is %s: %s", isnull ? "null" : "false", r->condition) : "condition";
	}
	return NULL;
}

/* ---------- candidates ---------- */

typedef struct Cand
{
	int64		id;
	RepInfo    *rep;
	int32		held;			/* customers held */
	int32		reserved;		/* slots reserved by pending suggestions */
	double		sortkey;
	bool		out_of_turn;	/* a new rep served first for its minimum share */
} Cand;

static int
cand_cmp(const void *a, const void *b)
{
	const Cand *x = a,
			   *y = b;

	if (x->sortkey != y->sortkey)
		return x->sortkey < y->sortkey ? -1 : 1;
	return x->id < y->id ? -1 : (x->id > y->id ? 1 : 0);
}

static bool
members_contain(TeamInfo *t, int64 rep_id)
{
	int			i;

	for (i = 0; i < t->nmembers; i++)
		if (t->members[i] == rep_id)
			return true;
	return false;
}

/* Why an exclusive territory bars a rep, or NULL */
static const char *
exclusive_bar(Customer *c, int64 rep_id, Trace *tr)
{
	TerritoryInfo *t = primary_territory(c);

	if (t == NULL || !t->exclusive || (t->owner_rep == 0 && t->owner_team == 0))
		return NULL;
	if (t->owner_rep != 0 && t->owner_rep == rep_id)
		return NULL;
	if (t->owner_team != 0)
	{
		TeamInfo   *team = config_get_team(t->owner_team);

		if (team && members_contain(team, rep_id))
			return NULL;
	}
	return tr ? psprintf("territory %s is exclusive to its owner", t->code) : "exclusive territory";
}

/* "no candidate available: a (inactive), b (at capacity), ..." */
static const char *
summarize_bars(int nbars, const char **code, const char **why)
{
	StringInfoData b;
	int			i;

	if (nbars == 0)
		return "no candidate";
	initStringInfo(&b);
	appendStringInfoString(&b, "no candidate available: ");
	for (i = 0; i < nbars && i < 5; i++)
		appendStringInfo(&b, "%s%s (%s)", i ? ", " : "", code[i], why[i]);
	if (nbars > 5)
		appendStringInfo(&b, " and %d more", nbars - 5);
	return b.data;
}

/*
 * The reps a matching rule names, before any bar: its rep, its team's
 * members, or (territory_owner) the winning territory's owner -- else the
 * nearest owned ancestor's -- within the team.  NULL (with *why) when the
 * rule's team is gone; *why also says why the list is empty.
 */
static int64 *
candidate_ids(RuleInfo *r, Customer *c, Trace *tr, int *nids_out, const char **why)
{
	int64	   *ids;
	int			nids = 0,
				i;
	TeamInfo   *team = NULL;

	if (r->target == TARGET_REP)
	{
		ids = palloc(sizeof(int64));
		ids[nids++] = r->target_rep;
	}
	else
	{
		team = config_get_team(r->target_team);
		if (team == NULL)
		{
			*why = "the rule's team no longer exists";
			return NULL;
		}
		ids = palloc(sizeof(int64) * Max(team->nmembers, 1));
		if (r->policy == POLICY_FOLLOW_PARENT)
		{
			/* the holder of the customer's parent (a distributor), within the team */
			int64		owner = network_parent_owner(c, tr, why);

			if (owner != 0 && members_contain(team, owner))
				ids[nids++] = owner;
			else if (owner != 0)
				*why = tr ? psprintf("parent customer %s is held by rep " INT64_FORMAT ", who is not in team %s",
									 network_parent_key(c), owner, team->code) : "parent's owner not in team";
		}
		else if (r->policy == POLICY_TERRITORY_OWNER)
		{
			TerritoryInfo *t = primary_territory(c);
			int			depth = 0;

			/* the winner territory's owner, else the nearest ancestor's */
			while (t && t->owner_rep == 0 && t->owner_team == 0 && depth++ < 256)
				t = t->parent_id ? tindex_get(t->parent_id) : NULL;
			if (t == NULL)
				*why = c->nterr == 0 ? "the customer is in no territory" : "the territory has no owner";
			else if (t->owner_rep != 0)
			{
				if (members_contain(team, t->owner_rep))
					ids[nids++] = t->owner_rep;
				else
					*why = tr ? psprintf("territory %s is owned by rep " INT64_FORMAT ", who is not in team %s",
										 t->code, t->owner_rep, team->code) : "owner not in team";
			}
			else
			{
				TeamInfo   *ot = config_get_team(t->owner_team);

				for (i = 0; ot && i < ot->nmembers; i++)
					if (members_contain(team, ot->members[i]))
						ids[nids++] = ot->members[i];
				if (nids == 0)
					*why = "the territory's owner team has no rep in the rule's team";
			}
		}
		else
		{
			for (i = 0; i < team->nmembers; i++)
				ids[nids++] = team->members[i];
			if (nids == 0)
				*why = "the team has no reps";
		}
	}
	*nids_out = nids;
	return ids;
}

/* Why a rep cannot take the customer under this rule (NULL: it can) */
static const char *
candidate_bar(RuleInfo *r, Customer *c, RepInfo *rep, int64 id, int32 held, int32 reserved, Trace *tr)
{
	if (rep == NULL)
		return "unknown rep";
	if (!rep->active)
		return "inactive";
	if (rep->capacity >= 0 && held + reserved >= rep->capacity)
		return held + reserved > rep->capacity ? "over capacity" :
			reserved > 0 ? "at capacity (counting slots reserved by pending suggestions)" : "at capacity";
	if (id != c->current_owner && in_cooldown(c, id))
		return tr ? "released or recycled this customer less than its claim cooldown ago" : "cooldown";
	if (r->policy == POLICY_SKILL &&
		!(c->attr[ATTR_CROP] && rep->ncrops > 0 &&
		  textset_contains(&(TextSet)
						   {
						   .n = rep->ncrops,.items = rep->crops
						   }, c->attr[ATTR_CROP])))
		return "no skill for the customer's crop";
	return exclusive_bar(c, id, tr);
}

/*
 * The candidate reps of a matching rule, in the policy's order.  Fills
 * cands[] (palloc'd) and returns the count; ineligible reps are traced.
 */
static int
rule_candidates(RuleInfo *r, int32 mt_id, Customer *c, bool dry_run, Cand **out, Trace *tr, const char **why)
{
	int64	   *ids;
	int			nids = 0,
				n = 0,
				i;
	Cand	   *cands;
	int32	   *held;
	int32	   *reserved;
	int			nbars = 0;
	const char **bar_code;
	const char **bar_why;

	*why = NULL;
	ids = candidate_ids(r, c, tr, &nids, why);
	if (ids == NULL)
	{
		*out = NULL;
		return 0;
	}

	held = palloc(sizeof(int32) * Max(nids, 1));
	reserved = palloc(sizeof(int32) * Max(nids, 1));
	capacity_read_loads(ids, nids, held, reserved);
	/*
	 * On re-evaluation the current owner's count includes this customer, and
	 * the reservations of the rep its pending suggestion names include that
	 * suggestion's slot.  Load = held + reserved is what capacity compares.
	 */
	for (i = 0; i < nids; i++)
	{
		if (c->current_owner != 0 && ids[i] == c->current_owner && held[i] > 0)
			held[i]--;
		if (c->suggested_rep != 0 && ids[i] == c->suggested_rep && reserved[i] > 0)
			reserved[i]--;
	}
	cands = palloc(sizeof(Cand) * Max(nids, 1));
	bar_code = palloc(sizeof(char *) * Max(nids, 1));
	bar_why = palloc(sizeof(char *) * Max(nids, 1));
	for (i = 0; i < nids; i++)
	{
		RepInfo    *rep = config_get_rep(ids[i]);
		const char *bar = candidate_bar(r, c, rep, ids[i], held[i], reserved[i], tr);

		if (bar)
		{
			tr_candidate(tr, 0, rep, ids[i], held[i], reserved[i], false, bar);
			bar_code[nbars] = rep ? rep->code : "?";
			bar_why[nbars++] = bar;
			continue;
		}
		cands[n].id = ids[i];
		cands[n].out_of_turn = false;
		cands[n].rep = rep;
		cands[n].held = held[i];
		cands[n].reserved = reserved[i];
		switch (r->policy)
		{
			case POLICY_WEIGHTED:
				cands[n].sortkey = rep->capacity > 0 ? (double) (held[i] + reserved[i]) / rep->capacity : 0.0;
				break;
			case POLICY_LEAST_LOADED:
			case POLICY_SKILL:
			case POLICY_TERRITORY_OWNER:
			case POLICY_FOLLOW_PARENT:
				cands[n].sortkey = held[i] + reserved[i];
				break;
			default:
				cands[n].sortkey = 0;	/* ids order */
		}
		n++;
	}
	if (n > 1)
		qsort(cands, n, sizeof(Cand), cand_cmp);
	if (n > 1 && r->policy == POLICY_ROUND_ROBIN)
	{
		/* continue after the rep served last, in id order */
		int64		last = rr_last(r->target_team, !dry_run);
		int			start = 0;
		Cand	   *rot = palloc(sizeof(Cand) * n);

		while (start < n && cands[start].id <= last)
			start++;
		for (i = 0; i < n; i++)
			rot[i] = cands[(start + i) % n];
		cands = rot;
		if (config_min_share())
		{
			const char *note = NULL;
			int64	   *ids = palloc(sizeof(int64) * n);
			int			pos;

			for (i = 0; i < n; i++)
				ids[i] = cands[i].id;
			pos = rr_new_rep_first(r->target_team, ids, n, dry_run, &note);

			if (pos > 0)
			{
				Cand		first = cands[pos];

				first.out_of_turn = true;
				memmove(&cands[1], &cands[0], sizeof(Cand) * pos);
				cands[0] = first;
			}
			if (pos >= 0 && dry_run)
				*why = note;	/* explain() says why (a real run's why is the fall-through's) */
		}
	}
	/* re-evaluation: an eligible current owner keeps the customer (no churn) */
	for (i = 1; i < n && c->current_owner != 0; i++)
		if (cands[i].id == c->current_owner)
		{
			Cand		keep = cands[i];

			memmove(&cands[1], &cands[0], sizeof(Cand) * i);
			cands[0] = keep;
			break;
		}
	if (n == 0 && *why == NULL)
		*why = summarize_bars(nbars, bar_code, bar_why);
	*out = cands;
	return n;
}

/* ---------- the decision ---------- */

static void
assign_decide_inner(ManagedTable *mt, HeapTuple tuple, Customer *c, Decision *d,
					bool dry_run, Trace *tr, CondSwitch *cs)
{
	int			k;
	const char *fallthrough = NULL;
	const char *fallthrough_why = NULL;

	memset(d, 0, sizeof(Decision));
	d->kind = DECISION_POOL;
	d->territory_id = customer_territory_id(c);

	for (k = 0; k < mt->nrules; k++)
	{
		RuleInfo   *r = mt->rules[k];
		const char *why;
		Cand	   *cands;
		int			n,
					i,
					pass;

		tr_rule_begin(tr, r);
		why = rule_mismatch(mt, k, c, tuple, tr, cs);
		if (why)
		{
			tr_rule_end(tr, false, why, NULL, 0);
			continue;
		}
		cond_switch_end(cs);
		if (r->target == TARGET_POOL)
		{
			tr_rule_end(tr, true, NULL, "pool", 0);
			d->rule_id = r->id;
			d->reason = psprintf("rule %s sends the customer to the pool", r->name);
			return;
		}
		n = rule_candidates(r, mt->id, c, dry_run, &cands, tr, &why);
		if (dry_run)
		{
			/* first available candidate in policy order (no reservation) */
			for (i = 0; i < n; i++)
				tr_candidate(tr, i + 1, cands[i].rep, cands[i].id, cands[i].held, cands[i].reserved, true, NULL);
			if (n > 0)
			{
				d->kind = r->suggest ? DECISION_SUGGEST : DECISION_ASSIGN;
				d->rep_id = cands[0].id;
				d->team_id = cands[0].rep->team_id;
				d->rule_id = r->id;
				d->reason = psprintf("rule %s", r->name);
				tr_rule_end(tr, true, why, r->suggest ? "suggest" : "assign", d->rep_id);
				return;
			}
		}
		else if (r->suggest)
		{
			/*
			 * A suggestion reserves a slot of the rep it names (so accepting
			 * it cannot fail for capacity): reserved like an assignment, in
			 * the same order.  The current owner needs none (no suggestion
			 * is made for it), nor the rep the customer's pending suggestion
			 * already names (that one's slot is taken over).
			 */
			for (pass = 0; pass < 2 && n > 0; pass++)
				for (i = 0; i < n; i++)
				{
					int64		id = cands[i].id;
					bool		keep = id == c->current_owner;
					bool		reuse = !keep && id == c->suggested_rep;

					if (!keep && !(pass == 0 || capacity_may_wait_for(id)))
						continue;
					if (keep || (reuse ? capacity_lock_only(id, pass == 1) : assign_reserve(id, pass == 1)))
					{
						if (r->policy == POLICY_ROUND_ROBIN && !keep)
							rr_served(r->target_team, id, cands[i].out_of_turn);
						d->kind = DECISION_SUGGEST;
						d->rep_id = id;
						d->team_id = cands[i].rep->team_id;
						d->rule_id = r->id;
						d->reserved = !keep && !reuse;
						d->reason = psprintf("rule %s", r->name);
						return;
					}
				}
		}
		else
		{
			/* reserve in order: skip reps locked by other sessions, then wait */
			for (pass = 0; pass < 2 && n > 0; pass++)
				for (i = 0; i < n; i++)
					if (cands[i].id == c->current_owner ||
						((pass == 0 || capacity_may_wait_for(cands[i].id)) &&
						 capacity_reserve_slot(cands[i].id, pass == 1, cands[i].id == c->suggested_rep ? 1 : 0)))
					{
						if (r->policy == POLICY_ROUND_ROBIN && cands[i].id != c->current_owner)
							rr_served(r->target_team, cands[i].id, cands[i].out_of_turn);
						d->kind = DECISION_ASSIGN;
						d->rep_id = cands[i].id;
						d->team_id = cands[i].rep->team_id;
						d->rule_id = r->id;
						d->reserved = cands[i].id != c->current_owner;	/* owner keeps its slot */
						d->reason = psprintf("rule %s", r->name);
						return;
					}
		}
		if (why == NULL)
			why = "no candidate could be reserved (taken by concurrent sessions)";
		tr_rule_end(tr, true, why, "fall through", 0);
		fallthrough = r->name;
		fallthrough_why = why;
	}
	d->reason = fallthrough
		? psprintf("no rep available: the last matching rule, %s, fell through (%s)", fallthrough, fallthrough_why)
		: pstrdup("no rule matched");
}

/* The decision for a customer (the trigger's and explain()'s one code path) */
void
assign_decide(ManagedTable *mt, HeapTuple tuple, Customer *c, Decision *d,
			  bool dry_run, Trace *tr)
{
	CondSwitch	cs;

	cs.active = false;
	PG_TRY();
	{
		assign_decide_inner(mt, tuple, c, d, dry_run, tr, &cs);
	}
	PG_FINALLY();
	{
		cond_switch_end(&cs);
	}
	PG_END_TRY();
}
/*
 * A person gives a customer to the rep its pending suggestion names
 * (accept_suggestion(), or assign()/UPDATE to that rep): the slot the
 * suggestion reserved becomes a held one, so capacity is not checked again.
 * The rep's counter is locked under the ordered-locking rule (55P03 when
 * waiting could deadlock); the batch writer adds the held slot and the
 * suggestion's end gives the reserved one back.
 */
void
assign_use_suggested_slot(ManagedTable *mt, Customer *c, int64 rep_id)
{
	RepInfo    *rep = config_get_rep(rep_id);

	assign_check_manual(mt, c, rep_id, true);	/* exists, active, exclusive territory */
	if (capacity_lock_only(rep_id, capacity_may_wait_for(rep_id)))
	{
		int32		held,
					reserved;

		/*
		 * Within capacity by construction -- unless a person lowered the
		 * capacity below what the rep holds since: then, like any new
		 * customer, it is refused until the rep is under capacity.
		 */
		capacity_read_loads(&rep_id, 1, &held, &reserved);
		if (rep->capacity >= 0 && held >= rep->capacity)
			ereport(ERROR,
					(errcode(ERRCODE_ALLOC_REP_AT_CAPACITY),
					 errmsg("rep %s is at capacity", rep->code),
					 errdetail("Rep %s holds %d customers and its capacity is %d, lowered since the suggestion for customer %s of %s reserved its slot.",
							   rep->code, held, rep->capacity, c->key, mt->name),
					 errhint("Raise the rep's capacity again, or reject the suggestion.")));
		frames_add_reservation(rep_id, 1);
		return;
	}
	capacity_refuse_deleted_rep(mt, c, rep, rep_id);
	ereport(ERROR,
			(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
			 errmsg("rep %s is busy", rep->code),
			 errdetail("Another open transaction is taking customers for rep %s; waiting for it here could deadlock with this transaction's own earlier assignments.",
					   rep->code),
			 errhint("Retry after the other transaction ends, or give customers to reps in rep id order within one transaction.")));
}


/*
 * Validates a manual owner (explicit INSERT value, UPDATE, assign()) and,
 * unless dry_run, reserves its slot.  Errors name what is wrong.
 */
void
assign_check_manual(ManagedTable *mt, Customer *c, int64 rep_id, bool dry_run)
{
	RepInfo    *rep = config_get_rep(rep_id);
	const char *bar;

	if (rep == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_UNKNOWN_REP),
				 errmsg("rep " INT64_FORMAT " does not exist", rep_id),
				 errdetail("Customer %s of %s was given owner " INT64_FORMAT ", which is not in allocation.rep.",
						   c->key, mt->name, rep_id),
				 errhint("Use the id of an existing rep, or leave the owner NULL to let the rules decide.")));
	if (!rep->active)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_REP_INACTIVE),
				 errmsg("rep %s is inactive", rep->code),
				 errdetail("Customer %s of %s cannot be given to an inactive rep.", c->key, mt->name),
				 errhint("Choose an active rep, or reactivate this one.")));
	bar = exclusive_bar(c, rep_id, NULL);
	if (bar)
	{
		TerritoryInfo *t = primary_territory(c);

		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_EXCLUSIVE),
				 errmsg("territory %s is exclusive", t->code),
				 errdetail("Customer %s of %s lies in exclusive territory %s, which only its owner may hold; rep %s is not the owner.",
						   c->key, mt->name, t->code, rep->code),
				 errhint("Give the customer to the territory's owner, or change the territory's owner or exclusive flag.")));
	}
	if (dry_run)
		return;
	if (capacity_may_wait_for(rep_id) ? assign_reserve(rep_id, true) : assign_reserve(rep_id, false))
		return;
	capacity_refuse_deleted_rep(mt, c, rep, rep_id);
	if (!capacity_may_wait_for(rep_id) && (rep->capacity < 0 || assign_current_load(rep_id) < rep->capacity))
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("rep %s is busy", rep->code),
				 errdetail("Another open transaction is taking customers for rep %s; waiting for it here could deadlock with this transaction's own earlier assignments.",
						   rep->code),
				 errhint("Retry after the other transaction ends, or give customers to reps in rep id order within one transaction.")));
	{
		int32		held,
					reserved;

		capacity_read_loads(&rep_id, 1, &held, &reserved);
		if (reserved == 0 && held <= rep->capacity)
			ereport(ERROR,
					(errcode(ERRCODE_ALLOC_REP_AT_CAPACITY),
					 errmsg("rep %s is at capacity", rep->code),
					 errdetail("Rep %s already holds %d customers, the capacity; customer %s of %s cannot be added.",
							   rep->code, held, c->key, mt->name),
					 errhint("Release a customer of this rep, raise the rep's capacity, or choose another rep.")));
		if (reserved == 0)
			ereport(ERROR,
					(errcode(ERRCODE_ALLOC_REP_AT_CAPACITY),
					 errmsg("rep %s is over capacity", rep->code),
					 errdetail("Rep %s holds %d customers, more than its capacity %d; customer %s of %s cannot be added.",
							   rep->code, held, rep->capacity, c->key, mt->name),
					 errhint("Release customers of this rep, raise the rep's capacity, or choose another rep.")));
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_REP_AT_CAPACITY),
				 errmsg("rep %s is %s capacity", rep->code, held + reserved > rep->capacity ? "over" : "at"),
				 errdetail("Rep %s holds %d customers and %d pending suggestions reserve %d more slots, capacity %d; customer %s of %s cannot be added.",
						   rep->code, held, reserved, reserved, rep->capacity, c->key, mt->name),
				 errhint("Decide the pending suggestions for this rep, release a customer, raise the capacity, or choose another rep.")));
	}
}
