/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The identity check of a returning child: see identity.h.  On the
 * layer of resync.c, which calls it (it reads through the fan-out).
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
#include "identity.h"
#include "internal.h"
#include "rangelock.h"
#include "settle.h"
#include "state.h"

/* Is a returning child the disk it was?  Its stale map says where it
 * missed writes; everywhere else it is trusted to hold what the others
 * hold.  A restarted memory server, a restored snapshot or another
 * disk at the same address would be trusted wrongly, so before it
 * takes part again a sample of blocks is compared with what the
 * current children hold.
 *
 * How strong: up to SAMPLE_BLOCKS blocks of vote-block-size (at most
 * 1 MiB), chosen at random where block status of a current child
 * says it holds data (SAMPLE_SCANS requests of up to 1 GiB from a
 * random place, at most SAMPLE_EXTENTS data extents), anywhere if it
 * offers none, and only where the returning child is neither stale nor
 * unsettled.  A block is judged against the version vote-threshold
 * current children agree on: one difference makes the child wholly
 * stale.  Where fewer agree (all the current children that can be
 * read, e.g. the one other child of two), one of them may be the wrong
 * copy: it takes a difference in most of such blocks, and in two at
 * least.  A block they do not agree on is not judged.  An empty disk,
 * another disk or one that lost much
 * fails it almost surely wherever the quorum holds data; a snapshot a
 * little old, or a disk that lost a few writes, differs in few blocks
 * and likely passes: the check is no substitute for a stale map
 * (state=).  A child stale everywhere is not checked (it is rebuilt
 * anyway), nor one with no current child to compare with.
 */
#define SAMPLE_BLOCKS 16
#define SAMPLE_TRIES (3 * SAMPLE_BLOCKS)
#define SAMPLE_SCANS 32
#define SAMPLE_EXTENTS 256
#define SAMPLE_WINDOW (UINT32_C (1) << 30)

struct data_extents {
  uint64_t offset[SAMPLE_EXTENTS], length[SAMPLE_EXTENTS];
  size_t nr;
  uint64_t total;               /* bytes */
};

/* xorshift64*: where to look, not a secret. */
static uint64_t
sample_random (uint64_t *state)
{
  uint64_t x = *state;

  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * UINT64_C (0x2545F4914F6CDD1D);
}

static void
data_add (struct data_extents *d, uint64_t offset, uint64_t length)
{
  if (d->nr > 0 && d->offset[d->nr - 1] + d->length[d->nr - 1] == offset)
    d->length[d->nr - 1] += length;
  else if (d->nr < SAMPLE_EXTENTS) {
    d->offset[d->nr] = offset;
    d->length[d->nr] = length;
    d->nr++;
  }
  else
    return;
  d->total += length;
}

/* Where child src holds data, from a random place on. */
static void
sample_scan (struct quorum_conn *conn, size_t src, uint64_t *rnd,
             struct data_extents *d)
{
  const uint64_t size = quorum_export_size;
  uint64_t pos = (sample_random (rnd) % size) & ~(DIRTY_GRANULE - 1);
  uint64_t scanned = 0;
  size_t req, j;

  for (req = 0; req < SAMPLE_SCANS && scanned < size &&
         d->nr < SAMPLE_EXTENTS; ++req) {
    uint32_t len = size - pos < SAMPLE_WINDOW ? size - pos : SAMPLE_WINDOW;
    uint64_t got = 0;
    struct fanout *f;
    struct slot *s;
    int err;

    f = fanout_run (conn, OP_EXTENTS, UINT32_C (1) << src,
                    NULL, 0, NULL, len, pos, 0, &err);
    if (f == NULL)
      return;
    s = &f->slots[src];
    for (j = 0; s->err == 0 && j < s->extents.len; ++j) {
      const struct quorum_extent *e = &s->extents.ptr[j];
      uint64_t a = e->offset, b = e->offset + e->length;

      if (a < pos)
        a = pos;
      if (b > pos + len)
        b = pos + len;
      if (b <= a)
        continue;
      if (!(e->type & NBDKIT_EXTENT_ZERO))
        data_add (d, a, b - a);
      got = b - pos;
    }
    fanout_put (f);
    if (got == 0)
      return;
    scanned += got;
    pos += got;
    if (pos >= size)
      pos = 0;
  }
}

enum sample_result { SAMPLE_SAME, SAMPLE_DIFFERS, SAMPLE_SKIPPED,
                     SAMPLE_FAILED };

/* Compare [offset, +len) of c with the current children, holding the
 * range (no write may be half done on it meanwhile).
 */
