/*
 * trigger.c
 *		The C triggers allocation.manage() installs on a customer table.
 *
 *   zz_allocation_stmt_before  BEFORE stmt   opens a batch (a "frame")
 *   zz_allocation_before       BEFORE row    INSERT: decides the owner and
 *                                            writes it into the new row;
 *                                            UPDATE: manual change or
 *                                            re-evaluation
 *   zz_allocation_after        AFTER row     confirms the row was stored
 *                                            (ON CONFLICT DO NOTHING skips);
 *                                            DELETE: closes the ownership
 *   zz_allocation_stmt_after   AFTER stmt    writes the batch (record.c):
 *                                            ownership events, state
 *                                            exceptions, suggestions, counters
 *
 * Names start with "zz_" so the BEFORE trigger runs after the user's own
 * BEFORE triggers and sees the final row.  Capacity slots are reserved in the
 * BEFORE trigger (the only point where the owner can still be set); slots of
 * rows that were not stored are given back when the batch is written.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "common/hashfn.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "executor/tuptable.h"

#include "allocation.h"
#include "frame.h"
#include "record.h"
#include "stat.h"



/* An entry that keeps the owner and refreshes the state's snapshot of the attributes */
static Entry *
new_refresh(ManagedTable *mt, Customer *c)
{
	Entry	   *e = new_entry(OP_REFRESH, mt, c->key);

	e->territory = customer_territory_id(c);
	e->tier = frame_strdup(c->attr[ATTR_TIER]);
	e->crop = frame_strdup(c->attr[ATTR_CROP]);
	e->btype = frame_strdup(c->attr[ATTR_BTYPE]);
	e->stage = frame_strdup(c->attr[ATTR_STAGE]);
	return e;
}

/* Records a duplicate found for this entry's row (warn/dispute) */
static void
note_duplicate(Entry *e, DupMatch *m)
{
	e->identity = m->registered;
	if (m->action != 'w' && m->action != 'd')
		return;
	e->dup_action = m->action;
	e->dup_match = m->match;
	e->dup_other = frame_strdup(m->other_key);
	e->dup_value = frame_strdup(m->value);
	e->dup_similarity = m->similarity;
}


/* The NOTICE of a 'warn' action (without the other customer when the writer cannot see it) */
static void
warn_duplicate(ManagedTable *mt, const char *key, DupMatch *m)
{
	if (m->redact)
		ereport(NOTICE,
				(errmsg("customer %s may duplicate another customer of %s (%s)", key, mt->name, dup_match_words(m->match)),
				 errdetail("The other customer is %s; the write was kept and queued in allocation.dispute_queue for a manager.",
						   dup_hidden_holder(m))));
	else
		ereport(NOTICE,
				(errmsg("customer %s may duplicate customer %s of %s (%s)", key, m->other_key, mt->name, dup_match_words(m->match)),
				 errdetail("Customer %s (%s) is held by %s; the write was kept and queued in allocation.dispute_queue.",
						   m->other_key, m->value, m->owner)));
}

/* A duplicate under a 'dispute' action: the row is stored without an owner */
static void
dispute_decision(Decision *d, Customer *c, DupMatch *m)
{
	memset(d, 0, sizeof(*d));
	d->kind = DECISION_POOL;
	d->territory_id = customer_territory_id(c);
	d->reason = psprintf("possible duplicate of customer %s (%s %s); kept without an owner until a manager decides",
						 m->other_key, dup_match_words(m->match), m->value);
}

static void
fill_decision(Entry *e, Customer *c, Decision *d)
{
	e->team = d->team_id;
	e->territory = d->territory_id;
	e->rule = d->rule_id;
	e->reason = frame_strdup(d->reason);
	e->tier = frame_strdup(c->attr[ATTR_TIER]);
	e->crop = frame_strdup(c->attr[ATTR_CROP]);
	e->btype = frame_strdup(c->attr[ATTR_BTYPE]);
	e->stage = frame_strdup(c->attr[ATTR_STAGE]);
	if (d->reserved)
		e->reserved = d->rep_id;
	switch (d->kind)
	{
		case DECISION_ASSIGN:
			e->rep = d->rep_id;
			break;
		case DECISION_SUGGEST:
			e->suggest = d->rep_id;
			break;
		case DECISION_MANUAL:
			e->rep = d->rep_id;
			e->pinned = true;
			break;
		case DECISION_POOL:
			break;
	}
}

