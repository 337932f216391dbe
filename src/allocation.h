/*
 * allocation.h
 *		Shared declarations of the allocation extension.
 */
#ifndef ALLOCATION_H
#define ALLOCATION_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/execnodes.h"
#include "nodes/lockoptions.h"
#include "utils/hsearch.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

/* ---------- allocation.c: module wiring, helpers ---------- */

extern SPIPlanPtr alloc_keep_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *types);

/* OIDs of the extension's own tables, known once the caches were built */
typedef struct AllocationOids
{
	bool		valid;
	Oid			schema;
	Oid			schema_owner;
	Oid			team;
	Oid			rep;
	Oid			territory;
	Oid			rule;
	Oid			managed_table;
	Oid			new_rep_policy;	/* InvalidOid under the SQL of version 1.0 */
	Oid			postgis_schema;
} AllocationOids;

extern AllocationOids alloc_oids;

extern void alloc_lookup_oids(void);

/* The role recorded as actor: the caller of claim()/release(), else the current user */
extern Oid	alloc_actor_override;
extern Oid	alloc_actor_id(void);

/* ---------- gateway.c: call context ---------- */

/* An owner change made by the engine (_owner_update), as the row trigger records it */
typedef struct AllocChange
{
	Oid			relid;
	const char *key;			/* text form of the customer's key */
	const char *source;			/* manual, suggestion, claim, recycle */
	const char *reason;			/* NULL = the trigger's default */
	bool		used;			/* taken by the row trigger (one change per context) */
	Oid			actor;			/* whom the change's events name */
	CommandId	cid;			/* the command id of the engine's own UPDATE */
	int64		plan;			/* realign: the plan whose rules decide again (source "realign") */
	const char *result;			/* realign: what the trigger did (moved, unchanged, suggest, pinned, disputed) */
	int64		result_rep;		/* realign: the owner after it, 0 = none */
	/*
	 * A realignment batch (_realign_move_batch): one change per key, which
	 * the engine's UPDATE must reach in this order (items[next] is the next
	 * row expected); NULL for a single-row change.
	 */
	struct AllocChange *items;
	int			nitems;
	int			next;
} AllocChange;

extern AllocChange *alloc_change;
extern int64 alloc_rep_of_role(Oid role);
extern int64 alloc_acting_rep(void);
extern void gateway_forget_rep(void);

/* Run SPI work as the extension owner (internal writes need no user grants) */
typedef struct AllocUserSwitch
{
	Oid			save_userid;
	int			save_sec;
	int			save_nestlevel;
} AllocUserSwitch;

extern void alloc_become_owner(AllocUserSwitch *sw);
extern void alloc_restore_user(AllocUserSwitch *sw);
extern bool alloc_try(void (*fn) (void *arg), void *arg, ErrorData **err);
extern void alloc_spi_begin(AllocUserSwitch *sw);
extern void alloc_spi_end(AllocUserSwitch *sw);

/* ---------- owner.c: user code runs as the managed table's owner ---------- */
typedef struct AllocOwnerSwitch
{
	Oid			save_userid;
	int			save_sec;
	int			nest;
} AllocOwnerSwitch;

extern Oid	alloc_rel_owner(Oid relid);
extern void alloc_become_role(Oid role, AllocOwnerSwitch *sw);
extern void alloc_become_table_owner(Oid relid, AllocOwnerSwitch *sw);
extern void alloc_become_caller(Oid role, AllocOwnerSwitch *sw);
extern void alloc_restore_table_owner(AllocOwnerSwitch *sw);
extern void alloc_refuse_temp_objects(const char *what);

/* Looks up a PostGIS function by name and argument types */
extern Oid	alloc_postgis_func(const char *name, int nargs, Oid *argtypes);
extern Oid	alloc_geometry_type(void);

/* ---------- location.c: reading customer locations ---------- */

