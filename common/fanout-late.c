/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* wait-for=threshold: the fan-outs whose request has its answer while
 * some children are still at it, and the thread that finishes them.
 *
 * The request's reference goes to the late list (fanout_detach).  The
 * late thread wakes when a slot of a detached fan-out ends
 * (fanout_late_kick, a sem_post: the only thing the reactor does for
 * it) and every 100 ms; it cuts a child past child-timeout as
 * fanout_wait would, or one owing more than max-lag bytes (its writes
 * not yet completed are stale first, reason lagging); once every
 * command of a fan-out is gone it runs its finish callback (the late
 * vote, the stale marks, the range released) and puts it.  Flushes ask
 * fanout_drained which children completed the writes detached before
 * them: a flush must not overtake them on a child.
 *
 * Lock: late_lock guards the list, seq and the callbacks' fields of
 * the fan-outs on it (and late_cond, broadcast after each pass, for
 * flushes waiting on drained children).  It is a leaf: nothing is
 * called under it but atomics; finish, fresh_stale_mark and
 * reactor_cut run after it is released.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "cleanup.h"
#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "reactor.h"

struct quorum_conn fanout_no_conn;

static pthread_mutex_t late_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t late_cond = PTHREAD_COND_INITIALIZER;
static struct fanout *late_head;        /* oldest first */
static struct fanout **late_tail = &late_head;
static uint64_t late_seq;               /* fan-outs detached so far */

static sem_t late_sem;                  /* a slot ended, or a new one */
static pthread_once_t late_once = PTHREAD_ONCE_INIT;
static pthread_t late_thread;
static bool late_running, late_quit;

/* Bytes each child owes (atomics): late writes' data, late reads'
 * buffers.  A child cut for owing too much is not cut again until it
 * owes less.
 */
static uint64_t owed[VOTE_MAX_CHILDREN];
static bool lag_cut[VOTE_MAX_CHILDREN];   /* the late thread's */
/* Reads each child owes (atomics), for fanout_lagging. */
static unsigned late_reads[VOTE_MAX_CHILDREN];

void
fanout_late_kick (void)
{
  sem_post (&late_sem);
}

/* What slot i of f owes while it is late. */
static uint64_t
late_bytes (const struct fanout *f)
{
  return f->type == OP_READ || f->type == OP_WRITE ? f->count : 0;
}

/* Whether f changes the disk: its late regions become stale. */
static bool
late_changes (const struct fanout *f)
{
  return f->type == OP_WRITE || f->type == OP_ZERO || f->type == OP_TRIM;
}

static bool
late_past (const struct fanout *f, const struct timespec *now)
{
  if (quorum_child_timeout == 0)
    return false;
  return now->tv_sec > f->start.tv_sec + (time_t) quorum_child_timeout ||
    (now->tv_sec == f->start.tv_sec + (time_t) quorum_child_timeout &&
     now->tv_nsec >= f->start.tv_nsec);
}

/* A region of a write that a lagging child has not completed. */
struct late_region {
  uint64_t offset, count;
};

/* Child i owes more than max-lag: what it has not completed of the
 * writes in flight is stale (reported, durable with state=) before it
 * is cut, so that it rejoins through a resync of those regions.
 */
static void
late_cut_lagging (size_t i)
{
  struct child *c = &quorum_children[i];
  struct late_region *regions = NULL;
  size_t nr = 0, j = 0;
  uint64_t bytes = __atomic_load_n (&owed[i], __ATOMIC_RELAXED);
  char why[96];
  struct fanout *f;

  {
    SCOPED_LOCK (&late_lock);
    for (f = late_head; f; f = f->late_next)
      if (f->slots[i].used && !fanout_slot_ended (f, i)) {
        f->slots[i].lagged = true;
        if (late_changes (f))
          nr++;
      }
    /* Without memory for the list, the cut alone: the failed writes
     * then mark the same regions stale as they end.
     */
    if (nr)
      regions = calloc (nr, sizeof *regions);
    for (f = late_head; f && regions && j < nr; f = f->late_next)
      if (f->slots[i].lagged && late_changes (f))
        regions[j++] = (struct late_region) { f->offset, f->count };
  }
  nr = j;
  for (j = 0; j < nr; ++j)
    if (fresh_stale_mark (c, regions[j].offset, regions[j].count,
                          FRESH_LAGGING) == -1)
      nbdkit_error ("quorum: child %zu (%s): cannot record its stale "
                    "regions: %m", i, c->name);
  free (regions);
  snprintf (why, sizeof why, "%" PRIu64 " bytes in flight, more than "
            "max-lag=%" PRIu64, bytes, quorum_max_lag);
  reactor_cut_reason (c, why, "lagging");
}

