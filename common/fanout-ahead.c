/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* wait-for=threshold: ahead mode, the late thread's (fanout-late.c).
 *
 * A child owing more than max-lag bytes (or FANOUT_AHEAD_SLOTS
 * requests) is put ahead (state.h), as DRBD's pull-ahead does with a
 * peer that cannot keep up: it is sent nothing more, so every write
 * marks it stale there before the answer (fresh_write_end: it was not
 * sent the write), and keeps its connection while it completes what it
 * owes; once that drained and the writes it misses come at most half
 * as fast as it completed those, its supervisor copies what is stale,
 * and once nothing is it is sent requests again.  Cutting it instead
 * would fail all it owes, and its reconnection and resync would wait
 * behind the writes still queued (the whole export locked while it
 * rejoins).  It is put ahead only while the others that take requests
 * are at least vote-threshold, and called back (recalled) as soon as
 * they are fewer (fanout_participants already sends it requests then).
 */

#include <config.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "fanout-int.h"
#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "state.h"

/* Each ahead child, the late thread's: when it went ahead and what it
 * owed then, the rate it completed that at (requests a second, once it
 * drained), and the rate of writes that left it out since (sampled each
 * second from ahead_missed, which fanout_participants counts).
 */
struct ahead_child {
  struct timespec since, sampled;
  unsigned owed_then;
  uint64_t rate, missed_seen, missed_rate;
};
static struct ahead_child ahead[VOTE_MAX_CHILDREN];
static uint64_t ahead_missed[VOTE_MAX_CHILDREN];  /* atomics */

void
fanout_ahead_missed (size_t i)
{
  __atomic_add_fetch (&ahead_missed[i], 1, __ATOMIC_RELAXED);
}

bool
fanout_ahead_may (size_t i)
{
  unsigned n = 0;
  size_t j;

  for (j = 0; j < quorum_nr_children; ++j) {
    struct child *c = &quorum_children[j];

    if (j == i || state_ahead (c) != AHEAD_NONE)
      continue;
    if (child_is_local (c) || state_get (c) != CHILD_DOWN)
      n++;
  }
  return n >= quorum_threshold;
}

void
fanout_ahead_begin (size_t i, uint64_t bytes, unsigned slots)
{
  struct child *c = &quorum_children[i];

  nbdkit_debug ("quorum: child %zu (%s): %" PRIu64 " bytes and %u requests "
                "in flight, more than max-lag=%" PRIu64 " or %u: ahead, "
                "sent nothing until it caught up", i, child_name (c), bytes,
                slots, quorum_max_lag, FANOUT_AHEAD_SLOTS);
  clock_gettime (CLOCK_MONOTONIC, &ahead[i].since);
  ahead[i].sampled = ahead[i].since;
  ahead[i].owed_then = slots;
  ahead[i].rate = 0;
  ahead[i].missed_seen = __atomic_load_n (&ahead_missed[i],
                                          __ATOMIC_RELAXED);
  ahead[i].missed_rate = UINT64_MAX;          /* not known for a second */
  state_set_ahead (c, AHEAD_DRAINING);
  report_admin ("ahead", i);
}

/* Whether ahead child i may be copied to: it drained (busy: not yet),
 * and the writes that leave it out come at most half as fast as it
 * completed what it owed.  Copying to a child that cannot keep up with
 * the writes would not end, and the copies' reads, votes and range
 * locks would slow the client's requests for nothing.
 */
static bool
ahead_quiet (size_t i, bool busy)
{
  struct ahead_child *a = &ahead[i];
  struct timespec now;
  int64_t ns;

  clock_gettime (CLOCK_MONOTONIC, &now);
  ns = quorum_ns_between (&a->sampled, &now);
  if (ns >= 1000000000) {
    uint64_t m = __atomic_load_n (&ahead_missed[i], __ATOMIC_RELAXED);

    a->missed_rate = (m - a->missed_seen) * 1000000000 / (uint64_t) ns;
    a->missed_seen = m;
    a->sampled = now;
  }
  if (busy)
    return false;
  if (a->rate == 0) {
    ns = quorum_ns_between (&a->since, &now);
    if (ns <= 0)
      ns = 1;
    a->rate = (uint64_t) a->owed_then * 1000000000 / (uint64_t) ns;
    if (a->rate == 0)
      a->rate = 1;
  }
  return a->missed_rate != UINT64_MAX && 2 * a->missed_rate <= a->rate;
}

void
fanout_ahead_step (size_t i, bool busy)
{
  struct child *c = &quorum_children[i];

  switch (state_ahead (c)) {
  case AHEAD_NONE:
    break;
  case AHEAD_DRAINING: case AHEAD_DRAINED:
    /* Down (cut for child-timeout): its rejoin resyncs it anyway. */
    if (state_get (c) == CHILD_DOWN)
      state_set_ahead (c, AHEAD_NONE);
    /* Another went down: without it fewer than vote-threshold would
     * take requests (fanout_participants sends it them already).  It
     * takes them again, and what it missed is copied to it meanwhile,
     * as to a child that rejoined.
     */
    else if (!fanout_ahead_may (i)) {
      state_set_ahead (c, AHEAD_NONE);
      report_admin ("recalled", i);
    }
    else if (state_ahead (c) == AHEAD_DRAINING) {
      if (ahead_quiet (i, busy))
        state_set_ahead (c, AHEAD_DRAINED);   /* its supervisor copies */
    }
    /* The writes came back: no new copy begins (one under way ends). */
    else if (!ahead_quiet (i, busy))
      state_set_ahead (c, AHEAD_DRAINING);
    /* A write still in flight that left it out marks it stale before
     * its answer, and the next copy takes that.
     */
    else if (!fresh_stale (c, 0, 0)) {
      state_set_ahead (c, AHEAD_NONE);
      report_admin ("caught-up", i);
    }
    break;
  }
}
