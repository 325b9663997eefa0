/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Recovery: one run of a copy (resync_range, for resync-copy.c's
 * workers), under its range lock: which blocks every source reports as
 * zeroes (block status, asked ahead where the sources report data),
 * zeroing those, reading the rest from vote-threshold sources first
 * and the others only where those disagree, voting per vote block, and
 * writing the winners to the child; staleness cleared per span
 * written.  Blocks without vote-threshold agreeing sources stay stale.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "extmerge.h"
#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "rangelock.h"
#include "ratelimit.h"
#include "resync-int.h"
#include "resync.h"
#include "settle.h"
#include "state.h"


/* Block status is asked ahead of the run, up to this much, where the
 * sources report data beyond it (see resync_zeroes).
 */
#define RESYNC_AHEAD_MAX (UINT64_C (1) << 30)

/* The span written so far is no longer stale. */
static void
resync_clear (struct child *c, struct resync_tally *t)
{
  if (t->end > t->start)
    fresh_stale_clear (c, t->start, t->end - t->start);
  t->start = t->end = 0;
}

/* c took [s, +len). */
static void
resync_took (struct child *c, struct resync_tally *t, uint64_t s,
             uint64_t len)
{
  fresh_took (c, s, len);
  STAT_ADD (c, bytes_repaired, len);
  t->copied += len;
  if (s != t->end) {
    resync_clear (c, t);
    t->start = s;
  }
  t->end = s + len;
}

/* One command to c alone: 0, or its errno. */
static int
resync_command (struct child *c, enum op_type type, const void *buf,
                uint32_t count, uint64_t offset, uint32_t flags)
{
  struct fanout *w;
  int err = 0;

  w = fanout_run (&resync_conn, type, UINT32_C (1) << c->index,
                  NULL, 0, buf, count, offset, flags, &err);
  if (w == NULL)
    return err ? err : EIO;
  err = w->slots[c->index].err;
  fanout_put (w);
  return err;
}

/* Write what out holds at [s, e) (out holds [offset, ...)) to c. */
static int
resync_write (struct child *c, const char *out, uint64_t offset,
              uint64_t s, uint64_t e, struct resync_tally *t)
{
  int err;

  err = resync_command (c, OP_WRITE, out + (s - offset), e - s, s, 0);
  if (err == 0) {
    resync_took (c, t, s, e - s);
    return 0;
  }
  if (err != ENOTCONN || !child_is_local (c))
    report_bad (OP_WRITE, c->index, s, e - s, err);
  return -1;
}

/* The parts of [offset, +count) that every child in mask reports as
 * zeroes (block status), in whole vote blocks (the run's ends count as
 * block boundaries), appended to *zeroes: there is nothing to read.
 * None if one's block status connection may not see its latest writes
 * yet, if one has no block status or fails it, or where the last
 * answers said data.  Called holding the run's range: what is zero is
 * zero until the run is done.
 *
 * A source that reports data far ahead (a full disk) is asked ahead,
 * twice as far each time it still does, up to RESYNC_AHEAD_MAX: some
 * plugins (file, on tmpfs) take as long to answer for a run as for the
 * whole disk.  What it said is data is then read without asking again;
 * what it said is zeroes ahead is never trusted for a copy (it may
 * change before that run's range is taken), only for the length of the
 * next runs (p->zero_start, p->zero_end; RESYNC_ZERO_RUN), each of which
 * asks again under its range.
 */
/* Over 80 lines: the question, its merge and the hint it leaves for
 * the next runs are one step under p->asking.
 */
