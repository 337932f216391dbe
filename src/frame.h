/*
 * frame.h
 *		The per-statement batch ("frame") of allocation decisions: one entry
 *		per customer row a statement touched, confirmed by the AFTER row
 *		trigger and written when the statement ends (record.c).
 *
 * Layering: frame.c is below the trigger (trigger.c), the recording
 * (record.c), capacity and decisions (assign.c) and duplicate detection;
 * it calls none of them.
 */
#ifndef ALLOCATION_FRAME_H
#define ALLOCATION_FRAME_H

#include "access/genam.h"
#include "utils/hsearch.h"
#include "utils/resowner.h"

#include "allocation.h"

typedef enum EntryOp
{
	OP_INSERT = 'i',
	OP_UPDATE = 'u',
	OP_REFRESH = 'r',			/* same owner: refresh the state's attribute snapshot */
	OP_DELETE = 'd'
} EntryOp;

typedef struct Entry
{
	EntryOp		op;
	bool		confirmed;
	Oid			relid;
	int32		managed_id;
	char	   *key;
	int64		rep;			/* new owner, 0 = none */
	int64		old_rep;		/* released owner (update/delete), 0 = none */
	int64		suggest;		/* suggested rep, 0 = none */
	int64		team;
	int64		territory;
	int64		rule;
	int64		reserved;		/* rep whose slot this entry took, 0 = none */
	const char *source;
	bool		pinned;
	const char *kind;
	char	   *reason;
	char	   *tier;
	char	   *crop;
	char	   *btype;
	char	   *stage;
	/* duplicate detection */
	bool		identity;		/* this entry (re)registered the customer's identity */
	bool		forget;			/* deleted: drop the customer's identity */
	char		dup_action;		/* 'w' warn, 'd' dispute, 0 = no duplicate */
	const char *dup_match;
	char	   *dup_other;
	char	   *dup_value;
	double		dup_similarity;
	int64		requested;		/* dispute: the owner the write asked for (evidence), 0 = none */
	int64		realign_plan;	/* a realignment's move: the plan (event detail), 0 = none */
	int			next_same;		/* older entry with the same key hash, -1 = none */
} Entry;

/* Entries by key hash, so AFTER ROW confirmations find theirs in O(1) */
typedef struct KeySlot
{
	uint32		hash;			/* hash key */
	int			newest;			/* newest entry index with this hash */
} KeySlot;


/* The customer table's key index, kept open for the rows of one statement */
typedef struct KeyProbe
{
	Oid			index;			/* InvalidOid = not open */
	ResourceOwner owner;		/* the resource owner it was opened under */
	Relation	idx;
	IndexScanDesc scan;
	TupleTableSlot *slot;
} KeyProbe;

/* Engine tables written row by row during the statement, kept open */
#define FRAME_WRITERS 4

typedef struct Frame
{
	struct Frame *prev;
	MemoryContext cxt;			/* the frame's own memory, freed after the flush */
	CommandId	cid;			/* command id of the statement (query) */
	Oid			actor;			/* whom the statement's events name */
	int			refs;			/* statement triggers of that query still to end */
	HTAB	   *reps;			/* RepCount by rep id, NULL until a slot is taken */
	HTAB	   *bykey;			/* KeySlot by key hash */
	HTAB	   *loads;			/* RepCount: holdings read during this statement */
	int			nest_level;
	int			n;
	int			cap;
	int			cursor;			/* next entry expected to be confirmed */
	Entry	   *entries;
	KeyProbe	probe;
	int			nwriters;
	Oid			writer_rel[FRAME_WRITERS];
	RowWriter  *writers[FRAME_WRITERS];
	ResourceOwner writer_owner;
	bool		written_direct; /* flushed by the C writer, not _record_batch */
	void	   *part_probes;	/* partition.c: key probes of the partitions, kept open */
} Frame;

extern void part_probes_close(Frame *f);

/* the innermost open frame (NULL outside a managed statement) */
extern Frame *frames;

#define frame_cxt (frames->cxt)

extern void frames_reset_all(void);
extern void push_frame(void);
extern void frames_add_reservation_in(Frame *f, int64 rep_id, int32 n);
extern uint32 key_hash(Oid relid, const char *key);
extern Entry *new_entry(EntryOp op, ManagedTable *mt, const char *key);
extern void frame_index_entry(Frame *f, int i);
extern HTAB *frame_keys(Frame *f);
extern int	frame_newest_entry(Frame *f, Oid relid, const char *key);
extern char *frame_strdup(const char *s);
extern bool key_exists(ManagedTable *mt, Relation heap, HeapTuple tup);
extern void probe_close(Frame *f);
extern RowWriter *frame_writer(Oid relid, const char *const *filled, bool *usable);

#endif							/* ALLOCATION_FRAME_H */
