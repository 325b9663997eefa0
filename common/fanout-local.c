/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The fan-out's part for the local child (the filter's plugin), called
 * in-process on the request's thread while the remote commands are in
 * flight.
 */

#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include <nbdkit-filter.h>

#include "fanout.h"
#include "internal.h"

/* One call to the local child, for [offset, +count) of the request. */
static int
fanout_local_part (struct quorum_conn *conn, struct slot *s, enum op_type type,
            const void *wbuf, uint32_t count, uint64_t offset,
            uint32_t flags, int *err)
{
  const struct quorum_local_ops *ops = conn->local;
  void *ctx = conn->local_ctx;
  uint64_t rel = offset - s->offset;

  switch (type) {
  case OP_READ:
    return ops->pread (ctx, (char *) s->buf + rel, count, offset, 0, err);
  case OP_WRITE:
    return ops->pwrite (ctx, (const char *) wbuf + rel, count, offset,
                        flags, err);
  case OP_ZERO: case OP_TRIM:
    return ops->zero (ctx, count, offset, flags, err);
  case OP_CACHE:
    return ops->cache (ctx, count, offset, 0, err);
  default:
    abort ();
  }
}

/* Run the local child's part on this thread, with what it offers
 * (conn->local_caps), as slot_send does for a remote child; FUA it
 * lacks is a flush after the write, here.
 */
void
fanout_run_local (struct quorum_conn *conn, struct slot *s,
                enum op_type type, const void *wbuf, uint32_t count,
                uint64_t offset, uint32_t flags)
{
  const struct quorum_local_ops *ops = conn->local;
  const struct quorum_caps *lc = &conn->local_caps;
  void *ctx = conn->local_ctx;
  uint64_t pos = offset, end = offset + count;
  uint32_t lflags = 0;
  bool flush_after = false;
  int err = 0, r = 0;

  s->offset = offset;
  switch (type) {
  case OP_FLUSH:
    r = lc->can_flush ? ops->flush (ctx, 0, &err) : (err = EINVAL, -1);
    goto out;
  case OP_EXTENTS:
    if (lc->can_extents)
      r = ops->extents (ctx, count, offset, flags & NBDKIT_FLAG_REQ_ONE,
                        &s->extents, &err);
    else if (quorum_extent_append (&s->extents, offset, count, 0) == -1)
      r = -1, err = ENOMEM;
    goto out;
  case OP_CACHE:
    if (!lc->can_cache)
      goto out;
    break;
  case OP_WRITE: case OP_ZERO: case OP_TRIM:
    if (!lc->can_write || (type != OP_WRITE && !lc->can_zero)) {
      r = -1, err = EROFS;
      goto out;
    }
    if (flags & NBDKIT_FLAG_FUA) {
      if (lc->can_fua)
        lflags |= NBDKIT_FLAG_FUA;
      else
        flush_after = true;
    }
    if (type == OP_TRIM)
      lflags |= NBDKIT_FLAG_MAY_TRIM;
    else if (type == OP_ZERO) {
      lflags |= flags & NBDKIT_FLAG_MAY_TRIM;
      if (flags & NBDKIT_FLAG_FAST_ZERO) {
        if (!lc->can_fast_zero) {
          r = -1, err = ENOTSUP;
          goto out;
        }
        lflags |= NBDKIT_FLAG_FAST_ZERO;
      }
    }
    break;
  case OP_READ:
    break;
  }

  while (r == 0 && pos < end) {
    uint64_t e = fanout_part_end (pos, end, lc->block_max, lc->block_min);

    r = fanout_local_part (conn, s, type, wbuf, e - pos, pos, lflags, &err);
    pos = e;
  }
  if (r == 0 && flush_after)
    r = lc->can_flush ? ops->flush (ctx, 0, &err) : (err = EINVAL, -1);

 out:
  if (r == -1)
    s->err = err ? err : EIO;
}
