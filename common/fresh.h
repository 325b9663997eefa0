/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The freshness model: which copy is current where, for every child
 * (the filter's plugin too), kept on stable storage with state=FILE.
 *
 * Per child and 64 KiB region (its dirty map, dirty.h): current, or
 * stale: it missed or failed an acknowledged write, lost what it had
 * not flushed, or is not known to hold what the others hold.  A stale
 * region takes every new write but no vote (fanout_participants), and
 * is copied to the child from vote-threshold current children that
 * agree (resync-copy.c).
 *
 * Per region of the export: unsettled, when the children may differ
 * there without any of them being wrong: a write failed below the
 * threshold, or was in flight when the quorum stopped (the write-intent
 * map of state=).  Any version is acceptable there, but the children
 * must be made equal (settle.c) before the region is voted on again.
 *
 * With state=, a region is in the write-intent map on stable storage
 * before a write to it is sent to any child, and a stale mark is there
 * before the write or flush that caused it is acknowledged.  Intent
 * bits are cleared lazily (fresh-persist.c's sweeper) once no write
 * is in flight there and every child flushed what it took there.
 *
 * Layer: above dirty.c, state.c, rangelock.c, statefile.c and
 * report.c; below fanout.c and everything that calls it.
 */

#ifndef QUORUM_FRESH_H
#define QUORUM_FRESH_H

#include <stdbool.h>
#include <stdint.h>

struct child;

/* Why a region of a child became stale, as named in reports. */
enum fresh_reason {
  FRESH_WRITE_FAILED,           /* a write acknowledged without it */
  FRESH_FLUSH_FAILED,           /* it may have lost unflushed writes */
  FRESH_DOWN,                   /* missed writes while down */
  FRESH_LOST_CONTENTS,          /* came back, but not the same disk */
  FRESH_UNSETTLED,              /* unreachable while its region settled */
  FRESH_NEW_DISK,               /* another name at its position */
  FRESH_UNREACHABLE,            /* never seen since start-up */
  FRESH_LAGGING,                /* wait-for=threshold: past max-lag */
};
extern const char *fresh_reason_name (enum fresh_reason reason);

/* state= and state-granule= are quorum_state_file and
 * quorum_state_granule (internal.h, config.c).
 */

/* Start-up, once quorum_export_size is known (.get_ready, before the
 * fork): every child's map, the state file opened and loaded (stale
 * maps; write-intent bits become unsettled regions; a renamed child is
 * wholly stale), children unreachable now wholly stale.  -1 after
 * nbdkit_error.
 */
extern int fresh_init (void);
/* After the fork: the sweeper thread (state= only).  -1 on error. */
extern int fresh_start (void);
/* Cleanup: stop the sweeper, make the state durable, close. */
extern void fresh_stop (void);

/* The data path. */

/* Before a write, zero or trim of [offset, +count) is sent (its range
 * held exclusively): the region is in the write-intent map, durably.
 * -1 with *err = EIO if the state cannot be recorded.
 */
extern int fresh_write_begin (uint64_t offset, uint64_t count, int *err);
/* After it: sent is the mask of children it was sent to, took those
 * that succeeded, acked whether it met the threshold.  Acknowledged:
 * every child that did not take it is stale there (durably, before
 * this returns), every child that took a whole granule is current
 * there.  Not acknowledged: the region is unsettled, and no child is
 * marked.  -1 with *err = EIO if a stale mark could not be recorded:
 * the write must then fail.
 */
extern int fresh_write_end (uint64_t offset, uint64_t count, uint32_t sent,
                            uint32_t took, bool acked, int *err);
/* wait-for=threshold (engine.c, fanout-late.c): a write acknowledged
 * while children it was sent to are still at it (late) has its
 * fresh_write_end at the acknowledgement, with the late children
 * counted as sent and as having taken it; that is a promise the second
 * step keeps.  The write's range stays held until every late child
 * ended (so no read, resync, settle or sweep sees the region
 * meanwhile, and with state= its intent bits stay set); then each late
 * child that failed it is made stale there with fresh_stale_mark
 * (FRESH_WRITE_FAILED), before the range is released.  A child cut for
 * owing more than max-lag= has the regions of all its late writes
 * marked first (FRESH_LAGGING), durably, then is cut.  A flush is not
 * sent to a child still completing a write acknowledged before it
 * (fanout_drained): left out of sent, it keeps its unflushed maps for a
 * later flush.
 */
/* Around a flush of the children (flushes are serialised here): what
 * each child took before fresh_flush_begin is covered by this flush.
 * fresh_flush_end: a child sent the flush that failed is stale wherever
 * it took a write since its last successful flush; one that succeeded
 * has flushed all that.  -1 with *err = EIO if the state cannot be
 * recorded.
 */
extern void fresh_flush_begin (void);
extern int fresh_flush_end (uint32_t sent, uint32_t took, bool acked,
                            int *err);
/* Child c took a write outside the data path (resync, settle, repair):
 * it is in its unflushed map like any other.
 */
extern void fresh_took (struct child *c, uint64_t offset, uint64_t count);

/* Whether child c is stale anywhere in [offset, +count) (count 0: at
 * all).  Lock-free.
 */
extern bool fresh_stale (struct child *c, uint64_t offset, uint64_t count);
/* Whether any of [offset, +count) is unsettled.  Lock-free. */
extern bool fresh_unsettled (uint64_t offset, uint64_t count);

/* Recovery (resync.c, resync-copy.c, settle.c). */

/* Make [offset, +count) of c stale (reported if new, durable with
 * state=, c's supervisor woken).  -1 if it could not be recorded.
 */
extern int fresh_stale_mark (struct child *c, uint64_t offset,
                             uint64_t count, enum fresh_reason reason);
/* c is current in the granules [offset, +count) covers entirely (it
 * was just copied there).  Cleared lazily on stable storage.
 */
extern void fresh_stale_clear (struct child *c, uint64_t offset,
                               uint64_t count);
/* c went down or may have lost what it took but had not flushed: all of
 * that is stale (reason FRESH_DOWN or FRESH_FLUSH_FAILED).  -1 if it
 * could not be recorded.
 */
extern int fresh_lost_unflushed (struct child *c, enum fresh_reason reason);
/* Stale bytes of c (whole granules). */
extern uint64_t fresh_stale_bytes (struct child *c);
/* The first run of c's stale granules at or after *pos, at most
 * max_bytes long: see dirty_next_run.
 */
extern bool fresh_next_stale (struct child *c, uint64_t *pos,
                              uint64_t max_bytes,
                              uint64_t *offset, uint64_t *count);
/* The same for unsettled regions. */
extern bool fresh_next_unsettled (uint64_t *pos, uint64_t max_bytes,
                                  uint64_t *offset, uint64_t *count);
/* Unsettled bytes (whole granules). */
extern uint64_t fresh_unsettled_bytes (void);
/* [offset, +count) is settled: the children were made equal there (its
 * range held exclusively).
 */
extern void fresh_settled (uint64_t offset, uint64_t count);

/* Sleep until something became stale or unsettled since *seen (which
 * is updated), for at most ms milliseconds: true if it did.
 */
extern bool fresh_wait (uint64_t *seen, unsigned ms);
/* Wake every fresh_wait, e.g. at cleanup. */
extern void fresh_wake (void);

/* The state file (state=), open from fresh_init to fresh_stop, or NULL:
 * for the scrub's checkpoint (scrub.c), its only other user.
 */
struct statefile;
extern struct statefile *fresh_statefile (void);

/* For status and tests: fdatasync calls on the state file so far. */
extern uint64_t fresh_syncs (void);

/* The spare (internal.h; replace.c), in memory only. */

/* Start-up, after fresh_init: the spare's maps.  -1 after nbdkit_error. */
extern int fresh_spare_init (void);
/* A replace begins: the spare c is wholly stale (FRESH_NEW_DISK), and
 * nothing of it unflushed.
 */
extern void fresh_spare_reset (struct child *c);
/* Between fresh_flush_begin and fresh_flush_end: a flush of the spare c
 * succeeded (ok) or failed; what it covers is flushed, or stale.
 */
extern void fresh_spare_flush_end (struct child *c, bool ok);
/* c (a member) is to be named name, durably (state=): a start with
 * the old name makes it wholly stale.  -1 after nbdkit_error.
 */
extern int fresh_rename (struct child *c, const char *name);

#endif /* QUORUM_FRESH_H */