/* Owner column value <-> rep id */
static int64
owner_value(ManagedTable *mt, HeapTuple tup, bool *isnull)
{
	Datum		d = heap_getattr(tup, mt->owner_att, mt->tupdesc, isnull);

	if (*isnull)
		return 0;
	return mt->owner_type == INT4OID ? (int64) DatumGetInt32(d) : DatumGetInt64(d);
}

static HeapTuple
set_owner(ManagedTable *mt, HeapTuple tup, int64 rep)
{
	int			col = mt->owner_att;
	Datum		val;
	bool		isnull = (rep == 0);

	if (mt->owner_type == INT4OID)
	{
		if (rep > PG_INT32_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("rep id " INT64_FORMAT " does not fit the integer owner column of %s", rep, mt->name),
					 errdetail("The owner column is integer; rep ids are bigint."),
					 errhint("ALTER the owner column to bigint.")));
		val = Int32GetDatum((int32) rep);
	}
	else
		val = Int64GetDatum(rep);
	return heap_modify_tuple_by_cols(tup, mt->tupdesc, 1, &col, &val, &isnull);
}

/*
 * The engine's own owner change of this row (allocation._owner_update(): an
 * assign, accepted suggestion, claim, release or recycle), or NULL for a
 * plain UPDATE.  Only engine code sets it; it applies to one row, once.
 */
static AllocChange *
engine_change(ManagedTable *mt, Datum key)
{
	AllocChange *chg = alloc_change;

	if (chg != NULL && chg->items != NULL)
	{
		/*
		 * A realignment batch: each row of its UPDATE is the next listed
		 * customer, in the plan's order (the order the preview simulated);
		 * a row out of that order ends the batch (the caller falls back to
		 * one customer at a time).
		 */
		AllocChange *item;
		char	   *k;

		if (chg->relid != mt->relid)
			return NULL;
		k = OutputFunctionCall(&mt->key_out, key);
		item = chg->next < chg->nitems ? &chg->items[chg->next] : NULL;
		if (item == NULL || item->used || strcmp(item->key, k) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_ALLOC_REALIGN_ORDER),
					 errmsg("realignment batch reached customer %s out of order", k),
					 errdetail("The batch expected customer %s next.", item ? item->key : "(none)"),
					 errhint("Internal: the apply moves this batch one customer at a time.")));
		chg->next++;
		return item;
	}
	if (chg == NULL || chg->used || chg->relid != mt->relid ||
		strcmp(chg->key, OutputFunctionCall(&mt->key_out, key)) != 0)
		return NULL;
	return chg;
}

static char *
change_reason(AllocChange *chg, const char *dflt)
{
	return (chg && chg->reason && chg->reason[0]) ? (char *) chg->reason : (char *) dflt;
}

/* BEFORE INSERT: the hot path */
static HeapTuple
before_insert(ManagedTable *mt, Relation rel, HeapTuple tup)
{
	Customer	c;
	Decision	d;
	bool		isnull;
	int64		owner;
	Entry	   *e;
	DupMatch	dup;

	owner = owner_value(mt, tup, &isnull);
	/* a row whose key is taken runs no rule and takes no slot (ON CONFLICT) */
	if (key_exists(mt, rel, tup))
		return tup;
	/* a rep registers a new customer for itself (报备) or for the rules, never for another rep */
	if (!isnull && alloc_acting_rep() != 0 && alloc_acting_rep() != owner)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_REP_OWNER_UPDATE),
				 errmsg("a rep cannot give a new customer to another rep"),
				 errdetail("This session acts for rep %lld; the INSERT into %s sets %s to rep " INT64_FORMAT ".",
						   (long long) alloc_acting_rep(), mt->name,
						   NameStr(TupleDescAttr(mt->tupdesc, mt->owner_att - 1)->attname), owner),
				 errhint("Leave the owner empty (the rules decide) or register the customer for yourself; a manager uses allocation.assign().")));

	assign_read_customer(mt, tup, &c, false);
	if (dup_check(mt, &c, &dup, true) && dup.action == 'd')
	{
		dispute_decision(&d, &c, &dup);
		if (!isnull)
			tup = set_owner(mt, tup, 0);
		e = new_entry(OP_INSERT, mt, c.key);
		fill_decision(e, &c, &d);
		note_duplicate(e, &dup);
		e->requested = isnull ? 0 : owner;
		e->source = "dispute";
		e->kind = "dispute";
		e->old_rep = 0;
		return tup;
	}
	if (dup.action == 'w')
		warn_duplicate(mt, c.key, &dup);
	if (!isnull)
	{
		assign_check_manual(mt, &c, owner, false);
		memset(&d, 0, sizeof(d));
		d.kind = DECISION_MANUAL;
		d.rep_id = owner;
		d.reserved = true;
		d.team_id = config_get_rep(owner)->team_id;
		d.territory_id = customer_territory_id(&c);
		d.reason = "owner given on INSERT";
	}
	else
	{
		assign_decide(mt, tup, &c, &d, false, NULL);
		if (d.kind == DECISION_ASSIGN)
			tup = set_owner(mt, tup, d.rep_id);
	}
	e = new_entry(OP_INSERT, mt, c.key);
	fill_decision(e, &c, &d);
	note_duplicate(e, &dup);
	e->source = d.kind == DECISION_MANUAL ? "manual" : (d.kind == DECISION_ASSIGN ? "rule" : "pool");
	e->kind = d.kind == DECISION_MANUAL ? "manual_assign" :
		d.kind == DECISION_ASSIGN ? "assign" : d.kind == DECISION_SUGGEST ? "suggest" : "pool";
	return tup;
}

