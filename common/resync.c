/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Recovery, on top of the fan-out and the transport.
 *
 * Every child has a thread that heals it: a remote child's supervisor,
 * the filter's plugin's healer.  When a remote child's connection dies
 * it is down, takes no part in requests, and every write it misses
 * makes it stale there (fresh.h); what it had taken but not flushed is
 * stale too, since it may have lost it.  Its supervisor reconnects it
 * with exponential backoff, checks that it is the same disk
 * (identity_same_disk), then copies its stale regions to it.  A child
 * that is up and becomes stale somewhere (a write or flush failed on
 * it) is healed at once, the same way.
 *
 * A copy needs vote-threshold current children that agree, block by
 * block (vote-block-size), as a read does: blocks without such a
 * version stay stale and are retried, with backoff from reconnect-delay
 * to reconnect-max-delay, and at once when another child comes back.
 *
 * One more thread, the settler, settles unsettled regions (settle.c)
 * soon after they appear, and those a crash left (state=).
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

#include "connect.h"
#include "dirty.h"
#include "fanout.h"
#include "fresh.h"
#include "identity.h"
#include "internal.h"
#include "rangelock.h"
#include "ratelimit.h"
#include "reactor.h"
#include "replace.h"
#include "resync.h"
#include "settle.h"
#include "state.h"

/* Up to this much of a child's consecutive stale granules at a time. */
#define RESYNC_RUN (16 * DIRTY_GRANULE)

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
static struct quorum_conn background_conn;

void
resync_set_source (const struct quorum_local_ops *local, void *local_ctx)
{
  background_conn.local = local;
  background_conn.local_ctx = local_ctx;
  /* What the lent context takes: plain reads and writes, which the
   * filter passes to a writable client context only.
   */
  background_conn.local_caps.can_write = local != NULL;
  background_conn.local_caps.can_extents = local != NULL;
}