static void
resync_zeroes (struct resync_pipe *p, uint32_t mask, uint64_t offset,
               uint32_t count, struct quorum_extent_list *zeroes)
{
  const uint64_t end = offset + count, bs = quorum_vote_block;
  const struct quorum_extent_list *lists[VOTE_MAX_CHILDREN];
  struct quorum_extent_list merged = { 0 };
  const struct quorum_extent *last;
  struct fanout *f = NULL;
  uint64_t ask, data_start = 0, data_end = 0, zero_start = 0, zero_end = 0;
  size_t i, nr = 0;
  int err;

  for (i = 0; i < quorum_nr_children; ++i)
    if ((mask & (UINT32_C (1) << i)) &&
        child_meta_stale (&quorum_children[i]))
      return;

  /* One question at a time: its answer may do for the next runs. */
  pthread_mutex_lock (&p->lock);
  while (p->asking)
    pthread_cond_wait (&p->answered, &p->lock);
  if (p->data_start <= offset && end <= p->data_end) {
    pthread_mutex_unlock (&p->lock);
    return;
  }
  ask = p->ahead;
  p->asking = true;
  pthread_mutex_unlock (&p->lock);
  if (ask > quorum_export_size - offset)
    ask = quorum_export_size - offset;
  if (ask > RESYNC_AHEAD_MAX)
    ask = RESYNC_AHEAD_MAX;
  if (ask < count)
    ask = count;

  f = fanout_run (&resync_conn, OP_EXTENTS, mask, NULL, 0, NULL, ask,
                  offset, 0, &err);
  if (f == NULL)
    goto out;
  for (i = 0; i < quorum_nr_children; ++i) {
    const struct slot *s = &f->slots[i];

    if (!s->used)
      continue;
    if (s->err)
      goto out;
    lists[nr++] = &s->extents;
  }
  /* As far as they all answered, which may be past the question (the
   * file plugin answers to the next change).
   */
  if (nr == 0 ||
      extmerge_lists (lists, nr, offset, quorum_export_size - offset,
                      &merged) == -1)
    goto out;

  for (i = 0; i < merged.len; ++i) {
    const struct quorum_extent *e = &merged.ptr[i];
    const uint64_t s = e->offset, t = e->offset + e->length;

    if (!(e->type & EXTMERGE_ZERO)) {
      if (t > end && data_end == 0) {
        data_start = s;
        data_end = t;
      }
    }
    else if (s < end) {
      uint64_t zs = s <= offset ? offset : (s + bs - 1) & ~(bs - 1);
      uint64_t ze = t >= end ? end : t & ~(bs - 1);

      if (t > end && zero_end == 0) {
        zero_start = s;
        zero_end = t;
      }
      if (zs < ze &&
          extmerge_add (zeroes, zs, ze - zs, EXTMERGE_ZERO) == -1) {
        zeroes->len = 0;        /* read it all */
        goto out;
      }
    }
  }

  /* Data to the end of the question: ask further next time, so as not
   * to ask again.  A hole that ends just there too, so that the next
   * runs know how long they may be: some plugins (file) report a hole
   * only as far as they were asked when no data follows, and a hole
   * followed by data past the question as far as that data.
   */
  last = merged.len ? &merged.ptr[merged.len - 1] : NULL;
  if (last && (last->type & EXTMERGE_ZERO
               ? last->offset + last->length == offset + ask
               : last->offset + last->length >= offset + ask))
    ask = ask * 2 < RESYNC_AHEAD_MAX ? ask * 2 : RESYNC_AHEAD_MAX;
  else
    ask = RESYNC_RUN;
 out:
  pthread_mutex_lock (&p->lock);
  p->ahead = ask;
  if (data_end > p->data_end) {
    p->data_start = data_start;
    p->data_end = data_end;
  }
  if (zero_end > p->zero_end) {
    p->zero_start = zero_start;
    p->zero_end = zero_end;
  }
  p->asking = false;
  pthread_cond_broadcast (&p->answered);
  pthread_mutex_unlock (&p->lock);
  quorum_extent_list_free (&merged);
  if (f)
    fanout_put (f);
}

/* Zero [offset, +count) of c, where all its sources hold zeroes: with
 * the zero command where c offers it (holes allowed), else by writing
 * zeroes, and by writing them too if its zero command fails while it
 * is connected (a thin child without room for the hole's metadata, a
 * server whose zero is broken): else the copy would fail on every try.
 */
static int
resync_zero (struct child *c, uint64_t offset, uint32_t count,
             struct resync_tally *t)
{
  const uint32_t chunk = count < RESYNC_RUN ? count : RESYNC_RUN;
  bool write = true;
  uint32_t len;
  uint64_t pos;
  char *buf;
  int err = 0;