typedef struct AllocPoint
{
	bool		present;		/* false for NULL or empty geometry */
	double		x;
	double		y;
	int32		srid;			/* SRID as stored (before transformation) */
	char		datum;			/* AllocDatum of the stored coordinates (datum.h) */
	double		stored_x;		/* the coordinates as stored (SRID srid, datum datum) */
	double		stored_y;
} AllocPoint;

/* reads a location into pt in WGS 84 (EPSG:4326); datum: an AllocDatum (datum.h) */
extern void alloc_read_point(Datum geom, AllocPoint *pt, const char *table_name, char datum);

/* ---------- territory_index.c: territory index (per backend or shared) ---------- */

typedef struct TerritoryInfo
{
	int64		id;
	int64		parent_id;		/* 0 = none */
	int32		priority;
	bool		exclusive;
	int64		owner_rep;		/* 0 = none */
	int64		owner_team;		/* 0 = none */
	char	   *code;
	char	   *name;
	int			nzones;
	char	  **zones;			/* crop_zones */
} TerritoryInfo;

#define ALLOC_MAX_HITS 64

/* fills hits[] with territories covering (x, y): priority DESC, id ASC */
extern int	tindex_lookup(double x, double y, TerritoryInfo **hits, int maxhits);
extern TerritoryInfo *tindex_get(int64 id);
extern bool tindex_is_within(int64 territory_id, int64 scope_id);
extern void tindex_invalidate(void);
extern void tindex_note_change(void);
extern void tindex_xact_end(void);
extern void tshared_init(void);
extern void tindex_prepare(void);
extern int	alloc_territory_cache_max_kb;

typedef struct TIndexStats
{
	int64		territories;
	int64		vertices;		/* in memory (0 in indexed mode) */
	Size		bytes;			/* memory of the cache */
	bool		in_memory;		/* polygons in memory, or the indexed fallback */
	bool		over_limit;		/* the polygons did not fit the bound */
	Size		limit;			/* the bound in bytes */
	double		build_ms;		/* time of the last build */
	const char *index_mode;		/* shared, backend or indexed */
	const char *reason;			/* why this mode */
	bool		preloaded;		/* allocation in shared_preload_libraries */
	uint64		version;		/* key of the territory row versions read */
	Size		backend_bytes;	/* this backend's own memory for the index */
	Size		shared_bytes;	/* the shared build used (0 if none) */
	int			shared_builds;	/* live shared builds of this database */
	Size		shared_total_bytes; /* every live shared build */
	int			attached_backends;	/* backends using the same shared build */
	int64		shared_builds_made; /* builds published since the server started */
} TIndexStats;

extern void tindex_stats(TIndexStats *st);

/* ---------- config.c: per-backend configuration cache ---------- */

typedef struct RepInfo
{
	int64		id;
	int64		team_id;		/* 0 = none */
	int32		capacity;		/* -1 = unlimited */
	bool		active;
	char	   *code;
	char	   *name;
	int			ncrops;
	char	  **crops;
	char	   *capacity_note;	/* active capacity rewards, e.g. " (+5 from ...)"; NULL = none */
} RepInfo;

typedef struct TeamInfo
{
	int64		id;
	int64		parent_id;
	char	   *code;
	char	   *name;
	int			nmembers;		/* reps of the team and its sub-teams, by id */
	int64	   *members;
} TeamInfo;

typedef enum RuleTarget
{
	TARGET_REP = 'r',
	TARGET_TEAM = 't',
	TARGET_POOL = 'p'
} RuleTarget;

typedef enum RulePolicy
{
	POLICY_NONE = 0,
	POLICY_TERRITORY_OWNER = 'o',
	POLICY_ROUND_ROBIN = 'r',
	POLICY_LEAST_LOADED = 'l',
	POLICY_WEIGHTED = 'w',
	POLICY_SKILL = 's',
	POLICY_FOLLOW_PARENT = 'p'	/* the owner of the customer's parent (dealer network) */
} RulePolicy;

