/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Reads with read-pattern=quorum: the vote on the whole request, block
 * by block where the children differ, rewrite-corrupted's repairs, and
 * wait-for=threshold's early answer with its late replies compared.
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
#include "settle.h"

/* rewrite-corrupted: write the winning data over child i's outvoted
 * span.  A failed repair is reported and does not fail the read, which
 * already has its answer.
 */
static void
engine_repair (struct quorum_conn *conn, size_t i, const void *buf,
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
struct engine_run {
  uint64_t start, end;          /* [start, end), empty if equal */
};

struct engine_failed_run {
  struct engine_run r;
  size_t votes;                 /* of the best version */
  size_t version[VOTE_MAX_CHILDREN];  /* who sided with whom */
};

static void
engine_failed_run_flush (struct engine_failed_run *fr)
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
engine_read_vote_blocks (struct quorum_conn *conn, const void *const *bufs,
                         void *buf, uint32_t count, uint64_t offset, int *err)
{
  const uint64_t bs = quorum_vote_block, end = offset + count;
  struct engine_run bad[VOTE_MAX_CHILDREN] = { { 0, 0 } };
  struct engine_run span[VOTE_MAX_CHILDREN] = { { 0, 0 } };  /* for repair */
  struct engine_failed_run fr = { .r = { 0, 0 } };
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
        engine_failed_run_flush (&fr);
        fr.r.start = pos;
        fr.votes = v.votes;
        memcpy (fr.version, v.version, n * sizeof v.version[0]);
      }
      fr.r.end = next;
      continue;
    }
    engine_failed_run_flush (&fr);

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
  engine_failed_run_flush (&fr);
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
        engine_repair (conn, i, (const char *) buf + (span[i].start - offset),
                       span[i].end - span[i].start, span[i].start);
  return 0;
}

/* Vote on a quorum read whose replies are in f, but those of late
 * (wait-for=threshold: still in flight); the answer goes to buf.
 */
static int
engine_read_vote (struct quorum_conn *conn, struct fanout *f, uint32_t late,
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
    return engine_below_threshold (OP_READ, errs, count, offset, nr_ok,
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
    return engine_read_vote_blocks (conn, bufs, buf, count, offset, err);

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


/* wait-for=threshold: a read has enough once vote-threshold replies
 * agree on the whole request (when they differ, it waits for all and
 * votes block by block as wait-for=all does).
 */
static bool
engine_read_enough (const struct fanout *f, void *arg)
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

/* A late reply against the answer, block by block as
 * engine_read_vote_blocks votes: a block where it differs is outvoted
 * (reported, and with rewrite-corrupted rewritten: the read still
 * holds its range exclusively), as if it had been on time.
 */
static void
engine_read_late_compare (size_t i, const void *reply, const void *answer,
                          uint32_t count, uint64_t offset)
{
  const uint64_t bs = quorum_vote_block, end = offset + count;
  struct engine_run bad = { 0, 0 };
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
        engine_repair (&fanout_no_conn, i,
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
engine_read_finish (struct fanout *f, void *arg)
{
  struct engine_late_op *op = arg;
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    const struct slot *s = &f->slots[i];

    if (!(f->late & (UINT32_C (1) << i)))
      continue;
    if (s->err)
      report_bad (OP_READ, i, f->offset, f->count, s->err);
    else if (op->data)
      engine_read_late_compare (i, s->buf, op->data, f->count, f->offset);
  }
  engine_late_op_free (op);
}

/* Late replies longer than this are compared on the late thread, not
 * in the reactor's callback, where a long compare would hold up every
 * child's replies.
 */
#define ENGINE_QUICK_COMPARE_MAX (64 * 1024)

/* engine_read_finish's common case, where the last reply ended
 * (fanout_quick_fn): every late reply equals the answer.
 */
static bool
engine_read_quick (struct fanout *f, void *arg)
{
  struct engine_late_op *op = arg;
  size_t i;

  if (op->data == NULL || f->count > ENGINE_QUICK_COMPARE_MAX)
    return false;
  for (i = 0; i < quorum_nr_children; ++i)
    if ((f->late & (UINT32_C (1) << i)) &&
        memcmp (f->slots[i].buf, op->data, f->count) != 0)
      return false;
  engine_late_op_free (op);
  return true;
}

/* wait-for=threshold reads: the answer once vote-threshold children
 * agree; the range stays held until the rest answered and were
 * compared (a write in between would make them differ for nothing).
 * Only the local child, which has answered before we return, reads
 * into the caller's buffer.
 */
static int
engine_pread_threshold (struct quorum_conn *conn, void *buf, uint32_t count,
                        uint64_t offset, int *err)
{
  struct engine_late_op *op;
  struct fanout *f;
  uint32_t mask;
  size_t i;
  int r;

  op = quorum_zalloc (sizeof *op);
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
                        offset, 0, engine_read_enough, NULL, err);
  if (f == NULL) {
    engine_late_op_free (op);
    return -1;
  }
  r = engine_read_vote (conn, f, f->late, buf, count, offset, err);
  if (f->late == 0) {
    fanout_put (f);
    engine_late_op_free (op);
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
  fanout_detach (f, engine_read_finish, engine_read_quick, op);
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
    return engine_pread_fifo (conn, buf, count, offset, err);

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
    return engine_pread_threshold (conn, buf, count, offset, err);
  range_lock (&rl, offset, count, quorum_rewrite_corrupted);
  /* Child 0 reads straight into the caller's buffer. */
  f = fanout_run (conn, OP_READ, fanout_participants (OP_READ, offset, count),
                  buf, 0, NULL, count, offset, 0, err);
  if (f) {
    r = engine_read_vote (conn, f, 0, buf, count, offset, err);
    fanout_put (f);
  }
  range_unlock (&rl);
  return r;
}