  /* Only this child's supervisor changes c->caps (resync_rejoin), and
   * not while it copies.
   */
  if (!child_is_local (c) && c->caps.can_zero) {
    err = resync_command (c, OP_ZERO, NULL, count, offset,
                          NBDKIT_FLAG_MAY_TRIM);
    write = err != 0 && err != ENOTCONN && err != ESHUTDOWN;
    if (write) {
      report_bad (OP_ZERO, c->index, offset, count, err);
      nbdkit_debug ("quorum: child %zu: resync: zero %" PRIu32 "@%" PRIu64
                    " failed: writing zeroes instead", c->index, count,
                    offset);
    }
  }
  /* A long run (RESYNC_ZERO_RUN) is written a RESYNC_RUN at a time. */
  if (write) {
    buf = bufpool_get (chunk);
    if (buf == NULL)
      return -1;
    memset (buf, 0, chunk);
    err = 0;                    /* the zero's, reported */
    for (pos = offset; err == 0 && pos < offset + count; pos += len) {
      len = offset + count - pos < chunk ? offset + count - pos : chunk;
      err = resync_command (c, OP_WRITE, buf, len, pos, 0);
    }
    bufpool_put (buf, chunk);
  }
  if (err) {
    if (err != ENOTCONN || !child_is_local (c))
      report_bad (write ? OP_WRITE : OP_ZERO, c->index, offset, count, err);
    return -1;
  }
  resync_took (c, t, offset, count);
  t->zeroed += count;
  return 0;
}

/* Write to c the runs of blocks of [offset, +count) where
 * vote-threshold of bufs (the sources' replies, NULL where one failed)
 * agree (agree: all of them do).  A block without a winner stays stale
 * (and so does its granule).  -1 if a write to c failed.
 */
static int
resync_write_voted (struct child *c, const void *const *bufs,
                    uint64_t offset, uint32_t count, bool agree,
                    struct resync_tally *t)
{
  const uint64_t bs = quorum_vote_block, end = offset + count;
  struct vote_result v;
  uint64_t pos, next, span, nr_lost = 0;
  size_t i;
  char *out;
  int r = 0;

  /* Every source the same (the usual case): written from its reply. */
  if (agree) {
    for (i = 0; bufs[i] == NULL; ++i)
      ;
    return resync_write (c, bufs[i], offset, offset, end, t);
  }

  /* Else block by block, the winners gathered in out. */
  out = bufpool_get (count);
  if (out == NULL)
    return -1;
  for (span = pos = offset; pos < end; pos = next) {
    const size_t rel = pos - offset;

    next = (pos / bs + 1) * bs;
    if (next > end)
      next = end;
    vote_tally (bufs, quorum_nr_children, rel, next - pos, &v);
    if (v.votes >= quorum_threshold) {
      memcpy (out + rel, (const char *) bufs[v.winner] + rel, next - pos);
      continue;
    }
    nr_lost += next - pos;
    if (pos > span && resync_write (c, out, offset, span, pos, t) == -1)
      r = -1;
    span = next;
  }
  if (end > span && resync_write (c, out, offset, span, end, t) == -1)
    r = -1;
  bufpool_put (out, count);
  if (nr_lost)
    nbdkit_debug ("quorum: child %zu: resync %" PRIu32 "@%" PRIu64 ": "
                  "%" PRIu64 " bytes where fewer than vote-threshold=%u "
                  "current children agree: left stale", c->index, count,
                  offset, nr_lost, quorum_threshold);
  return r;
}

/* The sources to read first: vote-threshold of mask, if that many
 * agreeing are more than half of mask (then no other version can win
 * the vote, and the others need not be read); else all of mask.  The
 * filter's plugin first (no socket between), the others in turn from
 * one run to the next.
 */
static uint32_t
resync_first_sources (uint32_t mask, uint64_t offset)
{
  const size_t n = quorum_nr_children;
  uint32_t pick = 0;
  size_t i, k, got = 0;

  if (2 * quorum_threshold <= resync_popcount (mask))
    return mask;
  for (i = 0; i < n; ++i)
    if ((mask & (UINT32_C (1) << i)) && child_is_local (&quorum_children[i])) {
      pick |= UINT32_C (1) << i;
      got++;
    }
  for (k = 0; k < n && got < quorum_threshold; ++k) {
    i = (offset / RESYNC_RUN + k) % n;
    if ((mask & ~pick) & (UINT32_C (1) << i)) {
      pick |= UINT32_C (1) << i;
      got++;
    }
  }
  return pick;
}

