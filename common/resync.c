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
 * The copy (resync-copy.c) needs vote-threshold current children that
 * agree, block by block (vote-block-size), as a read does: blocks
 * without such a version stay stale and are retried, with backoff from
 * reconnect-delay to reconnect-max-delay, and at once when another
 * child comes back.
 *
 * One more thread, the settler, settles unsettled regions (settle.c)
 * soon after they appear, and those a crash left (state=).
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
#include "fresh.h"
#include "identity.h"
#include "internal.h"
#include "rangelock.h"
#include "reactor.h"
#include "replace.h"
#include "resync-int.h"
#include "resync.h"
#include "settle.h"
#include "state.h"

/* A doubling backoff: the wait after one of delay seconds, at most
 * reconnect-max-delay.  Both at most a day: the double cannot wrap.
 */
static unsigned
resync_backoff (unsigned delay)
{
  return delay * 2 < quorum_reconnect_max ? delay * 2 : quorum_reconnect_max;
}

/* Backoff of the retries of what a resync left stale. */
struct resync_retry {
  unsigned delay;               /* seconds, the next backoff */
  bool pending;                 /* try again at "at" */
  struct timespec at;           /* CLOCK_REALTIME, as state.c waits */
  struct timespec soonest;      /* a kick heals no sooner */
};

static void
resync_retry_reset (struct resync_retry *rt)
{
  rt->delay = quorum_reconnect_delay;
  rt->pending = false;
}

static void
resync_retry_later (struct resync_retry *rt)
{
  struct timespec now;

  clock_gettime (CLOCK_REALTIME, &now);
  rt->pending = true;
  rt->at = rt->soonest = now;
  rt->at.tv_sec += rt->delay;
  rt->soonest.tv_sec += quorum_reconnect_delay;
  rt->delay = resync_backoff (rt->delay);
}

static const struct timespec *
resync_retry_deadline (const struct resync_retry *rt)
{
  return rt->pending ? &rt->at : NULL;
}

