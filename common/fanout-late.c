/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* wait-for=threshold: the fan-outs whose request has its answer while
 * some children are still at it, and the thread that finishes them.
 *
 * The request's reference goes to the late list (fanout_detach).  When
 * the last slot of a detached fan-out ends, whoever ended it (the
 * reactor, mostly) finishes it there if every late child answered in
 * time and without error and the caller's quick callback finds nothing
 * to do (late_quick: a read's late replies equal to the answer, a
 * write taken everywhere), the common case.  Else the late thread
 * wakes for it (fanout_late_kick: a push on the ready stack, and a
 * sem_post if it was empty), runs its finish callback (the late vote,
 * the reports, the stale marks, the range released) and puts it.  The
 * late thread also wakes at each slot's end while a flush waits for
 * children to drain, when a detach puts a child over max-lag, and
 * every 100 ms, when it cuts a child past child-timeout as fanout_wait
 * would.  A fan-out finished at once makes no pass: what passes sample
 * for children not ahead (a lag_cut reset, a caught-up ahead child's
 * step) may wait for the next tick.
 * Flushes ask fanout_drained which children completed the writes
 * detached before them: a flush must not overtake them on a child.
 *
 * A child owing more than max-lag bytes (or FANOUT_AHEAD_SLOTS
 * requests) is put ahead (fanout-ahead.c), or, if that would leave
 * fewer than vote-threshold children to ask, cut (reason lagging), its
 * writes not yet completed stale first.
 *
 * The ready stack is lock-free (pushed by any thread, emptied by the
 * late thread at once).  Lock: late_lock guards the list, seq and the
 * callbacks' fields of the fan-outs on it (and late_cond, broadcast
 * after each pass, for flushes waiting on drained children).  It is a
 * leaf: nothing is called under it but atomics and state_ahead;
 * finish, quick, fresh_stale_mark and reactor_cut run after it is
 * released.
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
#include "fanout-int.h"
#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "reactor.h"
#include "state.h"

struct quorum_conn fanout_no_conn;

static pthread_mutex_t late_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t late_cond = PTHREAD_COND_INITIALIZER;
static struct fanout *late_head, *late_last;  /* oldest first */
static uint64_t late_seq;               /* fan-outs detached so far */
/* The detached fan-outs whose commands are all gone, pushed by whoever
 * saw that (a lock-free stack, fanout_late_kick), for the next pass to
 * finish: a pass costs what ended, not what is still in flight (a
 * child far behind may owe thousands).
 */
static struct fanout *late_ready;

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
/* Late slots of each child not yet finished (atomics): ahead mode's
 * "drained" is none.
 */
static unsigned late_slots[VOTE_MAX_CHILDREN];

/* Flushes in fanout_drained (atomic): while there are, every slot's
 * end wakes the late thread, whose pass wakes them.
 */
static unsigned late_drain_waiters;

static uint64_t late_bytes (const struct fanout *f);

/* Under late_lock: f off the list. */
static void
late_unlink (struct fanout *f)
{
  if (f->late_prev)
    f->late_prev->late_next = f->late_next;
  else
    late_head = f->late_next;
  if (f->late_next)
    f->late_next->late_prev = f->late_prev;
  else
    late_last = f->late_prev;
}

static bool late_over (size_t i);

/* What f's late slots owe, counted for their children (add: f is
 * detached) or no longer (f is finished).  Whether one of them now
 * owes more than it may (late_over).
 */
static bool
late_account (const struct fanout *f, bool add)
{
  const uint64_t bytes = add ? late_bytes (f) : -late_bytes (f);
  const unsigned one = add ? 1 : -1U;
  bool over = false;
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i)
    if (f->late & (UINT32_C (1) << i)) {
      __atomic_add_fetch (&owed[i], bytes, __ATOMIC_RELAXED);
      __atomic_add_fetch (&late_slots[i], one, __ATOMIC_RELAXED);
      if (f->type == OP_READ)
        __atomic_add_fetch (&late_reads[i], one, __ATOMIC_RELAXED);
      over |= late_over (i);
    }
  return over;
}

