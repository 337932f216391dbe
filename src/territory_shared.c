/*
 * territory_shared.c
 *		One territory index per cluster: the registry of builds in dynamic
 *		shared memory, when allocation is in shared_preload_libraries.
 *
 * A small fixed struct in the main shared memory (named "allocation") holds
 * the handle of one DSA area and a table of builds.  A build is keyed by
 * (database, territory table, key, count): the key hashes the identity of
 * every territory row version the builder read (id, xmin, ctid), so a build
 * is the content of exactly one set of row versions.  A backend uses a build
 * only when its own snapshot read the same row versions -- never an older
 * nor a newer shape than the one it sees (territory_index.c).
 *
 * Life of a build: the first backend that needs a key takes a heavyweight
 * lock on (database, territory table) -- a second one waits there, then
 * finds the build -- lays the polygons out in the area, and publishes it;
 * publishing supersedes the database's other builds.  A backend pins the
 * build it uses for the rest of its transaction (an atomic counter), and a
 * superseded build is freed when its last pin goes.  An idle backend pins
 * nothing: at its next transaction it re-pins its build if it still exists
 * (checked by slot and generation), or reads the territories again.  A
 * build that fails half-way is freed at the end of the transaction, and was
 * never visible.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/memutils.h"

#include "allocation.h"
#include "territory_shared.h"

#define TSHARED_SLOTS 16
/* locktag_field4 of the build lock: the SQL advisory lock functions use 1 and 2 */
#define TSHARED_LOCK_CLASS 0x414C

typedef struct TSlot
{
	bool		used;
	bool		superseded;		/* freed when its last pin goes */
	Oid			dbid;
	Oid			relid;
	uint64		key;
	int32		n;
	uint64		seq;			/* generation: a reused slot gets a new one */
	dsa_pointer build;
	Size		bytes;
	double		build_ms;
	pg_atomic_uint32 pins;		/* transactions using the build now */
	pg_atomic_uint32 users;		/* backends whose index it is */
} TSlot;

typedef struct TSharedState
{
	LWLock	   *lock;			/* the slots and the area handle */
	int			dsa_tranche;
	bool		have_area;
	dsa_handle	handle;
	uint64		next_seq;
	uint64		published;		/* builds published since the server started */
	TSlot		slots[TSHARED_SLOTS];
} TSharedState;

static TSharedState *state = NULL;
static dsa_area *area = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static TSharedRef pinned = {-1, 0};
static TSharedRef attached = {-1, 0};
static dsa_pointer pending = InvalidDsaPointer;

/* Asks the postmaster for the registry and its lock */
static void
tshared_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(TSharedState)));
	RequestNamedLWLockTranche("allocation", 1);
}

