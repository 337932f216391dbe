/*
 * audit.c
 *		Audit events that must outlive the transaction that refused something.
 *
 * A blocked duplicate raises an ERROR, which rolls back everything the
 * transaction wrote -- including an event row.  Such events are written by
 * a background worker in its own transaction (an autonomous write), with a
 * bound on the workers:
 *
 * - With shared_preload_libraries: a queue in shared memory (AQ_SLOTS
 *   events) and at most one writer per database (at most AQ_WRITERS at
 *   once).  The backend copies the event into the queue and wakes its
 *   database's writer, starting one if there is none; the writer inserts the
 *   queued events in batches, one transaction each, and leaves after a
 *   second with nothing to do.  A slot is freed only after its event is
 *   committed; a batch that fails is written again event by event, and an
 *   event that fails alone is dropped with a WARNING that logs it.  One
 *   database holds at most half the queue; a full queue makes the refusing
 *   backend wait (up to 10 s) for room.
 * - Without it: one short-lived worker per event (there is no shared state
 *   to queue in).  The refusing backend first takes one of
 *   AQ_UNSHARED_WORKERS cluster-wide advisory locks and holds it until its
 *   worker is done, so at most that many run at once, and waits for its
 *   event to be written (up to 10 s).
 *
 * When an event cannot be handed over at all, it goes to the server log
 * with a WARNING.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/backend_status.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "allocation.h"

#define AUDIT_FIELDS 6			/* actor, kind, table_name, key, reason, detail */

typedef struct AuditHeader
{
	Oid			dbid;
	Oid			userid;
	int32		managed_id;
	Size		len[AUDIT_FIELDS];
	/* the strings follow, each NUL-terminated */
} AuditHeader;

#define AQ_SLOTS 1024
#define AQ_DATA 2000			/* the fields' bytes, NUL-terminated each */
#define AQ_WRITERS 8
#define AQ_BATCH 64
#define AQ_UNSHARED_WORKERS 2
#define AQ_WAIT_MS 10000
#define AQ_IDLE_MS 1000
#define AQ_STARTING_MS 10000	/* a writer that never came up is given up after this */
#define AUDIT_LOCK_KEY 0x616c6c6f	/* "allo": advisory lock keys of the unshared writers */
#define AUDIT_LOCK_SPACE 0x4C42	/* the fourth advisory lock key field: not a user lock (1, 2) */

typedef enum AQSlotState
{
	AQ_FREE = 0,
	AQ_QUEUED,
	AQ_WRITING
} AQSlotState;

typedef struct AQSlot
{
	AQSlotState state;
	uint64		seq;			/* the order events are written in */
	Oid			dbid;
	Oid			userid;
	int32		managed_id;
	int			writer;			/* writers[] index while AQ_WRITING */
	uint16		len[AUDIT_FIELDS];
	char		data[AQ_DATA];
} AQSlot;

typedef struct AQWriter
{
	Oid			dbid;			/* InvalidOid = free entry */
	int			pgprocno;		/* -1 while starting */
	TimestampTz since;
} AQWriter;

typedef struct AQState
{
	LWLock	   *lock;
	uint64		next_seq;
	AQWriter	writers[AQ_WRITERS];
	AQSlot		slots[AQ_SLOTS];
} AQState;

static AQState *aq = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
aq_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(AQState)));
	RequestNamedLWLockTranche("allocation_audit_queue", 1);
}

static void
aq_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	aq = ShmemInitStruct("allocation_audit_queue", sizeof(AQState), &found);
	if (!found)
	{
		memset(aq, 0, sizeof(AQState));
		aq->lock = &(GetNamedLWLockTranche("allocation_audit_queue"))->lock;
		aq->next_seq = 1;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Called by _PG_init: the queue exists only when the library is preloaded */
void
alloc_audit_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = aq_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = aq_shmem_startup;
}

/* Under the queue's lock: frees writer entries whose worker never came up (it failed to connect) */
static void
free_stale_writers(void)
{
	int			w;
	TimestampTz now = GetCurrentTimestamp();

	for (w = 0; w < AQ_WRITERS; w++)
		if (OidIsValid(aq->writers[w].dbid) && aq->writers[w].pgprocno < 0 &&
			TimestampDifferenceExceeds(aq->writers[w].since, now, AQ_STARTING_MS))
			aq->writers[w].dbid = InvalidOid;
}

/*
 * A short wait of a refusing backend; false once AQ_WAIT_MS have passed
 * since start.  A cancel (statement_timeout, lock_timeout) is held off, so
 * that the refusal still ends with its own SQLSTATE; a termination is not.
 */