/* f's last command is gone: finished here, by whoever saw that, if
 * every late slot succeeded in time, none of their children is ahead
 * (whose steps are the late thread's) and f->quick says there is
 * nothing else to do; then the late thread is not woken for it.
 */
static bool
late_quick (struct fanout *f)
{
  const size_t n = quorum_nr_slots ();
  size_t i;

  if (f->quick == NULL)
    return false;
  {
    SCOPED_LOCK (&late_lock);
    for (i = 0; i < n; ++i) {
      const struct slot *s = &f->slots[i];

      if (i < quorum_nr_children ? !(f->late & (UINT32_C (1) << i))
          : !f->late_spare || !s->used)
        continue;
      if (s->err || s->timed_out || s->lagged ||
          (i < quorum_nr_children &&
           state_ahead (&quorum_children[i]) != AHEAD_NONE))
        return false;
    }
  }
  if (!f->quick (f, f->arg))
    return false;
  {
    SCOPED_LOCK (&late_lock);
    late_unlink (f);
    /* Flushes waiting for drained children, and fanout_late_stop. */
    pthread_cond_broadcast (&late_cond);
  }
  late_account (f, false);
  fanout_put (f);               /* the late list's reference */
  return true;
}

/* The thread is woken by who makes the ready stack non-empty (it takes
 * the whole stack at once), not by every slot's end: one wake-up a
 * finished fan-out, none for those still in flight or finished at
 * once (late_quick).
 */
void
fanout_late_kick (struct fanout *f)
{
  struct fanout *old;
  bool wake = false;

  /* Pushed once, by the first to see every command gone. */
  if (__atomic_load_n (&f->pending, __ATOMIC_SEQ_CST) == 0 &&
      !__atomic_exchange_n (&f->late_queued, true, __ATOMIC_ACQ_REL) &&
      !late_quick (f)) {
    old = __atomic_load_n (&late_ready, __ATOMIC_RELAXED);
    do
      f->ready_next = old;
    while (!__atomic_compare_exchange_n (&late_ready, &old, f, true,
                                         __ATOMIC_RELEASE,
                                         __ATOMIC_RELAXED));
    wake = old == NULL;
  }
  if (!wake) {
    /* Pairs with fanout_drained's: it counts itself, then looks at the
     * slots; a slot ends, then looks at the count.
     */
    __atomic_thread_fence (__ATOMIC_SEQ_CST);
    wake = __atomic_load_n (&late_drain_waiters, __ATOMIC_RELAXED) > 0;
  }
  if (wake)
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
  char why[160];
  struct fanout *f;

  {
    SCOPED_LOCK (&late_lock);
    for (f = late_head; f; f = f->late_next)
      if (f->slots[i].used && !fanout_slot_ended (f, i)) {
        f->slots[i].lagged = true;
        if (late_changes (f))
          nr++;
      }
  }
  /* Not under late_lock, a leaf.  Without memory for the list, the cut
   * alone: the failed writes then mark the same regions stale as they
   * end.  Those that ended meanwhile need no mark: the child has them.
   */
  if (nr)
    regions = calloc (nr, sizeof *regions);
  if (regions) {
    SCOPED_LOCK (&late_lock);
    for (f = late_head; f && j < nr; f = f->late_next)
      if (f->slots[i].lagged && late_changes (f) &&
          !fanout_slot_ended (f, i))
        regions[j++] = (struct late_region) { f->offset, f->count };
  }
  nr = j;
  for (j = 0; j < nr; ++j)
    if (fresh_stale_mark (c, regions[j].offset, regions[j].count,
                          FRESH_LAGGING) == -1)
      nbdkit_error ("quorum: child %zu (%s): cannot record its stale "
                    "regions: %m", i, child_name (c));
  free (regions);
  snprintf (why, sizeof why, "%" PRIu64 " bytes and %u requests in flight, "
            "more than max-lag=%" PRIu64 " or %u", bytes,
            __atomic_load_n (&late_slots[i], __ATOMIC_RELAXED),
            quorum_max_lag, FANOUT_AHEAD_SLOTS);
  reactor_cut_reason (c, why, "lagging");
}