/* Whether any column that feeds the rules changed */
static bool
inputs_changed(ManagedTable *mt, HeapTuple oldtup, HeapTuple newtup)
{
	AttrNumber	atts[ATTR__COUNT + 1];
	int			n = 0,
				i;

	if (mt->loc_att != InvalidAttrNumber)
		atts[n++] = mt->loc_att;
	for (i = ATTR_TIER; i <= ATTR_STAGE; i++)
		if (mt->attr_att[i] != InvalidAttrNumber)
			atts[n++] = mt->attr_att[i];
	if (mt->attr_att[ATTR_PARENT] != InvalidAttrNumber)
		atts[n++] = mt->attr_att[ATTR_PARENT];	/* follow_parent rules read it */
	for (i = 0; i < n; i++)
	{
		Form_pg_attribute att = TupleDescAttr(mt->tupdesc, atts[i] - 1);
		bool		n1,
					n2;
		Datum		d1 = heap_getattr(oldtup, atts[i], mt->tupdesc, &n1),
					d2 = heap_getattr(newtup, atts[i], mt->tupdesc, &n2);

		if (n1 != n2)
			return true;
		if (!n1 && !datumIsEqual(d1, d2, att->attbyval, att->attlen))
			return true;
	}
	return false;
}

/*
 * Whether the customer is held and the row is edited by a rep that is not its
 * holder (a collaborator it is shared with, under row-level security): such an
 * edit must not hand the customer to anyone by re-evaluation
 */
static bool
edited_by_other_rep(int64 holder)
{
	int64		rep;

	if (holder == 0)
		return false;
	rep = alloc_rep_of_role(alloc_actor_id());
	return rep != 0 && rep != holder;
}

/* Whether a column the duplicate check reads changed */
static bool
identity_changed(ManagedTable *mt, HeapTuple oldtup, HeapTuple newtup)
{
	/* the location matters only to a fuzzy match within a radius */
	AttrNumber	atts[4] = {mt->attr_att[ATTR_NAME], mt->attr_att[ATTR_PHONE], mt->attr_att[ATTR_CREDIT],
	(mt->dup_fuzzy != 'o' && mt->within_m > 0) ? mt->loc_att : InvalidAttrNumber};
	int			i;

	for (i = 0; i < 4; i++)
	{
		Form_pg_attribute att;
		bool		n1,
					n2;
		Datum		d1,
					d2;

		if (atts[i] == InvalidAttrNumber)
			continue;
		att = TupleDescAttr(mt->tupdesc, atts[i] - 1);
		d1 = heap_getattr(oldtup, atts[i], mt->tupdesc, &n1);
		d2 = heap_getattr(newtup, atts[i], mt->tupdesc, &n2);
		if (n1 != n2 || (!n1 && !datumIsEqual(d1, d2, att->attbyval, att->attlen)))
			return true;
	}
	return false;
}

static HeapTuple before_update_decide(ManagedTable *mt, HeapTuple oldtup, HeapTuple newtup);

/*
 * BEFORE UPDATE: the owner decision, then -- when the name, phone, credit
 * code or location changed -- the duplicate check, which may override it.
 */
