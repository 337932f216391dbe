/*
 * config.c
 *		Per-backend cache of the allocation configuration: managed tables
 *		(attribute numbers, output functions, compiled rule conditions), reps,
 *		teams and rules.
 *
 * Built on first use with a handful of SPI queries, dropped when any
 * configuration table changes (statement trigger -> relcache invalidation ->
 * callback in allocation.c) or when a managed table's definition changes.
 * Rebuilds happen only at the start of a decision (config_prepare), so
 * pointers handed out stay valid for the rest of that decision.
 */
#include "postgres.h"

#include "access/attmap.h"
#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/partition.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "access/transam.h"
#include "parser/parse_relation.h"
#include "rewrite/rewriteManip.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/resowner.h"
#include "access/xact.h"
#include "utils/relcache.h"

#include "allocation.h"
#include "datum.h"

const char *const alloc_attr_names[ATTR__COUNT] = {
	"tier", "crop", "business_type", "tags", "stage", "name", "phone",
	"credit_code", "last_contact", "expected_output", "parent"
};

typedef struct ConfigCache
{
	MemoryContext cxt;
	int			nreps;
	RepInfo    *reps;			/* sorted by id */
	int			nteams;
	TeamInfo   *teams;			/* sorted by id */
	int			nrules;
	RuleInfo   *rules;			/* evaluation order */
	int			ntables;
	ManagedTable **tables;
	bool		min_share;		/* a new_rep_policy has a min_share (1.1) */
	int			nparts;			/* partitions of managed tables, read on first use */
	int			partcap;
	ManagedTable **parts;
} ConfigCache;

static ConfigCache *config = NULL;
static bool config_stale = true;

void
config_invalidate(void)
{
	config_stale = true;
}

/* Whether round-robin rules watch new reps' minimum shares */
bool
config_min_share(void)
{
	if (config == NULL)
		config_prepare();
	return config->min_share;
}

bool
config_known_relid(Oid relid)
{
	int			i;

	if (config == NULL)
		return false;
	for (i = 0; i < config->ntables; i++)
		if (config->tables[i]->relid == relid)
			return true;
	for (i = 0; i < config->nparts; i++)
		if (config->parts[i]->rel_here == relid)
			return true;
	return false;
}

/* text[] datum -> TextSet (n = -1 for NULL) */
TextSet
textset_from_datum(Datum d, bool isnull)
{
	TextSet		s;
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i,
				k = 0;

	if (isnull)
	{
		s.n = -1;
		s.items = NULL;
		return s;
	}
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	s.items = palloc(sizeof(char *) * Max(n, 1));
	for (i = 0; i < n; i++)
		if (!nulls[i])
			s.items[k++] = TextDatumGetCString(elems[i]);
	s.n = k;
	return s;
}

/* SPI query whose results are then copied into the cache context */
static void
cfg_query(ConfigCache *c, const char *sql, const char *what)
{
	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)	/* read-only: the pushed snapshot */
		elog(ERROR, "could not read %s", what);
	MemoryContextSwitchTo(c->cxt);
}

static int
rep_cmp(const void *a, const void *b)
{
	int64		x = ((const RepInfo *) a)->id,
				y = ((const RepInfo *) b)->id;

	return x < y ? -1 : (x > y ? 1 : 0);
}

static int
team_cmp(const void *a, const void *b)
{
	int64		x = ((const TeamInfo *) a)->id,
				y = ((const TeamInfo *) b)->id;

	return x < y ? -1 : (x > y ? 1 : 0);
}

RepInfo *
config_get_rep(int64 id)
{
	RepInfo		key;

	if (config == NULL)
		config_prepare();
	key.id = id;
	return bsearch(&key, config->reps, config->nreps, sizeof(RepInfo), rep_cmp);
}

TeamInfo *
config_get_team(int64 id)
{
	TeamInfo	key;

	if (config == NULL)
		config_prepare();
	key.id = id;
	return bsearch(&key, config->teams, config->nteams, sizeof(TeamInfo), team_cmp);
}

RuleInfo *
config_get_rule(int64 id)
{
	int			i;

	if (config == NULL)
		config_prepare();
	for (i = 0; i < config->nrules; i++)
		if (config->rules[i].id == id)
			return &config->rules[i];
	return NULL;
}