/* One pass: cut who must be cut, take off the list the fan-outs whose
 * commands are all gone, and finish them.
 */
static void
late_pass (void)
{
  struct fanout *done = NULL, **dt = &done, *f, **p;
  uint32_t timed_out = 0;
  struct timespec now;
  size_t i;

  clock_gettime (CLOCK_MONOTONIC, &now);
  {
    SCOPED_LOCK (&late_lock);
    for (p = &late_head; (f = *p) != NULL; ) {
      if (__atomic_load_n (&f->pending, __ATOMIC_SEQ_CST) == 0) {
        *p = f->late_next;
        f->late_next = NULL;
        *dt = f;
        dt = &f->late_next;
        continue;
      }
      if (late_past (f, &now)) {
        for (i = 0; i < quorum_nr_children; ++i)
          if (f->slots[i].used && !fanout_slot_ended (f, i) &&
              !f->slots[i].timed_out) {
            f->slots[i].timed_out = true;
            timed_out |= UINT32_C (1) << i;
          }
      }
      p = &f->late_next;
    }
    late_tail = p;
  }

  for (i = 0; i < quorum_nr_children; ++i) {
    uint64_t bytes = __atomic_load_n (&owed[i], __ATOMIC_RELAXED);

    if (timed_out & (UINT32_C (1) << i)) {
      char why[64];

      snprintf (why, sizeof why, "no reply within child-timeout=%u",
                quorum_child_timeout);
      reactor_cut (&quorum_children[i], why);
    }
    else if (bytes > quorum_max_lag && !lag_cut[i]) {
      lag_cut[i] = true;
      late_cut_lagging (i);
    }
    else if (bytes <= quorum_max_lag)
      lag_cut[i] = false;
  }

  while ((f = done) != NULL) {
    done = f->late_next;
    for (i = 0; i < quorum_nr_children; ++i) {
      if (!(f->late & (UINT32_C (1) << i)))
        continue;
      if (f->slots[i].timed_out)
        f->slots[i].err = ETIMEDOUT;
      __atomic_sub_fetch (&owed[i], late_bytes (f), __ATOMIC_RELAXED);
      if (f->type == OP_READ)
        __atomic_sub_fetch (&late_reads[i], 1, __ATOMIC_RELAXED);
    }
    f->finish (f, f->arg);
    fanout_put (f);
  }

  /* Flushes waiting for drained children look again. */
  SCOPED_LOCK (&late_lock);
  pthread_cond_broadcast (&late_cond);
}

