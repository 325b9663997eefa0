/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* One chunk of a scrub (scrub.c runs them): block status, then a read
 * of what is not zeroes on every child, voted on block by block as a
 * read's is (engine.c), with the reports and repairs of what the vote
 * finds.  The chunk's range is held as a read holds it, exclusively
 * when it may repair.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "fanout.h"
#include "internal.h"
#include "rangelock.h"
#include "scrub.h"

/* A run of adjacent blocks with the same finding, reported as one. */
struct run {
  uint64_t start, end;          /* [start, end); empty if equal */
  int err;
};

/* A run of blocks where child i was outvoted: reported, and with
 * repair rewritten with the winners (win holds them from base on).
 */
static void
outvoted_flush (struct run *r, size_t i, bool repair, const char *win,
                uint64_t base, struct scrub_findings *fd)
{
  struct fanout *f;
  int err;

  if (r->end == r->start)
    return;
  report_bad (OP_READ, i, r->start, r->end - r->start, 0);
  if (repair && child_is_local (&quorum_children[i]))
    nbdkit_debug ("quorum: scrub: child %zu (the plugin) outvoted at "
                  "%" PRIu64 "+%" PRIu64 ": not repaired from the "
                  "background; a client read with rewrite-corrupted=true "
                  "repairs it", i, r->start, r->end - r->start);
  else if (repair) {
    f = fanout_run (&scrub_conn, OP_WRITE, UINT32_C (1) << i, NULL, 0,
                    win + (r->start - base), r->end - r->start, r->start, 0,
                    &err);
    if (f) {
      if (f->slots[i].err)
        report_bad (OP_WRITE, i, r->start, r->end - r->start,
                    f->slots[i].err);
      else {
        report_repair (i, r->start, r->end - r->start);
        fd->repaired += r->end - r->start;
      }
      fanout_put (f);
    }
  }
  r->start = r->end = 0;
}

static void
failed_flush (struct run *r, size_t i)
{
  if (r->end > r->start)
    report_bad (OP_READ, i, r->start, r->end - r->start, r->err);
  r->start = r->end = 0;
}

/* Whether err says the link to a child failed rather than its disk:
 * reading it block by block would only fail again.
 */
static bool
link_error (int err)
{
  return err == ENOTCONN || err == ETIMEDOUT || err == ESHUTDOWN ||
    err == ECONNRESET || err == EPIPE || err == ENOMEM;
}

/* Child i failed to read [off, +count): read it again a block at a
 * time into buf (count bytes), so that only the blocks it cannot read
 * lose its vote; ok[b] has bit i for each it could.  Each failing run
 * is reported.
 */
static void
narrow (size_t i, uint64_t off, uint32_t count, int err, char *buf,
        uint32_t *ok)
{
  const uint64_t bs = quorum_vote_block;
  struct run r = { 0, 0, 0 };
  uint64_t pos, next;
  size_t b;

  for (pos = off, b = 0; pos < off + count; pos = next, ++b) {
    struct fanout *f;
    int e = err;

    next = pos + bs < off + count ? pos + bs : off + count;
    if (buf && !link_error (err)) {
      f = fanout_run (&scrub_conn, OP_READ, UINT32_C (1) << i,
                      buf + (pos - off), i, NULL, next - pos, pos, 0, &e);
      if (f) {
        e = f->slots[i].err;
        fanout_put (f);
      }
      if (e == 0) {
        ok[b] |= UINT32_C (1) << i;
        continue;
      }
    }
    if (r.end != pos || r.err != e) {
      failed_flush (&r, i);
      r.start = pos;
      r.err = e;
    }
    r.end = next;
  }
  failed_flush (&r, i);
}

/* Over 80 lines: one pass over the blocks of a run keeps the runs of
 * every child (outvoted, for report and repair) and of failures in
 * step, as the read's vote does (engine.c).
 */
/* Read [off, +count), a whole number of vote blocks but perhaps the
 * export's last, from the children in mask and vote block by block.
 */