/* Whether team `inner` is `outer` or below it */
static bool
team_within(ConfigCache *c, int64 inner, int64 outer)
{
	int			depth = 0;

	while (inner != 0 && depth++ < 256)
	{
		TeamInfo	key,
				   *t;

		if (inner == outer)
			return true;
		key.id = inner;
		t = bsearch(&key, c->teams, c->nteams, sizeof(TeamInfo), team_cmp);
		if (t == NULL)
			return false;
		inner = t->parent_id;
	}
	return false;
}

/*
 * Version 1.1 settings read with the reps: why a rep's capacity is higher
 * (active capacity rewards, for explain()) and whether round robins watch new
 * reps' shares.  Reward changes update allocation.rep, so they invalidate.
 * The SQL of version 1.0 has neither table: both stay off.
 */
static void
load_rewards(ConfigCache *c)
{
	uint64		i;
	bool		isnull;

	cfg_query(c, "SELECT to_regclass('allocation.reward') IS NOT NULL,"
			  " EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a"
			  "          WHERE a.attrelid = to_regclass('allocation.new_rep_policy')"
			  "            AND a.attname = 'min_share' AND NOT a.attisdropped)", "version 1.1 tables");
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		return;
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
	{
		cfg_query(c, "SELECT EXISTS (SELECT 1 FROM allocation.new_rep_policy WHERE min_share IS NOT NULL)",
				  "allocation.new_rep_policy");
		c->min_share = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	cfg_query(c, "SELECT r.id, allocation._reward_note(r.id, 'capacity_bonus') FROM allocation.rep r"
			  " WHERE r.id IN (SELECT w.rep_id FROM allocation.reward w"
			  "                 WHERE w.effect = 'capacity_bonus' AND w.revoked_at IS NULL AND w.capacity_added > 0)",
			  "allocation.reward");
	for (i = 0; i < SPI_processed; i++)
	{
		RepInfo		key;
		RepInfo    *r;

		key.id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		r = bsearch(&key, c->reps, c->nreps, sizeof(RepInfo), rep_cmp);
		if (r)
			r->capacity_note = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
	}
}

static void
load_reps_teams(ConfigCache *c)
{
	uint64		i;
	int			j,
				k;

	cfg_query(c, "SELECT id, coalesce(team_id, 0), coalesce(capacity, -1), active, code, name, crops"
					" FROM allocation.rep ORDER BY id", "allocation.rep");
	c->nreps = SPI_processed;
	c->reps = palloc0(sizeof(RepInfo) * Max(c->nreps, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		RepInfo    *r = &c->reps[i];
		bool		isnull;
		TextSet		crops;

		r->id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
		r->team_id = DatumGetInt64(SPI_getbinval(tup, td, 2, &isnull));
		r->capacity = DatumGetInt32(SPI_getbinval(tup, td, 3, &isnull));
		r->active = DatumGetBool(SPI_getbinval(tup, td, 4, &isnull));
		r->code = SPI_getvalue(tup, td, 5);
		r->name = SPI_getvalue(tup, td, 6);
		crops = textset_from_datum(SPI_getbinval(tup, td, 7, &isnull), isnull);
		r->ncrops = Max(crops.n, 0);
		r->crops = crops.items;
	}

	load_rewards(c);

	cfg_query(c, "SELECT id, coalesce(parent_id, 0), code, name FROM allocation.team ORDER BY id",
			  "allocation.team");
	c->nteams = SPI_processed;
	c->teams = palloc0(sizeof(TeamInfo) * Max(c->nteams, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		TeamInfo   *t = &c->teams[i];
		bool		isnull;

		t->id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
		t->parent_id = DatumGetInt64(SPI_getbinval(tup, td, 2, &isnull));
		t->code = SPI_getvalue(tup, td, 3);
		t->name = SPI_getvalue(tup, td, 4);
	}
	/* members: reps of the team and of every sub-team, ordered by id */
	for (j = 0; j < c->nteams; j++)
	{
		TeamInfo   *t = &c->teams[j];

		t->members = palloc(sizeof(int64) * Max(c->nreps, 1));
		t->nmembers = 0;
		for (k = 0; k < c->nreps; k++)
			if (c->reps[k].team_id != 0 && team_within(c, c->reps[k].team_id, t->id))
				t->members[t->nmembers++] = c->reps[k].id;
	}
}

static void
load_rules(ConfigCache *c)
{
	uint64		i;

	bool		have_stamp = rules_have_stamp();

	/* SQL version 1.0 has no condition_stamp: NULL, its trees are never read */
	cfg_query(c, psprintf("SELECT id, name, priority, mode = 'suggest', coalesce(tbl::oid, 0),"
						  " coalesce(territory_id, 0), crops, tiers, business_types, tags,"
						  " condition, condition_bin, target_kind, coalesce(target_rep_id, 0),"
						  " coalesce(target_team_id, 0), policy, crop_zones, condition_search_path, %s"
						  " FROM allocation.rule WHERE enabled ORDER BY priority DESC, id",
						  have_stamp ? "condition_stamp" : "NULL::text"), "allocation.rule");
	c->nrules = SPI_processed;
	c->rules = palloc0(sizeof(RuleInfo) * Max(c->nrules, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		RuleInfo   *r = &c->rules[i];
		bool		isnull;
		Datum		d;
		char	   *s;

		r->id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
		r->name = SPI_getvalue(tup, td, 2);
		r->priority = DatumGetInt32(SPI_getbinval(tup, td, 3, &isnull));
		r->suggest = DatumGetBool(SPI_getbinval(tup, td, 4, &isnull));
		r->relid = DatumGetObjectId(SPI_getbinval(tup, td, 5, &isnull));
		r->territory_id = DatumGetInt64(SPI_getbinval(tup, td, 6, &isnull));
		d = SPI_getbinval(tup, td, 7, &isnull);
		r->crops = textset_from_datum(d, isnull);
		d = SPI_getbinval(tup, td, 8, &isnull);
		r->tiers = textset_from_datum(d, isnull);
		d = SPI_getbinval(tup, td, 9, &isnull);
		r->btypes = textset_from_datum(d, isnull);
		d = SPI_getbinval(tup, td, 10, &isnull);
		r->tags = textset_from_datum(d, isnull);
		r->condition = SPI_getvalue(tup, td, 11);
		/* decoded or compiled again, then planned, in compile_rules() */
		r->cond_bin = SPI_getvalue(tup, td, 12);
		r->cond_path = SPI_getvalue(tup, td, 18);
		r->cond_bin_current = rules_stamp_current(have_stamp, SPI_getvalue(tup, td, 19));
		s = SPI_getvalue(tup, td, 13);
		r->target = (RuleTarget) (s[0] == 'r' ? TARGET_REP : s[0] == 't' ? TARGET_TEAM : TARGET_POOL);
		r->target_rep = DatumGetInt64(SPI_getbinval(tup, td, 14, &isnull));
		r->target_team = DatumGetInt64(SPI_getbinval(tup, td, 15, &isnull));
		d = SPI_getbinval(tup, td, 17, &isnull);
		r->zones = textset_from_datum(d, isnull);
		s = SPI_getvalue(tup, td, 16);
		if (s == NULL)
			r->policy = POLICY_NONE;
		else if (strcmp(s, "territory_owner") == 0)
			r->policy = POLICY_TERRITORY_OWNER;
		else if (strcmp(s, "round_robin") == 0)
			r->policy = POLICY_ROUND_ROBIN;
		else if (strcmp(s, "least_loaded") == 0)
			r->policy = POLICY_LEAST_LOADED;
		else if (strcmp(s, "weighted") == 0)
			r->policy = POLICY_WEIGHTED;
		else if (strcmp(s, "follow_parent") == 0)
			r->policy = POLICY_FOLLOW_PARENT;
		else
			r->policy = POLICY_SKILL;
	}
}

/* Resolves a mapped column; the DDL event trigger keeps names current */
static AttrNumber
resolve_column(Relation rel, const char *col, const char *what)
{
	AttrNumber	n;

	if (col == NULL)
		return InvalidAttrNumber;
	n = attnameAttNum(rel, col, false);
	if (n == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s column \"%s\" of managed table %s does not exist",
						what, col, RelationGetRelationName(rel)),
				 errdetail("The allocation mapping of this table refers to a column that is gone."),
				 errhint("Call allocation.unmanage() and allocation.manage() again with the current columns.")));
	return n;
}

static void
set_output(ManagedTable *mt, AttrNumber att, FmgrInfo *fi, MemoryContext cxt)
{
	Oid			typout;
	bool		varlena;

	getTypeOutputInfo(TupleDescAttr(mt->tupdesc, att - 1)->atttypid, &typout, &varlena);
	fmgr_info_cxt(typout, fi, cxt);
}

/* The single-column unique index manage() required on the key */
static void
find_key_index(Relation rel, ManagedTable *mt, bool prefix)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;

	mt->key_index = InvalidOid;
	foreach(lc, indexes)
	{
		Relation	idx = index_open(lfirst_oid(lc), AccessShareLock);
		Form_pg_index ix = idx->rd_index;

		/* prefix: a partition of a table unique on (key, partition columns) */
		if (ix->indisunique && ix->indisvalid && (ix->indnkeyatts == 1 || prefix) &&
			ix->indkey.values[0] == mt->key_att && RelationGetIndexPredicate(idx) == NIL &&
			idx->rd_rel->relam == BTREE_AM_OID)
		{
			Oid			opfamily = idx->rd_opfamily[0];
			Oid			opcintype = idx->rd_opcintype[0];
			Oid			eqop = get_opfamily_member(opfamily, opcintype, opcintype, BTEqualStrategyNumber);

			if (OidIsValid(eqop))
			{
				mt->key_index = RelationGetRelid(idx);
				mt->key_eq = get_opcode(eqop);
				mt->key_coll = idx->rd_indcollation[0];
			}
		}
		index_close(idx, AccessShareLock);
		if (OidIsValid(mt->key_index))
			break;
	}
	list_free(indexes);
}

static void
load_tables(ConfigCache *c)
{
	uint64		i;
	int			a;
	SPITupleTable *tt;
	uint64		nt;

	/* SQL version 1.0 has no location_datum: every location is WGS 84 */
	alloc_lookup_oids();
	cfg_query(c, psprintf("SELECT id, tbl::oid, key_column, location_column, owner_column, attributes::text,"
						  " reevaluate, table_name, duplicate_exact, duplicate_fuzzy, name_similarity::float8,"
						  " coalesce(duplicate_within_m, 0), %s"
						  " FROM allocation.managed_table WHERE active ORDER BY id",
						  get_attnum(alloc_oids.managed_table, "location_datum") != InvalidAttrNumber
						  ? "location_datum" : "'wgs84'::text"),
			  "allocation.managed_table");
	tt = SPI_tuptable;
	nt = SPI_processed;
	c->ntables = nt;
	c->tables = palloc0(sizeof(ManagedTable *) * Max(nt, 1));
	for (i = 0; i < nt; i++)
	{
		HeapTuple	tup = tt->vals[i];
		TupleDesc	td = tt->tupdesc;
		ManagedTable *mt = palloc0(sizeof(ManagedTable));
		bool		isnull;
		Relation	rel;
		Jsonb	   *attrs;
		char	   *s;

		mt->id = DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
		mt->relid = DatumGetObjectId(SPI_getbinval(tup, td, 2, &isnull));
		mt->name = quote_qualified_identifier(get_namespace_name(get_rel_namespace(mt->relid)),
											  get_rel_name(mt->relid));
		mt->table_name = SPI_getvalue(tup, td, 8);
		s = SPI_getvalue(tup, td, 7);
		mt->reevaluate = s[0] == 'a' ? 'a' : (s[0] == 'n' ? 'n' : 'u');
		mt->dup_exact = SPI_getvalue(tup, td, 9)[0];	/* o(ff), w(arn), d(ispute), b(lock) */
		mt->dup_fuzzy = SPI_getvalue(tup, td, 10)[0];
		mt->name_similarity = DatumGetFloat8(SPI_getbinval(tup, td, 11, &isnull));
		mt->within_m = DatumGetFloat8(SPI_getbinval(tup, td, 12, &isnull));
		{
			AllocDatum	datum = DATUM_WGS84;

			(void) datum_parse(SPI_getvalue(tup, td, 13), &datum);	/* a CHECK keeps it valid */
			mt->loc_datum = (char) datum;
		}

		rel = table_open(mt->relid, AccessShareLock);
		mt->tupdesc = CreateTupleDescCopy(RelationGetDescr(rel));
		mt->owner = rel->rd_rel->relowner;	/* ALTER ... OWNER invalidates the cache */
		mt->key_att = resolve_column(rel, SPI_getvalue(tup, td, 3), "key");
		mt->loc_att = resolve_column(rel, SPI_getvalue(tup, td, 4), "location");
		mt->owner_att = resolve_column(rel, SPI_getvalue(tup, td, 5), "owner");
		mt->owner_type = TupleDescAttr(mt->tupdesc, mt->owner_att - 1)->atttypid;
		if (mt->owner_type != INT4OID && mt->owner_type != INT8OID)
			ereport(ERROR,
					(errcode(MAKE_SQLSTATE('L', 'A', '0', '1', '5')),
					 errmsg("owner column of managed table %s is no longer integer or bigint", mt->name),
					 errdetail("Its type is %s.", format_type_be(mt->owner_type)),
					 errhint("Change it back, or call allocation.unmanage() and allocation.manage() again.")));
		if (mt->loc_att != InvalidAttrNumber &&
			TupleDescAttr(mt->tupdesc, mt->loc_att - 1)->atttypid != alloc_geometry_type())
			ereport(ERROR,
					(errcode(MAKE_SQLSTATE('L', 'A', '0', '1', '4')),
					 errmsg("location column of managed table %s is no longer a PostGIS geometry", mt->name),
					 errdetail("Its type is %s.", format_type_be(TupleDescAttr(mt->tupdesc, mt->loc_att - 1)->atttypid)),
					 errhint("Change it back, or call allocation.unmanage() and allocation.manage() again.")));
		attrs = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(SPI_getvalue(tup, td, 6))));
		for (a = 0; a < ATTR__COUNT; a++)
		{
			JsonbValue	kv,
					   *v;

			kv.type = jbvString;
			kv.val.string.val = (char *) alloc_attr_names[a];
			kv.val.string.len = strlen(alloc_attr_names[a]);
			v = findJsonbValueFromContainer(&attrs->root, JB_FOBJECT, &kv);
			mt->attr_att[a] = InvalidAttrNumber;
			if (v && v->type == jbvString)
			{
				mt->attr_att[a] = resolve_column(rel, pnstrdup(v->val.string.val, v->val.string.len),
												 alloc_attr_names[a]);
				if (a != ATTR_TAGS)
					set_output(mt, mt->attr_att[a], &mt->attr_out[a], c->cxt);
				else if (TupleDescAttr(mt->tupdesc, mt->attr_att[a] - 1)->atttypid != TEXTARRAYOID &&
						 TupleDescAttr(mt->tupdesc, mt->attr_att[a] - 1)->atttypid != 1015 /* varchar[] */ )
					ereport(ERROR,
							(errcode(MAKE_SQLSTATE('L', 'A', '0', '1', '6')),
							 errmsg("tags column of managed table %s is no longer a text array", mt->name),
							 errhint("Change it back, or call allocation.unmanage() and allocation.manage() again.")));
			}
		}
		if (mt->attr_att[ATTR_PARENT] != InvalidAttrNumber &&
			TupleDescAttr(mt->tupdesc, mt->attr_att[ATTR_PARENT] - 1)->atttypid !=
			TupleDescAttr(mt->tupdesc, mt->key_att - 1)->atttypid)
			ereport(ERROR,
					(errcode(MAKE_SQLSTATE('L', 'A', '0', '1', '6')),
					 errmsg("parent column of managed table %s no longer has the key column's type", mt->name),
					 errdetail("Its type is %s; the key column's is %s.",
							   format_type_be(TupleDescAttr(mt->tupdesc, mt->attr_att[ATTR_PARENT] - 1)->atttypid),
							   format_type_be(TupleDescAttr(mt->tupdesc, mt->key_att - 1)->atttypid)),
					 errhint("Change it back, or call allocation.unmanage() and allocation.manage() again.")));
		set_output(mt, mt->key_att, &mt->key_out, c->cxt);
		find_key_index(rel, mt, false);
		mt->rel_here = mt->relid;
		mt->nleaves = -1;
		if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		{
			/*
			 * A partitioned index cannot be scanned: the partitions' own
			 * indexes are (partition.c).  Unique on the key alone, the
			 * key is unique by PostgreSQL; unique with the partition
			 * columns, the engine checks the key across partitions.
			 */
			mt->partitioned = true;
			mt->key_global_check = !OidIsValid(mt->key_index);
			mt->key_index = InvalidOid;
		}
		table_close(rel, AccessShareLock);
		c->tables[i] = mt;
	}
}

