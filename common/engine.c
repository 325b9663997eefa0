/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The operations.  Each goes to its children at the same time (the
 * fan-out, fanout.c): remote children get asynchronous libnbd
 * commands, the local child (the filter's plugin) runs on the
 * request's thread meanwhile; then the request waits for the remote
 * replies and the results are voted.
 *
 * This file: the write-type operations (write, zero, trim, flush,
 * cache) and their vote, and what every operation shares (engine.h).
 * Reads are in engine-read.c, read-pattern=fifo in engine-fifo.c.
 */

#include <config.h>

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "engine.h"
#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "rangelock.h"

int
engine_below_threshold (enum op_type type, const int *errs, uint32_t count,
                        uint64_t offset, size_t ok, const char *what, int *err)
{
  *err = vote_errno_request (errs, quorum_nr_children);
  report_failure_errors (type, offset, count, *err, ok);
  if (what == NULL)
    nbdkit_error ("quorum: %s %" PRIu32 "@%" PRIu64 ": every child "
                  "failed: %s", report_op_name (type), count, offset,
                  strerror (*err));
  else
    nbdkit_error ("quorum: %s %" PRIu32 "@%" PRIu64 ": %zu of %zu "
                  "children %s, vote-threshold is %u: %s",
                  report_op_name (type), count, offset, ok,
                  quorum_nr_children, what, quorum_threshold,
                  strerror (*err));
  return -1;
}

void
engine_late_op_free (struct engine_late_op *op)
{
  if (op->ranged)
    range_unlock (&op->rl);
  free (op->data);
  free (op);
}

/* Vote on the results of a write, zero, trim, flush or cache, and
 * record who is current (fresh.c).
 */
/* late: the children still at it (wait-for=threshold), which are left
 * out of the vote; if it is acknowledged they count as having taken it
 * until engine_write_finish says otherwise (the range stays held until
 * then).
 */
static int
engine_write_vote (struct fanout *f, uint32_t late, enum op_type type,
                   uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  int errs[VOTE_MAX_CHILDREN];
  bool changes = type == OP_WRITE || type == OP_ZERO || type == OP_TRIM;
  uint32_t sent = 0, took = 0;
  size_t i, ok = 0;
  bool acked, refused = false;

  for (i = 0; i < quorum_nr_children; ++i) {
    if (late & (UINT32_C (1) << i)) {
      errs[i] = 0;
      continue;
    }
    errs[i] = f->slots[i].used ? f->slots[i].err : 0;
    if (f->slots[i].used)
      sent |= UINT32_C (1) << i;
    if (f->slots[i].used && errs[i] == 0) {
      took |= UINT32_C (1) << i;
      ok++;
    }
  }

  /* A fast zero that any child cannot do fast is refused as a whole:
   * the client then writes zeroes the slow way, everywhere.
   */
  if (type == OP_ZERO && (flags & NBDKIT_FLAG_FAST_ZERO)) {
    for (i = 0; i < quorum_nr_children; ++i)
      if (errs[i] == ENOTSUP || errs[i] == EOPNOTSUPP)
        refused = true;
  }
  acked = !refused && ok >= quorum_threshold;

  /* Before the answer: a child that missed a change acknowledged here
   * is stale there, durably; one that missed a change that failed
   * here is settled with the rest.
   */
  if (changes &&
      fresh_write_end (offset, count, sent | late,
                       acked ? took | late : took, acked, err) == -1)
    return -1;
  if (type == OP_FLUSH && fresh_flush_end (sent, took, acked, err) == -1)
    return -1;

  if (refused) {
    *err = ENOTSUP;
    return -1;
  }

  for (i = 0; i < quorum_nr_children; ++i)
    if (errs[i])
      report_bad (type, i, offset, count, errs[i]);

  if (acked)
    return 0;

  return engine_below_threshold (type, errs, count, offset, ok, "succeeded",
                                 err);
}

/* FUA on the remote children that lack it: a flush of each of them
 * once its write succeeded, which fails its part of the write if it
 * fails.
 */
static void
engine_fua_flush (struct quorum_conn *conn, struct fanout *f, uint32_t late)
{
  struct fanout *fl;
  uint32_t mask = 0;
  size_t i;
  int err;

  for (i = 0; i < quorum_nr_children; ++i)
    if (f->slots[i].used && !(late & (UINT32_C (1) << i)) &&
        f->slots[i].err == 0 && f->slots[i].flush_after)
      mask |= UINT32_C (1) << i;
  if (mask == 0)
    return;
  fl = fanout_run (conn, OP_FLUSH, mask, NULL, 0, NULL, 0, 0, 0, &err);
  for (i = 0; i < quorum_nr_children; ++i) {
    if (mask & (UINT32_C (1) << i))
      f->slots[i].err = fl ? fl->slots[i].err : err;
  }
  if (fl)
    fanout_put (fl);
}

/* A write has enough once vote-threshold children took it (FUA: on
 * stable storage, so not one that still needs its flush); a fast zero
 * waits for all, since any one of them may refuse it.
 */
static bool
engine_write_enough (const struct fanout *f, void *arg)
{
  const struct engine_late_op *op = arg;
  size_t i, ok = 0;

  if (f->type == OP_ZERO && (op->flags & NBDKIT_FLAG_FAST_ZERO))
    return false;
  for (i = 0; i < quorum_nr_children; ++i)
    if (fanout_slot_ended (f, i) && f->slots[i].err == 0 &&
        !f->slots[i].flush_after)
      ok++;
  return ok >= quorum_threshold;
}

/* The second step of a write, zero, trim or flush answered early: a
 * late child lacking FUA flushes now; one that failed is stale where
 * the write went (it counted as having taken it), then the range goes.
 */
/* The late children that took f but lack FUA: they owe a flush. */
static uint32_t
engine_late_fua_owed (const struct fanout *f)
{
  uint32_t mask = 0;
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i)
    if ((f->late & (UINT32_C (1) << i)) && f->slots[i].err == 0 &&
        f->slots[i].flush_after)
      mask |= UINT32_C (1) << i;
  return mask;
}