/* Creates (or finds, after a restart of the backends) the registry */
static void
tshared_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	state = ShmemInitStruct("allocation", sizeof(TSharedState), &found);
	if (!found)
	{
		int			i;

		memset(state, 0, sizeof(TSharedState));
		state->lock = &(GetNamedLWLockTranche("allocation"))->lock;
		state->dsa_tranche = LWLockNewTrancheId();
		state->next_seq = 1;
		for (i = 0; i < TSHARED_SLOTS; i++)
		{
			pg_atomic_init_u32(&state->slots[i].pins, 0);
			pg_atomic_init_u32(&state->slots[i].users, 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Called by _PG_init: wires the hooks when loaded by shared_preload_libraries */
void
tshared_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = tshared_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = tshared_shmem_startup;
}

/* Whether the shared index can be used (the library was preloaded) */
bool
tshared_available(void)
{
	return state != NULL && IsUnderPostmaster;
}

/* Frees every chunk of a (possibly partial) build */
void
tshared_free_build(dsa_area *a, dsa_pointer dp)
{
	SharedBuild *b;

	if (!DsaPointerIsValid(dp))
		return;
	b = dsa_get_address(a, dp);
	if (DsaPointerIsValid(b->entries))
	{
		GridEntry  *e = dsa_get_address(a, b->entries);
		int			i;

		for (i = 0; i < b->n; i++)
			if (DsaPointerIsValid(e[i].blob))
				dsa_free(a, e[i].blob);
		dsa_free(a, b->entries);
	}
	if (DsaPointerIsValid(b->ids))
		dsa_free(a, b->ids);
	if (DsaPointerIsValid(b->cell_start))
		dsa_free(a, b->cell_start);
	if (DsaPointerIsValid(b->cell_items))
		dsa_free(a, b->cell_items);
	dsa_free(a, dp);
}

/* Frees a slot's build; caller holds the lock exclusively and the slot is unpinned */
static void
slot_free(TSlot *s)
{
	tshared_free_build(area, s->build);
	s->build = InvalidDsaPointer;
	s->used = false;
	s->superseded = false;
	pg_atomic_write_u32(&s->users, 0);
}

/* Drops this backend's pin; the last pin of a superseded build frees it */
static void
unpin(bool may_free)
{
	TSlot	   *s;

	if (pinned.slot < 0)
		return;
	s = &state->slots[pinned.slot];
	if (pg_atomic_sub_fetch_u32(&s->pins, 1) == 0 && may_free && s->superseded)
	{
		LWLockAcquire(state->lock, LW_EXCLUSIVE);
		if (s->used && s->seq == pinned.seq && s->superseded && pg_atomic_read_u32(&s->pins) == 0)
			slot_free(s);
		LWLockRelease(state->lock);
	}
	pinned.slot = -1;
}

/* This backend's index no longer is the attached build */
static void
detach_users(void)
{
	TSlot	   *s;

	if (attached.slot < 0)
		return;
	s = &state->slots[attached.slot];
	LWLockAcquire(state->lock, LW_SHARED);
	if (s->used && s->seq == attached.seq)
		pg_atomic_sub_fetch_u32(&s->users, 1);
	LWLockRelease(state->lock);
	attached.slot = -1;
}

/* Backend exit: give back the pin and the attachment (no freeing now) */
static void
tshared_on_exit(int code, Datum arg)
{
	unpin(false);
	detach_users();
}

/* The DSA area, created by the first backend that needs it, attached by the others */
dsa_area *
tshared_area(void)
{
	MemoryContext old;

	if (area != NULL)
		return area;
	LWLockRegisterTranche(state->dsa_tranche, "allocation_territory_index");
	old = MemoryContextSwitchTo(TopMemoryContext);
	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	PG_TRY();
	{
		if (!state->have_area)
		{
			dsa_area   *a = dsa_create(state->dsa_tranche);

			/* the area outlives its creator; this backend's mapping outlives the transaction */
			dsa_pin(a);
			dsa_pin_mapping(a);
			state->handle = dsa_get_handle(a);
			state->have_area = true;
			area = a;
		}
		else
		{
			area = dsa_attach(state->handle);
			dsa_pin_mapping(area);
		}
	}
	PG_FINALLY();
	{
		LWLockRelease(state->lock);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	before_shmem_exit(tshared_on_exit, (Datum) 0);
	return area;
}

/* Pins slot i for this transaction and makes it this backend's build; lock held */
static void
pin_and_attach(int i, TSharedRef *ref)
{
	TSlot	   *s = &state->slots[i];

	pg_atomic_add_fetch_u32(&s->pins, 1);
	pg_atomic_add_fetch_u32(&s->users, 1);
	ref->slot = i;
	ref->seq = s->seq;
	pinned = *ref;
	attached = *ref;
}

/*
 * The build of exactly these row versions, pinned for this transaction and
 * made this backend's; NULL when there is none.
 */
SharedBuild *
tshared_find(Oid relid, uint64 key, int32 n, TSharedRef *ref)
{
	dsa_area   *a = tshared_area();
	SharedBuild *b = NULL;
	int			i;

	unpin(true);
	detach_users();
	ref->slot = -1;
	LWLockAcquire(state->lock, LW_SHARED);
	for (i = 0; i < TSHARED_SLOTS; i++)
	{
		TSlot	   *s = &state->slots[i];

		if (s->used && s->dbid == MyDatabaseId && s->relid == relid && s->key == key && s->n == n)
		{
			pin_and_attach(i, ref);
			b = dsa_get_address(a, s->build);
			break;
		}
	}
	LWLockRelease(state->lock);
	return b;
}

/*
 * Makes a complete build visible under its key, pinned and attached; the
 * database's other builds are superseded.  false when every slot is pinned
 * (the caller frees its build and keeps its own copy).
 */
bool
tshared_publish(Oid relid, uint64 key, int32 n, dsa_pointer build, double build_ms,
				TSharedRef *ref, SharedBuild **found)
{
	int			i,
				free_slot = -1;
	uint64		oldest = PG_UINT64_MAX;
	TSlot	   *s;

	unpin(true);
	detach_users();
	*found = NULL;
	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	for (i = 0; i < TSHARED_SLOTS; i++)
	{
		s = &state->slots[i];
		if (!s->used || s->dbid != MyDatabaseId)
			continue;
		if (s->relid == relid && s->key == key && s->n == n)
		{
			/* built meanwhile by another backend (cannot happen under the build lock) */
			pin_and_attach(i, ref);
			*found = dsa_get_address(area, s->build);
			LWLockRelease(state->lock);
			tshared_free_build(area, build);
			return true;
		}
		if (pg_atomic_read_u32(&s->pins) == 0)
			slot_free(s);
		else
			s->superseded = true;
	}
	for (i = 0; i < TSHARED_SLOTS && free_slot < 0; i++)
		if (!state->slots[i].used)
			free_slot = i;
	/* full: evict the oldest unpinned build of another database */
	for (i = 0; i < TSHARED_SLOTS && free_slot < 0; i++)
	{
		s = &state->slots[i];
		if (pg_atomic_read_u32(&s->pins) == 0 && s->seq < oldest)
			oldest = s->seq;
	}
	for (i = 0; i < TSHARED_SLOTS && free_slot < 0 && oldest != PG_UINT64_MAX; i++)
		if (state->slots[i].seq == oldest)
		{
			slot_free(&state->slots[i]);
			free_slot = i;
		}
	if (free_slot < 0)
	{
		LWLockRelease(state->lock);
		return false;
	}
	s = &state->slots[free_slot];
	s->used = true;
	s->superseded = false;
	s->dbid = MyDatabaseId;
	s->relid = relid;
	s->key = key;
	s->n = n;
	s->seq = state->next_seq++;
	state->published++;
	s->build = build;
	s->bytes = ((SharedBuild *) dsa_get_address(area, build))->bytes;
	s->build_ms = build_ms;
	pg_atomic_write_u32(&s->pins, 0);
	pg_atomic_write_u32(&s->users, 0);
	pin_and_attach(free_slot, ref);
	LWLockRelease(state->lock);
	return true;
}

/* Pins this backend's build for the transaction; false if it was freed meanwhile */
bool
tshared_pin(const TSharedRef *ref)
{
	TSlot	   *s;
	bool		ok = false;

	if (ref->slot < 0)
		return false;
	if (pinned.slot == ref->slot && pinned.seq == ref->seq)
		return true;
	unpin(true);
	s = &state->slots[ref->slot];
	LWLockAcquire(state->lock, LW_SHARED);
	if (s->used && s->seq == ref->seq)
	{
		pg_atomic_add_fetch_u32(&s->pins, 1);
		pinned = *ref;
		ok = true;
	}
	LWLockRelease(state->lock);
	return ok;
}

/* This backend stops using the build (its index went private or indexed) */
void
tshared_detach(TSharedRef *ref)
{
	if (state == NULL)
		return;
	if (pinned.slot == ref->slot && pinned.seq == ref->seq)
		unpin(true);
	if (attached.slot == ref->slot && attached.seq == ref->seq)
		detach_users();
	ref->slot = -1;
}

/* A half-built build, freed at the end of the transaction unless published */
void
tshared_set_pending(dsa_pointer dp)
{
	pending = dp;
}

/* End of transaction: drop the pin; free a build that failed half-way */
void
tshared_xact_end(void)
{
	if (state == NULL || area == NULL)
		return;
	unpin(true);
	if (DsaPointerIsValid(pending))
	{
		tshared_free_build(area, pending);
		pending = InvalidDsaPointer;
	}
}

/* Serializes builds of one database's territories (released at transaction end at the latest) */
void
tshared_lock_build(Oid relid)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, relid, 0, TSHARED_LOCK_CLASS);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/* Lets the next builder in */
void
tshared_unlock_build(Oid relid)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, relid, 0, TSHARED_LOCK_CLASS);
	(void) LockRelease(&tag, ExclusiveLock, false);
}

/* Counters of the registry for cache_stats() */
void
tshared_stats(const TSharedRef *ref, TSharedStats *st)
{
	int			i;

	memset(st, 0, sizeof(TSharedStats));
	if (state == NULL)
		return;
	LWLockAcquire(state->lock, LW_SHARED);
	st->published = state->published;
	for (i = 0; i < TSHARED_SLOTS; i++)
	{
		TSlot	   *s = &state->slots[i];

		if (!s->used)
			continue;
		st->area_bytes += s->bytes;
		if (s->dbid == MyDatabaseId)
			st->builds++;
	}
	if (ref->slot >= 0 && state->slots[ref->slot].used && state->slots[ref->slot].seq == ref->seq)
	{
		st->users = pg_atomic_read_u32(&state->slots[ref->slot].users);
		st->pins = pg_atomic_read_u32(&state->slots[ref->slot].pins);
	}
	LWLockRelease(state->lock);
}