/* The replies of f in bufs (NULL where one failed): how many. */
static size_t
resync_replies (const struct fanout *f, const void **bufs)
{
  size_t i, ok = 0;

  for (i = 0; i < quorum_nr_children; ++i) {
    if (!f->slots[i].used)
      continue;
    bufs[i] = f->slots[i].err == 0 ? f->slots[i].buf : NULL;
    if (bufs[i])
      ok++;
  }
  return ok;
}

/* Read [offset, +count) from the sources in mask, and write to c where
 * vote-threshold of them agree: from the first ones if they all agree
 * (resync_first_sources), else from the vote of all.  Called holding
 * the range.
 */
static int
resync_copy (struct child *c, uint32_t mask, uint64_t offset,
             uint32_t count, struct resync_tally *t)
{
  const void *bufs[VOTE_MAX_CHILDREN] = { NULL };
  const uint32_t first = resync_first_sources (mask, offset);
  struct fanout *f, *g = NULL;
  size_t ok, nr;
  bool agree;
  int err, r;

  f = fanout_run (&resync_conn, OP_READ, first, NULL, SIZE_MAX, NULL,
                  count, offset, 0, &err);
  if (f == NULL)
    return 0;                   /* left stale */
  t->read += count;
  ok = resync_replies (f, bufs);
  agree = ok >= quorum_threshold &&
    vote_agree (bufs, quorum_nr_children, 0, count, &nr);
  if (!agree && first != mask) {
    g = fanout_run (&resync_conn, OP_READ, mask & ~first, NULL, SIZE_MAX,
                    NULL, count, offset, 0, &err);
    if (g)
      ok += resync_replies (g, bufs);
  }
  if (ok < quorum_threshold) {
    nbdkit_debug ("quorum: child %zu: resync %" PRIu32 "@%" PRIu64 ": %zu "
                  "current children could be read, vote-threshold is %u: "
                  "left stale", c->index, count, offset, ok,
                  quorum_threshold);
    r = 0;
  }
  else
    r = resync_write_voted (c, bufs, offset, count, agree, t);
  fanout_put (f);
  if (g)
    fanout_put (g);
  return r;
}

/* Copy [offset, +count) to child c where vote-threshold current
 * children agree, block by block, and zero it where they all report
 * zeroes; over the range no child's staleness changes
 * (settle_uniform).  Holds the range.  -1 if writing to c failed;
 * leftovers are not an error (they stay stale).
 */
int
resync_range (struct resync_pipe *p, struct child *c, uint64_t offset,
              uint32_t count, struct resync_tally *t)
{
  struct quorum_extent_list zeroes = { 0 };
  struct range_lock rl;
  uint64_t pos = offset, len;
  uint32_t mask;
  size_t i;
  int err, r = 0;

  /* Where the children may differ without any of them being wrong,
   * make them equal first: the sources then agree.
   */
  if (fresh_unsettled (offset, count))
    settle_range (&resync_conn, offset, count, &err);

  range_lock (&rl, offset, count, true);
  mask = settle_readable (&resync_conn, offset, count) &
    ~(UINT32_C (1) << c->index);
  if (resync_popcount (mask) < quorum_threshold) {
    nbdkit_debug ("quorum: child %zu: resync %" PRIu32 "@%" PRIu64 ": %zu "
                  "current children to copy from, vote-threshold is %u: "
                  "left stale", c->index, count, offset,
                  resync_popcount (mask), quorum_threshold);
    goto out;
  }
  /* Where every source holds zeroes (a sparse disk), nothing is read;
   * the rest is read and voted on.
   */
  resync_zeroes (p, mask, offset, count, &zeroes);
  for (i = 0; r == 0 && i <= zeroes.len; ++i) {
    const uint64_t zs = i < zeroes.len ? zeroes.ptr[i].offset
      : offset + count;

    /* Data in a long run (RESYNC_ZERO_RUN): a RESYNC_RUN at a time. */
    for (; r == 0 && zs > pos; pos += len) {
      len = zs - pos < RESYNC_RUN ? zs - pos : RESYNC_RUN;
      r = resync_copy (c, mask, pos, len, t);
    }
    if (r == 0 && i < zeroes.len) {
      r = resync_zero (c, zs, zeroes.ptr[i].length, t);
      pos = zs + zeroes.ptr[i].length;
    }
  }
 out:
  resync_clear (c, t);
  range_unlock (&rl);
  quorum_extent_list_free (&zeroes);
  return r;
}