static enum sample_result
sample_block (struct quorum_conn *conn, struct child *c, uint64_t offset,
              uint32_t len, bool *strong)
{
  const uint32_t cbit = UINT32_C (1) << c->index;
  const void *bufs[VOTE_MAX_CHILDREN];
  enum sample_result r = SAMPLE_SKIPPED;
  struct vote_result v;
  struct range_lock rl;
  struct fanout *f;
  uint32_t others;
  size_t i;
  int err;

  range_lock (&rl, offset, len, false);
  if (fresh_stale (c, offset, len) || fresh_unsettled (offset, len))
    goto out;
  others = settle_readable (conn, offset, len) & ~cbit;
  if (others == 0)
    goto out;
  f = fanout_run (conn, OP_READ, others | cbit, NULL, SIZE_MAX,
                  NULL, len, offset, 0, &err);
  if (f == NULL)
    goto out;
  if (f->slots[c->index].err) {
    r = SAMPLE_FAILED;
    goto out_f;
  }
  for (i = 0; i < quorum_nr_children; ++i)
    bufs[i] = i != c->index && f->slots[i].used && f->slots[i].err == 0 ?
      f->slots[i].buf : NULL;
  vote_tally (bufs, quorum_nr_children, 0, len, &v);
  *strong = v.votes >= quorum_threshold;
  if (v.nr_ok > 0 && (*strong || v.nr_versions == 1))
    r = memcmp (f->slots[c->index].buf, bufs[v.winner], len) == 0 ?
      SAMPLE_SAME : SAMPLE_DIFFERS;
 out_f:
  fanout_put (f);
 out:
  range_unlock (&rl);
  return r;
}

/* c, reconnected and still down (it takes no part in requests), is
 * compared with the quorum.  1 if it is the same disk as far as the
 * sample tells, 0 if not (it is then wholly stale), -1 if it could not
 * be read or its staleness could not be recorded.
 */
/* Over 80 lines: where to look, then the comparisons and the verdict. */
int
identity_same_disk (struct quorum_conn *conn, struct child *c)
{
  const uint64_t size = quorum_export_size;
  const uint64_t bs = quorum_vote_block < (1 << 20) ?
    quorum_vote_block : (1 << 20);
  struct data_extents *d;
  struct timespec ts;
  uint64_t rnd, x, b, first_diff = 0;
  size_t i, src = SIZE_MAX, tries, judged = 0, weak = 0, weak_diff = 0;
  int r = 1;

  if (fresh_stale_bytes (c) >= (uint64_t) size)
    return 1;                   /* nothing of it is trusted */
  d = calloc (1, sizeof *d);
  if (d == NULL)
    return -1;
  clock_gettime (CLOCK_REALTIME, &ts);
  rnd = (uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 20) ^
    ((c->index + 1) * UINT64_C (0x9E3779B97F4A7C15));
  if (rnd == 0)
    rnd = 1;

  /* Block status from the child that is stale in the least (a child
   * that is stale everywhere, e.g. another one just rebuilding, would
   * show no data at all), a remote one rather than the plugin.
   */
  {
    uint64_t least = size;

    for (i = 0; i < quorum_nr_children; ++i) {
      struct child *o = &quorum_children[i];
      uint64_t stale = fresh_stale_bytes (o);

      if (i == c->index || stale >= (uint64_t) size ||
          (child_is_local (o) ? !settle_local_readable (conn)
           : state_get (o) == CHILD_DOWN))
        continue;
      if (src == SIZE_MAX || stale < least ||
          (stale == least && child_is_local (&quorum_children[src]))) {
        src = i;
        least = stale;
      }
    }
  }
  if (src != SIZE_MAX)
    sample_scan (conn, src, &rnd, d);

  for (tries = 0; tries < SAMPLE_TRIES && judged < SAMPLE_BLOCKS; ++tries) {
    enum sample_result sr;
    bool strong = false;

    if (d->total) {             /* a byte of data, at random */
      x = sample_random (&rnd) % d->total;
      for (i = 0; x >= d->length[i]; ++i)
        x -= d->length[i];
      b = d->offset[i] + x;
    }
    else
      b = sample_random (&rnd) % size;
    b -= b % bs;
    sr = sample_block (conn, c, b, size - b < bs ? size - b : bs, &strong);
    if (sr == SAMPLE_SKIPPED)
      continue;
    if (sr == SAMPLE_FAILED) {
      nbdkit_debug ("quorum: child %zu (%s): could not be read back",
                    c->index, child_name (c));
      r = -1;
      break;
    }
    judged++;
    if (sr == SAMPLE_DIFFERS && (strong || weak_diff == 0))
      first_diff = b;
    /* Against vote-threshold children that agree, one difference is
     * enough.  Against fewer (all the current children that can be
     * read, when they agree), one of them may be the wrong one: it
     * takes most of such blocks, and two at least.
     */
    if (sr == SAMPLE_DIFFERS && strong) {
      r = 0;
      break;
    }
    if (!strong) {
      weak++;
      if (sr == SAMPLE_DIFFERS)
        weak_diff++;
    }
  }
  if (r == 1 && weak_diff >= 2 && weak_diff * 2 > weak)
    r = 0;
  if (r == 0) {
    nbdkit_error ("quorum: child %zu (%s): came back holding other data "
                  "than the quorum at %" PRIu64 ": not the disk it was, or "
                  "it lost what it held: wholly stale, to be rebuilt",
                  c->index, child_name (c), first_diff);
    if (fresh_stale_mark (c, 0, size, FRESH_LOST_CONTENTS) == -1)
      r = -1;
  }
  else if (r == 1)
    nbdkit_debug ("quorum: child %zu (%s): the same disk: %zu blocks of "
                  "%" PRIu64 " bytes (%s) compared, %zu against fewer than "
                  "vote-threshold children, %zu of them differing",
                  c->index, child_name (c), judged, bs,
                  d->total ? "where there is data" : "anywhere", weak,
                  weak_diff);
  free (d);
  return r;
}

