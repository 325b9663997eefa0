/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The fan-out: every operation goes to its children at the same time.
 * Remote children get asynchronous libnbd commands; the local child
 * (the filter's plugin) runs on the request's thread meanwhile; then
 * the request waits for the remote replies and the results are voted.
 *
 * A fan-out is reference counted: one reference for the waiting
 * request and one for every command libnbd still owns.  libnbd calls a
 * command's free callback exactly once, even when queueing it fails,
 * so the last of those frees the fan-out and its buffers: a reply that
 * arrives after the request gave up can never write into freed memory.
 */

#include <config.h>

#include <assert.h>
#include <errno.h>
#include <semaphore.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "cleanup.h"
#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "rangelock.h"
#include "settle.h"
#include "state.h"

/* End a request that fewer than vote-threshold children served: *err
 * from their errors, the failure reported, and one message with the
 * counts (what the ok children did; NULL when every child failed).
 */
static int
below_threshold (enum op_type type, const int *errs, uint32_t count,
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

/* Vote on the results of a write, zero, trim, flush or cache, and
 * record who is current (fresh.c).
 */
/* late: the children still at it (wait-for=threshold), which are left
 * out of the vote; if it is acknowledged they count as having taken it
 * until write_finish says otherwise (the range stays held until then).
 */
static int
write_vote (struct fanout *f, uint32_t late, enum op_type type,
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

  return below_threshold (type, errs, count, offset, ok, "succeeded", err);
}

/* FUA on the remote children that lack it: a flush of each of them
 * once its write succeeded, which fails its part of the write if it
 * fails.
 */
static void
fua_flush (struct quorum_conn *conn, struct fanout *f, uint32_t late)
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

/* wait-for=threshold: what a request answered early leaves to its
 * fan-out's second step (fanout_detach), on the late thread.
 */
struct late_op {
  struct range_lock rl;         /* held until the last child ended */
  bool ranged;
  uint32_t flags;
  void *data;                   /* write: the client's data, copied; read:
                                   the answer, or NULL */
};

static void
late_op_free (struct late_op *op)
{
  if (op->ranged)
    range_unlock (&op->rl);
  free (op->data);
  free (op);
}

/* A write has enough once vote-threshold children took it (FUA: on
 * stable storage, so not one that still needs its flush); a fast zero
 * waits for all, since any one of them may refuse it.
 */
static bool
write_enough (const struct fanout *f, void *arg)
{
  const struct late_op *op = arg;
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
static void
write_finish (struct fanout *f, void *arg)
{
  struct late_op *op = arg;
  bool changes = f->type == OP_WRITE || f->type == OP_ZERO ||
    f->type == OP_TRIM;
  uint32_t mask = 0;
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i)
    if ((f->late & (UINT32_C (1) << i)) && f->slots[i].err == 0 &&
        f->slots[i].flush_after)
      mask |= UINT32_C (1) << i;
  if (mask)
    fua_flush (&fanout_no_conn, f, ~f->late);

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
  if (quorum_debug_votes)
    nbdkit_debug ("quorum: %s %" PRIu32 "@%" PRIu64 ": late children done",
                  report_op_name (f->type), f->count, f->offset);
  late_op_free (op);
}

/* wait-for=threshold for write-type operations: the answer once
 * vote-threshold children gave it; the range stays held, in the
 * fan-out's second step, until the others ended too, so that an
 * overlapping write reaches every child after this one.  A flush goes
 * to children that completed every write acknowledged before it
 * (fanout_drained), at least vote-threshold of them.
 */
static int
write_op_threshold (struct quorum_conn *conn, enum op_type type,
                    const void *buf, uint32_t count, uint64_t offset,
                    uint32_t flags, int *err)
{
  bool ordered = type == OP_WRITE || type == OP_ZERO || type == OP_TRIM;
  struct late_op *op;
  struct fanout *f;
  uint32_t mask;
  int r = -1;

  op = calloc (1, sizeof *op);
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
      late_op_free (op);
      return -1;
    }
  }
  if (type == OP_FLUSH)
    fresh_flush_begin ();
  mask = fanout_participants (type, offset, count);
  if (type == OP_FLUSH)
    mask = fanout_drained (mask, quorum_threshold);
  f = fanout_run_until (conn, type, mask, NULL, 0, op->data, count, offset,
                        flags, write_enough, op, err);
  if (f && (flags & NBDKIT_FLAG_FUA))
    fua_flush (conn, f, f->late);
  if (f)
    r = write_vote (f, f->late, type, count, offset, flags, err);
  else if (type == OP_FLUSH)
    fresh_flush_end (0, 0, false, err);
  else if (ordered) {
    int ignored;

    fresh_write_end (offset, count, mask, 0, false, &ignored);
  }
  if (f && f->late) {
    fanout_detach (f, write_finish, op);
    return r;
  }
  if (f)
    fanout_put (f);
  late_op_free (op);
  return r;
}