static HeapTuple
before_update(ManagedTable *mt, HeapTuple oldtup, HeapTuple newtup)
{
	Frame	   *f = frames;
	int			n_before = f ? f->n : 0;
	Customer	c;
	DupMatch	dup;
	Entry	   *e = NULL;
	bool		oldnull,
				newnull;
	int64		old_owner = owner_value(mt, oldtup, &oldnull);
	/* the owner this UPDATE sets itself (kept as evidence if it ends in a dispute) */
	int64		requested = owner_value(mt, newtup, &newnull);

	if (newnull || (!oldnull && requested == old_owner))
		requested = 0;
	newtup = before_update_decide(mt, oldtup, newtup);
	if ((mt->dup_exact == 'o' && mt->dup_fuzzy == 'o') || !identity_changed(mt, oldtup, newtup))
		return newtup;
	assign_read_customer(mt, newtup, &c, false);
	if (!dup_check(mt, &c, &dup, false))
	{
		if (dup.registered && f && f->n > n_before)
			f->entries[f->n - 1].identity = true;
		else if (dup.registered)
			new_refresh(mt, &c)->identity = true;
		return newtup;
	}
	if (f && f->n > n_before)
		e = &f->entries[f->n - 1];
	if (dup.action == 'w')
	{
		warn_duplicate(mt, c.key, &dup);
		if (e == NULL)
			e = new_refresh(mt, &c);
		note_duplicate(e, &dup);
		return newtup;
	}
	/* dispute: the customer loses its owner until a manager decides */
	if (e == NULL)
		e = new_entry(OP_UPDATE, mt, c.key);
	else if (e->reserved)
	{
		frames_add_reservation(e->reserved, -1);
		e->reserved = 0;
	}
	{
		Decision	d;

		dispute_decision(&d, &c, &dup);
		fill_decision(e, &c, &d);
	}
	e->op = OP_UPDATE;
	e->rep = 0;
	e->suggest = 0;
	e->pinned = false;
	e->old_rep = oldnull ? 0 : old_owner;
	e->source = "dispute";
	e->kind = "dispute";
	note_duplicate(e, &dup);
	e->requested = requested;
	return set_owner(mt, newtup, 0);
}

/*
 * An UPDATE that changed the owner column: a person's act (or the engine's
 * on a person's behalf: claim, release, recycle, an accepted suggestion).
 * old_owner/new_owner 0 = none.
 */
static void
owner_changed(ManagedTable *mt, HeapTuple newtup, AllocChange *chg, int64 old_owner, int64 new_owner)
{
	Customer	c;
	Decision	d;
	Entry	   *e;

	/* a person changed the owner, or the engine on a person's behalf */
	const char *src = chg ? chg->source : "manual";

	if (chg)
		chg->used = true;
	else if (alloc_acting_rep() != 0)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_REP_OWNER_UPDATE),
				 errmsg("a rep cannot change the owner of a customer by UPDATE"),
				 errdetail("This session acts for rep %lld; an UPDATE of %s.%s would skip the claim checks (locks, limits, cooldowns).",
						   (long long) alloc_acting_rep(),
						   mt->name, NameStr(TupleDescAttr(mt->tupdesc, mt->owner_att - 1)->attname)),
				 errhint("Use allocation.claim() or allocation.release(); a manager uses allocation.assign().")));

	assign_read_customer(mt, newtup, &c, false);
	{
		/* a customer under an ownership dispute keeps its owner until it is settled */
		int64		dispute = open_dispute_id(mt, c.key);

		if (dispute != 0)
			ereport(ERROR,
					(errcode(ERRCODE_ALLOC_UNDER_DISPUTE),
					 errmsg("customer %s is under dispute", c.key),
					 errdetail("Ownership dispute %lld is open: the owner of the customer cannot change until it is settled or dismissed.",
							   (long long) dispute),
					 errhint("A manager decides with allocation.settle_dispute() or allocation.dismiss_ownership_dispute().")));
	}
	memset(&d, 0, sizeof(d));
	d.territory_id = customer_territory_id(&c);
	if (new_owner != 0)
	{
		/*
		 * Ordered locking: the counter of the rep losing the customer is
		 * taken before the new owner's when its id is lower (the batch
		 * writer changes it at the end of the statement).
		 */
		if (old_owner != 0 && old_owner < new_owner)
			(void) assign_lock_released(old_owner);
		/* to the rep its pending suggestion names: that reserved slot is used */
		assign_read_history(mt, &c);
		if (c.suggested_rep == new_owner)
			assign_use_suggested_slot(mt, &c, new_owner);
		else
			assign_check_manual(mt, &c, new_owner, false);
		d.kind = DECISION_MANUAL;
		d.rep_id = new_owner;
		d.reserved = true;
		d.team_id = config_get_rep(new_owner)->team_id;
	}
	else
		d.kind = DECISION_POOL;
	d.reason = change_reason(chg, new_owner == 0 ? "owner cleared by UPDATE" : "owner changed by UPDATE");
	e = new_entry(OP_UPDATE, mt, c.key);
	fill_decision(e, &c, &d);
	e->pinned = true;
	e->old_rep = old_owner;
	if (strcmp(src, "suggestion") == 0)
	{
		e->source = "suggestion";
		e->kind = "suggestion_accepted";
	}
	else if (strcmp(src, "claim") == 0 || strcmp(src, "recycle") == 0)
		e->source = e->kind = src[0] == 'c' ? "claim" : "recycle";
	else if (strcmp(src, "transfer") == 0)
		e->source = e->kind = "transfer";
	else
	{
		e->source = "manual";
		e->kind = new_owner == 0 ? "release" : "reassign";
	}
	/*
	 * Given back by release() or recycle(): back in the pool, not pinned
	 * there -- the rules apply again on re-evaluation (except to the
	 * former owner during its cooldown).  A person clearing the owner
	 * (UPDATE, assign(..., NULL)) pins the customer in the pool.
	 */
	if (new_owner == 0 && chg != NULL &&
		(strcmp(src, "release") == 0 || strcmp(src, "recycle") == 0))
		e->pinned = false;
}