/* Whether child i owes more than it may: max-lag bytes, or
 * FANOUT_AHEAD_SLOTS requests.
 */
static bool
late_over (size_t i)
{
  return __atomic_load_n (&owed[i], __ATOMIC_RELAXED) > quorum_max_lag ||
    __atomic_load_n (&late_slots[i], __ATOMIC_RELAXED) > FANOUT_AHEAD_SLOTS;
}

/* Child i owes more than max-lag: ahead (fanout-ahead.c), or cut. */
static void
late_lagging (size_t i, uint64_t bytes)
{
  if (fanout_ahead_may (i))
    fanout_ahead_begin (i, bytes,
                        __atomic_load_n (&late_slots[i], __ATOMIC_RELAXED));
  else
    late_cut_lagging (i);
}

/* Take the ready fan-outs off the list, oldest first. */
static struct fanout *
late_take_ready (void)
{
  struct fanout *f, *next, *done = NULL;

  f = __atomic_exchange_n (&late_ready, NULL, __ATOMIC_ACQUIRE);
  SCOPED_LOCK (&late_lock);
  for (; f; f = next) {
    next = f->ready_next;
    late_unlink (f);
    f->late_next = done;        /* reversed: the stack is newest first */
    done = f;
  }
  return done;
}

/* Every 100 ms: the children with a late slot past child-timeout. */
static uint32_t
late_timed_out (void)
{
  uint32_t timed_out = 0;
  struct timespec now;
  struct fanout *f;
  size_t i;

  if (quorum_child_timeout == 0)
    return 0;
  clock_gettime (CLOCK_MONOTONIC, &now);
  SCOPED_LOCK (&late_lock);
  for (f = late_head; f; f = f->late_next) {
    if (!late_past (f, &now))
      continue;
    /* The spare's slot too: a spare that hangs must not hold the range. */
    for (i = 0; i < quorum_nr_slots (); ++i)
      if (f->slots[i].used && !fanout_slot_ended (f, i) &&
          !f->slots[i].timed_out) {
        f->slots[i].timed_out = true;
        timed_out |= UINT32_C (1) << i;
      }
  }
  return timed_out;
}

/* One pass: cut who must be cut (tick: look for timeouts too), take off
 * the list the fan-outs whose commands are all gone, and finish them.
 */
static void
late_pass (bool tick)
{
  struct fanout *done = late_take_ready (), *f;
  uint32_t timed_out = tick ? late_timed_out () : 0;
  size_t i;

  while ((f = done) != NULL) {
    done = f->late_next;
    for (i = 0; i < quorum_nr_children; ++i)
      if ((f->late & (UINT32_C (1) << i)) && f->slots[i].timed_out)
        f->slots[i].err = ETIMEDOUT;
    late_account (f, false);
    f->finish (f, f->arg);
    fanout_put (f);
  }

  for (i = 0; i < quorum_nr_children; ++i) {
    uint64_t bytes = __atomic_load_n (&owed[i], __ATOMIC_RELAXED);

    if (timed_out & (UINT32_C (1) << i)) {
      char why[64];

      snprintf (why, sizeof why, "no reply within child-timeout=%u",
                quorum_child_timeout);
      reactor_cut (&quorum_children[i], why);
    }
    else if (late_over (i) && !lag_cut[i] &&
             state_ahead (&quorum_children[i]) == AHEAD_NONE) {
      lag_cut[i] = true;
      late_lagging (i, bytes);
    }
    else if (!late_over (i))
      lag_cut[i] = false;
    fanout_ahead_step (i, __atomic_load_n (&late_slots[i],
                                           __ATOMIC_RELAXED) > 0);
  }

  /* The spare (replace.c) past child-timeout: cut, as a child is; its
   * supervisor reconnects it, and what it missed is stale for it
   * (spare_done).
   */
  if (quorum_nr_slots () > quorum_nr_children &&
      (timed_out & (UINT32_C (1) << quorum_nr_children)))
    reactor_cut (&quorum_children[quorum_nr_children],
                 "no reply within child-timeout");

  /* Flushes waiting for drained children look again. */
  SCOPED_LOCK (&late_lock);
  pthread_cond_broadcast (&late_cond);
}

