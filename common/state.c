/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "cleanup.h"
#include "internal.h"
#include "state.h"

void
state_init (struct child *c)
{
  pthread_mutex_init (&c->life.lock, NULL);
  pthread_cond_init (&c->life.cond, NULL);
}

enum child_state
state_get (struct child *c)
{
  return __atomic_load_n (&c->life.state, __ATOMIC_ACQUIRE);
}

bool
state_quitting (struct child *c)
{
  return __atomic_load_n (&c->life.quit, __ATOMIC_ACQUIRE);
}

/* Called with life.lock held. */
static void
state_set_locked (struct child *c, enum child_state state)
{
  __atomic_store_n (&c->life.state, state, __ATOMIC_RELEASE);
  pthread_cond_broadcast (&c->life.cond);
}

bool
state_set_down (struct child *c)
{
  SCOPED_LOCK (&c->life.lock);
  if (c->life.state == CHILD_DOWN || c->life.quit)
    return false;
  state_set_locked (c, CHILD_DOWN);
  return true;
}

void
state_set (struct child *c, enum child_state state)
{
  SCOPED_LOCK (&c->life.lock);
  state_set_locked (c, state);
}

void
state_resync_done (struct child *c)
{
  SCOPED_LOCK (&c->life.lock);
  if (c->life.state == CHILD_RESYNC)
    state_set_locked (c, CHILD_UP);
}

bool
state_heal_begin (struct child *c)
{
  SCOPED_LOCK (&c->life.lock);
  if (c->life.state == CHILD_DOWN || c->life.ahead == AHEAD_DRAINING)
    return false;
  if (c->life.state == CHILD_UP)
    state_set_locked (c, CHILD_RESYNC);
  return true;
}

enum child_ahead
state_ahead (struct child *c)
{
  return __atomic_load_n (&c->life.ahead, __ATOMIC_ACQUIRE);
}

void
state_set_ahead (struct child *c, enum child_ahead ahead)
{
  SCOPED_LOCK (&c->life.lock);
  __atomic_store_n (&c->life.ahead, ahead, __ATOMIC_RELEASE);
  /* Drained, or back (recalled): its supervisor copies what is stale. */
  if (ahead != AHEAD_DRAINING) {
    c->life.kicks++;
    pthread_cond_broadcast (&c->life.cond);
  }
}

bool
state_wait_work (struct child *c, unsigned *kicks,
                 const struct timespec *deadline)
{
  SCOPED_LOCK (&c->life.lock);
  while (!c->life.quit && c->life.state != CHILD_DOWN &&
         c->life.kicks == *kicks) {
    if (deadline == NULL)
      pthread_cond_wait (&c->life.cond, &c->life.lock);
    else if (pthread_cond_timedwait (&c->life.cond, &c->life.lock,
                                     deadline) == ETIMEDOUT)
      break;
  }
  *kicks = c->life.kicks;
  return !c->life.quit;
}

bool
state_sleep (struct child *c, unsigned seconds)
{
  struct timespec deadline;

  clock_gettime (CLOCK_REALTIME, &deadline);
  deadline.tv_sec += seconds;
  SCOPED_LOCK (&c->life.lock);
  while (!c->life.quit && !c->life.wake &&
         pthread_cond_timedwait (&c->life.cond, &c->life.lock,
                                 &deadline) != ETIMEDOUT)
    ;
  c->life.wake = false;
  return !c->life.quit;
}

void
state_kick (struct child *c)
{
  SCOPED_LOCK (&c->life.lock);
  c->life.kicks++;
  pthread_cond_broadcast (&c->life.cond);
}

void
state_quit (struct child *c)
{
  SCOPED_LOCK (&c->life.lock);
  __atomic_store_n (&c->life.quit, true, __ATOMIC_RELEASE);
  pthread_cond_broadcast (&c->life.cond);
}

void
state_wake (struct child *c)
{
  SCOPED_LOCK (&c->life.lock);
  c->life.wake = true;
  c->life.kicks++;
  pthread_cond_broadcast (&c->life.cond);
}

bool
state_fail (struct child *c)
{
  SCOPED_LOCK (&c->life.lock);
  if (c->life.failed)
    return false;
  __atomic_store_n (&c->life.failed, true, __ATOMIC_RELEASE);
  pthread_cond_broadcast (&c->life.cond);
  return true;
}

bool
state_return (struct child *c)
{
  SCOPED_LOCK (&c->life.lock);
  if (!c->life.failed)
    return false;
  __atomic_store_n (&c->life.failed, false, __ATOMIC_RELEASE);
  c->life.wake = true;
  pthread_cond_broadcast (&c->life.cond);
  return true;
}

bool
state_failed (struct child *c)
{
  return __atomic_load_n (&c->life.failed, __ATOMIC_ACQUIRE);
}

bool
state_wait_return (struct child *c)
{
  SCOPED_LOCK (&c->life.lock);
  while (!c->life.quit && c->life.failed && !c->life.wake)
    pthread_cond_wait (&c->life.cond, &c->life.lock);
  c->life.wake = false;
  return !c->life.quit;
}

void
state_reset (struct child *c, enum child_state state)
{
  SCOPED_LOCK (&c->life.lock);
  __atomic_store_n (&c->life.quit, false, __ATOMIC_RELEASE);
  __atomic_store_n (&c->life.failed, false, __ATOMIC_RELEASE);
  __atomic_store_n (&c->life.ahead, AHEAD_NONE, __ATOMIC_RELEASE);
  c->life.wake = false;
  state_set_locked (c, state);
}

void
state_replaced (struct child *c)
{
  SCOPED_LOCK (&c->life.lock);
  __atomic_store_n (&c->life.failed, false, __ATOMIC_RELEASE);
  /* The new disk is current everywhere: not ahead (the swap holds the
   * whole export, so no write in flight left it out).
   */
  __atomic_store_n (&c->life.ahead, AHEAD_NONE, __ATOMIC_RELEASE);
  if (!c->life.quit)
    state_set_locked (c, CHILD_RESYNC);
}
