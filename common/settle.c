/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Settling unsettled regions: see settle.h.
 *
 * An unsettled region is one where the children may differ without
 * any of them being wrong (a write failed below the threshold, or was
 * in flight when the quorum stopped): every version there is one the
 * client may see, but they must be made equal before the region is
 * voted on again, or a later read would find no quorum, or a
 * half-written version would win on one block and the old one on the
 * next.
 *
 * The current children vote block by block, as a read does; the
 * winner, or with no version at the threshold the version of the
 * lowest-index child that answered, is written to those that differ.
 * A region is settled only when at least vote-threshold current
 * children could be read: with fewer, the children that cannot be read
 * would have to be made stale there, and the region would be left
 * with fewer current copies than a read or a copy needs, for good.  So
 * it waits for more children instead (a read of it fails meanwhile, as
 * it would anyway).  Likewise a region is settled only if at least
 * vote-threshold children hold the settled version afterwards: where a
 * rewrite failed on too many, it stays unsettled and is retried.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "dirty.h"
#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "rangelock.h"
#include "settle.h"
#include "state.h"

/* At most this much is settled under one range lock. */
#define SETTLE_CHUNK (16 * DIRTY_GRANULE)

static uint32_t
stale_mask (uint64_t offset)
{
  uint32_t mask = 0;
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i)
    if (fresh_stale (&quorum_children[i], offset, 1))
      mask |= UINT32_C (1) << i;
  return mask;
}

uint64_t
settle_uniform (uint64_t offset, uint64_t count)
{
  const uint64_t end = offset + count;
  uint64_t g = offset & ~(DIRTY_GRANULE - 1);
  const uint32_t first = stale_mask (g);

  for (g += DIRTY_GRANULE; g < end; g += DIRTY_GRANULE)
    if (stale_mask (g) != first)
      return g - offset;
  return count;
}

bool
settle_local_readable (struct quorum_conn *conn)
{
  return conn->local &&
    (conn->local->available == NULL ||
     conn->local->available (conn->local_ctx));
}

uint32_t
settle_readable (struct quorum_conn *conn, uint64_t offset, uint64_t count)
{
  uint32_t mask = fanout_participants (OP_READ, offset, count);
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i)
    if (child_is_local (&quorum_children[i]) && !settle_local_readable (conn))
      mask &= ~(UINT32_C (1) << i);
  return mask;
}

static size_t
popcount (uint32_t mask)
{
  return __builtin_popcount (mask);
}

/* Settle [offset, +count), over which no child's staleness changes
 * (settle_uniform), its range held exclusively.
 */
/* Over 80 lines: read, vote block by block, write back, record; each
 * step needs what the one before found.
 */