static void *
late_main (void *arg)
{
  (void) arg;
  while (!__atomic_load_n (&late_quit, __ATOMIC_ACQUIRE)) {
    struct timespec deadline;

    clock_gettime (CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += 100000000;
    if (deadline.tv_nsec >= 1000000000) {
      deadline.tv_sec++;
      deadline.tv_nsec -= 1000000000;
    }
    if (sem_timedwait (&late_sem, &deadline) == 0)
      while (sem_trywait (&late_sem) == 0)
        ;                       /* one pass sees them all */
    late_pass ();
  }
  return NULL;
}

static void
late_start (void)
{
  int err;

  sem_init (&late_sem, 0, 0);
  err = pthread_create (&late_thread, NULL, late_main, NULL);
  if (err) {
    errno = err;
    nbdkit_error ("quorum: pthread_create: %m");
    return;
  }
  late_running = true;
}

/* The thread outlives no unload: the module's code and settings go
 * with it.  From fanout_late_stop at cleanup, and here in case that
 * did not run.
 */
static void __attribute__ ((destructor))
late_stop (void)
{
  if (!late_running)
    return;
  __atomic_store_n (&late_quit, true, __ATOMIC_RELEASE);
  sem_post (&late_sem);
  pthread_join (late_thread, NULL);
  late_running = false;
}

/* No late thread (it could not start): wait here, as wait-for=all
 * would have, cutting who passes child-timeout.
 */
static void
late_wait_here (struct fanout *f)
{
  const struct timespec tick = { .tv_nsec = 1000000 };
  struct timespec now;
  size_t i;
  bool cut = false;

  while (__atomic_load_n (&f->pending, __ATOMIC_SEQ_CST) != 0) {
    clock_gettime (CLOCK_MONOTONIC, &now);
    if (!cut && late_past (f, &now)) {
      for (i = 0; i < quorum_nr_children; ++i)
        if (f->slots[i].used && !fanout_slot_ended (f, i)) {
          f->slots[i].timed_out = true;
          reactor_cut (&quorum_children[i], "no reply within child-timeout");
        }
      cut = true;
    }
    nanosleep (&tick, NULL);
  }
  for (i = 0; i < quorum_nr_children; ++i)
    if ((f->late & (UINT32_C (1) << i)) && f->slots[i].timed_out)
      f->slots[i].err = ETIMEDOUT;
  f->finish (f, f->arg);
  fanout_put (f);
}

void
fanout_detach (struct fanout *f, fanout_finish_fn *finish, void *arg)
{
  size_t i;

  pthread_once (&late_once, late_start);
  f->finish = finish;
  f->arg = arg;
  if (!__atomic_load_n (&late_running, __ATOMIC_ACQUIRE)) {
    late_wait_here (f);
    return;
  }
  for (i = 0; i < quorum_nr_children; ++i)
    if (f->late & (UINT32_C (1) << i)) {
      __atomic_add_fetch (&owed[i], late_bytes (f), __ATOMIC_RELAXED);
      if (f->type == OP_READ)
        __atomic_add_fetch (&late_reads[i], 1, __ATOMIC_RELAXED);
    }
  /* From now on every slot that ends kicks the thread (before f is on
   * the list, where the thread could finish and free it); the kick
   * below covers those that ended before.
   */
  __atomic_store_n (&f->detached, true, __ATOMIC_SEQ_CST);
  {
    SCOPED_LOCK (&late_lock);
    f->seq = ++late_seq;
    f->late_next = NULL;
    *late_tail = f;
    late_tail = &f->late_next;
  }
  fanout_late_kick ();
}

bool
fanout_lagging (size_t i)
{
  return __atomic_load_n (&late_reads[i], __ATOMIC_RELAXED) >
    FANOUT_LAGGING_READS;
}

uint32_t
fanout_drained (uint32_t mask, unsigned need)
{
  SCOPED_LOCK (&late_lock);
  const uint64_t limit = late_seq;

  for (;;) {
    uint32_t ready = mask;
    struct fanout *f;
    size_t i;

    for (f = late_head; f && f->seq <= limit; f = f->late_next) {
      if (!late_changes (f))
        continue;
      for (i = 0; i < quorum_nr_children; ++i)
        if (f->slots[i].used && !fanout_slot_ended (f, i))
          ready &= ~(UINT32_C (1) << i);
    }
    if (ready == mask || (unsigned) __builtin_popcount (ready) >= need)
      return ready;
    pthread_cond_wait (&late_cond, &late_lock);
  }
}

void
fanout_late_stop (void)
{
  pthread_mutex_lock (&late_lock);
  while (late_head)
    pthread_cond_wait (&late_cond, &late_lock);
  pthread_mutex_unlock (&late_lock);
  /* A fan-out detached after this waits on its own thread. */
  late_stop ();
}