static void
scrub_run (uint64_t off, uint32_t count, uint32_t mask, bool repair,
           struct scrub_findings *fd)
{
  const uint64_t bs = quorum_vote_block;
  const size_t n = quorum_nr_children;
  const void *bufs[VOTE_MAX_CHILDREN], *vbufs[VOTE_MAX_CHILDREN];
  char *own[VOTE_MAX_CHILDREN] = { NULL };
  struct run bad[VOTE_MAX_CHILDREN] = { { 0, 0, 0 } };
  struct run nq = { 0, 0, 0 };
  uint32_t ok[MAX_BLOCKS] = { 0 }, voters = mask;
  size_t nq_votes = 0, nq_version[VOTE_MAX_CHILDREN];
  char *win = NULL;
  struct vote_result v;
  struct fanout *f;
  uint64_t pos, next;
  size_t i, b, nblocks = (count + bs - 1) / bs;
  int err;

  f = fanout_run (&scrub_conn, OP_READ, mask, NULL, SIZE_MAX, NULL, count,
                  off, 0, &err);
  if (f == NULL) {
    fd->unchecked = true;
    return;
  }
  fd->read += count;
  for (i = 0; i < n; ++i) {
    int e = f->slots[i].err;

    bufs[i] = NULL;
    if (!f->slots[i].used)
      continue;
    if (e == 0) {
      bufs[i] = f->slots[i].buf;
      for (b = 0; b < nblocks; ++b)
        ok[b] |= UINT32_C (1) << i;
    }
    else if (child_is_local (&quorum_children[i]) && e == ENOTCONN) {
      /* The last client left since we looked: no vote, no error. */
      voters &= ~(UINT32_C (1) << i);
      fd->unchecked = true;
    }
    else {
      own[i] = nblocks > 1 ? malloc (count) : NULL;
      narrow (i, off, count, e, own[i], ok);
      bufs[i] = own[i];
    }
  }
  if (repair)
    win = malloc (count);

  for (pos = off, b = 0; pos < off + count; pos = next, ++b) {
    const size_t rel = pos - off;

    next = pos + bs < off + count ? pos + bs : off + count;
    for (i = 0; i < n; ++i)
      vbufs[i] = ok[b] & (UINT32_C (1) << i) ? bufs[i] : NULL;
    vote_tally (vbufs, n, rel, next - pos, &v);
    if ((ok[b] & voters) != voters)
      fd->unreadable += next - pos;

    if (v.votes < quorum_threshold) {
      fd->no_quorum += next - pos;
      if (nq.end != pos || nq_votes != v.votes ||
          memcmp (nq_version, v.version, n * sizeof v.version[0]) != 0) {
        if (nq.end > nq.start)
          report_failure_votes (OP_READ, nq.start, nq.end - nq.start,
                                nq_votes, nq_version, n);
        nq.start = pos;
        nq_votes = v.votes;
        memcpy (nq_version, v.version, n * sizeof v.version[0]);
      }
      nq.end = next;
      continue;
    }
    if (v.nr_versions == 1)
      continue;
    if (quorum_blkverify) {
      fd->blkverify = true;
      report_failure_blkverify (pos, next - pos, pos);
      break;
    }
    fd->mismatched += next - pos;
    if (win)
      memcpy (win + rel, (const char *) vbufs[v.winner] + rel, next - pos);
    for (i = 0; i < n; ++i) {
      if (v.version[i] == VOTE_NO_VERSION || v.version[i] == v.winner)
        continue;
      if (bad[i].end != pos)
        outvoted_flush (&bad[i], i, win != NULL, win, off, fd);
      if (bad[i].end == bad[i].start)
        bad[i].start = pos;
      bad[i].end = next;
    }
  }
  if (nq.end > nq.start)
    report_failure_votes (OP_READ, nq.start, nq.end - nq.start, nq_votes,
                          nq_version, n);
  for (i = 0; i < n; ++i)
    outvoted_flush (&bad[i], i, win != NULL, win, off, fd);
  if (repair && win == NULL)
    nbdkit_error ("quorum: scrub: out of memory: %" PRIu32 "@%" PRIu64
                  " not repaired", count, off);

