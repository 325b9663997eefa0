/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Inside the freshness model: what fresh.c (the maps in memory) and
 * fresh-persist.c (state=: the state file, the write-intent map and
 * its sweeper) ask of each other.  Only fresh*.c include this; the
 * layers above include fresh.h.
 *
 * Without state= every persist_* is a no-op that succeeds.
 */

#ifndef QUORUM_FRESH_INT_H
#define QUORUM_FRESH_INT_H

#include <stdbool.h>
#include <stdint.h>

struct child;

/* fresh.c, for fresh-persist.c. */

/* Whether no child holds anything unflushed in [offset, +count) and
 * none of it is unsettled: the children are equal there even after a
 * power loss of theirs.
 */
extern bool fresh_all_flushed (uint64_t offset, uint64_t count);
/* At start-up (persist_load): [offset, +count) is unsettled. */
extern void fresh_mark_unsettled (uint64_t offset, uint64_t count);

/* fresh-persist.c, for fresh.c. */

/* Whether state= is in use (after persist_load). */
extern bool persist_enabled (void);
/* Start-up with state=: open the file and load it (stale maps, intent
 * bits as unsettled regions, renamed children wholly stale).  -1 after
 * nbdkit_error.
 */
extern int persist_load (void);
/* After the fork: the sweeper thread.  -1 after nbdkit_error. */
extern int persist_start (void);
/* Cleanup: stop the sweeper, make the state durable, close the file. */
extern void persist_stop (void);
/* Set (value) or clear the granules of c's stale map in the file that
 * dirty_mark (dirty_clear) changes for [offset, +count).  The caller
 * holds stale_lock.  Returns the ticket to sync, 0 if nothing changed.
 */
extern uint64_t persist_stale (struct child *c, uint64_t offset,
                               uint64_t count, bool value);
/* What ticket covers is on stable storage.  -1 on error (errno set). */
extern int persist_sync (uint64_t ticket);
/* Every change so far is on stable storage.  -1 on error (errno set). */
extern int persist_sync_all (void);
/* fresh_write_begin: [offset, +count) is in the write-intent map,
 * durably.  -1 with *err = EIO after nbdkit_error.
 */
extern int persist_intent (uint64_t offset, uint64_t count, int *err);

#endif /* QUORUM_FRESH_INT_H */