static int
settle_uniform_range (struct quorum_conn *conn, uint64_t offset,
                      uint32_t count, int *err)
{
  const uint64_t bs = quorum_vote_block, end = offset + count;
  const void *bufs[VOTE_MAX_CHILDREN];
  uint64_t first[VOTE_MAX_CHILDREN], last[VOTE_MAX_CHILDREN];
  uint64_t pos, next, rewritten = 0;
  uint32_t current = 0, readers, ok = 0, took = 0;
  size_t i, n = quorum_nr_children, worst_votes = SIZE_MAX, worst = 0;
  struct vote_result v;
  struct fanout *f, *w;
  char *out;
  int r = -1;

  for (i = 0; i < n; ++i)
    if (!fresh_stale (&quorum_children[i], offset, count))
      current |= UINT32_C (1) << i;
  readers = settle_readable (conn, offset, count) & current;

  /* The plugin, current here, cannot be read from a background thread
   * while no client lends it: later, or by a client's read.
   */
  if (quorum_has_local && (current & 1) && !(readers & 1)) {
    *err = EAGAIN;
    return -1;
  }
  if (popcount (readers) < quorum_threshold) {
    nbdkit_debug ("quorum: settle %" PRIu32 "@%" PRIu64 ": %zu current "
                  "children can be read, vote-threshold is %u: left "
                  "unsettled", count, offset, popcount (readers),
                  quorum_threshold);
    *err = EIO;
    return -1;
  }

  f = fanout_run (conn, OP_READ, readers, NULL, SIZE_MAX, NULL, count,
                  offset, 0, err);
  if (f == NULL)
    return -1;
  for (i = 0; i < n; ++i) {
    bufs[i] = f->slots[i].used && f->slots[i].err == 0 ?
      f->slots[i].buf : NULL;
    if (bufs[i])
      ok |= UINT32_C (1) << i;
    first[i] = last[i] = 0;
  }
  if (popcount (ok) < quorum_threshold) {
    nbdkit_debug ("quorum: settle %" PRIu32 "@%" PRIu64 ": %zu current "
                  "children returned data, vote-threshold is %u: left "
                  "unsettled", count, offset, popcount (ok),
                  quorum_threshold);
    *err = EIO;
    goto out_f;
  }
  out = bufpool_get (count);
  if (out == NULL) {
    *err = ENOMEM;
    goto out_f;
  }

  /* The version of each block, assembled in out; the span of blocks
   * each child must be rewritten on (blocks in between already hold
   * the winner, and nothing writes here meanwhile).
   */
  for (pos = offset; pos < end; pos = next) {
    const size_t rel = pos - offset;
    size_t win;

    next = (pos / bs + 1) * bs;
    if (next > end)
      next = end;
    vote_tally (bufs, n, rel, next - pos, &v);
    if (v.votes >= quorum_threshold)
      win = v.winner;
    else                        /* any version will do: the first */
      for (win = 0; bufs[win] == NULL; ++win)
        ;
    if (v.votes < worst_votes) {  /* the report names the worst */
      worst_votes = v.votes;
      worst = win;
    }
    memcpy (out + rel, (const char *) bufs[win] + rel, next - pos);
    for (i = 0; i < n; ++i) {
      if (bufs[i] == NULL || v.version[i] == v.version[win])
        continue;
      if (last[i] == 0)
        first[i] = pos;
      last[i] = next;
      rewritten += next - pos;
    }
  }

  for (i = 0; i < n; ++i) {
    struct child *c = &quorum_children[i];

    if (last[i] == 0) {
      if (ok & (UINT32_C (1) << i))
        took |= UINT32_C (1) << i;
      continue;
    }
    w = fanout_run (conn, OP_WRITE, UINT32_C (1) << i, NULL, 0,
                    out + (first[i] - offset), last[i] - first[i], first[i],
                    0, err);
    if (w && w->slots[i].err == 0) {
      fresh_took (c, first[i], last[i] - first[i]);
      took |= UINT32_C (1) << i;
    }
    else if (w)
      report_bad (OP_WRITE, i, first[i], last[i] - first[i],
                  w->slots[i].err);
    if (w)
      fanout_put (w);
  }
  bufpool_put (out, count);

  /* Settled needs vote-threshold children holding the version now: a
   * rewrite that failed (a transient error) must not leave fewer, made
   * stale for good where they could never be copied to again.  It is
   * tried again later; a read of it fails meanwhile.
   */
  if (popcount (took) < quorum_threshold) {
    nbdkit_debug ("quorum: settle %" PRIu32 "@%" PRIu64 ": only %zu "
                  "children hold the settled version, vote-threshold is "
                  "%u: left unsettled", count, offset, popcount (took),
                  quorum_threshold);
    *err = EIO;
    goto out_f;
  }

  /* Current children that are not equal now are stale here. */
  for (i = 0; i < n; ++i) {
    const uint32_t bit = UINT32_C (1) << i;

    if ((current & bit) && !(took & bit) &&
        fresh_stale_mark (&quorum_children[i], offset, count,
                          FRESH_UNSETTLED) == -1) {
      *err = EIO;
      goto out_f;
    }
  }
  fresh_settled (offset, count);
  report_settle (offset, count, worst, worst_votes, rewritten);
  r = 0;
 out_f:
  fanout_put (f);
  return r;
}

int
settle_range (struct quorum_conn *conn, uint64_t offset, uint64_t count,
              int *err)
{
  uint64_t end = offset + count, pos, o, n;

  if (end > (uint64_t) quorum_export_size)
    end = quorum_export_size;
  pos = offset & ~(DIRTY_GRANULE - 1);
  while (pos < end && fresh_next_unsettled (&pos, SETTLE_CHUNK, &o, &n)) {
    struct range_lock rl;
    uint64_t len;
    int r = 0;

    if (o >= end)
      break;
    /* Whole granules: the run ends on one, or at the end of the
     * export.
     */
    if (o + n > end)
      n = ((end - o + DIRTY_GRANULE - 1) & ~(DIRTY_GRANULE - 1));
    if (o + n > (uint64_t) quorum_export_size)
      n = quorum_export_size - o;

    range_lock (&rl, o, n, true);
    for (; r == 0 && n > 0; o += len, n -= len) {
      len = settle_uniform (o, n);
      /* Someone else may have settled it meanwhile. */
      if (fresh_unsettled (o, len))
        r = settle_uniform_range (conn, o, len, err);
    }
    range_unlock (&rl);
    if (r == -1)
      return -1;
  }
  return 0;
}