/*
 * Plans and test-compiles one condition in a subtransaction.  A condition
 * that no longer compiles (a function it calls was dropped, ...) disables
 * only its own rule, with a WARNING, instead of breaking every managed table.
 */
static void
plan_condition_try(void *arg)
{
	RuleInfo   *r = (RuleInfo *) arg;

	AllocOwnerSwitch sw;

	/*
	 * As the table's owner: expression_planner() folds calls of IMMUTABLE
	 * functions with constant arguments, that is, runs user code.
	 */
	alloc_become_table_owner(r->relid, &sw);
	/* the stored tree only where this server wrote it (rules.c) */
	if (r->cond_bin_current && r->cond_bin != NULL)
		r->cond_expr = (Expr *) stringToNode(r->cond_bin);
	else
		r->cond_expr = (Expr *) rules_compile_condition(r->relid, r->condition, r->name, r->cond_path);
	r->cond_expr = expression_planner(r->cond_expr);
	(void) ExecInitExpr(r->cond_expr, NULL);
	alloc_restore_table_owner(&sw);
}

/* Whether a function is not built in (a user's, or an extension's) */
static bool
is_user_function(Oid func_id, void *context)
{
	return func_id >= FirstNormalObjectId;
}

/*
 * Whether evaluating an expression can run code that is not built in: a
 * user function or operator, a user type's I/O, a domain's CHECK.  A
 * condition made of built-in functions alone is evaluated without the switch
 * to the table's owner (it runs no one's code).
 */
