/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Reads with read-pattern=fifo: one child at a time, in order, until
 * one works; with wait-for=threshold, hedged.
 */

#include <config.h>

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "engine.h"
#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "rangelock.h"
#include "settle.h"

/* The second step of a hedged read: replies that lost are not
 * compared (read-pattern=fifo compares nothing), failures reported.
 */
static void
engine_fifo_finish (struct fanout *f, void *arg)
{
  size_t i;

  (void) arg;
  for (i = 0; i < quorum_nr_children; ++i)
    if ((f->late & (UINT32_C (1) << i)) && f->slots[i].err)
      report_bad (OP_READ, i, f->offset, f->count, f->slots[i].err);
}

/* Where the last reply ended (fanout_quick_fn): late_quick found no
 * failure, so there is nothing to report.
 */
static bool
engine_fifo_quick (struct fanout *f, void *arg)
{
  (void) f;
  (void) arg;
  return true;
}

/* How long a hedged read waits for the child it asked before it asks
 * the next one too: 4 times the fastest child's recent latency, at
 * least 1 ms (10 ms before any is known), at most child-timeout.
 */
static void
engine_fifo_hedge_deadline (struct timespec *t)
{
  uint64_t ns = fanout_read_latency () * 4;

  if (ns == 0)
    ns = 10000000;
  if (ns < 1000000)
    ns = 1000000;
  if (quorum_child_timeout && ns > quorum_child_timeout * UINT64_C (1000000000))
    ns = quorum_child_timeout * UINT64_C (1000000000);
  clock_gettime (CLOCK_MONOTONIC, t);
  ns += t->tv_nsec;
  t->tv_sec += ns / 1000000000;
  t->tv_nsec = ns % 1000000000;
}

/* read-pattern=fifo with wait-for=threshold: one child at a time, in
 * order, but one that has not answered within the hedge delay gets
 * company: the next child is asked too, and the first good reply wins.
 * The others are finished by the late thread.  Replies land in pooled
 * buffers (a late one must not write into buf), but the local child's.
 */
static int
engine_pread_fifo_hedged (struct quorum_conn *conn, void *buf, uint32_t count,
                          uint64_t offset, uint32_t mask, int *err)
{
  int errs[VOTE_MAX_CHILDREN] = { 0 };
  const size_t n = quorum_nr_children;
  struct timespec hedge, deadline;
  struct fanout *f;
  size_t i, next = 0, winner = n;
  uint32_t asked = 0, pending;

  f = fanout_hedge_new (count, offset, err);
  if (f == NULL)
    return -1;
  for (;;) {
    bool any_pending = false;

    /* The first good reply, in the order they were asked. */
    for (i = 0; i < n && winner == n; ++i)
      if ((asked & (UINT32_C (1) << i)) && fanout_slot_ended (f, i) &&
          f->slots[i].err == 0)
        winner = i;
    if (winner < n)
      break;
    for (i = 0; i < n; ++i)
      if ((asked & (UINT32_C (1) << i)) && !fanout_slot_ended (f, i))
        any_pending = true;
    while (next < n && !(mask & (UINT32_C (1) << next)))
      next++;
    if (!any_pending || next < n) {
      if (next == n)
        break;                  /* every child failed */
      if (!any_pending || !fanout_wait_one (f, &hedge)) {
        /* Nobody is at it, or the hedge delay passed: ask the next. */
        asked |= UINT32_C (1) << next;
        fanout_ask (f, conn, UINT32_C (1) << next, buf,
                    quorum_has_local ? 0 : SIZE_MAX);
        next++;
        engine_fifo_hedge_deadline (&hedge);
      }
      continue;
    }
    /* The last child is asked: wait, up to child-timeout. */
    deadline = f->start;
    deadline.tv_sec += quorum_child_timeout;
    if (!fanout_wait_one (f, quorum_child_timeout ? &deadline : NULL)) {
      fanout_cut_pending (f);
      while (any_pending && fanout_wait_one (f, NULL)) {
        any_pending = false;
        for (i = 0; i < n; ++i)
          if ((asked & (UINT32_C (1) << i)) && !fanout_slot_ended (f, i))
            any_pending = true;
      }
    }
  }

  pending = 0;
  for (i = 0; i < n; ++i) {
    if (!(asked & (UINT32_C (1) << i)))
      continue;
    if (!fanout_slot_ended (f, i))
      pending |= UINT32_C (1) << i;
    else {
      if (f->slots[i].timed_out)
        f->slots[i].err = ETIMEDOUT;
      errs[i] = f->slots[i].err;
      if (errs[i])
        report_bad (OP_READ, i, offset, count, errs[i]);
    }
  }
  if (winner < n && f->slots[winner].buf != buf)
    memcpy (buf, f->slots[winner].buf, count);
  f->late = pending;
  if (pending)
    fanout_detach (f, engine_fifo_finish, engine_fifo_quick, NULL);
  else
    fanout_put (f);
  if (winner < n)
    return 0;
  return engine_below_threshold (OP_READ, errs, count, offset, 0, NULL, err);
}

/* read-pattern=fifo: one child at a time, in order, until one works. */
int
engine_pread_fifo (struct quorum_conn *conn, void *buf, uint32_t count,
                   uint64_t offset, int *err)
{
  int errs[VOTE_MAX_CHILDREN];
  uint32_t mask;
  size_t i;

  if (fresh_unsettled (offset, count) &&
      settle_range (conn, offset, count, err) == -1)
    return -1;
  if (quorum_wait_threshold) {
    struct range_lock rl;
    int r;

    /* A write answered early holds its range until its late children
     * wrote it too: asked first, one of them would return what was
     * there before the write.  The lock waits for them.
     */
    range_lock (&rl, offset, count, false);
    mask = fanout_participants (OP_READ, offset, count);
    r = engine_pread_fifo_hedged (conn, buf, count, offset, mask, err);
    range_unlock (&rl);
    return r;
  }
  mask = fanout_participants (OP_READ, offset, count);

  for (i = 0; i < quorum_nr_children; ++i) {
    struct fanout *f;

    errs[i] = 0;
    if (!(mask & (UINT32_C (1) << i)))
      continue;
    f = fanout_run (conn, OP_READ, UINT32_C (1) << i, buf, i, NULL,
                    count, offset, 0, err);
    if (f == NULL)
      return -1;
    errs[i] = f->slots[i].err;
    fanout_put (f);
    if (errs[i] == 0)
      return 0;
    report_bad (OP_READ, i, offset, count, errs[i]);
  }

  return engine_below_threshold (OP_READ, errs, count, offset, 0, NULL, err);
}