static bool
pause_until(TimestampTz start, long ms)
{
	if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), AQ_WAIT_MS))
		return false;
	HOLD_CANCEL_INTERRUPTS();
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	RESUME_CANCEL_INTERRUPTS();
	return true;
}

/* An audit writer's description: entry point, argument, who is told when it stops */
static void
writer_spec(BackgroundWorker *worker, const char *function, Datum arg, pid_t notify_pid)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "allocation");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker->bgw_name, BGW_MAXLEN, "allocation audit writer");
	snprintf(worker->bgw_type, BGW_MAXLEN, "allocation audit writer");
	worker->bgw_main_arg = arg;
	worker->bgw_notify_pid = notify_pid;
}

/* Under the queue's lock: a free writer entry taken for dbid (its worker starting), or -1 */
static int
claim_writer_entry(Oid dbid)
{
	int			w;

	for (w = 0; w < AQ_WRITERS; w++)
		if (!OidIsValid(aq->writers[w].dbid))
		{
			aq->writers[w].dbid = dbid;
			aq->writers[w].pgprocno = -1;
			aq->writers[w].since = GetCurrentTimestamp();
			return w;
		}
	return -1;
}

/*
 * Starts the writer of a database whose entry was claimed; when no worker
 * slot is free, gives the entry back (the events stay queued) and says false
 */
static bool
start_writer(Oid dbid, Oid userid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	int			w;

	writer_spec(&worker, "allocation_audit_queue_writer", ObjectIdGetDatum(dbid), 0);
	memcpy(worker.bgw_extra, &userid, sizeof(Oid));
	if (RegisterDynamicBackgroundWorker(&worker, &handle))
		return true;
	LWLockAcquire(aq->lock, LW_EXCLUSIVE);
	for (w = 0; w < AQ_WRITERS; w++)
		if (aq->writers[w].dbid == dbid && aq->writers[w].pgprocno < 0)
			aq->writers[w].dbid = InvalidOid;
	LWLockRelease(aq->lock);
	return false;
}

/*
 * Puts one event in the shared queue and makes sure its database has a
 * writer.  False when it is too large for a slot or the queue stayed full.
 */
static bool
queue_event(int32 managed_id, const char *fields[AUDIT_FIELDS])
{
	Size		need = 0;
	int			i,
				w;
	TimestampTz start_wait = GetCurrentTimestamp();
	Oid			userid;

	for (i = 0; i < AUDIT_FIELDS; i++)
		need += strlen(fields[i] ? fields[i] : "") + 1;
	if (need > AQ_DATA)
		return false;
	alloc_lookup_oids();
	userid = alloc_oids.schema_owner;
	for (;;)
	{
		AQSlot	   *slot = NULL;
		int			start = -1;
		int			wake = -1;
		int			mine = 0;

		LWLockAcquire(aq->lock, LW_EXCLUSIVE);
		free_stale_writers();
		/* a free slot, unless this database holds half the queue (a stuck writer must not starve the others) */
		for (i = 0; i < AQ_SLOTS; i++)
		{
			if (aq->slots[i].state == AQ_FREE)
			{
				if (slot == NULL)
					slot = &aq->slots[i];
			}
			else if (aq->slots[i].dbid == MyDatabaseId)
				mine++;
		}
		if (mine >= AQ_SLOTS / 2)
			slot = NULL;
		if (slot != NULL)
		{
			char	   *p = slot->data;

			slot->state = AQ_QUEUED;
			slot->seq = aq->next_seq++;
			slot->dbid = MyDatabaseId;
			slot->userid = userid;
			slot->managed_id = managed_id;
			for (i = 0; i < AUDIT_FIELDS; i++)
			{
				const char *f = fields[i] ? fields[i] : "";

				slot->len[i] = strlen(f);
				memcpy(p, f, slot->len[i] + 1);
				p += slot->len[i] + 1;
			}
			/* this database's writer, or a free entry to start one in */
			for (w = 0; w < AQ_WRITERS; w++)
				if (aq->writers[w].dbid == MyDatabaseId)
					break;
			if (w < AQ_WRITERS)
				wake = aq->writers[w].pgprocno; /* -1 while starting: it will look */
			else
				start = claim_writer_entry(MyDatabaseId);	/* -1: a writer that finishes starts one */
		}
		LWLockRelease(aq->lock);
		if (slot != NULL)
		{
			if (wake >= 0)
				SetLatch(&ProcGlobal->allProcs[wake].procLatch);
			if (start >= 0 && !start_writer(MyDatabaseId, userid))
				ereport(WARNING,
						(errmsg("blocked duplicate queued for allocation.event, but no background worker could be started to write it now"),
						 errdetail("It stays queued in shared memory until the next blocked duplicate of this database starts a writer (or the server stops)."),
						 errhint("Raise max_worker_processes.")));
			return true;
		}
		/* the queue is full (for this database): wait for the writers to make room */
		if (!pause_until(start_wait, 10))
			return false;
	}
}

