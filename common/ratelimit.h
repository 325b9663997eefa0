/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Rate limits for the background work (resync-copy.c's copies,
 * scrub.c's reads): a limit the operator may change at any time (control's
 * rate), and a token bucket per thread that it paces.  A leaf: its
 * lock is taken alone, and no callback runs under it but the caller's
 * stop test, which must take no lock.
 */

#ifndef QUORUM_RATELIMIT_H
#define QUORUM_RATELIMIT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* One limit.  This lock protects set, rate and the generation; cond
 * (CLOCK_MONOTONIC, made on first use) wakes sleepers when the rate
 * changes or ratelimit_wake is called.
 */
struct ratelimit {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool cond_ready;
  const uint64_t *dflt;         /* the parameter, until set */
  bool set;
  uint64_t rate;                /* bytes/s, 0: none */
  uint64_t burst;               /* most a bucket holds, bytes */
  unsigned wakes;               /* ratelimit_wake calls */
};
#define RATELIMIT_INIT(dflt_ptr, burst_bytes) \
  { .lock = PTHREAD_MUTEX_INITIALIZER, .dflt = (dflt_ptr), \
    .burst = (burst_bytes) }

/* A thread's bucket: tokens (bytes; negative: owed), refilled at the
 * limit's rate up to its burst.  Belongs to one thread.
 */
struct ratelimit_bucket {
  double tokens;
  uint64_t last;                /* CLOCK_MONOTONIC, ns, last refill */
};

/* The limit now, bytes per second (0: none). */
extern uint64_t ratelimit_get (struct ratelimit *r);
/* Change it: takes effect at once, in threads sleeping on it too. */
extern void ratelimit_set (struct ratelimit *r, uint64_t bytes_per_second);
/* A new bucket, empty. */
extern void ratelimit_bucket_init (struct ratelimit_bucket *b);
/* Charge bytes to b, then sleep until it is out of debt: at most a
 * second at a time, so that a lower rate set meanwhile is seen (a
 * higher one wakes it), and not at all once stop (arg) is true or the
 * limit is 0.
 */
extern void ratelimit_pace (struct ratelimit *r, struct ratelimit_bucket *b,
                            uint64_t bytes, bool (*stop) (void *arg),
                            void *arg);
/* Wake every thread sleeping in ratelimit_pace on r, to test its stop
 * again.  Never call it holding a lock that stop takes.
 */
extern void ratelimit_wake (struct ratelimit *r);

#endif /* QUORUM_RATELIMIT_H */
