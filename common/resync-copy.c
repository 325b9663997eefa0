/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Recovery: the copy of a child's stale regions to it (resync_child),
 * on top of the fan-out, for the threads of resync.c.
 *
 * A copy needs vote-threshold current children that agree, block by
 * block (vote-block-size), as a read does: blocks without such a
 * version stay stale, for the caller to retry.  Where every source
 * holds zeroes nothing is read.  The bytes read are paced by
 * resync-rate=, and what was copied is flushed a tenth at a time.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "rangelock.h"
#include "ratelimit.h"
#include "resync-int.h"
#include "resync.h"
#include "settle.h"
#include "state.h"

/* resync-rate=, or what control's rate set: each child's resync has a
 * bucket of its own, charged with the bytes it read to copy (not those
 * it zeroed).
 */
static struct ratelimit resync_limit =
  RATELIMIT_INIT (&quorum_resync_rate, RESYNC_RUN);

uint64_t
resync_rate (void)
{
  return ratelimit_get (&resync_limit);
}

void
resync_set_rate (uint64_t bytes_per_second)
{
  ratelimit_set (&resync_limit, bytes_per_second);
}

/* A resync's rate-limit sleep ends when its child goes down or quits. */
static bool
resync_cancelled (void *vp)
{
  struct child *c = vp;

  return state_quitting (c) ||
    (!child_is_local (c) && state_get (c) == CHILD_DOWN);
}

/* Resync runs outside any client connection: in the filter it reaches
 * the plugin through the context of a client connection, when one
 * lends it (quorum_local_ops.available).
 */
struct quorum_conn resync_conn;

void
resync_set_source (const struct quorum_local_ops *local, void *local_ctx)
{
  resync_conn.local = local;
  resync_conn.local_ctx = local_ctx;
  /* What the lent context takes: plain reads and writes, which the
   * filter passes to a writable client context only.
   */
  resync_conn.local_caps.can_write = local != NULL;
  resync_conn.local_caps.can_extents = local != NULL;
}

static size_t
resync_popcount (uint32_t mask)
{
  return __builtin_popcount (mask);
}

/* Write what out holds at [s, e) (out holds [offset, ...)) to c. */
static int
resync_write (struct child *c, const char *out, uint64_t offset,
              uint64_t s, uint64_t e, uint64_t *copied)
{
  struct fanout *w;
  int err = 0, r = -1;

  w = fanout_run (&resync_conn, OP_WRITE, UINT32_C (1) << c->index,
                  NULL, 0, out + (s - offset), e - s, s, 0, &err);
  if (w) {
    err = w->slots[c->index].err;
    fanout_put (w);
  }
  if (w && err == 0) {
    fresh_took (c, s, e - s);
    fresh_stale_clear (c, s, e - s);
    STAT_ADD (c, bytes_repaired, e - s);
    *copied += e - s;
    r = 0;
  }
  else if (err != ENOTCONN || !child_is_local (c))
    report_bad (OP_WRITE, c->index, s, e - s, err ? err : EIO);
  return r;
}

/* Whether every child in mask reports [offset, +count) as zeroes
 * (block status): then there is nothing to read.  Not if one's block
 * status connection may not see its latest writes yet.
 */
static bool
resync_all_zero (uint32_t mask, uint64_t offset, uint32_t count)
{
  const uint64_t end = offset + count;
  struct fanout *f;
  bool zero = true;
  size_t i, j;
  int err;

  for (i = 0; i < quorum_nr_children; ++i)
    if ((mask & (UINT32_C (1) << i)) &&
        child_meta_stale (&quorum_children[i]))
      return false;
  f = fanout_run (&resync_conn, OP_EXTENTS, mask, NULL, 0, NULL, count,
                  offset, 0, &err);
  if (f == NULL)
    return false;
  for (i = 0; zero && i < quorum_nr_children; ++i) {
    const struct slot *s = &f->slots[i];
    uint64_t pos = offset;

    if (!s->used)
      continue;
    for (j = 0; s->err == 0 && j < s->extents.len && pos < end; ++j) {
      const struct quorum_extent *e = &s->extents.ptr[j];

      if (e->offset + e->length <= pos)
        continue;
      if (e->offset > pos || !(e->type & NBDKIT_EXTENT_ZERO))
        break;
      pos = e->offset + e->length;
    }
    zero = s->err == 0 && pos >= end;
  }
  fanout_put (f);
  return zero;
}