/*
 * Re-evaluation of a stored customer by the rules (an UPDATE of its inputs, or
 * a realignment: plan != 0, whose events are kind "realign" and name the plan).
 */
static HeapTuple
reevaluate(ManagedTable *mt, HeapTuple newtup, Customer *c, bool oldnull, int64 old_owner,
		   int64 plan, AllocChange *chg)
{
	Decision	d;
	Entry	   *e;

	c->current_owner = oldnull ? 0 : old_owner;
	assign_read_history(mt, c);	/* its pending suggestion's slot; former owners in cooldown */
	assign_decide(mt, newtup, c, &d, false, NULL);
	if (chg)
		chg->result_rep = d.kind == DECISION_ASSIGN ? d.rep_id : (oldnull ? 0 : old_owner);
	if (d.kind == DECISION_SUGGEST && !oldnull)
	{
		/*
		 * A review-mode rule never takes a customer away by itself: the owner
		 * stays; a suggestion for another rep waits for a manager.
		 */
		e = new_entry(OP_REFRESH, mt, c->key);
		fill_decision(e, c, &d);
		e->reason = NULL;
		e->old_rep = 0;
		e->realign_plan = plan;
		if (d.rep_id == old_owner)
			e->suggest = 0;
		else
		{
			e->kind = "suggest";
			e->source = "rule";
			e->reason = frame_strdup(d.reason);	/* the suggestion's; the state keeps its own */
		}
		if (chg)
			chg->result = "suggest";
		return newtup;
	}
	if ((d.kind == DECISION_ASSIGN && !oldnull && d.rep_id == old_owner) ||
		(d.kind == DECISION_POOL && oldnull))
	{
		/*
		 * Same owner (who keeps the slot), or still in the pool: no new
		 * decision, but the state row follows the new attributes (and,
		 * in the pool, the new reason).
		 */
		e = new_entry(OP_REFRESH, mt, c->key);
		fill_decision(e, c, &d);
		e->reserved = 0;
		if (!oldnull)
			e->reason = NULL;	/* the owner's original reason stands */
		if (chg)
			chg->result = "unchanged";
		return newtup;
	}
	newtup = set_owner(mt, newtup, d.kind == DECISION_ASSIGN ? d.rep_id : 0);
	e = new_entry(OP_UPDATE, mt, c->key);
	fill_decision(e, c, &d);
	e->old_rep = oldnull ? 0 : old_owner;
	e->source = d.kind == DECISION_ASSIGN ? "reevaluate" : "pool";
	e->kind = d.kind == DECISION_SUGGEST ? "suggest" : plan ? "realign" : "reevaluate";
	e->realign_plan = plan;
	if (plan && chg && chg->reason)
		e->reason = frame_strdup(psprintf("%s: %s", chg->reason, d.reason));
	if (chg)
		chg->result = d.kind == DECISION_SUGGEST ? "suggest" : "moved";
	return newtup;
}