static void *
late_main (void *arg)
{
  struct timespec next_tick = { 0 };

  (void) arg;
  while (!__atomic_load_n (&late_quit, __ATOMIC_ACQUIRE)) {
    struct timespec deadline, now;
    bool tick;

    /* A step of the wall clock must not stall the ticks. */
#ifdef HAVE_SEM_CLOCKWAIT
    clock_gettime (CLOCK_MONOTONIC, &deadline);
#else
    clock_gettime (CLOCK_REALTIME, &deadline);
#endif
    deadline.tv_nsec += 100000000;
    if (deadline.tv_nsec >= 1000000000) {
      deadline.tv_sec++;
      deadline.tv_nsec -= 1000000000;
    }
#ifdef HAVE_SEM_CLOCKWAIT
    if (sem_clockwait (&late_sem, CLOCK_MONOTONIC, &deadline) == 0)
#else
    if (sem_timedwait (&late_sem, &deadline) == 0)
#endif
      while (sem_trywait (&late_sem) == 0)
        ;                       /* one pass sees them all */
    /* The scan for timeouts walks everything in flight: every 100 ms,
     * however many kicks come.
     */
    clock_gettime (CLOCK_MONOTONIC, &now);
    tick = now.tv_sec > next_tick.tv_sec ||
      (now.tv_sec == next_tick.tv_sec && now.tv_nsec >= next_tick.tv_nsec);
    if (tick) {
      next_tick = now;
      next_tick.tv_nsec += 100000000;
      if (next_tick.tv_nsec >= 1000000000) {
        next_tick.tv_sec++;
        next_tick.tv_nsec -= 1000000000;
      }
    }
    late_pass (tick);
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
fanout_detach (struct fanout *f, fanout_finish_fn *finish,
               fanout_quick_fn *quick, void *arg)
{
  bool over;

  pthread_once (&late_once, late_start);
  f->finish = finish;
  f->quick = quick;
  f->arg = arg;
  if (!__atomic_load_n (&late_running, __ATOMIC_ACQUIRE)) {
    late_wait_here (f);
    return;
  }
  over = late_account (f, true);
  /* On the list first: only the ready stack makes the thread finish
   * (and free) f, and nothing pushes f there before detached is set.
   */
  {
    SCOPED_LOCK (&late_lock);
    f->seq = ++late_seq;
    f->late_next = NULL;
    f->late_prev = late_last;
    if (late_last)
      late_last->late_next = f;
    else
      late_head = f;
    late_last = f;
  }
  /* From now on the slot that ends last pushes f and wakes the thread
   * (fanout_late_kick); the kick here covers slots that ended before.
   */
  fanout_get (f);               /* the late thread may free f once pushed */
  __atomic_store_n (&f->detached, true, __ATOMIC_SEQ_CST);
  fanout_late_kick (f);
  /* A child that now owes more than it may is put ahead (or cut) at
   * once, not at the next tick.
   */
  if (over)
    sem_post (&late_sem);
  fanout_put (f);
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
  uint32_t ready;

  __atomic_add_fetch (&late_drain_waiters, 1, __ATOMIC_SEQ_CST);
  /* Pairs with fanout_late_kick's: the slots are read after. */
  __atomic_thread_fence (__ATOMIC_SEQ_CST);
  for (;;) {
    struct fanout *f;
    size_t i;

    ready = mask;

    for (f = late_head; f && f->seq <= limit; f = f->late_next) {
      if (!late_changes (f))
        continue;
      for (i = 0; i < quorum_nr_children; ++i)
        if (f->slots[i].used && !fanout_slot_ended (f, i))
          ready &= ~(UINT32_C (1) << i);
    }
    if (ready == mask || (unsigned) __builtin_popcount (ready) >= need)
      break;
    pthread_cond_wait (&late_cond, &late_lock);
  }
  __atomic_sub_fetch (&late_drain_waiters, 1, __ATOMIC_SEQ_CST);
  return ready;
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