/* Write-type operations: all children, then vote.  Writes, zeroes and
 * trims hold their range exclusively so that every child applies
 * overlapping ones in the same order.
 */
static int
write_op (struct quorum_conn *conn, enum op_type type, const void *buf,
          uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  bool ordered = type == OP_WRITE || type == OP_ZERO || type == OP_TRIM;
  struct range_lock rl;
  struct fanout *f;
  uint32_t mask;
  int r = -1;

  if (quorum_wait_threshold)
    return write_op_threshold (conn, type, buf, count, offset, flags, err);
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
    fua_flush (conn, f, 0);
  if (f) {
    r = write_vote (f, 0, type, count, offset, flags, err);
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
  return write_op (conn, OP_WRITE, buf, count, offset, flags, err);
}

int
quorum_zero (struct quorum_conn *conn, uint32_t count, uint64_t offset,
             uint32_t flags, int *err)
{
  return write_op (conn, OP_ZERO, NULL, count, offset, flags, err);
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
  return write_op (conn, OP_TRIM, NULL, count, offset,
                   flags & NBDKIT_FLAG_FUA, err);
}

int
quorum_flush (struct quorum_conn *conn, uint32_t flags, int *err)
{
  return write_op (conn, OP_FLUSH, NULL, 0, 0, 0, err);
}

int
quorum_cache (struct quorum_conn *conn, uint32_t count, uint64_t offset,
              uint32_t flags, int *err)
{
  return write_op (conn, OP_CACHE, NULL, count, offset, 0, err);
}

/* rewrite-corrupted: write the winning data over child i's outvoted
 * span.  A failed repair is reported and does not fail the read, which
 * already has its answer.
 */
static void
repair (struct quorum_conn *conn, size_t i, const void *buf,
        uint32_t count, uint64_t offset)
{
  struct fanout *f;
  int err;

  f = fanout_run (conn, OP_WRITE, UINT32_C (1) << i, NULL, 0, buf, count,
                  offset, 0, &err);
  if (f == NULL)
    return;
  if (f->slots[i].err)
    report_bad (OP_WRITE, i, offset, count, f->slots[i].err);
  else {
    fresh_took (&quorum_children[i], offset, count);
    report_repair (i, offset, count);
  }
  fanout_put (f);
}

/* Adjacent blocks with the same outcome make one report, not one per
 * block: a run of blocks in which a child was outvoted, or in which no
 * version reached the threshold with the same children on each side.
 */
struct run {
  uint64_t start, end;          /* [start, end), empty if equal */
};

struct failed_run {
  struct run r;
  size_t votes;                 /* of the best version */
  size_t version[VOTE_MAX_CHILDREN];  /* who sided with whom */
};

static void
failed_run_flush (struct failed_run *fr)
{
  if (fr->r.end > fr->r.start)
    report_failure_votes (OP_READ, fr->r.start, fr->r.end - fr->r.start,
                          fr->votes, fr->version, quorum_nr_children);
  fr->r.start = fr->r.end = 0;
}

/* The children disagree somewhere in the request: vote each block of
 * vote-block-size on its own (blocks are aligned on the export, so
 * reports name the same blocks whatever the request), so that children
 * corrupted in different places outvote each other block by block.
 * The winners are assembled in buf.
 */
/* Over 80 lines: one pass over the blocks keeps the three runs (failed,
 * outvoted per child, repair span) in step.
 */
static int
read_vote_blocks (struct quorum_conn *conn, const void *const *bufs,
                  void *buf, uint32_t count, uint64_t offset, int *err)
{
  const uint64_t bs = quorum_vote_block, end = offset + count;
  struct run bad[VOTE_MAX_CHILDREN] = { { 0, 0 } };
  struct run span[VOTE_MAX_CHILDREN] = { { 0, 0 } };  /* for repair */
  struct failed_run fr = { .r = { 0, 0 } };
  uint64_t pos, next, nr_failed = 0, nr_outvoted = 0, first_failed = 0;
  size_t i, n = quorum_nr_children;
  struct vote_result v;

  for (pos = offset; pos < end; pos = next) {
    const size_t rel = pos - offset;

    next = (pos / bs + 1) * bs;
    if (next > end)
      next = end;
    vote_tally (bufs, n, rel, next - pos, &v);

    if (v.votes < quorum_threshold) {
      if (nr_failed++ == 0)
        first_failed = pos;
      if (fr.r.end != pos || fr.votes != v.votes ||
          memcmp (fr.version, v.version, n * sizeof v.version[0]) != 0) {
        failed_run_flush (&fr);
        fr.r.start = pos;
        fr.votes = v.votes;
        memcpy (fr.version, v.version, n * sizeof v.version[0]);
      }
      fr.r.end = next;
      continue;
    }
    failed_run_flush (&fr);

    if (bufs[v.winner] != buf)
      memcpy ((char *) buf + rel, (const char *) bufs[v.winner] + rel,
              next - pos);
    if (v.nr_versions == 1)
      continue;
    nr_outvoted++;
    for (i = 0; i < n; ++i) {
      if (v.version[i] == VOTE_NO_VERSION || v.version[i] == v.winner)
        continue;
      if (bad[i].end != pos) {
        if (bad[i].end > bad[i].start)
          report_bad (OP_READ, i, bad[i].start, bad[i].end - bad[i].start, 0);
        bad[i].start = pos;
      }
      bad[i].end = next;
      if (span[i].end == span[i].start)
        span[i].start = pos;
      span[i].end = next;
    }
  }
  failed_run_flush (&fr);
  for (i = 0; i < n; ++i)
    if (bad[i].end > bad[i].start)
      report_bad (OP_READ, i, bad[i].start, bad[i].end - bad[i].start, 0);

  if (quorum_debug_votes)
    nbdkit_debug ("quorum: read %" PRIu32 "@%" PRIu64 ": children differ: "
                  "%" PRIu64 " blocks of %" PRIu64 " bytes outvoted a "
                  "child, %" PRIu64 " had no quorum",
                  count, offset, nr_outvoted, bs, nr_failed);

  if (nr_failed) {
    nbdkit_error ("quorum: read %" PRIu32 "@%" PRIu64 ": no version has "
                  "vote-threshold=%u votes in %" PRIu64 " blocks of %" PRIu64
                  " bytes, the first at %" PRIu64, count, offset,
                  quorum_threshold, nr_failed, bs, first_failed);
    *err = EIO;
    return -1;
  }

  /* The whole span from a child's first to its last outvoted block is
   * rewritten: blocks in between already hold the winning data, and no
   * write can come between (the read holds its range).
   */
  if (quorum_rewrite_corrupted)
    for (i = 0; i < n; ++i)
      if (span[i].end > span[i].start)
        repair (conn, i, (const char *) buf + (span[i].start - offset),
                span[i].end - span[i].start, span[i].start);
  return 0;
}

/* Vote on a quorum read whose replies are in f, but those of late
 * (wait-for=threshold: still in flight); the answer goes to buf.
 */
static int
read_vote (struct quorum_conn *conn, struct fanout *f, uint32_t late,
           void *buf, uint32_t count, uint64_t offset, int *err)
{
  const void *bufs[VOTE_MAX_CHILDREN];
  int errs[VOTE_MAX_CHILDREN];
  size_t i, n = quorum_nr_children, nr_ok, winner;
  bool agree;

  for (i = 0; i < n; ++i) {
    if (late & (UINT32_C (1) << i)) {
      errs[i] = 0;
      bufs[i] = NULL;
      continue;
    }
    errs[i] = f->slots[i].used ? f->slots[i].err : 0;
    bufs[i] = f->slots[i].used && errs[i] == 0 ? f->slots[i].buf : NULL;
    if (errs[i])
      report_bad (OP_READ, i, offset, count, errs[i]);
  }

  /* Agreement, the usual case, costs one memcmp per child and no
   * hash; disagreement is voted block by block, without hashing the
   * whole request first.
   */
  agree = vote_agree (bufs, n, 0, count, &nr_ok);

  if (nr_ok < quorum_threshold)
    return below_threshold (OP_READ, errs, count, offset, nr_ok,
                            "returned data", err);

  if (quorum_blkverify && !agree) {
    size_t d = vote_first_difference (bufs[0], bufs[1], count);

    report_failure_blkverify (offset, count, offset + d);
    nbdkit_error ("quorum: blkverify: children differ at byte %" PRIu64
                  " (read %" PRIu32 "@%" PRIu64 "): shutting down",
                  offset + d, count, offset);
    nbdkit_shutdown ();
    *err = EIO;
    return -1;
  }

  if (!agree)
    return read_vote_blocks (conn, bufs, buf, count, offset, err);

  /* Unanimous: the first child that answered speaks for all. */
  for (winner = 0; bufs[winner] == NULL; ++winner)
    ;
  if (quorum_debug_votes && nr_ok < n)
    nbdkit_debug ("quorum: read %" PRIu32 "@%" PRIu64 ": child %zu wins "
                  "with %zu of %zu votes", count, offset, winner, nr_ok, n);
  if (bufs[winner] != buf)
    memcpy (buf, bufs[winner], count);
  return 0;
}

/* The second step of a hedged read: replies that lost are not
 * compared (read-pattern=fifo compares nothing), failures reported.
 */
static void
fifo_finish (struct fanout *f, void *arg)
{
  size_t i;

  (void) arg;
  for (i = 0; i < quorum_nr_children; ++i)
    if ((f->late & (UINT32_C (1) << i)) && f->slots[i].err)
      report_bad (OP_READ, i, f->offset, f->count, f->slots[i].err);
}

/* How long a hedged read waits for the child it asked before it asks
 * the next one too: 4 times the fastest child's recent latency, at
 * least 1 ms (10 ms before any is known), at most child-timeout.
 */
static void
fifo_hedge_deadline (struct timespec *t)
{
  uint64_t ns = fanout_read_latency () * 4;

  if (ns == 0)
    ns = 10000000;
  if (ns < 1000000)
    ns = 1000000;
  if (quorum_child_timeout && ns > quorum_child_timeout * UINT64_C (1000000000))
    ns = quorum_child_timeout * UINT64_C (1000000000);
  clock_gettime (CLOCK_MONOTONIC, t);
  ns += t->tv_nsec;
  t->tv_sec += ns / 1000000000;
  t->tv_nsec = ns % 1000000000;
}

/* read-pattern=fifo with wait-for=threshold: one child at a time, in
 * order, but one that has not answered within the hedge delay gets
 * company: the next child is asked too, and the first good reply wins.
 * The others are finished by the late thread.  Replies land in pooled
 * buffers (a late one must not write into buf), but the local child's.
 */
static int
pread_fifo_hedged (struct quorum_conn *conn, void *buf, uint32_t count,
                   uint64_t offset, uint32_t mask, int *err)
{
  int errs[VOTE_MAX_CHILDREN] = { 0 };
  const size_t n = quorum_nr_children;
  struct timespec hedge, deadline;
  struct fanout *f;
  size_t i, next = 0, winner = n;
  uint32_t asked = 0, pending;

  f = fanout_hedge_new (count, offset, err);
  if (f == NULL)
    return -1;
  for (;;) {
    bool any_pending = false;

    /* The first good reply, in the order they were asked. */
    for (i = 0; i < n && winner == n; ++i)
      if ((asked & (UINT32_C (1) << i)) && fanout_slot_ended (f, i) &&
          f->slots[i].err == 0)
        winner = i;
    if (winner < n)
      break;
    for (i = 0; i < n; ++i)
      if ((asked & (UINT32_C (1) << i)) && !fanout_slot_ended (f, i))
        any_pending = true;
    while (next < n && !(mask & (UINT32_C (1) << next)))
      next++;
    if (!any_pending || next < n) {
      if (next == n)
        break;                  /* every child failed */
      if (!any_pending || !fanout_wait_one (f, &hedge)) {
        /* Nobody is at it, or the hedge delay passed: ask the next. */
        asked |= UINT32_C (1) << next;
        fanout_ask (f, conn, UINT32_C (1) << next, buf,
                    quorum_has_local ? 0 : SIZE_MAX);
        next++;
        fifo_hedge_deadline (&hedge);
      }
      continue;
    }
    /* The last child is asked: wait, up to child-timeout. */
    deadline = f->start;
    deadline.tv_sec += quorum_child_timeout;
    if (!fanout_wait_one (f, quorum_child_timeout ? &deadline : NULL)) {
      fanout_cut_pending (f);
      while (any_pending && fanout_wait_one (f, NULL)) {
        any_pending = false;
        for (i = 0; i < n; ++i)
          if ((asked & (UINT32_C (1) << i)) && !fanout_slot_ended (f, i))
            any_pending = true;
      }
    }
  }

  pending = 0;
  for (i = 0; i < n; ++i) {
    if (!(asked & (UINT32_C (1) << i)))
      continue;
    if (!fanout_slot_ended (f, i))
      pending |= UINT32_C (1) << i;
    else {
      if (f->slots[i].timed_out)
        f->slots[i].err = ETIMEDOUT;
      errs[i] = f->slots[i].err;
      if (errs[i])
        report_bad (OP_READ, i, offset, count, errs[i]);
    }
  }
  if (winner < n && f->slots[winner].buf != buf)
    memcpy (buf, f->slots[winner].buf, count);
  f->late = pending;
  if (pending)
    fanout_detach (f, fifo_finish, NULL);
  else
    fanout_put (f);
  if (winner < n)
    return 0;
  return below_threshold (OP_READ, errs, count, offset, 0, NULL, err);
}

/* read-pattern=fifo: one child at a time, in order, until one works. */
static int
pread_fifo (struct quorum_conn *conn, void *buf, uint32_t count,
            uint64_t offset, int *err)
{
  int errs[VOTE_MAX_CHILDREN];
  uint32_t mask;
  size_t i;

  if (fresh_unsettled (offset, count) &&
      settle_range (conn, offset, count, err) == -1)
    return -1;
  mask = fanout_participants (OP_READ, offset, count);
  if (quorum_wait_threshold)
    return pread_fifo_hedged (conn, buf, count, offset, mask, err);

  for (i = 0; i < quorum_nr_children; ++i) {
    struct fanout *f;

    errs[i] = 0;
    if (!(mask & (UINT32_C (1) << i)))
      continue;
    f = fanout_run (conn, OP_READ, UINT32_C (1) << i, buf, i, NULL,
                    count, offset, 0, err);
    if (f == NULL)
      return -1;
    errs[i] = f->slots[i].err;
    fanout_put (f);
    if (errs[i] == 0)
      return 0;
    report_bad (OP_READ, i, offset, count, errs[i]);
  }

  return below_threshold (OP_READ, errs, count, offset, 0, NULL, err);
}

/* wait-for=threshold: a read has enough once vote-threshold replies
 * agree on the whole request (when they differ, it waits for all and
 * votes block by block as wait-for=all does).
 */
static bool
read_enough (const struct fanout *f, void *arg)
{
  const void *bufs[VOTE_MAX_CHILDREN];
  size_t i, nr_ok;

  (void) arg;
  for (i = 0; i < quorum_nr_children; ++i)
    bufs[i] = fanout_slot_ended (f, i) && f->slots[i].err == 0 ?
      f->slots[i].buf : NULL;
  return vote_agree (bufs, quorum_nr_children, 0, f->count, &nr_ok) &&
    nr_ok >= quorum_threshold;
}

/* A late reply against the answer, block by block as read_vote_blocks
 * votes: a block where it differs is outvoted (reported, and with
 * rewrite-corrupted rewritten: the read still holds its range
 * exclusively), as if it had been on time.
 */
static void
read_late_compare (size_t i, const void *reply, const void *answer,
                   uint32_t count, uint64_t offset)
{
  const uint64_t bs = quorum_vote_block, end = offset + count;
  struct run bad = { 0, 0 };
  uint64_t pos, next;

  for (pos = offset; pos <= end; pos = next) {
    const size_t rel = pos - offset;
    bool differs;

    next = (pos / bs + 1) * bs;
    if (next > end)
      next = end;
    differs = pos < end &&
      memcmp ((const char *) reply + rel, (const char *) answer + rel,
              next - pos) != 0;
    if (differs && bad.end == pos) {
      if (bad.end == bad.start)
        bad.start = pos;
      bad.end = next;
    }
    else if (differs)
      bad.start = pos, bad.end = next;
    if ((!differs || pos == end) && bad.end > bad.start) {
      report_bad (OP_READ, i, bad.start, bad.end - bad.start, 0);
      if (quorum_rewrite_corrupted)
        repair (&fanout_no_conn, i,
                (const char *) answer + (bad.start - offset),
                bad.end - bad.start, bad.start);
      bad.start = bad.end = 0;
    }
    if (pos == end)
      break;
  }
}

/* The second step of a read answered early: late replies compared. */
static void
read_finish (struct fanout *f, void *arg)
{
  struct late_op *op = arg;
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    const struct slot *s = &f->slots[i];

    if (!(f->late & (UINT32_C (1) << i)))
      continue;
    if (s->err)
      report_bad (OP_READ, i, f->offset, f->count, s->err);
    else if (op->data)
      read_late_compare (i, s->buf, op->data, f->count, f->offset);
  }
  late_op_free (op);
}