/* BEFORE UPDATE: manual owner change, or re-evaluation */
static HeapTuple
before_update_decide(ManagedTable *mt, HeapTuple oldtup, HeapTuple newtup)
{
	Customer	c;
	bool		oldnull,
				newnull,
				k1,
				k2;
	int64		old_owner = owner_value(mt, oldtup, &oldnull);
	int64		new_owner = owner_value(mt, newtup, &newnull);
	Form_pg_attribute katt = TupleDescAttr(mt->tupdesc, mt->key_att - 1);
	Datum		kold = heap_getattr(oldtup, mt->key_att, mt->tupdesc, &k1);
	Datum		knew = heap_getattr(newtup, mt->key_att, mt->tupdesc, &k2);
	Entry	   *e;
	Frame	   *f = frames;
	AllocChange *chg;

	/*
	 * INSERT ... ON CONFLICT DO UPDATE: the BEFORE INSERT of this very row
	 * (the latest entry) reserved a slot for a row that will not be
	 * inserted; give it back now so this decision sees true loads.
	 */
	if (f && f->n > 0)
	{
		Entry	   *last = &f->entries[f->n - 1];

		if (last->op == OP_INSERT && !last->confirmed && last->reserved && last->relid == mt->relid &&
			!k1 && strcmp(last->key, OutputFunctionCall(&mt->key_out, kold)) == 0)
		{
			frames_add_reservation(last->reserved, -1);
			last->reserved = 0;
		}
	}

	if (k1 != k2 || (!k1 && !datumIsEqual(kold, knew, katt->attbyval, katt->attlen)))
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_KEY_CHANGED),
				 errmsg("the key of a managed customer cannot change"),
				 errdetail("Table %s is managed with key column \"%s\"; ownership history is recorded under the key.",
						   mt->name, NameStr(katt->attname)),
				 errhint("Delete the row and insert it with the new key, or unmanage the table first.")));

	chg = k2 ? NULL : engine_change(mt, knew);
	if (oldnull != newnull || old_owner != new_owner)
	{
		owner_changed(mt, newtup, chg, oldnull ? 0 : old_owner, newnull ? 0 : new_owner);
		return newtup;
	}

	if (chg && strcmp(chg->source, "realign") == 0)
	{
		/* realign_apply(): the plan's rules decide again; pinned and disputed customers stay */
		chg->used = true;
		assign_read_customer(mt, newtup, &c, false);
		chg->result = registry_pinned(mt, c.key) ? "pinned" : open_dispute_id(mt, c.key) != 0 ? "disputed" : NULL;
		chg->result_rep = oldnull ? 0 : old_owner;
		if (chg->result)
			return newtup;
		return reevaluate(mt, newtup, &c, oldnull, old_owner, chg->plan, chg);
	}
	if (!oldnull && chg && strcmp(chg->source, "manual") == 0)
	{
		/* allocation.assign() of this very customer to its current owner: confirmed and pinned */
		assign_read_customer(mt, newtup, &c, false);
		e = new_refresh(mt, &c);
		e->rep = old_owner;
		e->pinned = true;
		e->source = "manual";
		e->kind = "pin";
		chg->used = true;
		e->reason = frame_strdup(change_reason(chg, "confirmed by hand"));
		return newtup;
	}
	if (!inputs_changed(mt, oldtup, newtup))
		return newtup;
	assign_read_customer(mt, newtup, &c, false);
	if (mt->reevaluate == 'n' || (mt->reevaluate == 'u' && registry_pinned(mt, c.key)) ||
		open_dispute_id(mt, c.key) != 0 || edited_by_other_rep(oldnull ? 0 : old_owner))
	{
		/*
		 * owner stays (pinned, frozen by an open ownership dispute, or edited
		 * by a rep that does not hold it: a collaborator's edit never moves
		 * the customer); the state's snapshot of the attributes follows
		 */
		(void) new_refresh(mt, &c);
		return newtup;
	}

	return reevaluate(mt, newtup, &c, oldnull, old_owner, 0, NULL);
}

/* The owner column's rep id, 0 for NULL */
static int64
owner_or_zero(ManagedTable *mt, HeapTuple tup)
{
	bool		isnull;
	int64		owner = owner_value(mt, tup, &isnull);

	return isnull ? 0 : owner;
}

/*
 * The stored row must carry the owner the engine decided: a BEFORE trigger
 * whose name sorts after zz_allocation_before could change the owner column
 * after every check (capacity, exclusive territories, claims) was made.
 */
static void
check_stored_owner(ManagedTable *mt, const char *key, int64 expected, HeapTuple tup)
{
	int64		stored = owner_or_zero(mt, tup);

	if (stored != expected)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_OWNER_OVERRIDDEN),
				 errmsg("the owner of customer %s of %s was changed after the allocation engine decided it", key, mt->name),
				 errdetail("The engine decided owner %s; the row was stored with owner %s. A BEFORE trigger that runs after zz_allocation_before (its name sorts after it) set the owner column.",
						   expected ? psprintf(INT64_FORMAT, expected) : "none (public pool)",
						   stored ? psprintf(INT64_FORMAT, stored) : "none"),
				 errhint("Rename that trigger so that it sorts before zz_allocation_before, or leave the owner column alone in it.")));
}

