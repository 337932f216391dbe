/*
 * record.h
 *		Writing a statement's batch of decisions (record.c).
 */
#ifndef ALLOCATION_RECORD_H
#define ALLOCATION_RECORD_H

#include "frame.h"

extern void record_reset_all(void);
extern void flush_frame(Frame *f);
extern void record_truncate(ManagedTable *mt);

#endif							/* ALLOCATION_RECORD_H */