/* The end of a write's second step, by either way. */
static void
engine_write_late_done (const struct fanout *f, struct engine_late_op *op)
{
  if (quorum_debug_votes)
    nbdkit_debug ("quorum: %s %" PRIu32 "@%" PRIu64 ": late children done",
                  report_op_name (f->type), f->count, f->offset);
  engine_late_op_free (op);
}

static void
engine_write_finish (struct fanout *f, void *arg)
{
  bool changes = f->type == OP_WRITE || f->type == OP_ZERO ||
    f->type == OP_TRIM;
  size_t i;

  if (engine_late_fua_owed (f))
    engine_fua_flush (&fanout_no_conn, f, ~f->late);

  for (i = 0; i < quorum_nr_children; ++i) {
    const struct slot *s = &f->slots[i];

    if (!(f->late & (UINT32_C (1) << i)) || s->err == 0)
      continue;
    report_bad (f->type, i, f->offset, f->count, s->err);
    if (changes &&
        fresh_stale_mark (&quorum_children[i], f->offset, f->count,
                          s->lagged ? FRESH_LAGGING
                          : FRESH_WRITE_FAILED) == -1)
      nbdkit_error ("quorum: child %zu (%s): %s %" PRIu32 "@%" PRIu64
                    " failed after it was acknowledged, and cannot be "
                    "recorded as stale: %m", i, quorum_children[i].name,
                    report_op_name (f->type), f->count, f->offset);
  }
  engine_write_late_done (f, arg);
}

/* engine_write_finish's common case, where the last child ended
 * (fanout_quick_fn): every late child took it (late_quick saw to
 * that), and none owes a flush for FUA.
 */
static bool
engine_write_quick (struct fanout *f, void *arg)
{
  if (engine_late_fua_owed (f))
    return false;
  engine_write_late_done (f, arg);
  return true;
}

/* wait-for=threshold for write-type operations: the answer once
 * vote-threshold children gave it; the range stays held, in the
 * fan-out's second step, until the others ended too, so that an
 * overlapping write reaches every child after this one.  A flush goes
 * to children that completed every write acknowledged before it
 * (fanout_drained), at least vote-threshold of them.
 */
