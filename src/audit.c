/*
 * audit.c
 *		Audit events that must outlive the transaction that refused something.
 *
 * A blocked duplicate raises an ERROR, which rolls back everything the
 * transaction wrote -- including an event row.  Such events are handed to a
 * short-lived background worker that writes them in its own transaction
 * (an autonomous write): the message travels in a pinned dynamic shared
 * memory segment, which the worker unpins once it has copied it.  When no
 * worker slot is free the event goes to the server log with a WARNING.
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

/* Hands one event to a background worker; false when none could be started */
static bool
autonomous_event(int32 managed_id, const char *fields[AUDIT_FIELDS])
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	dsm_segment *seg;
	AuditHeader *h;
	Size		size = sizeof(AuditHeader);
	char	   *p;
	int			i;

	for (i = 0; i < AUDIT_FIELDS; i++)
		size += strlen(fields[i] ? fields[i] : "") + 1;
	seg = dsm_create(size, DSM_CREATE_NULL_IF_MAXSEGMENTS);
	if (seg == NULL)
		return false;
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

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "allocation");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "allocation_audit_worker");
	snprintf(worker.bgw_name, BGW_MAXLEN, "allocation audit writer");
	snprintf(worker.bgw_type, BGW_MAXLEN, "allocation audit writer");
	worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
	worker.bgw_notify_pid = 0;
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		dsm_unpin_segment(dsm_segment_handle(seg));
		dsm_detach(seg);
		return false;
	}
	dsm_detach(seg);
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

/* Background worker: writes one event in its own transaction */
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
	Oid			types[7] = {TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		vals[7];

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
	for (i = 0; i < 2; i++)
		vals[i] = CStringGetTextDatum(fields[i]);
	vals[2] = Int32GetDatum(h.managed_id);
	for (i = 2; i < AUDIT_FIELDS; i++)
		vals[i + 1] = CStringGetTextDatum(fields[i]);
	types[6] = TEXTOID;
	if (SPI_execute_with_args("INSERT INTO allocation.event (actor, kind, managed_id, table_name, key, reason, detail)"
							  " VALUES ($1, $2, $3, $4, $5, $6, $7::pg_catalog.jsonb)",
							  7, types, vals, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "writing the audit event failed");
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}