/* wait-for=threshold reads: the answer once vote-threshold children
 * agree; the range stays held until the rest answered and were
 * compared (a write in between would make them differ for nothing).
 * Only the local child, which has answered before we return, reads
 * into the caller's buffer.
 */
static int
pread_threshold (struct quorum_conn *conn, void *buf, uint32_t count,
                 uint64_t offset, int *err)
{
  struct late_op *op;
  struct fanout *f;
  uint32_t mask;
  size_t i;
  int r;

  op = calloc (1, sizeof *op);
  if (op == NULL) {
    *err = ENOMEM;
    nbdkit_error ("quorum: read: %m");
    return -1;
  }
  range_lock (&op->rl, offset, count, quorum_rewrite_corrupted);
  op->ranged = true;
  /* A child far behind on reads is left out while the others are
   * still enough children to answer (it still gets every write).
   */
  mask = fanout_participants (OP_READ, offset, count);
  for (i = 0; i < quorum_nr_children; ++i)
    if ((mask & (UINT32_C (1) << i)) && fanout_lagging (i) &&
        (unsigned) __builtin_popcount (mask) > quorum_threshold)
      mask &= ~(UINT32_C (1) << i);
  f = fanout_run_until (conn, OP_READ, mask,
                        buf, quorum_has_local ? 0 : SIZE_MAX, NULL, count,
                        offset, 0, read_enough, NULL, err);
  if (f == NULL) {
    late_op_free (op);
    return -1;
  }
  r = read_vote (conn, f, f->late, buf, count, offset, err);
  if (f->late == 0) {
    fanout_put (f);
    late_op_free (op);
    return r;
  }
  /* The answer, to compare late replies with (without memory for it
   * they are only checked for errors).
   */
  if (r == 0) {
    op->data = malloc (count);
    if (op->data)
      memcpy (op->data, buf, count);
  }
  fanout_detach (f, read_finish, op);
  return r;
}