static size_t
popcount (uint32_t mask)
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

  w = fanout_run (&background_conn, OP_WRITE, UINT32_C (1) << c->index,
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
  f = fanout_run (&background_conn, OP_EXTENTS, mask, NULL, 0, NULL, count,
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

  /* Only this thread changes c->caps (rejoin). */
  if (!child_is_local (c) && c->caps.can_zero)
    w = fanout_run (&background_conn, OP_ZERO, UINT32_C (1) << c->index,
                    NULL, 0, NULL, count, offset, NBDKIT_FLAG_MAY_TRIM,
                    &err);
  else {
    buf = bufpool_get (count);
    if (buf == NULL)
      return -1;
    memset (buf, 0, count);
    w = fanout_run (&background_conn, OP_WRITE, UINT32_C (1) << c->index,
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

/* Copy [offset, +count) to child c where vote-threshold current
 * children agree, block by block; over the range no child's staleness
 * changes (settle_uniform).  Holds the range.  -1 if writing to c
 * failed; leftovers are not an error (they stay stale).
 */
/* Over 80 lines: sources, read, vote per block, write the runs that
 * have a winner; each step needs what the one before found.
 */
static int
resync_range (struct child *c, uint64_t offset, uint32_t count,
              uint64_t *copied, uint64_t *zeroed, uint64_t *read)
{
  const uint64_t bs = quorum_vote_block, end = offset + count;
  const void *bufs[VOTE_MAX_CHILDREN];
  struct vote_result v;
  struct range_lock rl;
  struct fanout *f;
  uint64_t pos, next, span, nr_lost = 0;
  uint32_t mask;
  size_t i, ok = 0;
  char *out;
  int err, r = 0;

  /* Where the children may differ without any of them being wrong,
   * make them equal first: the sources then agree.
   */
  if (fresh_unsettled (offset, count))
    settle_range (&background_conn, offset, count, &err);

  range_lock (&rl, offset, count, true);
  mask = settle_readable (&background_conn, offset, count) &
    ~(UINT32_C (1) << c->index);
  if (popcount (mask) < quorum_threshold) {
    nbdkit_debug ("quorum: child %zu: resync %" PRIu32 "@%" PRIu64 ": %zu "
                  "current children to copy from, vote-threshold is %u: "
                  "left stale", c->index, count, offset, popcount (mask),
                  quorum_threshold);
    goto out;
  }
  /* Where every source holds zeroes (a sparse disk), nothing is read. */
  if (resync_all_zero (mask, offset, count)) {
    r = resync_zero (c, offset, count, copied, zeroed);
    goto out;
  }
  f = fanout_run (&background_conn, OP_READ, mask, NULL, SIZE_MAX, NULL,
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

  /* Runs of blocks with a winner are written; a block without one
   * stays stale (and so does its granule).
   */
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
  f = fanout_run (&background_conn, OP_FLUSH, bit, NULL, 0, NULL, 0, 0, 0,
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

/* Copy every stale region to c from the quorum.  rejoined: it was just
 * reconnected.  0 if nothing is stale any more, 1 if something is
 * left, -1 if c went down or is quitting.
 */
static int
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

/* Backoff of the retries of what a resync left stale. */
struct retry {
  unsigned delay;               /* seconds, the next backoff */
  bool pending;                 /* try again at "at" */
  struct timespec at;           /* CLOCK_REALTIME, as state.c waits */
  struct timespec soonest;      /* a kick heals no sooner */
};

static void
retry_reset (struct retry *rt)
{
  rt->delay = quorum_reconnect_delay;
  rt->pending = false;
}

static void
retry_later (struct retry *rt)
{
  struct timespec now;

  clock_gettime (CLOCK_REALTIME, &now);
  rt->pending = true;
  rt->at = rt->soonest = now;
  rt->at.tv_sec += rt->delay;
  rt->soonest.tv_sec += quorum_reconnect_delay;
  /* Both at most a day: the double cannot wrap. */
  rt->delay = rt->delay * 2 < quorum_reconnect_max ?
    rt->delay * 2 : quorum_reconnect_max;
}

static const struct timespec *
retry_deadline (const struct retry *rt)
{
  return rt->pending ? &rt->at : NULL;
}

static bool
ts_before (const struct timespec *a, const struct timespec *b)
{
  return a->tv_sec < b->tv_sec ||
    (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Woken: may the leftovers be tried again now?  At the deadline, or on
 * a kick (something new is stale, another child came back), but at
 * most once per reconnect-delay.
 */
static bool
retry_due (struct retry *rt)
{
  struct timespec now;

  if (!rt->pending)
    return true;
  clock_gettime (CLOCK_REALTIME, &now);
  if (!ts_before (&now, &rt->soonest))
    return true;
  if (ts_before (&rt->soonest, &rt->at))
    rt->at = rt->soonest;
  return false;
}

/* c came back: what was left stale or unsettled for want of it may be
 * copied or settled now.
 */
static void
kick_others (struct child *c)
{
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i)
    if (i != c->index)
      state_kick (&quorum_children[i]);
  fresh_wake ();
}

void
quorum_local_available (void)
{
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i)
    state_kick (&quorum_children[i]);
  fresh_wake ();
}

/* c is down: let go of its handles, record what it may have lost,
 * reconnect it with backoff and check it is the same disk.  It is then
 * resyncing.  False if quitting.
 */
/* Over 80 lines: each step of a reconnection has its own failure. */
static bool
rejoin (struct child *c)
{
  unsigned delay = quorum_reconnect_delay;
  bool recorded = false;
  struct range_lock rl;

  /* The reactor saw the death and let go, or is told to. */
  reactor_release (c);
  /* Writes in flight when it went down may still record it took them:
   * wait for them.
   */
  range_lock (&rl, 0, quorum_export_size, true);
  range_unlock (&rl);

  for (;;) {
    struct nbd_handle *nbd, *meta, *old, *old_meta;
    struct quorum_caps caps;
    char *why = NULL;
    int same;

    /* Failed by the operator: not reconnected until returned, then at
     * once.
     */
    if (state_failed (c)) {
      if (!state_wait_return (c))
        return false;
      delay = quorum_reconnect_delay;
    }
    else if (!state_sleep (c, delay))
      return false;
    /* A new disk takes its place. */
    if (replace_swap_if_ready (c))
      return true;
    if (state_failed (c))
      continue;                 /* failed while it slept */
    /* It may have lost what it had not flushed. */
    if (!recorded) {
      if (fresh_lost_unflushed (c, FRESH_DOWN) == -1) {
        delay = quorum_reconnect_max;
        continue;
      }
      recorded = true;
    }
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

    connect_install (c, nbd, meta, &caps, &old, &old_meta);
    /* Dead, or idle and cut: their commands were all retired. */
    connect_close (old, false);
    connect_close (old_meta, false);
    reactor_serve (c);

    /* Still down: it takes no part in requests while it is checked. */
    same = identity_same_disk (&background_conn, c);
    if (same == -1 || reactor_handle_gone (nbd) || state_failed (c)) {
      reactor_release (c);
      delay = delay * 2 < quorum_reconnect_max ?
        delay * 2 : quorum_reconnect_max;
      continue;
    }
    state_set (c, CHILD_RESYNC);
    report_up (c->index);
    return true;
  }
}

void *
resync_supervisor (void *vp)
{
  struct child *c = vp;
  struct retry rt;
  unsigned kicks = 0;
  bool first = true;

  retry_reset (&rt);
  for (;;) {
    bool rejoined = false;
    int r;

    /* At once the first time: it may be stale since start-up (state=). */
    if (!first && !state_wait_work (c, &kicks, retry_deadline (&rt)))
      break;
    first = false;
    if (state_quitting (c))
      break;
    if (replace_swap_if_ready (c)) {
      kick_others (c);
      retry_reset (&rt);
      rejoined = true;
    }
    else if (state_get (c) == CHILD_DOWN) {
      if (!rejoin (c))
        break;
      kick_others (c);
      retry_reset (&rt);
      rejoined = true;
    }
    else if (!fresh_stale (c, 0, 0)) {
      retry_reset (&rt);
      continue;
    }
    else if (!retry_due (&rt) || !state_heal_begin (c))
      continue;

    r = resync_child (c, rejoined);
    if (r == -1)
      continue;                 /* down, or quitting */
    state_resync_done (c);
    if (r == 0 && c->index >= quorum_nr_children)
      replace_rebuilt (c);      /* the spare is complete */
    if (r == 0)
      retry_reset (&rt);
    else
      retry_later (&rt);
  }
  return NULL;
}

/* The filter's plugin: healed like a remote child that never goes
 * down, while a client lends its context (else later).
 */
static void *
resync_local_healer (void *vp)
{
  struct child *c = vp;
  struct retry rt;
  unsigned kicks = 0;
  bool first = true;

  retry_reset (&rt);
  for (;;) {
    int r;

    if (!first && !state_wait_work (c, &kicks, retry_deadline (&rt)))
      break;
    first = false;
    if (state_quitting (c))
      break;
    if (!fresh_stale (c, 0, 0)) {
      retry_reset (&rt);
      continue;
    }
    if (!retry_due (&rt))
      continue;
    if (!settle_local_readable (&background_conn)) {
      nbdkit_debug ("quorum: child %zu: stale, and no client lends the "
                    "plugin: next try in %u s", c->index, rt.delay);
      retry_later (&rt);
      continue;
    }
    r = resync_child (c, false);
    if (r == 0)
      retry_reset (&rt);
    else if (r == 1)
      retry_later (&rt);
  }
  return NULL;
}

/* The settler. */
static pthread_t settler;
static bool settler_running;
static bool settler_quit;               /* atomic */

static void *
resync_settler (void *vp)
{
  unsigned delay = quorum_reconnect_delay;
  uint64_t seen = 0;

  while (!__atomic_load_n (&settler_quit, __ATOMIC_ACQUIRE)) {
    uint64_t pos = 0, offset, count;
    bool left = false;

    while (!__atomic_load_n (&settler_quit, __ATOMIC_ACQUIRE) &&
           fresh_next_unsettled (&pos, RESYNC_RUN, &offset, &count)) {
      int err;

      if (settle_range (&background_conn, offset, count, &err) == -1)
        left = true;
    }
    if (__atomic_load_n (&settler_quit, __ATOMIC_ACQUIRE))
      break;
    if (left) {
      /* Later, or as soon as something changes (a child is back). */
      fresh_wait (&seen, delay * 1000);
      delay = delay * 2 < quorum_reconnect_max ?
        delay * 2 : quorum_reconnect_max;
    }
    else {
      delay = quorum_reconnect_delay;
      fresh_wait (&seen, 3600 * 1000);
    }
  }
  return NULL;
}

static int
start_thread (pthread_t *t, void *(*fn) (void *), void *arg)
{
  int err = pthread_create (t, NULL, fn, arg);

  if (err) {
    errno = err;
    nbdkit_error ("pthread_create: %m");
    return -1;
  }
  return 0;
}

int
resync_start (void)
{
  if (quorum_has_local) {
    struct child *c = &quorum_children[0];

    if (start_thread (&c->supervisor, resync_local_healer, c) == -1)
      return -1;
    c->supervisor_running = true;
  }
  if (start_thread (&settler, resync_settler, NULL) == -1)
    return -1;
  settler_running = true;
  return 0;
}

void
resync_stop (void)
{
  if (settler_running) {
    __atomic_store_n (&settler_quit, true, __ATOMIC_RELEASE);
    fresh_wake ();
    pthread_join (settler, NULL);
    settler_running = false;
  }
  if (quorum_has_local && quorum_children[0].supervisor_running) {
    state_quit (&quorum_children[0]);
    pthread_join (quorum_children[0].supervisor, NULL);
    quorum_children[0].supervisor_running = false;
  }
}
