/*
 * capacity.h
 *		Holdings counters and reservations (capacity.c).
 */
#ifndef ALLOCATION_CAPACITY_H
#define ALLOCATION_CAPACITY_H

extern bool assign_reserve(int64 rep_id, bool wait);
extern bool assign_lock_released(int64 rep_id);
extern void assign_reset_locks(void);
extern void assign_forget_bases(void);
extern void assign_note_written(int64 rep_id, int32 n);
extern int32 assign_current_load(int64 rep_id);
extern bool capacity_lock_only(int64 rep_id, bool wait);
extern bool capacity_may_wait_for(int64 rep_id);
extern void capacity_read_loads(int64 *ids, int n, int32 *held, int32 *reserved);
extern bool capacity_reserve_slot(int64 rep_id, bool wait, int32 own);
extern bool capacity_holds_counters(void);
extern void capacity_refuse_deleted_rep(ManagedTable *mt, Customer *c, RepInfo *rep, int64 rep_id);

#endif							/* ALLOCATION_CAPACITY_H */
