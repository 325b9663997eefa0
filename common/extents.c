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

#include "extmerge.h"
#include "fanout.h"
#include "internal.h"

_Static_assert (EXTMERGE_HOLE == NBDKIT_EXTENT_HOLE &&
                EXTMERGE_ZERO == NBDKIT_EXTENT_ZERO,
                "extmerge.h's types are base:allocation's");

/* A child answering block status on a second connection sees the
 * writes of its first only once they are flushed: flush those of mask
 * with writes completed since.  One whose flush fails has no vote: it
 * leaves *mask, its error in errs[].
 */
static int
extents_flush_stale (struct quorum_conn *conn, uint32_t *mask, int *errs,
                     int *err)
{
  struct fanout *f;
  uint32_t stale = 0;
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    if ((*mask & (UINT32_C (1) << i)) &&
        child_meta_stale (&quorum_children[i]))
      stale |= UINT32_C (1) << i;
  }
  if (stale == 0)
    return 0;
  f = fanout_run (conn, OP_FLUSH, stale, NULL, 0, NULL, 0, 0, 0, err);
  if (f == NULL)
    return -1;
  for (i = 0; i < quorum_nr_children; ++i) {
    if (f->slots[i].used && f->slots[i].err) {
      errs[i] = f->slots[i].err;
      *mask &= ~(UINT32_C (1) << i);
    }
  }
  fanout_put (f);
  return 0;
}

/* The children's answers merged (extmerge.c), handed to nbdkit. */
static int
extents_merge (const struct fanout *f, uint32_t count, uint64_t offset,
               struct nbdkit_extents *extents, int *err)
{
  const struct quorum_extent_list *lists[VOTE_MAX_CHILDREN];
  struct quorum_extent_list merged = { 0 };
  size_t i, nr = 0;
  int r = -1;

  for (i = 0; i < quorum_nr_children; ++i) {
    if (f->slots[i].used)
      lists[nr++] = &f->slots[i].extents;
  }
  if (extmerge_lists (lists, nr, offset, count, &merged) == -1) {
    *err = errno;
    goto out;
  }
  for (i = 0; i < merged.len; ++i) {
    if (nbdkit_add_extent (extents, merged.ptr[i].offset,
                           merged.ptr[i].length, merged.ptr[i].type) == -1) {
      *err = errno;
      goto out;
    }
  }
  r = 0;
 out:
  quorum_extent_list_free (&merged);
  return r;
}

int
quorum_extents (struct quorum_conn *conn, uint32_t count, uint64_t offset,
                uint32_t flags, struct nbdkit_extents *extents, int *err)
{
  struct fanout *f;
  size_t i, n = quorum_nr_children, ok = 0;
  int errs[VOTE_MAX_CHILDREN] = { 0 };
  uint32_t mask = fanout_participants (OP_EXTENTS, offset, count);
  int r = -1;

  if (extents_flush_stale (conn, &mask, errs, err) == -1)
    return -1;
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
  r = extents_merge (f, count, offset, extents, err);

 out:
  fanout_put (f);
  return r;
}