static bool
has_user_code(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (check_functions_in_node(node, is_user_function, NULL))
		return true;
	/* a domain's CHECKs; CURRENT_USER and friends answer for the role evaluating */
	if (IsA(node, CoerceToDomain) || IsA(node, SQLValueFunction))
		return true;
	return expression_tree_walker(node, has_user_code, context);
}

static Expr *
plan_condition(RuleInfo *r)
{
	ErrorData  *edata;

	if (alloc_try(plan_condition_try, r, &edata))
	{
		r->cond_user_code = has_user_code((Node *) r->cond_expr, NULL);
		return r->cond_expr;
	}
	ereport(WARNING,
			(errcode(ERRCODE_ALLOC_BAD_CONDITION),
			 errmsg("allocation rule \"%s\" is skipped: its condition no longer compiles", r->name),
			 errdetail("%s", edata->message),
			 errhint("Fix or delete the rule (UPDATE allocation.rule SET condition = ...).")));
	r->broken = true;
	return NULL;
}

/*
 * Plans each rule condition and compiles it once per table it applies to.
 * Planning runs as the owner of the condition's table (plan_condition_try),
 * never as the extension owner or the session's user.
 */
static void
compile_rules(ConfigCache *c)
{
	int			i,
				k;

	for (k = 0; k < c->nrules; k++)
		if (c->rules[k].condition != NULL)
			c->rules[k].cond_expr = plan_condition(&c->rules[k]);
	for (i = 0; i < c->ntables; i++)
	{
		ManagedTable *mt = c->tables[i];

		mt->rules = palloc(sizeof(RuleInfo *) * Max(c->nrules, 1));
		mt->cond_state = palloc0(sizeof(ExprState *) * Max(c->nrules, 1));
		for (k = 0; k < c->nrules; k++)
		{
			RuleInfo   *r = &c->rules[k];

			if (OidIsValid(r->relid) && r->relid != mt->relid)
				continue;
			if (r->broken)
				continue;
			if (r->cond_expr)
				mt->cond_state[mt->nrules] = ExecInitExpr(r->cond_expr, NULL);
			mt->rules[mt->nrules++] = r;
		}
		mt->econtext = CreateStandaloneExprContext();
		mt->slot = MakeSingleTupleTableSlot(mt->tupdesc, &TTSOpsHeapTuple);
	}
}