static bool
resync_ts_before (const struct timespec *a, const struct timespec *b)
{
  return a->tv_sec < b->tv_sec ||
    (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Woken: may the leftovers be tried again now?  At the deadline, or on
 * a kick (something new is stale, another child came back), but at
 * most once per reconnect-delay.
 */
static bool
resync_retry_due (struct resync_retry *rt)
{
  struct timespec now;

  if (!rt->pending)
    return true;
  clock_gettime (CLOCK_REALTIME, &now);
  if (!resync_ts_before (&now, &rt->soonest))
    return true;
  if (resync_ts_before (&rt->soonest, &rt->at))
    rt->at = rt->soonest;
  return false;
}

/* c came back: what was left stale or unsettled for want of it may be
 * copied or settled now.
 */
static void
resync_kick_others (struct child *c)
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

/* A new connection to c, in *nbd and *meta, that may join: of the
 * export's size, offering what the export promised (caps_fit).  Else
 * it is said why, and -1 with *delay the wait before the next try.
 */
static int
resync_reconnect (struct child *c, unsigned *delay, struct quorum_caps *caps,
                  struct nbd_handle **nbd, struct nbd_handle **meta)
{
  char *why = NULL;

  if (connect_child (c, c->quit_pipe[0], caps, nbd, meta, &why) == -1) {
    *delay = resync_backoff (*delay);
    nbdkit_debug ("quorum: child %zu (%s): reconnect failed: %s; next "
                  "try in %u s", c->index, child_name (c),
                  why ? why : "out of memory", *delay);
    free (why);
    return -1;
  }
  if (caps->size != quorum_export_size)
    nbdkit_error ("quorum: child %zu (%s): came back with size %" PRIi64
                  ", not %" PRIi64 ": not rejoining", c->index, child_name (c),
                  caps->size, quorum_export_size);
  else if (caps_fit (c, caps))
    return 0;
  connect_close (*nbd, true);
  connect_close (*meta, true);
  *delay = quorum_reconnect_max;
  return -1;
}

/* c is down: let go of its handles, record what it may have lost,
 * reconnect it with backoff and check it is the same disk.  It is then
 * resyncing.  False if quitting.
 */
static bool
resync_rejoin (struct child *c)
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
    if (resync_reconnect (c, &delay, &caps, &nbd, &meta) == -1)
      continue;
    connect_install (c, nbd, meta, &caps, &old, &old_meta);
    /* Dead, or idle and cut: their commands were all retired. */
    connect_close (old, false);
    connect_close (old_meta, false);
    reactor_serve (c);

    /* Still down: it takes no part in requests while it is checked. */
    same = identity_same_disk (&resync_conn, c);
    if (same == -1 || reactor_handle_gone (nbd) || state_failed (c)) {
      reactor_release (c);
      delay = resync_backoff (delay);
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
  struct resync_retry rt;
  unsigned kicks = 0;
  bool first = true;

  resync_retry_reset (&rt);
  for (;;) {
    bool rejoined = false;
    int r;

    /* At once the first time: it may be stale since start-up (state=). */
    if (!first && !state_wait_work (c, &kicks, resync_retry_deadline (&rt)))
      break;
    first = false;
    if (state_quitting (c))
      break;
    if (replace_swap_if_ready (c)) {
      resync_kick_others (c);
      resync_retry_reset (&rt);
      rejoined = true;
    }
    else if (state_get (c) == CHILD_DOWN) {
      if (!resync_rejoin (c))
        break;
      resync_kick_others (c);
      resync_retry_reset (&rt);
      rejoined = true;
    }
    else if (!fresh_stale (c, 0, 0)) {
      resync_retry_reset (&rt);
      continue;
    }
    else if (!resync_retry_due (&rt) || !state_heal_begin (c))
      continue;

    r = resync_child (c, rejoined);
    if (r == -1)
      continue;                 /* down, or quitting */
    state_resync_done (c);
    if (r == 0 && c->index >= quorum_nr_children)
      replace_rebuilt (c);      /* the spare is complete */
    if (r == 0)
      resync_retry_reset (&rt);
    else
      resync_retry_later (&rt);
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
  struct resync_retry rt;
  unsigned kicks = 0;
  bool first = true;

  resync_retry_reset (&rt);
  for (;;) {
    int r;

    if (!first && !state_wait_work (c, &kicks, resync_retry_deadline (&rt)))
      break;
    first = false;
    if (state_quitting (c))
      break;
    if (!fresh_stale (c, 0, 0)) {
      resync_retry_reset (&rt);
      continue;
    }
    if (!resync_retry_due (&rt))
      continue;
    if (!settle_local_readable (&resync_conn)) {
      nbdkit_debug ("quorum: child %zu: stale, and no client lends the "
                    "plugin: next try in %u s", c->index, rt.delay);
      resync_retry_later (&rt);
      continue;
    }
    r = resync_child (c, false);
    if (r == 0)
      resync_retry_reset (&rt);
    else if (r == 1)
      resync_retry_later (&rt);
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

      if (settle_range (&resync_conn, offset, count, &err) == -1)
        left = true;
    }
    if (__atomic_load_n (&settler_quit, __ATOMIC_ACQUIRE))
      break;
    if (left) {
      /* Later, or as soon as something changes (a child is back). */
      fresh_wait (&seen, delay * 1000);
      delay = resync_backoff (delay);
    }
    else {
      delay = quorum_reconnect_delay;
      fresh_wait (&seen, 3600 * 1000);
    }
  }
  return NULL;
}

static int
resync_start_thread (pthread_t *t, void *(*fn) (void *), void *arg)
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

    if (resync_start_thread (&c->supervisor, resync_local_healer, c) == -1)
      return -1;
    c->supervisor_running = true;
  }
  if (resync_start_thread (&settler, resync_settler, NULL) == -1)
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