/* Zero [offset, +count) of c, where all its sources hold zeroes: with
 * the zero command where c offers it (holes allowed), else by writing
 * zeroes.
 */
static int
resync_zero (struct child *c, uint64_t offset, uint32_t count,
             uint64_t *copied, uint64_t *zeroed)
{
  struct fanout *w;
  char *buf = NULL;
  int err = 0;

  /* Only this thread changes c->caps (resync_rejoin). */
  if (!child_is_local (c) && c->caps.can_zero)
    w = fanout_run (&resync_conn, OP_ZERO, UINT32_C (1) << c->index,
                    NULL, 0, NULL, count, offset, NBDKIT_FLAG_MAY_TRIM,
                    &err);
  else {
    buf = bufpool_get (count);
    if (buf == NULL)
      return -1;
    memset (buf, 0, count);
    w = fanout_run (&resync_conn, OP_WRITE, UINT32_C (1) << c->index,
                    NULL, 0, buf, count, offset, 0, &err);
  }
  if (w) {
    err = w->slots[c->index].err;
    fanout_put (w);
  }
  if (buf)
    bufpool_put (buf, count);
  if (w == NULL || err) {
    if (err != ENOTCONN || !child_is_local (c))
      report_bad (OP_ZERO, c->index, offset, count, err ? err : EIO);
    return -1;
  }
  fresh_took (c, offset, count);
  fresh_stale_clear (c, offset, count);
  STAT_ADD (c, bytes_repaired, count);
  *copied += count;
  *zeroed += count;
  return 0;
}

/* Write to c the runs of blocks of [offset, +count) where
 * vote-threshold of bufs (the sources' replies, NULL where one failed)
 * agree; out is scratch for the winners.  A block without a winner
 * stays stale (and so does its granule).  -1 if a write to c failed.
 */
static int
resync_write_voted (struct child *c, const void *const *bufs, char *out,
                    uint64_t offset, uint32_t count, uint64_t *copied)
{
  const uint64_t bs = quorum_vote_block, end = offset + count;
  struct vote_result v;
  uint64_t pos, next, span, nr_lost = 0;
  int r = 0;

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
    if (pos > span && resync_write (c, out, offset, span, pos, copied) == -1)
      r = -1;
    span = next;
  }
  if (end > span && resync_write (c, out, offset, span, end, copied) == -1)
    r = -1;
  if (nr_lost)
    nbdkit_debug ("quorum: child %zu: resync %" PRIu32 "@%" PRIu64 ": "
                  "%" PRIu64 " bytes where fewer than vote-threshold=%u "
                  "current children agree: left stale", c->index, count,
                  offset, nr_lost, quorum_threshold);
  return r;
}

/* Copy [offset, +count) to child c where vote-threshold current
 * children agree, block by block; over the range no child's staleness
 * changes (settle_uniform).  Holds the range.  -1 if writing to c
 * failed; leftovers are not an error (they stay stale).
 */
static int
resync_range (struct child *c, uint64_t offset, uint32_t count,
              uint64_t *copied, uint64_t *zeroed, uint64_t *read)
{
  const void *bufs[VOTE_MAX_CHILDREN];
  struct range_lock rl;
  struct fanout *f;
  uint32_t mask;
  size_t i, ok = 0;
  char *out;
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
  /* Where every source holds zeroes (a sparse disk), nothing is read. */
  if (resync_all_zero (mask, offset, count)) {
    r = resync_zero (c, offset, count, copied, zeroed);
    goto out;
  }
  f = fanout_run (&resync_conn, OP_READ, mask, NULL, SIZE_MAX, NULL,
                  count, offset, 0, &err);
  if (f == NULL)
    goto out;
  *read += count;
  for (i = 0; i < quorum_nr_children; ++i) {
    bufs[i] = f->slots[i].used && f->slots[i].err == 0 ?
      f->slots[i].buf : NULL;
    if (bufs[i])
      ok++;
  }
  out = ok >= quorum_threshold ? bufpool_get (count) : NULL;
  if (out == NULL) {
    nbdkit_debug ("quorum: child %zu: resync %" PRIu32 "@%" PRIu64 ": %zu "
                  "current children could be read, vote-threshold is %u: "
                  "left stale", c->index, count, offset, ok,
                  quorum_threshold);
    fanout_put (f);
    goto out;
  }

  r = resync_write_voted (c, bufs, out, offset, count, copied);
  bufpool_put (out, count);
  fanout_put (f);
 out:
  range_unlock (&rl);
  return r;
}

