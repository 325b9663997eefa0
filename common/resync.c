/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Recovery, on top of the fan-out and the transport: when a child's
 * connection dies it is down, takes no part in requests, and every
 * write it misses is recorded in its dirty map; its supervisor thread
 * reconnects with exponential backoff, then copies the dirty regions to
 * it from the other children, voting as a read does, before it votes on
 * them again.  The dirty map lives in memory only.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "connect.h"
#include "dirty.h"
#include "fanout.h"
#include "internal.h"
#include "rangelock.h"
#include "reactor.h"
#include "resync.h"
#include "state.h"

/* Resync runs outside any client connection: in the filter it reaches
 * the plugin through a context of its own, if nbdkit gave one.
 */
static struct quorum_conn background_conn;

void
resync_set_source (const struct quorum_local_ops *local, void *local_ctx)
{
  background_conn.local = local;
  background_conn.local_ctx = local_ctx;
}

/* Copy [offset, offset+count) to child c from the other children,
 * voting as a read does.  Holds the range.
 */
static int
resync_range (struct child *c, uint64_t offset, uint32_t count)
{
  const void *bufs[VOTE_MAX_CHILDREN];
  struct vote_result v;
  struct range_lock rl;
  struct fanout *f, *w;
  uint32_t mask;
  size_t i, sources = 0, needed;
  int err, r = -1;

  range_lock (&rl, offset, count, true);
  /* The sources: the other children that are up and clean here (and
   * the filter's plugin if it can be read from here).  A clean child
   * took every write made here, the ones that failed too, so it is up
   * to date even when fewer than vote-threshold children are clean:
   * after two children missed the same writes, or with vote-threshold
   * equal to the number of children, where c can never have a vote.
   * Then every source must agree.
   */
  mask = fanout_participants (OP_READ, offset, count) &
    ~(UINT32_C (1) << c->index);
  for (i = 0; i < quorum_nr_children; ++i) {
    if (child_is_local (&quorum_children[i]) &&
        (!background_conn.local ||
         (background_conn.local->available &&
          !background_conn.local->available (background_conn.local_ctx))))
      mask &= ~(UINT32_C (1) << i);
    if (mask & (UINT32_C (1) << i))
      sources++;
  }
  needed = sources < quorum_threshold ? sources : quorum_threshold;
  if (needed == 0) {
    nbdkit_debug ("quorum: child %zu: resync %" PRIu32 "@%" PRIu64 ": no "
                  "clean child to copy from: left dirty", c->index, count,
                  offset);
    goto out;
  }
  f = fanout_run (&background_conn, OP_READ, mask, NULL, SIZE_MAX, NULL,
                  count, offset, 0, &err);
  if (f == NULL)
    goto out;
  for (i = 0; i < quorum_nr_children; ++i)
    bufs[i] = f->slots[i].used && f->slots[i].err == 0 ?
      f->slots[i].buf : NULL;
  vote_tally (bufs, quorum_nr_children, 0, count, &v);
  if (v.votes < needed) {
    nbdkit_debug ("quorum: child %zu: resync %" PRIu32 "@%" PRIu64 ": only "
                  "%zu of %zu clean children agree: left dirty",
                  c->index, count, offset, v.votes, sources);
    fanout_put (f);
    goto out;
  }
  w = fanout_run (&background_conn, OP_WRITE, UINT32_C (1) << c->index,
                  NULL, 0, bufs[v.winner], count, offset, 0, &err);
  if (w) {
    if (w->slots[c->index].err == 0) {
      dirty_clear (&c->dirty, offset, count);
      STAT_ADD (c, bytes_repaired, count);
      r = 0;
    }
    else
      report_bad (OP_WRITE, c->index, offset, count,
                  w->slots[c->index].err);
    fanout_put (w);
  }
  fanout_put (f);
 out:
  range_unlock (&rl);
  return r;
}

/* For control's status: a resync of what is stale now begins. */
static void
resync_progress_begin (struct child *c)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  __atomic_store_n (&c->resync_total, dirty_bytes (&c->dirty),
                    __ATOMIC_RELEASE);
  __atomic_store_n (&c->resync_done, 0, __ATOMIC_RELEASE);
  __atomic_store_n (&c->resync_since,
                    (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec,
                    __ATOMIC_RELEASE);
}