static bool event_worker(int32 managed_id, const char *fields[AUDIT_FIELDS]);

static bool
autonomous_event(int32 managed_id, const char *fields[AUDIT_FIELDS])
{
	if (aq != NULL && IsUnderPostmaster && queue_event(managed_id, fields))
		return true;
	return event_worker(managed_id, fields);
}

/* Hands one event to a worker of its own (not preloaded); false when none could be started */
static bool
event_worker(int32 managed_id, const char *fields[AUDIT_FIELDS])
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	dsm_segment *seg;
	AuditHeader *h;
	Size		size = sizeof(AuditHeader);
	char	   *p;
	int			i,
				k;
	LOCKTAG		tag;
	bool		have_slot = false;
	TimestampTz start_wait;

	/*
	 * One of AQ_UNSHARED_WORKERS cluster-wide slots (advisory locks of no
	 * database), held until the worker is done: the bound on audit writers.
	 * The lock goes with the transaction the caller is about to abort.
	 */
	start_wait = GetCurrentTimestamp();
	for (;;)
	{
		for (k = 0; k < AQ_UNSHARED_WORKERS && !have_slot; k++)
		{
			SET_LOCKTAG_ADVISORY(tag, InvalidOid, AUDIT_LOCK_KEY, k, AUDIT_LOCK_SPACE);
			have_slot = LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
		}
		/* after AQ_WAIT_MS without a slot (writers stuck on a lock): start one anyway */
		if (have_slot || !pause_until(start_wait, 5))
			break;
	}
	for (i = 0; i < AUDIT_FIELDS; i++)
		size += strlen(fields[i] ? fields[i] : "") + 1;
	seg = dsm_create(size, DSM_CREATE_NULL_IF_MAXSEGMENTS);
	if (seg == NULL)
	{
		if (have_slot)
			LockRelease(&tag, ExclusiveLock, false);
		return false;
	}
	h = dsm_segment_address(seg);
	alloc_lookup_oids();
	h->dbid = MyDatabaseId;
	h->userid = alloc_oids.schema_owner;
	h->managed_id = managed_id;
	p = (char *) (h + 1);
	for (i = 0; i < AUDIT_FIELDS; i++)
	{
		const char *s = fields[i] ? fields[i] : "";

		h->len[i] = strlen(s);
		memcpy(p, s, h->len[i] + 1);
		p += h->len[i] + 1;
	}
	dsm_pin_segment(seg);

	writer_spec(&worker, "allocation_audit_worker", UInt32GetDatum(dsm_segment_handle(seg)), MyProcPid);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		dsm_unpin_segment(dsm_segment_handle(seg));
		dsm_detach(seg);
		if (have_slot)
			LockRelease(&tag, ExclusiveLock, false);
		return false;
	}
	dsm_detach(seg);
	/* until the worker is done (bounded: it may wait for a lock this transaction holds) */
	start_wait = GetCurrentTimestamp();
	for (;;)
	{
		pid_t		pid;

		if (GetBackgroundWorkerPid(handle, &pid) == BGWH_STOPPED || !pause_until(start_wait, 5))
			break;
	}
	if (have_slot)
		LockRelease(&tag, ExclusiveLock, false);
	return true;
}

/* The event of a duplicate refused by a 'block' action (kept despite the ERROR) */
void
alloc_duplicate_blocked_event(ManagedTable *mt, const char *key, DupMatch *m)
{
	const char *fields[AUDIT_FIELDS];
	StringInfoData detail;

	initStringInfo(&detail);
	appendStringInfoString(&detail, "{\"match\": ");
	json_str_or_null(&detail, m->match);
	appendStringInfoString(&detail, ", \"other_key\": ");
	json_str_or_null(&detail, m->other_key);
	appendStringInfoString(&detail, ", \"value\": ");
	json_str_or_null(&detail, m->value);
	appendStringInfo(&detail, ", \"similarity\": %.4f, \"holder\": ", m->similarity);
	json_str_or_null(&detail, m->owner);
	appendStringInfoChar(&detail, '}');

	fields[0] = GetUserNameFromId(alloc_actor_id(), false);
	fields[1] = "duplicate_blocked";
	fields[2] = mt->name;
	fields[3] = key;
	fields[4] = psprintf("write refused: duplicate of customer %s (%s)", m->other_key, dup_match_words(m->match));
	fields[5] = detail.data;
	if (!autonomous_event(mt->id, fields))
		ereport(WARNING,
				(errmsg("blocked duplicate not recorded in allocation.event: no background worker slot free"),
				 errdetail("Event duplicate_blocked on %s key %s: %s", mt->name, key, detail.data),
				 errhint("Raise max_worker_processes.")));
}