/* What a resync copied is on stable storage on remote child c, if it
 * can flush: else it would all be stale again were c to go down before
 * a client's flush.  (The plugin's copies wait for a client's flush: a
 * lent context may not flush.)
 */
static void
resync_flush (struct child *c)
{
  const uint32_t bit = UINT32_C (1) << c->index;
  struct fanout *f;
  bool can_flush;
  int err = 0;

  pthread_rwlock_rdlock (&c->nbd_lock);
  can_flush = c->caps.can_flush;
  pthread_rwlock_unlock (&c->nbd_lock);
  if (!can_flush)
    return;
  fresh_flush_begin ();
  f = fanout_run (&resync_conn, OP_FLUSH, bit, NULL, 0, NULL, 0, 0, 0,
                  &err);
  if (c->index >= quorum_nr_children) {       /* the spare */
    fresh_spare_flush_end (c, f && f->slots[c->index].err == 0);
    fresh_flush_end (0, 0, false, &err);
  }
  else if (f && f->slots[c->index].err == 0)
    fresh_flush_end (bit, bit, true, &err);
  else
    fresh_flush_end (bit, 0, false, &err);
  if (f)
    fanout_put (f);
}

/* For control's status: a resync of what is stale now begins. */
static void
resync_progress_begin (struct child *c, uint64_t total)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  __atomic_store_n (&c->resync_total, total, __ATOMIC_RELEASE);
  __atomic_store_n (&c->resync_done, 0, __ATOMIC_RELEASE);
  __atomic_store_n (&c->resync_since,
                    (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec,
                    __ATOMIC_RELEASE);
}

/* The copy itself (resync-int.h). */
int
resync_child (struct child *c, bool rejoined)
{
  const bool local = child_is_local (c);
  uint64_t pos = 0, offset, count, len, copied = 0, zeroed = 0, total, left;
  struct ratelimit_bucket bucket;
  unsigned tenths = 0;
  struct range_lock rl;

  ratelimit_bucket_init (&bucket);

  total = fresh_stale_bytes (c);
  report_resync ("resync-start", c->index, total, 0);
  resync_progress_begin (c, total);

  /* Writers that saw this child down mark it stale when they finish:
   * wait for every one in flight, after which all include the child.
   */
  if (rejoined) {
    range_lock (&rl, 0, quorum_export_size, true);
    range_unlock (&rl);
  }

  for (;;) {
    if ((!local && state_get (c) == CHILD_DOWN) || state_quitting (c)) {
      __atomic_store_n (&c->resync_since, 0, __ATOMIC_RELEASE);
      return -1;
    }
    if (!fresh_next_stale (c, &pos, RESYNC_RUN, &offset, &count))
      break;
    for (; count > 0; offset += len, count -= len) {
      uint64_t read = 0;

      len = settle_uniform (offset, count);
      resync_range (c, offset, len, &copied, &zeroed, &read);
      ratelimit_pace (&resync_limit, &bucket, read, resync_cancelled, c);
    }
    __atomic_store_n (&c->resync_done, copied, __ATOMIC_RELEASE);
    /* The tenths of what was stale when it began passed now, if it is
     * not done (resync-end says that).
     */
    if (copied < total && copied * 10 / total > tenths) {
      tenths = copied * 10 / total;
      report_resync_progress (c->index, tenths * 10, fresh_stale_bytes (c),
                              copied);
      /* What it copied so far survives its going down (a rebuild
       * continues from here): a flush a tenth.
       */
      if (!local)
        resync_flush (c);
    }
  }

  if (copied && !local)
    resync_flush (c);
  left = fresh_stale_bytes (c);
  report_resync_end (c->index, left, copied, zeroed);
  __atomic_store_n (&c->resync_since, 0, __ATOMIC_RELEASE);
  return left ? 1 : 0;
}