typedef struct TextSet
{
	int			n;
	char	  **items;
} TextSet;

typedef struct RuleInfo
{
	int64		id;
	char	   *name;
	int32		priority;
	bool		suggest;
	Oid			relid;			/* InvalidOid = every managed table */
	int64		territory_id;	/* 0 = any */
	TextSet		crops;			/* n < 0: no filter */
	TextSet		zones;			/* crop zones of the winning territory */
	TextSet		tiers;
	TextSet		btypes;
	TextSet		tags;
	char	   *condition;		/* source text, NULL = none */
	char	   *cond_bin;		/* its stored node tree (a cache) */
	char	   *cond_path;		/* the search path it was written under */
	bool		cond_bin_current;	/* cond_bin was written by this server */
	Expr	   *cond_expr;		/* planned condition, NULL = none */
	RuleTarget	target;
	int64		target_rep;
	int64		target_team;
	RulePolicy	policy;
	bool		broken;			/* condition no longer compiles: rule skipped */
	bool		cond_user_code; /* the condition calls code that is not built in */
} RuleInfo;

/* Logical attributes a managed table can map */
typedef enum AllocAttr
{
	ATTR_TIER = 0,
	ATTR_CROP,
	ATTR_BTYPE,
	ATTR_TAGS,
	ATTR_STAGE,
	ATTR_NAME,
	ATTR_PHONE,
	ATTR_CREDIT,
	ATTR_LAST_CONTACT,
	ATTR_EXPECTED_OUTPUT,
	ATTR_PARENT,				/* the key of the parent customer (dealer network) */
	ATTR__COUNT
} AllocAttr;

extern const char *const alloc_attr_names[ATTR__COUNT];

typedef struct ManagedTable
{
	Oid			relid;			/* the managed table (the root of a partitioned one) */
	Oid			rel_here;		/* the relation this entry reads tuples of: relid, or a partition */
	bool		partitioned;	/* relid is a partitioned table */
	bool		key_global_check;	/* partitioned, key unique only with the partition columns:
									 * the engine checks it across partitions */
	int			nleaves;		/* root of a partitioned table: its leaf partitions, -1 = not read */
	Oid		   *leaves;
	Oid			owner;			/* the table's owner: rule conditions run as this role */
	int32		id;
	char	   *name;
	char	   *table_name;		/* managed_table.table_name, as events record it */
	char		reevaluate;		/* 'u' unless_pinned, 'a' always, 'n' never */
	char		dup_exact;		/* duplicate actions: 'o' off, 'w' warn, 'd' dispute, 'b' block */
	char		dup_fuzzy;
	double		name_similarity;	/* pg_trgm similarity threshold of the fuzzy match */
	double		within_m;		/* fuzzy match radius in metres, 0 = anywhere */
	AttrNumber	key_att;
	Oid			key_index;		/* the unique index on the key column */
	RegProcedure key_eq;		/* its equality procedure */
	Oid			key_coll;		/* its collation (the search must use the index's order) */
	AttrNumber	loc_att;		/* InvalidAttrNumber = none */
	char		loc_datum;		/* AllocDatum (datum.h) of the location column */
	AttrNumber	owner_att;
	Oid			owner_type;
	AttrNumber	attr_att[ATTR__COUNT];
	FmgrInfo	key_out;
	FmgrInfo	attr_out[ATTR__COUNT];
	TupleDesc	tupdesc;
	/* rules that apply to this table, in evaluation order */
	int			nrules;
	RuleInfo  **rules;
	ExprState **cond_state;		/* per rule, NULL = no condition */
	ExprContext *econtext;
	TupleTableSlot *slot;
} ManagedTable;

extern TextSet textset_from_datum(Datum d, bool isnull);
extern ManagedTable *config_get_table(Oid relid, bool missing_ok);
extern ManagedTable *config_lookup(Oid relid, bool missing_ok);
extern ManagedTable *config_get_root(ManagedTable *mt);
extern int	config_leaves(ManagedTable *mt, Oid **leaves);

