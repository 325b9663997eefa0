/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Rate limits: see ratelimit.h. */

#include <config.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "ratelimit.h"

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Called with lock held. */
static void
cond_ready_locked (struct ratelimit *r)
{
  pthread_condattr_t attr;

  if (r->cond_ready)
    return;
  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  pthread_cond_init (&r->cond, &attr);
  pthread_condattr_destroy (&attr);
  r->cond_ready = true;
}

/* Called with lock held. */
static uint64_t
rate_locked (struct ratelimit *r)
{
  return r->set ? r->rate : r->dflt ? *r->dflt : 0;
}

uint64_t
ratelimit_get (struct ratelimit *r)
{
  uint64_t v;

  pthread_mutex_lock (&r->lock);
  v = rate_locked (r);
  pthread_mutex_unlock (&r->lock);
  return v;
}

void
ratelimit_set (struct ratelimit *r, uint64_t bytes_per_second)
{
  pthread_mutex_lock (&r->lock);
  cond_ready_locked (r);
  r->set = true;
  r->rate = bytes_per_second;
  pthread_cond_broadcast (&r->cond);
  pthread_mutex_unlock (&r->lock);
}

void
ratelimit_wake (struct ratelimit *r)
{
  pthread_mutex_lock (&r->lock);
  cond_ready_locked (r);
  r->wakes++;
  pthread_cond_broadcast (&r->cond);
  pthread_mutex_unlock (&r->lock);
}

void
ratelimit_bucket_init (struct ratelimit_bucket *b)
{
  b->tokens = 0;
  b->last = now_ns ();
}

void
ratelimit_pace (struct ratelimit *r, struct ratelimit_bucket *b,
                uint64_t bytes, bool (*stop) (void *arg), void *arg)
{
  b->tokens -= bytes;
  pthread_mutex_lock (&r->lock);
  cond_ready_locked (r);
  for (;;) {
    uint64_t rate = rate_locked (r), now = now_ns ();
    struct timespec until;
    double wait;

    if (rate == 0 || (stop && stop (arg))) {
      b->tokens = 0;
      b->last = now;
      break;
    }
    b->tokens += (now - b->last) / 1e9 * rate;
    b->last = now;
    if (b->tokens > r->burst)
      b->tokens = r->burst;
    if (b->tokens >= 0)
      break;
    wait = -b->tokens / rate;
    if (wait > 1)
      wait = 1;
    now += (uint64_t) (wait * 1e9);
    until.tv_sec = now / 1000000000;
    until.tv_nsec = now % 1000000000;
    pthread_cond_timedwait (&r->cond, &r->lock, &until);
  }
  pthread_mutex_unlock (&r->lock);
}