/* Inserts one event (inside a transaction, SPI connected) */
static void
insert_event(int32 managed_id, char *fields[AUDIT_FIELDS])
{
	Oid			types[7] = {TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		vals[7];
	int			i;

	for (i = 0; i < 2; i++)
		vals[i] = CStringGetTextDatum(fields[i]);
	vals[2] = Int32GetDatum(managed_id);
	for (i = 2; i < AUDIT_FIELDS; i++)
		vals[i + 1] = CStringGetTextDatum(fields[i]);
	if (SPI_execute_with_args("INSERT INTO allocation.event (actor, kind, managed_id, table_name, key, reason, detail)"
							  " VALUES ($1, $2, $3, $4, $5, $6, $7::pg_catalog.jsonb)",
							  7, types, vals, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "writing the audit event failed");
}

/* Background worker (not preloaded): writes one event in its own transaction */
PGDLLEXPORT void allocation_audit_worker(Datum arg);
void
allocation_audit_worker(Datum arg)
{
	dsm_handle	handle = DatumGetUInt32(arg);
	dsm_segment *seg;
	AuditHeader h;
	char	   *fields[AUDIT_FIELDS];
	char	   *p;
	int			i;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	CurrentResourceOwner = ResourceOwnerCreate(NULL, "allocation audit writer");
	seg = dsm_attach(handle);
	if (seg == NULL)
		proc_exit(0);
	memcpy(&h, dsm_segment_address(seg), sizeof(h));
	p = (char *) dsm_segment_address(seg) + sizeof(AuditHeader);
	for (i = 0; i < AUDIT_FIELDS; i++)
	{
		fields[i] = pnstrdup(p, h.len[i]);
		p += h.len[i] + 1;
	}
	dsm_unpin_segment(handle);
	dsm_detach(seg);

	BackgroundWorkerInitializeConnectionByOid(h.dbid, h.userid, 0);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "allocation: writing an audit event");
	insert_event(h.managed_id, fields);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}

/* ---------- the queue's writer (preloaded) ---------- */

static int	my_writer = -1;

/* On exit (also after an ERROR): events being written go back to the queue, the entry is freed */
static void
writer_exit(int code, Datum arg)
{
	int			i;

	if (aq == NULL || my_writer < 0)
		return;
	LWLockAcquire(aq->lock, LW_EXCLUSIVE);
	for (i = 0; i < AQ_SLOTS; i++)
		if (aq->slots[i].state == AQ_WRITING && aq->slots[i].writer == my_writer)
			aq->slots[i].state = AQ_QUEUED;
	if (aq->writers[my_writer].dbid == MyDatabaseId)
		aq->writers[my_writer].dbid = InvalidOid;
	LWLockRelease(aq->lock);
	my_writer = -1;
}

/*
 * Takes up to AQ_BATCH of this database's queued events, oldest first
 * (slots marked AQ_WRITING); with none, frees the entry when told to and
 * returns 0.  Also starts a writer for a database whose events wait with no
 * writer (every entry was busy when they were queued).
 */
static int
take_batch(int *taken, bool leave_if_none, Oid *orphan_db, Oid *orphan_user)
{
	int			n = 0;
	int			i,
				w;

	*orphan_db = InvalidOid;
	LWLockAcquire(aq->lock, LW_EXCLUSIVE);
	while (n < AQ_BATCH)
	{
		int			best = -1;

		for (i = 0; i < AQ_SLOTS; i++)
			if (aq->slots[i].state == AQ_QUEUED && aq->slots[i].dbid == MyDatabaseId &&
				(best < 0 || aq->slots[i].seq < aq->slots[best].seq))
				best = i;
		if (best < 0)
			break;
		aq->slots[best].state = AQ_WRITING;
		aq->slots[best].writer = my_writer;
		taken[n++] = best;
	}
	if (n == 0 && leave_if_none)
	{
		aq->writers[my_writer].dbid = InvalidOid;
		my_writer = -1;
		free_stale_writers();
		/* events of a database that found every entry busy */
		for (i = 0; i < AQ_SLOTS && !OidIsValid(*orphan_db); i++)
			if (aq->slots[i].state == AQ_QUEUED)
			{
				for (w = 0; w < AQ_WRITERS; w++)
					if (aq->writers[w].dbid == aq->slots[i].dbid)
						break;
				if (w == AQ_WRITERS && claim_writer_entry(aq->slots[i].dbid) >= 0)
				{
					*orphan_db = aq->slots[i].dbid;
					*orphan_user = aq->slots[i].userid;
				}
			}
	}
	LWLockRelease(aq->lock);
	return n;
}

/* Field i (actor, kind, table_name, key, reason, detail) of a queued event */
static const char *
slot_field(const AQSlot *slot, int i)
{
	const char *p = slot->data;
	int			j;

	for (j = 0; j < i; j++)
		p += slot->len[j] + 1;
	return p;
}

/*
 * Writes the events of slots taken[0..n-1] in one transaction; false (the
 * transaction rolled back, the error logged) when that failed.  The slots
 * are this writer's (AQ_WRITING): read without the lock.
 */
static bool
write_slots(const int *taken, int n, MemoryContext cxt)
{
	volatile bool ok = true;

	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		int			i,
					k;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "allocation: writing queued audit events");
		for (k = 0; k < n; k++)
		{
			AQSlot	   *slot = &aq->slots[taken[k]];
			char	   *fields[AUDIT_FIELDS];

			for (i = 0; i < AUDIT_FIELDS; i++)
				fields[i] = pstrdup(slot_field(slot, i));
			insert_event(slot->managed_id, fields);
		}
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		ok = false;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextSwitchTo(cxt);
	MemoryContextReset(cxt);
	return ok;
}

