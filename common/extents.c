/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Block status: every child describes the range, and the export
 * answers what all of them agree on.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "fanout.h"
#include "internal.h"

/* Where a child's extents stop covering [offset, end). */
static uint64_t
extents_end (const struct quorum_extent_list *list, uint64_t offset,
             uint64_t end)
{
  uint64_t pos = offset;
  size_t i;

  for (i = 0; i < list->len && pos < end; ++i)
    pos += list->ptr[i].length;
  return pos < end ? pos : end;
}

/* Over 80 lines: the stale flush, the vote on errors and the merge
 * share the fan-outs' slots.  XXX the merge belongs in a pure function
 * with a unit test and a fuzz target (issue 16, left for later).
 */
int
quorum_extents (struct quorum_conn *conn, uint32_t count, uint64_t offset,
                uint32_t flags, struct nbdkit_extents *extents, int *err)
{
  struct fanout *f;
  size_t i, n = quorum_nr_children, ok = 0;
  size_t pos_i[VOTE_MAX_CHILDREN] = { 0 };
  uint64_t start_i[VOTE_MAX_CHILDREN];
  uint64_t end = offset + count, pos;
  int errs[VOTE_MAX_CHILDREN] = { 0 };
  uint32_t mask = fanout_participants (OP_EXTENTS, offset, count), stale = 0;
  int r = -1;

  /* A child answering block status on a second connection sees the
   * writes of its first only once they are flushed: flush those with
   * writes completed since.  One whose flush fails has no vote.
   */
  for (i = 0; i < n; ++i) {
    if ((mask & (UINT32_C (1) << i)) &&
        child_meta_stale (&quorum_children[i]))
      stale |= UINT32_C (1) << i;
  }
  if (stale) {
    f = fanout_run (conn, OP_FLUSH, stale, NULL, 0, NULL, 0, 0, 0, err);
    if (f == NULL)
      return -1;
    for (i = 0; i < n; ++i) {
      if (f->slots[i].used && f->slots[i].err) {
        errs[i] = f->slots[i].err;
        mask &= ~(UINT32_C (1) << i);
      }
    }
    fanout_put (f);
  }

  f = fanout_run (conn, OP_EXTENTS, mask, NULL, 0, NULL, count, offset,
                  flags, err);
  if (f == NULL)
    return -1;

  for (i = 0; i < n; ++i) {
    if (f->slots[i].used)
      errs[i] = f->slots[i].err;
    if (errs[i])
      report_bad (OP_EXTENTS, i, offset, count, errs[i]);
    else if (f->slots[i].used)
      ok++;
  }
  if (ok < quorum_threshold) {
    *err = vote_errno_request (errs, n);
    report_failure_errors (OP_EXTENTS, offset, count, *err, ok);
    nbdkit_error ("quorum: extents %" PRIu32 "@%" PRIu64 ": %zu of %zu "
                  "children answered, vote-threshold is %u: %s",
                  count, offset, ok, n, quorum_threshold, strerror (*err));
    goto out;
  }

  /* A child that failed to answer may have data anywhere. */
  if (vote_errno (errs, n) != 0) {
    r = nbdkit_add_extent (extents, offset, count, 0);
    if (r == -1)
      *err = errno;
    goto out;
  }

  /* Children describe the range contiguously from offset, each as far
   * as it likes: merge over what all of them covered.
   */
  for (i = 0; i < n; ++i) {
    uint64_t e;

    start_i[i] = offset;
    if (!f->slots[i].used)
      continue;
    e = extents_end (&f->slots[i].extents, offset, end);
    if (e < end)
      end = e;
  }
  if (end <= offset) {
    r = nbdkit_add_extent (extents, offset, count, 0);
    if (r == -1)
      *err = errno;
    goto out;
  }

  for (pos = offset; pos < end; ) {
    uint32_t type = NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;
    uint64_t next = end;

    for (i = 0; i < n; ++i) {
      const struct quorum_extent_list *list = &f->slots[i].extents;
      uint64_t e_end;

      if (!f->slots[i].used)
        continue;
      /* Advance child i to its extent holding pos. */
      while (start_i[i] + list->ptr[pos_i[i]].length <= pos) {
        start_i[i] += list->ptr[pos_i[i]].length;
        pos_i[i]++;
      }
      type &= list->ptr[pos_i[i]].type;
      e_end = start_i[i] + list->ptr[pos_i[i]].length;
      if (e_end < next)
        next = e_end;
    }
    if (nbdkit_add_extent (extents, pos, next - pos, type) == -1) {
      *err = errno;
      goto out;
    }
    pos = next;
  }
  r = 0;

 out:
  fanout_put (f);
  return r;
}