/* The owner an entry decided: its rep; a refresh keeps the row's old owner */
static void
check_entry_owner(ManagedTable *mt, Entry *e, HeapTuple oldtup, HeapTuple tup)
{
	if (e->op != OP_REFRESH)
		check_stored_owner(mt, e->key, e->rep, tup);
	else if (oldtup != NULL)
		check_stored_owner(mt, e->key, owner_or_zero(mt, oldtup), tup);
}

/* AFTER INSERT/UPDATE row: the row was stored, confirm its entry */
static void
confirm(ManagedTable *mt, HeapTuple oldtup, HeapTuple tup, EntryOp op)
{
	Frame	   *f = frames;
	bool		isnull;
	char	   *key;
	int			j;

	if (f == NULL)
		return;
	key = OutputFunctionCall(&mt->key_out, heap_getattr(tup, mt->key_att, mt->tupdesc, &isnull));

#define ENTRY_MATCHES(e) \
	(!(e)->confirmed && ((e)->op == op || (op == OP_UPDATE && (e)->op == OP_REFRESH)) && \
	 (e)->relid == mt->relid && strcmp((e)->key, key) == 0)

	/* rows are usually confirmed in the order they were decided */
	if (f->cursor < f->n && ENTRY_MATCHES(&f->entries[f->cursor]))
	{
		check_entry_owner(mt, &f->entries[f->cursor], oldtup, tup);
		f->entries[f->cursor++].confirmed = true;
		return;
	}
	/* otherwise the oldest unconfirmed entry with this key */
	{
		uint32		h = key_hash(mt->relid, key);
		KeySlot    *ks = hash_search(frame_keys(f), &h, HASH_FIND, NULL);
		int			found = -1;

		for (j = ks ? ks->newest : -1; j >= 0; j = f->entries[j].next_same)
			if (ENTRY_MATCHES(&f->entries[j]))
				found = j;
		if (found >= 0)
		{
			check_entry_owner(mt, &f->entries[found], oldtup, tup);
			f->entries[found].confirmed = true;
			if (found == f->cursor)
				f->cursor++;
			return;
		}
	}
	/* no decision was needed (nothing the engine reads changed): nor may the owner */
	if (op == OP_UPDATE && oldtup != NULL)
		check_stored_owner(mt, key, owner_or_zero(mt, oldtup), tup);
	if (op == OP_INSERT)
	{
		/*
		 * Stored although its key looked taken (the other row was deleted by
		 * a concurrent transaction meanwhile): register it as it is, in the
		 * pool or with the owner it was given (without a capacity check).
		 */
		Entry	   *e = new_entry(OP_INSERT, mt, key);
		int64		owner = owner_value(mt, tup, &isnull);

		e->confirmed = true;
		if (isnull)
		{
			e->source = "pool";
			e->kind = "pool";
			e->reason = frame_strdup("stored while its key was taken by a row being deleted; no rule was run");
		}
		else
		{
			e->rep = owner;
			e->pinned = true;
			e->source = "manual";
			e->kind = "manual_assign";
			e->reason = frame_strdup("owner given on INSERT while its key was taken by a row being deleted; capacity not checked");
			frames_add_reservation(owner, 1);
		}
	}
}

/* AFTER DELETE row */
static void
after_delete(ManagedTable *mt, HeapTuple oldtup)
{
	bool		isnull;
	int64		owner = owner_value(mt, oldtup, &isnull);
	Datum		kd = heap_getattr(oldtup, mt->key_att, mt->tupdesc, &isnull);
	Entry	   *e;

	if (isnull)
		return;
	e = new_entry(OP_DELETE, mt, OutputFunctionCall(&mt->key_out, kd));
	e->confirmed = true;
	e->old_rep = owner;
	e->source = "manual";
	e->kind = "delete";
	e->forget = (mt->dup_exact != 'o' || mt->dup_fuzzy != 'o');
	e->reason = frame_strdup("row deleted");
}