/* Background worker (preloaded): writes one database's queued events until none come for a second */
PGDLLEXPORT void allocation_audit_queue_writer(Datum arg);
void
allocation_audit_queue_writer(Datum arg)
{
	Oid			dbid = DatumGetObjectId(arg);
	Oid			userid;
	int			taken[AQ_BATCH];
	MemoryContext batch_cxt;
	int			w;

	memcpy(&userid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	/* SIGTERM only sets a flag, honoured at CHECK_FOR_INTERRUPTS (never inside the queue's lock) */
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	if (aq == NULL)
		proc_exit(0);
	BackgroundWorkerInitializeConnectionByOid(dbid, userid, 0);
	LWLockAcquire(aq->lock, LW_EXCLUSIVE);
	for (w = 0; w < AQ_WRITERS; w++)
		if (aq->writers[w].dbid == dbid && aq->writers[w].pgprocno < 0)
			break;
	if (w < AQ_WRITERS)
	{
		aq->writers[w].pgprocno = MyProc->pgprocno;
		my_writer = w;
	}
	LWLockRelease(aq->lock);
	if (my_writer < 0)
		proc_exit(0);			/* another writer serves this database */
	before_shmem_exit(writer_exit, (Datum) 0);
	batch_cxt = AllocSetContextCreate(TopMemoryContext, "allocation audit writer", ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		Oid			orphan_db,
					orphan_user;
		int			n = take_batch(taken, false, &orphan_db, &orphan_user);
		int			k;

		if (n == 0)
		{
			int			rc;

			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, AQ_IDLE_MS, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			if (rc & WL_LATCH_SET)
				continue;
			n = take_batch(taken, true, &orphan_db, &orphan_user);
			if (n == 0)
			{
				if (OidIsValid(orphan_db))
					(void) start_writer(orphan_db, orphan_user);
				proc_exit(0);
			}
		}
		/* the batch in one transaction; after an error, each event alone */
		if (!write_slots(taken, n, batch_cxt))
			for (k = 0; k < n; k++)
				if (!write_slots(&taken[k], 1, batch_cxt))
				{
					AQSlot	   *slot = &aq->slots[taken[k]];

					ereport(WARNING,
							(errmsg("allocation audit writer dropped an event it cannot write"),
							 errdetail("Event %s on %s key %s by %s: %s %s", slot_field(slot, 1), slot_field(slot, 2),
									   slot_field(slot, 3), slot_field(slot, 0), slot_field(slot, 4), slot_field(slot, 5))));
				}
		LWLockAcquire(aq->lock, LW_EXCLUSIVE);
		for (k = 0; k < n; k++)
			aq->slots[taken[k]].state = AQ_FREE;
		LWLockRelease(aq->lock);
	}
}
