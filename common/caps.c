/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Capabilities: what the export promises, from what the children
 * reachable at start-up offer, and what one client connection offers.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "internal.h"

/* Combine what one child can do into what the quorum can do.  FUA is
 * offered where every child has it or can flush (the engine flushes
 * those without it after the write).
 */
static void
caps_merge (struct quorum_caps *q, const struct quorum_caps *c)
{
  q->can_write &= c->can_write;
  q->can_flush &= c->can_flush;
  q->can_zero &= c->can_zero;
  q->can_fast_zero &= c->can_fast_zero;
  q->can_fua &= c->can_fua || c->can_flush;
  q->can_extents &= c->can_extents;
  q->can_cache &= c->can_cache;
  q->is_rotational |= c->is_rotational;
  if (c->block_min > q->block_min)
    q->block_min = c->block_min;
  if (c->block_pref > q->block_pref)
    q->block_pref = c->block_pref;
  if (c->block_max && (q->block_max == 0 || c->block_max < q->block_max))
    q->block_max = c->block_max;
}

struct quorum_caps caps_promise;

void
caps_promise_init (void)
{
  struct quorum_caps q = {
    .size = -1,
    .can_write = true, .can_flush = true, .can_zero = true,
    .can_fast_zero = true, .can_fua = true, .can_extents = true,
    .can_cache = true, .can_multi_conn = true,
  };
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    const struct child *c = &quorum_children[i];

    if (child_is_local (c) || !c->caps_known)
      continue;
    if (q.size == -1)
      q.size = c->caps.size;
    caps_merge (&q, &c->caps);
  }
  caps_promise = q;
}

/* 0 stands for no minimum. */
static uint32_t
caps_min_block (uint32_t m)
{
  return m ? m : 1;
}

const char *
caps_lacking (const struct quorum_caps *c, char *buf, size_t len)
{
  const struct quorum_caps *p = &caps_promise;

  if (p->can_write && !c->can_write)
    return "is read-only, and the export is writable";
  if (p->can_flush && !c->can_flush)
    return "cannot flush, and the export offers flush";
  if (p->can_zero && !c->can_zero)
    return "cannot write zeroes, and the export offers zero and trim";
  if (p->can_fua && !c->can_fua && !c->can_flush)
    return "has neither FUA nor flush, and the export offers FUA";
  if (caps_min_block (c->block_min) > caps_min_block (p->block_min)) {
    snprintf (buf, len, "needs requests aligned to %" PRIu32 " bytes, and "
              "the export's minimum block size is %" PRIu32,
              c->block_min, caps_min_block (p->block_min));
    return buf;
  }
  return NULL;
}

static void
caps_refuse_sizes (const struct quorum_caps *local_caps)
{
  char *msg = NULL;
  size_t len = 0, i;
  FILE *fp = open_memstream (&msg, &len);

  if (fp) {
    for (i = 0; i < quorum_nr_children; ++i) {
      const struct child *c = &quorum_children[i];

      if (child_is_local (c))
        fprintf (fp, "%s child %zu (%s): %" PRIi64, i ? "," : "", i,
                 child_name (c), local_caps->size);
      else if (c->caps_known)
        fprintf (fp, "%s child %zu (%s): %" PRIi64, i ? "," : "", i,
                 child_name (c), c->caps.size);
    }
    fclose (fp);
  }
  nbdkit_error ("quorum: children have different sizes, refusing the "
                "connection:%s", msg ? msg : " (out of memory)");
  free (msg);
}

int
quorum_conn_init (struct quorum_conn *conn,
                  const struct quorum_local_ops *local, void *local_ctx,
                  const struct quorum_caps *local_caps, bool readonly)
{
  struct quorum_caps q = caps_promise;

  conn->local = local;
  conn->local_ctx = local_ctx;

  if (local_caps) {
    if (local_caps->size != q.size) {
      caps_refuse_sizes (local_caps);
      return -1;
    }
    conn->local_caps = *local_caps;
    caps_merge (&q, local_caps);
    /* The remote children are one connection each, shared by every
     * client connection, so a flush on any client connection covers
     * writes from all of them there; only the local child needs to say
     * so for itself.
     */
    q.can_multi_conn = local_caps->can_multi_conn;
  }

  if (readonly)
    q.can_write = false;
  if (!q.can_write)
    q.can_zero = q.can_fast_zero = q.can_fua = false;
  if (!q.can_zero)
    q.can_fast_zero = false;
  /* A trim is a zero that may punch holes (quorum_trim). */
  q.can_trim = q.can_zero;
  if (q.block_max && q.block_pref > q.block_max)
    q.block_pref = q.block_max;

  if (quorum_rewrite_corrupted && !q.can_write) {
    nbdkit_error ("rewrite-corrupted=true: the export is read-only%s, so "
                  "outvoted children cannot be rewritten: drop -r or "
                  "rewrite-corrupted", readonly ? "" : " (a child is)");
    return -1;
  }

  conn->caps = q;
  if (!q.can_write)
    conn->zero_mode = NBDKIT_ZERO_NONE;
  else
    conn->zero_mode = q.can_zero ? NBDKIT_ZERO_NATIVE : NBDKIT_ZERO_EMULATE;
  conn->fua_mode = q.can_fua ? NBDKIT_FUA_NATIVE : NBDKIT_FUA_NONE;
  conn->cache_mode = q.can_cache ? NBDKIT_CACHE_NATIVE : NBDKIT_CACHE_NONE;
  return 0;
}

int
quorum_block_size (const struct quorum_conn *conn, uint32_t *minimum,
                   uint32_t *preferred, uint32_t *maximum)
{
  *minimum = conn->caps.block_min;
  *preferred = conn->caps.block_pref;
  *maximum = conn->caps.block_max;
  return 0;
}

bool
caps_fit (struct child *c, const struct quorum_caps *caps)
{
  char buf[128];
  const char *lack = caps_lacking (caps, buf, sizeof buf);

  if (lack == NULL)
    return true;
  nbdkit_error ("quorum: child %zu (%s): not joining: it %s; next try "
                "in %u s", c->index, child_name (c), lack,
                quorum_reconnect_max);
  return false;
}