  free (win);
  for (i = 0; i < n; ++i)
    free (own[i]);
  fanout_put (f);
}

/* zero[b]: every child in mask says block b of [off, +count) reads as
 * zeroes.  All false if any cannot say so for sure.
 */
static void
scrub_zeroes (uint64_t off, uint32_t count, uint32_t mask, bool *zero,
              size_t nblocks)
{
  const uint64_t bs = quorum_vote_block, end = off + count;
  struct fanout *f;
  size_t i, b;
  int err;

  memset (zero, 0, nblocks * sizeof *zero);
  /* A block status connection may not see writes not yet flushed. */
  for (i = 0; i < quorum_nr_children; ++i)
    if ((mask & (UINT32_C (1) << i)) &&
        child_meta_stale (&quorum_children[i]))
      return;
  f = fanout_run (&scrub_conn, OP_EXTENTS, mask, NULL, 0, NULL, count, off,
                  0, &err);
  if (f == NULL)
    return;
  for (i = 0; i < quorum_nr_children; ++i)
    if (f->slots[i].used && f->slots[i].err) {
      fanout_put (f);
      return;
    }
  memset (zero, 1, nblocks * sizeof *zero);
  for (i = 0; i < quorum_nr_children; ++i) {
    const struct quorum_extent_list *list = &f->slots[i].extents;
    uint64_t epos = off;
    size_t k = 0;

    if (!f->slots[i].used)
      continue;
    for (b = 0; b < nblocks; ++b) {
      uint64_t bstart = off + b * bs;
      uint64_t bend = bstart + bs < end ? bstart + bs : end;
      uint64_t p;
      size_t kk;

      while (k < list->len && epos + list->ptr[k].length <= bstart) {
        epos += list->ptr[k].length;
        k++;
      }
      for (p = epos, kk = k; p < bend; p += list->ptr[kk++].length)
        if (kk >= list->len || list->ptr[kk].length == 0 ||
            !(list->ptr[kk].type & NBDKIT_EXTENT_ZERO)) {
          zero[b] = false;
          break;
        }
    }
  }
  fanout_put (f);
}

/* See scrub.h. */
void
scrub_chunk (uint64_t off, uint32_t count, bool repair, struct scrub_findings *fd)
{
  const uint64_t bs = quorum_vote_block;
  const uint32_t all = quorum_nr_children == 32 ? UINT32_MAX :
    (UINT32_C (1) << quorum_nr_children) - 1;
  size_t i, b, nblocks = (count + bs - 1) / bs, voters = 0;
  bool zero[MAX_BLOCKS];
  struct range_lock rl;
  uint32_t mask;

  range_lock (&rl, off, count, repair);
  mask = fanout_participants (OP_READ, off, count);
  for (i = 0; i < quorum_nr_children; ++i) {
    if (child_is_local (&quorum_children[i]) && !scrub_local_usable ())
      mask &= ~(UINT32_C (1) << i);
    if (mask & (UINT32_C (1) << i))
      voters++;
  }
  if (mask != all)
    fd->unchecked = true;
  if (voters < quorum_threshold)        /* nothing could win: skip it */
    goto out;

  scrub_zeroes (off, count, mask, zero, nblocks);
  for (b = 0; b < nblocks && !fd->blkverify; ) {
    size_t e;

    if (zero[b]) {
      fd->skipped += (off + (b + 1) * bs < off + count ? bs :
                      off + count - (off + b * bs));
      b++;
      continue;
    }
    for (e = b + 1; e < nblocks && !zero[e]; ++e)
      ;
    scrub_run (off + b * bs,
               (e == nblocks ? count : e * bs) - b * bs, mask, repair, fd);
    b = e;
  }
 out:
  range_unlock (&rl);
}