/* ---------- partition.c: partitioned customer tables ---------- */
extern bool part_find_key(ManagedTable *mt, Datum key, int64 *owner, Oid *found_in);
extern void part_check_key_unique(ManagedTable *mt, HeapTuple tup);
extern void part_note_update(ManagedTable *mt, HeapTuple oldtup);
extern bool part_insert_is_move(ManagedTable *mt, HeapTuple tup);
extern bool part_take_moved(ManagedTable *mt, HeapTuple tup, bool deleting);
extern void part_record_truncate(ManagedTable *mt);
extern bool part_after_insert(ManagedTable *mt, HeapTuple tup);
extern int	alloc_decision_depth;
extern RepInfo *config_get_rep(int64 id);
extern TeamInfo *config_get_team(int64 id);
extern RuleInfo *config_get_rule(int64 id);
extern void config_invalidate(void);
extern bool config_min_share(void);
extern void config_prepare(void);
extern bool config_known_relid(Oid relid);

/* ---------- rules.c: SQL conditions ---------- */

extern char *rules_condition_stamp(void);
extern bool rules_have_stamp(void);
extern bool rules_stamp_current(bool have_stamp, const char *stamp);
extern Node *rules_compile_condition(Oid relid, const char *condition, const char *rule_name,
									 const char *search_path);

/* ---------- assign.c: the decision engine ---------- */

typedef struct Customer
{
	char	   *key;
	char	   *attr[ATTR__COUNT];	/* text values (tags: NULL, see tags) */
	int			ntags;
	char	  **tags;
	AllocPoint	loc;
	ManagedTable *mt;			/* the table the customer is read from */
	bool		has_parent;		/* parent: the parent customer's key (a dealer network) */
	Datum		parent;			/* ... as a value of the key column's type (points into the row) */
	int64		current_owner;	/* re-evaluation: the owner now (holds a slot), else 0 */
	int64		suggested_rep;	/* rep of its pending suggestion (holds a reserved slot), else 0 */
	int			ncooling;		/* former owners inside their cooldown after release/recycle */
	int64	   *cooling;
	int			nterr;
	TerritoryInfo *terr[ALLOC_MAX_HITS];
} Customer;

/* The winning territory of a customer (first hit: priority, lowest id), 0 = none */
static inline int64
customer_territory_id(const Customer *c)
{
	return c->nterr > 0 ? c->terr[0]->id : 0;
}

typedef enum DecisionKind
{
	DECISION_ASSIGN = 'a',		/* owner set by a rule */
	DECISION_SUGGEST = 's',		/* owner left NULL, suggestion queued */
	DECISION_POOL = 'p',		/* public pool */
	DECISION_MANUAL = 'm'		/* owner given by a person */
} DecisionKind;

typedef struct Decision
{
	DecisionKind kind;
	int64		rep_id;			/* owner (assign/manual) or suggested rep */
	int64		team_id;
	int64		territory_id;
	int64		rule_id;
	bool		reserved;		/* a holdings slot was taken for rep_id */
	char	   *reason;
} Decision;

/* Trace for explain(); NULL on the hot path */
typedef struct Trace
{
	StringInfoData rules;		/* JSON array body */
	StringInfoData cur;			/* candidates of the current rule */
	int			nrules;
	int			ncand;
} Trace;

extern void assign_read_customer(ManagedTable *mt, HeapTuple tuple, Customer *c, bool hypothetical);
extern void assign_decide(ManagedTable *mt, HeapTuple tuple, Customer *c, Decision *d,
						  bool dry_run, Trace *tr);
extern void assign_check_manual(ManagedTable *mt, Customer *c, int64 rep_id, bool dry_run);
extern void assign_read_history(ManagedTable *mt, Customer *c);
extern void assign_use_suggested_slot(ManagedTable *mt, Customer *c, int64 rep_id);

