/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* A remote child's life: up; down (its connection died: it takes part
 * in nothing, writes it misses make it stale there (fresh.h), and its
 * supervisor reconnects it, then checks that it is the same disk before
 * it takes part again); resync (it takes every write, and reads where
 * it is not stale, while its supervisor copies the stale regions to it
 * from the quorum: after a reconnection, or when a region became stale
 * while it was up).  And "quit", which asks its threads to stop at
 * cleanup.  The filter's plugin has a life too, always up: its kicks
 * and quit drive its healer (resync.c).
 *
 * This module alone writes struct child_life, under its lock; anyone
 * reads the state with state_get, which takes no lock.
 */

#ifndef QUORUM_STATE_H
#define QUORUM_STATE_H

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

enum child_state { CHILD_UP, CHILD_DOWN, CHILD_RESYNC };

/* wait-for=threshold: a child owing more than max-lag= bytes is ahead
 * (fanout-ahead.c decides): it is sent no request, so every write makes
 * it stale there, until it caught up.  While it still completes what
 * it was sent, or the writes it misses come too fast for it, it is
 * draining, and its supervisor does not resync it (the copies would
 * wait behind that backlog, holding their ranges, or never end); then
 * it is resynced, and it takes requests again once nothing of it is
 * stale.
 */
enum child_ahead { AHEAD_NONE, AHEAD_DRAINING, AHEAD_DRAINED };

struct child_life {
  /* This lock protects state and quit (each also read atomically
   * without it); cond wakes the supervisor when either changes.
   */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  enum child_state state;
  bool quit;                    /* cleanup: threads stop */
  unsigned kicks;               /* state_kick: work for the supervisor */
  /* Taken out of service by the operator (fail): down, and not
   * reconnected until state_return.  Written under lock, read
   * atomically.
   */
  bool failed;
  bool wake;                    /* state_return: cut a backoff short */
  enum child_ahead ahead;       /* under lock, read atomically */
};

struct child;

extern void state_init (struct child *c);
/* Lock-free, for the data path. */
extern enum child_state state_get (struct child *c);
extern bool state_quitting (struct child *c);
/* The child is down, unless it was already or is quitting: true if it
 * went down now, for the caller to report (report_down) once it holds
 * no lock.
 */
extern bool state_set_down (struct child *c);
extern void state_set (struct child *c, enum child_state state);
/* A resync ended: up, unless it went down meanwhile. */
extern void state_resync_done (struct child *c);
/* An up child begins to heal while up: resync, unless it is down or
 * ahead and draining (false) or already resyncing.
 */
extern bool state_heal_begin (struct child *c);
/* Whether c is ahead (see enum child_ahead).  Lock-free. */
extern enum child_ahead state_ahead (struct child *c);
/* fanout-ahead.c's: c is ahead now, or not; drained or back kicks its
 * supervisor.
 */
extern void state_set_ahead (struct child *c, enum child_ahead ahead);
/* Sleep until c is down, or kicked since *kicks (which is updated), or
 * deadline (CLOCK_REALTIME; NULL: none) has passed: true; or until it
 * is quitting: false.
 */
extern bool state_wait_work (struct child *c, unsigned *kicks,
                             const struct timespec *deadline);
/* Sleep for seconds, or until quitting (false) or state_return or
 * state_wake says to stop waiting.
 */
extern bool state_sleep (struct child *c, unsigned seconds);
/* New work for c's supervisor (fresh.c: a region of c became stale):
 * wakes whoever waits on life.cond.
 */
extern void state_kick (struct child *c);
/* End a state_sleep of c now (replace.c: a swap is waiting). */
extern void state_wake (struct child *c);
/* The operator takes c out of service (control's fail): true if it
 * was not failed already.  Its connection is cut by the caller.
 */
extern bool state_fail (struct child *c);
/* And puts it back: false if it was not failed.  Its supervisor
 * reconnects it at once (state_sleep returns early).
 */
extern bool state_return (struct child *c);
/* Lock-free. */
extern bool state_failed (struct child *c);
/* Sleep while c is failed, or until state_wake: false if quitting. */
extern bool state_wait_return (struct child *c);
/* The spare, before its supervisor starts (replace.c): in state, not
 * quitting, not failed.
 */
extern void state_reset (struct child *c, enum child_state state);
/* c has a new disk (replace.c's swap): resync, not failed. */
extern void state_replaced (struct child *c);
/* Ask c's threads to stop. */
extern void state_quit (struct child *c);

#endif /* QUORUM_STATE_H */