int
quorum_pread (struct quorum_conn *conn, void *buf, uint32_t count,
              uint64_t offset, uint32_t flags, int *err)
{
  struct range_lock rl;
  struct fanout *f;
  int r = -1;

  if (quorum_read_pattern == READ_PATTERN_FIFO)
    return pread_fifo (conn, buf, count, offset, err);

  /* Where the children may differ without any of them being wrong,
   * they are made equal before they vote.
   */
  if (fresh_unsettled (offset, count) &&
      settle_range (conn, offset, count, err) == -1)
    return -1;

  /* No write may overlap a vote in progress: children would differ
   * only because of it, and rewrite-corrupted would write old data
   * over new.  With rewrite-corrupted a read may write, so it keeps
   * other reads out too: they would vote on a repair half done.
   */
  if (quorum_wait_threshold && !quorum_blkverify)
    return pread_threshold (conn, buf, count, offset, err);
  range_lock (&rl, offset, count, quorum_rewrite_corrupted);
  /* Child 0 reads straight into the caller's buffer. */
  f = fanout_run (conn, OP_READ, fanout_participants (OP_READ, offset, count),
                  buf, 0, NULL, count, offset, 0, err);
  if (f) {
    r = read_vote (conn, f, 0, buf, count, offset, err);
    fanout_put (f);
  }
  range_unlock (&rl);
  return r;
}