/* ---------- state.c: a customer's pin and open dispute (the UPDATE path) ---------- */
extern bool registry_pinned(ManagedTable *mt, const char *key);
extern int64 open_dispute_id(ManagedTable *mt, const char *key);

/* ---------- roundrobin.c: whose turn it is ---------- */
extern HTAB *assign_dry_rr;		/* a realignment preview's simulated cursors (NULL otherwise) */
extern void assign_dry_rr_served(int64 team_id, int64 rep_id);
extern int64 rr_last(int64 team_id, bool lock);
extern void rr_served(int64 team_id, int64 rep_id, bool out_of_turn);
extern int	rr_new_rep_first(int64 team_id, const int64 *cand_ids, int n, bool dry_run, const char **note);

/* ---------- network.c: dealer networks (follow_parent) ---------- */
extern void network_read_parent(ManagedTable *mt, HeapTuple tuple, Customer *c);
extern const char *network_parent_key(Customer *c);
extern int64 network_parent_owner(Customer *c, Trace *tr, const char **why);

#include "capacity.h"

/* ---------- frame.c: the per-statement batch (more in frame.h) ---------- */

/* A count per rep (a statement's slots, or a counter value read) */
typedef struct RepCount
{
	int64		rep_id;			/* hash key */
	int32		n;
	int32		reserved;		/* loads cache: slots reserved by pending suggestions */
} RepCount;

extern void frames_add_reservation(int64 rep_id, int32 n);
extern int32 frames_pending(int64 rep_id);
extern HTAB *frames_load_cache(void);

/* ---------- duplicates.c: duplicate detection ---------- */

typedef struct DupMatch
{
	bool		registered;		/* the identity was (re)registered */
	char		action;			/* 'w' warn, 'd' dispute, 'b' block */
	const char *match;			/* credit_code, phone, name */
	char	   *other_key;
	char	   *value;
	double		similarity;
	char	   *owner;			/* description of the other customer's holder */
	char	   *since;
	bool		redact;			/* the writer may not see the other customer */
	bool		other_rep;		/* ... which another rep holds */
} DupMatch;

extern bool dup_check(ManagedTable *mt, Customer *c, DupMatch *m, bool new_row);
extern const char *dup_match_words(const char *match);
extern const char *dup_hidden_holder(DupMatch *m);

/* ---------- audit.c: events that survive a refusal ---------- */
extern void alloc_audit_init(void);
extern void alloc_duplicate_blocked_event(ManagedTable *mt, const char *key, DupMatch *m);

/* ---------- identity.c ---------- */
extern Datum allocation_normalize_name(PG_FUNCTION_ARGS);
extern Datum allocation_normalize_phone(PG_FUNCTION_ARGS);
extern Datum allocation_credit_code_is_valid(PG_FUNCTION_ARGS);
extern char *credit_code_normalize(const char *code);
extern const char *name_entity(const char *norm);
extern void name_terms_relcache(Oid relid);
extern void name_terms_invalidate(void);

/* ---------- writer.c: direct row writes (state exceptions, events) ---------- */
typedef struct RowWriter RowWriter;
extern RowWriter *writer_open(Oid relid, int nfk, const char *allowed_stmt_trigger,
							  const char *const *filled);
extern Oid	writer_identity_seq(RowWriter *w, const char *name);
extern MemoryContext writer_row_context(RowWriter *w);
extern void writer_add(RowWriter *w, Datum *values, bool *isnull);
extern bool writer_insert_speculative(RowWriter *w, Datum *values, bool *isnull);
extern Relation writer_relation(RowWriter *w);
extern void writer_defer_hash_index(RowWriter *w);
extern void writer_trust_checks(RowWriter *w, const char *const *names);
extern void writer_close(RowWriter *w);
extern int64 writer_nextval(Oid seqid);
typedef enum RowLockResult
{
	ROWLOCK_OK,					/* found and locked (the locked version is in the slot) */
	ROWLOCK_NONE,				/* no such row (or deleted, or changed by this command) */
	ROWLOCK_BUSY				/* locked by another transaction, and not waited for */
} RowLockResult;
extern RowLockResult writer_lock_row(Relation rel, Relation ix, Datum key, RegProcedure eqproc,
									 Snapshot snap, LockTupleMode mode, bool wait, TupleTableSlot *slot);