/* Copy every dirty region to c from the quorum.  -1 if c went down. */
static int
resync_child (struct child *c)
{
  uint64_t pos = 0, offset, count, copied = 0;
  struct range_lock rl;

  report_resync ("resync-start", c->index, dirty_bytes (&c->dirty), 0);
  resync_progress_begin (c);

  /* Writers that saw this child down mark its map when they finish:
   * wait for every one in flight, after which all include the child.
   */
  range_lock (&rl, 0, quorum_export_size, true);
  range_unlock (&rl);

  for (;;) {
    if (state_get (c) == CHILD_DOWN || state_quitting (c)) {
      __atomic_store_n (&c->resync_since, 0, __ATOMIC_RELEASE);
      return -1;
    }
    /* Up to 1 MiB of consecutive dirty granules at a time. */
    if (!dirty_next_run (&c->dirty, &pos, 16, &offset, &count))
      break;
    if (resync_range (c, offset, count) == 0) {
      copied += count;
      __atomic_add_fetch (&c->resync_done, count, __ATOMIC_RELEASE);
    }
  }

  report_resync ("resync-end", c->index, dirty_bytes (&c->dirty), copied);
  __atomic_store_n (&c->resync_since, 0, __ATOMIC_RELEASE);
  return 0;
}

/* Whether c, offering caps, may join: it must offer what the export
 * promised that the engine cannot make up for it (caps_lacking).
 * Else it is said why, and it stays down.
 */
bool
resync_fits (struct child *c, const struct quorum_caps *caps)
{
  char buf[128];
  const char *lack = caps_lacking (caps, buf, sizeof buf);

  if (lack == NULL)
    return true;
  nbdkit_error ("quorum: child %zu (%s): not joining: it %s; next try "
                "in %u s", c->index, c->name, lack, quorum_reconnect_max);
  return false;
}

void *
resync_supervisor (void *vp)
{
  struct child *c = vp;
  unsigned delay = quorum_reconnect_delay;

  for (;;) {
    struct nbd_handle *nbd, *meta, *old, *old_meta;
    struct quorum_caps caps;
    char *why = NULL;

    if (!state_wait_down (c))
      break;

    /* The reactor saw the death and let go, or is told to. */
    reactor_release (c);

    if (!state_sleep (c, delay))
      break;
    if (connect_child (c, c->quit_pipe[0], &caps, &nbd, &meta, &why) == -1) {
      /* Both at most a day: the double cannot wrap. */
      delay = delay * 2 < quorum_reconnect_max ?
        delay * 2 : quorum_reconnect_max;
      nbdkit_debug ("quorum: child %zu (%s): reconnect failed: %s; next "
                    "try in %u s", c->index, c->name,
                    why ? why : "out of memory", delay);
      free (why);
      continue;
    }
    if (caps.size != quorum_export_size) {
      nbdkit_error ("quorum: child %zu (%s): came back with size %" PRIi64
                    ", not %" PRIi64 ": not rejoining", c->index, c->name,
                    caps.size, quorum_export_size);
      connect_close (nbd, true);
      connect_close (meta, true);
      delay = quorum_reconnect_max;
      continue;
    }

    if (!resync_fits (c, &caps)) {
      connect_close (nbd, true);
      connect_close (meta, true);
      delay = quorum_reconnect_max;
      continue;
    }

    pthread_rwlock_wrlock (&c->nbd_lock);
    old = c->nbd;
    old_meta = c->meta;
    c->nbd = nbd;
    /* child_meta_stale reads it without the lock. */
    __atomic_store_n (&c->meta, meta, __ATOMIC_RELEASE);
    /* Commands read them under the lock: they go with the handle. */
    c->caps = caps;
    c->caps_known = true;
    pthread_rwlock_unlock (&c->nbd_lock);
    /* Dead, or idle and cut: their commands were all retired. */
    connect_close (old, false);
    connect_close (old_meta, false);
    reactor_serve (c);

    state_set (c, CHILD_RESYNC);
    report_up (c->index);
    delay = quorum_reconnect_delay;

    if (resync_child (c) == 0)
      state_resync_done (c);
  }
  return NULL;
}