static void
config_free(ConfigCache *c)
{
	int			i;

	for (i = 0; i < c->ntables; i++)
	{
		ManagedTable *mt = c->tables[i];

		if (mt->econtext)
			FreeExprContext(mt->econtext, false);
		if (mt->slot)
			ExecDropSingleTupleTableSlot(mt->slot);
	}
	for (i = 0; i < c->nparts; i++)
	{
		FreeExprContext(c->parts[i]->econtext, false);
		ExecDropSingleTupleTableSlot(c->parts[i]->slot);
	}
	MemoryContextDelete(c->cxt);
}

static void
config_build_inner(void)
{
	MemoryContext cxt,
				old;
	AllocUserSwitch sw;
	ConfigCache *c;

	cxt = AllocSetContextCreate(CacheMemoryContext, "allocation config",
								ALLOCSET_DEFAULT_SIZES);
	/* an invalidation arriving while we read marks the new cache stale again */
	config_stale = false;
	alloc_spi_begin(&sw);
	/* read the latest committed configuration, whatever the statement's snapshot */
	PushActiveSnapshot(GetLatestSnapshot());
	old = MemoryContextSwitchTo(cxt);
	c = palloc0(sizeof(ConfigCache));
	c->cxt = cxt;
	/* SPI results are copied into cxt while it is current */
	load_reps_teams(c);
	load_rules(c);
	load_tables(c);
	MemoryContextSwitchTo(old);
	PopActiveSnapshot();
	alloc_spi_end(&sw);

	PG_TRY();
	{
		old = MemoryContextSwitchTo(cxt);
		compile_rules(c);
		MemoryContextSwitchTo(old);
	}
	PG_CATCH();
	{
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (config)
		config_free(config);
	config = c;
}

/* Builds the cache; on error the old one stays marked stale */
static void
config_build(void)
{
	PG_TRY();
	{
		config_build_inner();
	}
	PG_CATCH();
	{
		config_stale = true;
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * Decisions in progress (a condition can run a statement that starts a
 * nested decision): while one runs, a stale cache is kept, never freed.
 */
int			alloc_decision_depth = 0;

/* Rebuilds a stale cache; called at the start of each decision only */
void
config_prepare(void)
{
	if (config == NULL || (config_stale && alloc_decision_depth == 0))
		config_build();
}

/*
 * The entry of one partition of a managed partitioned table: the root's
 * configuration with the partition's own column numbers (a partition may
 * have its columns in another order, or dropped columns), its tuple
 * descriptor, its key index, and the rule conditions mapped to its columns.
 */
static ManagedTable *
derive_partition(ConfigCache *c, ManagedTable *root, Oid part)
{
	MemoryContext old = MemoryContextSwitchTo(c->cxt);
	ManagedTable *pm = palloc(sizeof(ManagedTable));
	Relation	rel = table_open(part, AccessShareLock);
	AttrMap    *map;
	int			a,
				k;

	memcpy(pm, root, sizeof(ManagedTable));
	pm->rel_here = part;
	pm->nleaves = -1;
	pm->leaves = NULL;
	pm->tupdesc = CreateTupleDescCopy(RelationGetDescr(rel));
#define MAP_ATT(att) ((att) == InvalidAttrNumber ? InvalidAttrNumber : \
		resolve_column(rel, NameStr(TupleDescAttr(root->tupdesc, (att) - 1)->attname), "mapped"))
	pm->key_att = MAP_ATT(root->key_att);
	pm->loc_att = MAP_ATT(root->loc_att);
	pm->owner_att = MAP_ATT(root->owner_att);
	for (a = 0; a < ATTR__COUNT; a++)
	{
		pm->attr_att[a] = MAP_ATT(root->attr_att[a]);
		if (pm->attr_att[a] != InvalidAttrNumber && a != ATTR_TAGS)
			set_output(pm, pm->attr_att[a], &pm->attr_out[a], c->cxt);
	}
#undef MAP_ATT
	set_output(pm, pm->key_att, &pm->key_out, c->cxt);
	find_key_index(rel, pm, true);
	/* root column numbers -> this partition's */
	map = build_attrmap_by_name(RelationGetDescr(rel), root->tupdesc);
	pm->rules = palloc(sizeof(RuleInfo *) * Max(root->nrules, 1));
	pm->cond_state = palloc0(sizeof(ExprState *) * Max(root->nrules, 1));
	pm->nrules = 0;
	for (k = 0; k < root->nrules; k++)
	{
		RuleInfo   *r = root->rules[k];

		if (r->cond_expr)
		{
			bool		whole_row = false;
			Node	   *e = map_variable_attnos((Node *) copyObject(r->cond_expr), 1, 0, map,
												InvalidOid, &whole_row);

			if (whole_row)
			{
				ereport(WARNING,
						(errcode(ERRCODE_ALLOC_BAD_CONDITION),
						 errmsg("allocation rule \"%s\" is skipped on partition %s", r->name, RelationGetRelationName(rel)),
						 errdetail("Its condition uses the whole row, whose type differs in this partition."),
						 errhint("Name the columns in the condition instead of the row.")));
				continue;
			}
			pm->cond_state[pm->nrules] = ExecInitExpr((Expr *) e, NULL);
		}
		pm->rules[pm->nrules++] = r;
	}
	pm->econtext = CreateStandaloneExprContext();
	pm->slot = MakeSingleTupleTableSlot(pm->tupdesc, &TTSOpsHeapTuple);
	table_close(rel, AccessShareLock);
	if (c->nparts == c->partcap)
	{
		c->partcap = Max(8, c->partcap * 2);
		c->parts = c->parts ? repalloc(c->parts, sizeof(ManagedTable *) * c->partcap)
			: palloc(sizeof(ManagedTable *) * c->partcap);
	}
	c->parts[c->nparts++] = pm;
	MemoryContextSwitchTo(old);
	return pm;
}

/* The entry of the managed table itself (the root of a partition's entry) */
ManagedTable *
config_get_root(ManagedTable *mt)
{
	int			i;

	if (mt->rel_here == mt->relid)
		return mt;
	for (i = 0; i < config->ntables; i++)
		if (config->tables[i]->relid == mt->relid)
			return config->tables[i];
	elog(ERROR, "managed table %u is not in the cache", mt->relid);
	return NULL;				/* keep compiler quiet */
}

/* The leaf partitions of a partitioned managed table (read once per cache) */
int
config_leaves(ManagedTable *mt, Oid **leaves)
{
	ManagedTable *root = config_get_root(mt);

	if (root->nleaves < 0)
	{
		List	   *all = find_all_inheritors(root->relid, AccessShareLock, NULL);
		ListCell   *lc;
		MemoryContext old = MemoryContextSwitchTo(config->cxt);

		root->leaves = palloc(sizeof(Oid) * Max(list_length(all), 1));
		root->nleaves = 0;
		foreach(lc, all)
			if (get_rel_relkind(lfirst_oid(lc)) == RELKIND_RELATION)
				root->leaves[root->nleaves++] = lfirst_oid(lc);
		MemoryContextSwitchTo(old);
		list_free(all);
	}
	*leaves = root->leaves;
	return root->nleaves;
}

ManagedTable *
config_get_table(Oid relid, bool missing_ok)
{
	config_prepare();
	return config_lookup(relid, missing_ok);
}

/*
 * The entry of a managed table or of one of its partitions in the cache as
 * it is (no rebuild: pointers the caller holds stay valid).
 */
ManagedTable *
config_lookup(Oid relid, bool missing_ok)
{
	int			i;

	for (i = 0; i < config->ntables; i++)
		if (config->tables[i]->relid == relid)
			return config->tables[i];
	for (i = 0; i < config->nparts; i++)
		if (config->parts[i]->rel_here == relid)
			return config->parts[i];
	/* a partition (present or created later) of a managed partitioned table */
	if (get_rel_relispartition(relid))
	{
		Oid			root = llast_oid(get_partition_ancestors(relid));

		for (i = 0; i < config->ntables; i++)
			if (config->tables[i]->relid == root && config->tables[i]->partitioned)
				return derive_partition(config, config->tables[i], relid);
	}
	if (!missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_ALLOC_NOT_MANAGED),
				 errmsg("table %s is not managed", get_rel_name(relid)),
				 errdetail("There is no active allocation.manage() registration for this table."),
				 errhint("Call allocation.manage() first.")));
	return NULL;
}