PG_FUNCTION_INFO_V1(allocation_row_trigger);
Datum
allocation_row_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TriggerEvent ev;
	ManagedTable *mt;
	HeapTuple	result;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "allocation_row_trigger: not called by trigger manager");
	ev = td->tg_event;
	if (!TRIGGER_FIRED_FOR_ROW(ev))
		elog(ERROR, "allocation_row_trigger: must be fired FOR EACH ROW");

	if (TRIGGER_FIRED_BEFORE(ev))
	{
		config_prepare();
		tindex_prepare();
	}
	mt = config_get_table(RelationGetRelid(td->tg_relation), false);

	if (TRIGGER_FIRED_BEFORE(ev))
	{
		volatile bool decided = false;
		instr_time	t0;

		alloc_stat_start(&t0);
		alloc_decision_depth++;
		PG_TRY();
		{
			/* a row moving to this partition: the update decided already (partition.c) */
			if (TRIGGER_FIRED_BY_INSERT(ev) && mt->partitioned && part_insert_is_move(mt, td->tg_trigtuple))
				result = td->tg_trigtuple;
			else if (TRIGGER_FIRED_BY_INSERT(ev))
				result = before_insert(mt, td->tg_relation, td->tg_trigtuple);
			else if (TRIGGER_FIRED_BY_UPDATE(ev))
			{
				part_note_update(mt, td->tg_trigtuple); /* a partition's row may move */
				result = before_update(mt, td->tg_trigtuple, td->tg_newtuple);
			}
			else
				result = td->tg_trigtuple;
			decided = true;
		}
		PG_FINALLY();
		{
			alloc_decision_depth--;
			alloc_stat_decision(mt->relid, &t0, decided);
		}
		PG_END_TRY();
		return PointerGetDatum(result);
	}

	/* (partition.c: a row moved to another partition is the update's, not an insert and a delete) */
	if (TRIGGER_FIRED_BY_INSERT(ev))
		confirm(mt, NULL, td->tg_trigtuple, part_after_insert(mt, td->tg_trigtuple) ? OP_UPDATE : OP_INSERT);
	else if (TRIGGER_FIRED_BY_UPDATE(ev))
		confirm(mt, td->tg_trigtuple, td->tg_newtuple, OP_UPDATE);
	else if (TRIGGER_FIRED_BY_DELETE(ev) && !(mt->partitioned && part_take_moved(mt, td->tg_trigtuple, true)))
		after_delete(mt, td->tg_trigtuple);
	return PointerGetDatum(NULL);
}

/* What a recorded entry came to, for allocation.stat */
static AllocStatOutcome
entry_outcome(Entry *e)
{
	if (e->op == OP_DELETE)
		return ASO_DELETED;
	if (e->kind && strcmp(e->kind, "dispute") == 0)
		return ASO_DISPUTED;
	if (e->suggest)
		return ASO_SUGGESTED;
	if (e->op == OP_REFRESH)
		return ASO_UNCHANGED;
	if (e->rep == 0)
		return ASO_POOLED;
	return (e->source && (strcmp(e->source, "rule") == 0 || strcmp(e->source, "reevaluate") == 0)) ?
		ASO_ASSIGNED : ASO_MANUAL;
}

/* Statistics (stat.c): each stored row of the frame, the path that wrote it, the time */
static void
stat_frame(Frame *f, Oid relid, instr_time *t0)
{
	int			i;

	if (!ALLOC_STAT_ACTIVE() || f->n == 0)
		return;
	for (i = 0; i < f->n; i++)
		if (f->entries[i].confirmed)
			alloc_stat_recorded(f->entries[i].relid, entry_outcome(&f->entries[i]), f->written_direct);
	alloc_stat_statement(relid, t0);
}

PG_FUNCTION_INFO_V1(allocation_stmt_trigger);
Datum
allocation_stmt_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TriggerEvent ev;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "allocation_stmt_trigger: not called by trigger manager");
	ev = td->tg_event;
	if (!TRIGGER_FIRED_FOR_STATEMENT(ev))
		elog(ERROR, "allocation_stmt_trigger: must be fired FOR EACH STATEMENT");

	if (TRIGGER_FIRED_BY_TRUNCATE(ev))
	{
		ManagedTable *mt = (config_prepare(), config_get_table(RelationGetRelid(td->tg_relation), false));

		if (mt->rel_here != mt->relid)
			part_record_truncate(mt);	/* one partition: its customers only */
		else
			record_truncate(mt);
	}
	else if (TRIGGER_FIRED_BEFORE(ev))
		push_frame();
	else
	{
		Frame	   *f = frames;
		instr_time	t0;

		if (f == NULL)
			elog(ERROR, "allocation batch stack is empty at statement end");
		if (--f->refs > 0)
			return PointerGetDatum(NULL);	/* another node of the query still runs */
		frames = f->prev;
		probe_close(f);
		alloc_stat_start(&t0);
		flush_frame(f);
		stat_frame(f, RelationGetRelid(td->tg_relation), &t0);
		MemoryContextDelete(f->cxt);
	}
	return PointerGetDatum(NULL);
}