extern bool writer_can_update(RowWriter *w, int nfk);
extern void writer_update(RowWriter *w, TupleTableSlot *slot, Datum *values, bool *isnull);

/* ---------- onconflict.c: whether an INSERT ... ON CONFLICT may be running ---------- */
extern void onconflict_init(void);
extern bool onconflict_possible(void);

/* ---------- realign.c: realignment preview and moves ---------- */
extern bool realign_quiet;
extern void realign_xact_end(void);

/* ---------- json helpers (explain.c) ---------- */
extern void json_str_or_null(StringInfo buf, const char *s);

/* SQLSTATEs of the extension (class LA) */
#define ERRCODE_ALLOC_UNKNOWN_REP		MAKE_SQLSTATE('L','A','0','2','0')
#define ERRCODE_ALLOC_REP_INACTIVE		MAKE_SQLSTATE('L','A','0','2','1')
#define ERRCODE_ALLOC_REP_AT_CAPACITY	MAKE_SQLSTATE('L','A','0','2','2')
#define ERRCODE_ALLOC_EXCLUSIVE			MAKE_SQLSTATE('L','A','0','2','3')
#define ERRCODE_ALLOC_REP_OWNER_UPDATE	MAKE_SQLSTATE('L','A','0','2','6')
#define ERRCODE_ALLOC_OWNER_OVERRIDDEN	MAKE_SQLSTATE('L','A','0','2','7')
#define ERRCODE_ALLOC_KEY_CHANGED		MAKE_SQLSTATE('L','A','0','2','4')
/* internal: a realignment batch's UPDATE reached its rows out of the plan's order (the caller falls back) */
#define ERRCODE_ALLOC_REALIGN_ORDER		MAKE_SQLSTATE('L','A','0','R','8')
#define ERRCODE_ALLOC_BAD_CONDITION		MAKE_SQLSTATE('L','A','0','3','0')
#define ERRCODE_ALLOC_COND_NOT_BOOLEAN	MAKE_SQLSTATE('L','A','0','3','1')
#define ERRCODE_ALLOC_COND_VOLATILE		MAKE_SQLSTATE('L','A','0','3','2')
#define ERRCODE_ALLOC_COND_SUBQUERY		MAKE_SQLSTATE('L','A','0','3','3')
#define ERRCODE_ALLOC_UNKNOWN_SRID		MAKE_SQLSTATE('L','A','0','4','0')
#define ERRCODE_ALLOC_NOT_POINT			MAKE_SQLSTATE('L','A','0','4','1')
#define ERRCODE_ALLOC_NOT_MANAGED		MAKE_SQLSTATE('L','A','0','1','2')
#define ERRCODE_ALLOC_CUSTOMER_NOT_FOUND	MAKE_SQLSTATE('L','A','0','6','2')
#define ERRCODE_ALLOC_BAD_ROW			MAKE_SQLSTATE('L','A','0','6','3')
#define ERRCODE_ALLOC_DUPLICATE			MAKE_SQLSTATE('L','A','0','7','0')
#define ERRCODE_ALLOC_DUPLICATE_FUZZY	MAKE_SQLSTATE('L','A','0','7','1')
#define ERRCODE_ALLOC_NOT_A_REP			MAKE_SQLSTATE('L','A','0','8','1')
#define ERRCODE_ALLOC_UNDER_DISPUTE		MAKE_SQLSTATE('L','A','0','D','0')

#endif							/* ALLOCATION_H */