static int
engine_write_op_threshold (struct quorum_conn *conn, enum op_type type,
                           const void *buf, uint32_t count, uint64_t offset,
                           uint32_t flags, int *err)
{
  bool ordered = type == OP_WRITE || type == OP_ZERO || type == OP_TRIM;
  struct engine_late_op *op;
  struct fanout *f;
  uint32_t mask;
  int r = -1;

  op = quorum_zalloc (sizeof *op);
  if (op && type == OP_WRITE) {
    /* A late child's command still reads it after the answer. */
    op->data = malloc (count);
    if (op->data)
      memcpy (op->data, buf, count);
  }
  if (op == NULL || (type == OP_WRITE && op->data == NULL)) {
    *err = ENOMEM;
    nbdkit_error ("quorum: %s: %m", report_op_name (type));
    if (op)
      free (op);
    return -1;
  }
  op->flags = flags;
  if (ordered) {
    range_lock (&op->rl, offset, count, true);
    op->ranged = true;
    if (fresh_write_begin (offset, count, err) == -1) {
      engine_late_op_free (op);
      return -1;
    }
  }
  if (type == OP_FLUSH)
    fresh_flush_begin ();
  mask = fanout_participants (type, offset, count);
  if (type == OP_FLUSH)
    mask = fanout_drained (mask, quorum_threshold);
  f = fanout_run_until (conn, type, mask, NULL, 0, op->data, count, offset,
                        flags, engine_write_enough, op, err);
  if (f && (flags & NBDKIT_FLAG_FUA))
    engine_fua_flush (conn, f, f->late);
  if (f)
    r = engine_write_vote (f, f->late, type, count, offset, flags, err);
  else if (type == OP_FLUSH)
    fresh_flush_end (0, 0, false, err);
  else if (ordered) {
    int ignored;

    fresh_write_end (offset, count, mask, 0, false, &ignored);
  }
  if (f && (f->late || f->late_spare)) {
    fanout_detach (f, engine_write_finish, engine_write_quick, op);
    return r;
  }
  if (f)
    fanout_put (f);
  engine_late_op_free (op);
  return r;
}

/* Write-type operations: all children, then vote.  Writes, zeroes and
 * trims hold their range exclusively so that every child applies
 * overlapping ones in the same order.
 */
static int
engine_write_op (struct quorum_conn *conn, enum op_type type, const void *buf,
                 uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  bool ordered = type == OP_WRITE || type == OP_ZERO || type == OP_TRIM;
  struct range_lock rl;
  struct fanout *f;
  uint32_t mask;
  int r = -1;

  if (quorum_wait_threshold)
    return engine_write_op_threshold (conn, type, buf, count, offset, flags,
                                      err);
  if (ordered) {
    range_lock (&rl, offset, count, true);
    if (fresh_write_begin (offset, count, err) == -1) {
      range_unlock (&rl);
      return -1;
    }
  }
  if (type == OP_FLUSH)
    fresh_flush_begin ();
  mask = fanout_participants (type, offset, count);
  f = fanout_run (conn, type, mask, NULL, 0, buf, count, offset, flags, err);
  if (f && (flags & NBDKIT_FLAG_FUA))
    engine_fua_flush (conn, f, 0);
  if (f) {
    r = engine_write_vote (f, 0, type, count, offset, flags, err);
    fanout_put (f);
  }
  else if (type == OP_FLUSH)
    fresh_flush_end (0, 0, false, err);
  else if (ordered) {
    /* Some of it may have been sent: unsettled. */
    int ignored;

    fresh_write_end (offset, count, mask, 0, false, &ignored);
  }
  if (ordered)
    range_unlock (&rl);
  return r;
}

int
quorum_pwrite (struct quorum_conn *conn, const void *buf, uint32_t count,
               uint64_t offset, uint32_t flags, int *err)
{
  return engine_write_op (conn, OP_WRITE, buf, count, offset, flags, err);
}

int
quorum_zero (struct quorum_conn *conn, uint32_t count, uint64_t offset,
             uint32_t flags, int *err)
{
  return engine_write_op (conn, OP_ZERO, NULL, count, offset, flags, err);
}

/* NBD leaves trimmed bytes unspecified: a child may read zeroes there
 * or the old data, and children that differ would be outvoted.  So a
 * trim goes to every child as a zero that may punch holes (slot_send,
 * slot_run_local), offered only when every child can zero.
 */
int
quorum_trim (struct quorum_conn *conn, uint32_t count, uint64_t offset,
             uint32_t flags, int *err)
{
  return engine_write_op (conn, OP_TRIM, NULL, count, offset,
                          flags & NBDKIT_FLAG_FUA, err);
}

int
quorum_flush (struct quorum_conn *conn, uint32_t flags, int *err)
{
  return engine_write_op (conn, OP_FLUSH, NULL, 0, 0, 0, err);
}

int
quorum_cache (struct quorum_conn *conn, uint32_t count, uint64_t offset,
              uint32_t flags, int *err)
{
  return engine_write_op (conn, OP_CACHE, NULL, count, offset, 0, err);
}
