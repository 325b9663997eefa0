/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The fan-out: every operation goes to its children at the same time.
 * Remote children get asynchronous libnbd commands; the local child
 * (the filter's plugin) runs on the request's thread meanwhile; then
 * the request waits for the remote replies, and the caller votes.
 *
 * A fan-out is reference counted: one reference for the waiting
 * request and one for every command libnbd still owns.  libnbd calls a
 * command's free callback exactly once, even when queueing it fails,
 * so the last of those frees the fan-out and its buffers: a reply that
 * arrives after the request gave up can never write into freed memory.
 */

#include <config.h>

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <semaphore.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "dirty.h"
#include "fanout-int.h"
#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "reactor.h"
#include "state.h"

/* Fan-outs allocated and not yet freed (atomic): a request whose
 * fan-out is the only one reads its replies itself (fanout_own_wait).
 * Counted before any command is issued, and freed after the last is
 * gone, so a count of 1 means no other command is in flight.
 */
static unsigned fanout_active;

static struct fanout *
fanout_new (size_t buflen)
{
  struct fanout *f;
  size_t i;

  f = quorum_zalloc (sizeof *f + quorum_nr_slots () * sizeof f->slots[0]);
  if (f == NULL)
    return NULL;
  /* Sequentially consistent, as in reactor_own_begin: either it sees
   * this count, or we see that it owns, and ask for the sockets back.
   */
  if (__atomic_add_fetch (&fanout_active, 1, __ATOMIC_SEQ_CST) > 1 &&
      reactor_owned ())
    reactor_own_poke ();
  sem_init (&f->done, 0, 0);
  f->pending = 1;               /* until every command is issued */
  f->refs = 1;
  f->buflen = buflen;
  for (i = 0; i < quorum_nr_slots (); ++i) {
    f->slots[i].f = f;
    f->slots[i].index = i;
  }
  return f;
}

static void
fanout_free (struct fanout *f)
{
  size_t i;

  for (i = 0; i < quorum_nr_slots (); ++i) {
    if (f->slots[i].pooled)
      bufpool_put (f->slots[i].buf, f->buflen);
    free (f->slots[i].extents.ptr);
  }
  sem_destroy (&f->done);
  free (f);
  __atomic_sub_fetch (&fanout_active, 1, __ATOMIC_SEQ_CST);
}

void
fanout_put (struct fanout *f)
{
  if (__atomic_sub_fetch (&f->refs, 1, __ATOMIC_ACQ_REL) == 0)
    fanout_free (f);
}


/* early: the remote slots ended so far. */
static unsigned
fanout_ended (struct fanout *f)
{
  return __atomic_load_n (&f->ended, __ATOMIC_SEQ_CST);
}

/* Sleep until done is posted, or the deadline if there is one; false
 * if the deadline passed.
 */
static bool
fanout_sleep (struct fanout *f, const struct timespec *deadline)
{
  for (;;) {
    int r;

    if (deadline == NULL)
      r = sem_wait (&f->done);
    else {
#ifdef HAVE_SEM_CLOCKWAIT
      /* Deadlines must not move with the wall clock. */
      r = sem_clockwait (&f->done, CLOCK_MONOTONIC, deadline);
#else
      struct timespec now, rt;
      int64_t ns;

      clock_gettime (CLOCK_MONOTONIC, &now);
      ns = quorum_ns_between (&now, deadline);
      clock_gettime (CLOCK_REALTIME, &rt);
      if (ns < 0)
        ns = 0;
      ns += rt.tv_nsec;
      rt.tv_sec += ns / 1000000000;
      rt.tv_nsec = ns % 1000000000;
      r = sem_timedwait (&f->done, &rt);
#endif
    }
    /* The acquire pairs with the release of the last fanout_unpend, so
     * that the replies' results are seen here whatever the semaphore
     * implementation (and ThreadSanitizer, which knows no
     * sem_clockwait, sees it too).
     */
    if (r == 0) {
      (void) __atomic_load_n (&f->pending, __ATOMIC_ACQUIRE);
      return true;
    }
    if (errno == ETIMEDOUT)
      return false;
    /* EINTR: again */
  }
}

/* Cut the children whose slots of f are still pending: child-timeout
 * passed.  Who is late is decided at one moment; then they are cut.
 */
static void
fanout_cut_late (struct fanout *f)
{
  size_t i;

  for (i = 0; i < quorum_nr_slots (); ++i)
    if (__atomic_load_n (&f->slots[i].pending, __ATOMIC_ACQUIRE))
      f->slots[i].timed_out = true;
  for (i = 0; i < quorum_nr_slots (); ++i) {
    if (f->slots[i].timed_out) {
      char why[64];

      snprintf (why, sizeof why, "no reply within child-timeout=%u",
                quorum_child_timeout);
      reactor_cut (&quorum_children[i], why);
    }
  }
}

/* Milliseconds from now to *deadline, rounded up; 0 once it passed. */
static int
fanout_ms_until (const struct timespec *deadline)
{
  struct timespec now;
  int64_t ns;

  clock_gettime (CLOCK_MONOTONIC, &now);
  ns = quorum_ns_between (&now, deadline);
  if (ns <= 0)
    return 0;
  ns = (ns + 999999) / 1000000;
  return ns > INT_MAX ? INT_MAX : (int) ns;
}

/* Low queue depth: while f is the only fan-out, its request reads the
 * replies itself (reactor_own_*): the reactor does not wake, and
 * neither does this thread twice, once for the reactor's post.  (At
 * higher depths the reactor is awake anyway, and one pass of it takes
 * the replies of several requests.)  fanout_start takes the sockets
 * before it sends a command, so that the reactor never sees a reply
 * (f->own_mask).  Not when the local child (the filter's plugin) is
 * to run on this thread: nobody would read the sockets meanwhile, and
 * a local call taking long would hold up the replies of every other
 * request on them.  Returns true once every command of f is gone; false
 * if it did not own them, or gave them back because another fan-out
 * started (*cut: it already cut the children past the deadline), for
 * the caller to sleep as usual.
 */
static bool
fanout_own_wait (struct fanout *f, const struct timespec *deadline,
                 bool *cut)
{
  const uint32_t mask = f->own_mask;

  if (mask == 0)
    return false;
  for (;;) {
    int ms = -1;

    if (__atomic_load_n (&f->pending, __ATOMIC_SEQ_CST) == 0)
      break;
    if (deadline && !*cut) {
      ms = fanout_ms_until (deadline);
      if (ms == 0) {
        /* Past it: read what came meanwhile, then cut who is late. */
        if (reactor_own_poll (mask, 0) == REACTOR_OWN_TIMEOUT) {
          fanout_cut_late (f);  /* their sockets report the cut */
          *cut = true;
        }
        continue;
      }
    }
    if (reactor_own_poll (mask, ms) == REACTOR_OWN_POKED &&
        __atomic_load_n (&fanout_active, __ATOMIC_SEQ_CST) > 1) {
      /* Its commands' ends need not poke an owner any more. */
      __atomic_store_n (&f->own, false, __ATOMIC_SEQ_CST);
      reactor_own_end (mask, false, &fanout_active);
      return false;
    }
  }
  /* Every command of ours is done: the next request alone takes them
   * back with no system call.
   */
  reactor_own_end (mask, true, &fanout_active);
  fanout_sleep (f, NULL);       /* the post of the last: taken at once */
  return true;
}

/* Before fanout_run's commands: take the sockets of the remote
 * children of mask, if f is alone.
 */
static void
fanout_own_begin (struct fanout *f, struct quorum_conn *conn,
                  enum op_type type, uint32_t mask)
{
  uint32_t remote = 0;
  size_t i;

  /* Block status may go to another handle (slot_send). */
  if (type == OP_EXTENTS)
    return;
  for (i = 0; i < quorum_nr_slots (); ++i) {
    if (!(mask & (UINT32_C (1) << i)))
      continue;
    if (!child_is_local (&quorum_children[i]))
      remote |= UINT32_C (1) << i;
    else if (conn->local)
      return;                   /* it runs here: see fanout_own_wait */
  }
  if (remote == 0 || !reactor_own_begin (remote, &fanout_active))
    return;
  f->own_mask = remote;
  /* A command of f that another thread ends pokes us (one refused
   * where it was handed over): fanout_unpend.
   */
  __atomic_store_n (&f->own, true, __ATOMIC_SEQ_CST);
}

/* Wait for every remote command of f.  A child that has not answered
 * by the deadline (child-timeout after start) loses its vote: its
 * connection is cut, which makes libnbd retire its commands at once,
 * and only then do we return, so no buffer a command uses is ever
 * released under it.
 */
static void
fanout_wait (struct fanout *f, const struct timespec *start)
{
  struct timespec deadline = *start;
  bool cut = false;
  size_t i;

  deadline.tv_sec += quorum_child_timeout;

  /* Every command is issued: drop the issuing count. */
  fanout_unpend (f);
  if (!fanout_own_wait (f, quorum_child_timeout ? &deadline : NULL, &cut)) {
    if (cut)
      fanout_sleep (f, NULL);
    else if (!fanout_sleep (f, quorum_child_timeout ? &deadline : NULL)) {
      fanout_cut_late (f);
      fanout_sleep (f, NULL);
    }
  }

  for (i = 0; i < quorum_nr_slots (); ++i)
    if (f->slots[i].timed_out)
      f->slots[i].err = ETIMEDOUT;
}


/* The spare (internal.h), while a replace rebuilds it: it takes every
 * write, zero and trim, so that what it was copied stays current, but
 * its result counts for nothing: the callers vote on the children's
 * slots only.  A write it failed or missed (down), or that failed on
 * any child (it may then be undone, or settled another way), leaves it
 * stale there, to be copied again; one it took is in its unflushed
 * map.  Its flushes are its supervisor's (resync_flush).
 */
static size_t spare = SIZE_MAX;         /* atomic */

void
fanout_set_spare (size_t index)
{
  __atomic_store_n (&spare, index, __ATOMIC_RELEASE);
}

static bool
spare_takes (enum op_type type)
{
  return type == OP_WRITE || type == OP_ZERO || type == OP_TRIM;
}

static uint32_t
spare_mask (enum op_type type, uint32_t mask, uint64_t offset,
            uint64_t count)
{
  const size_t s = __atomic_load_n (&spare, __ATOMIC_ACQUIRE);

  if (s == SIZE_MAX || !spare_takes (type) ||
      (mask & (UINT32_C (1) << s)))
    return mask;
  if (state_get (&quorum_children[s]) == CHILD_DOWN) {
    /* Missed: no report for each (resync-start says how much). */
    dirty_mark (&quorum_children[s].dirty, offset, count);
    return mask;
  }
  return mask | UINT32_C (1) << s;
}

static void
spare_done (struct fanout *f, enum op_type type, uint64_t offset,
            uint64_t count)
{
  const size_t s = __atomic_load_n (&spare, __ATOMIC_ACQUIRE);
  bool ok;
  size_t i;

  if (s == SIZE_MAX || !spare_takes (type) || !f->slots[s].used)
    return;
  /* Answered early (wait-for=threshold) while the spare is still at
   * it: not known to have taken it, so copied again.
   */
  ok = !__atomic_load_n (&f->slots[s].pending, __ATOMIC_ACQUIRE) &&
    f->slots[s].err == 0;
  for (i = 0; ok && i < quorum_nr_children; ++i)
    if (f->slots[i].used && f->slots[i].err)
      ok = false;
  if (ok)
    fresh_took (&quorum_children[s], offset, count);
  else
    fresh_stale_mark (&quorum_children[s], offset, count,
                      FRESH_WRITE_FAILED);
}

/* Start one operation on the children in mask: the remote ones queued,
 * the local one run here.  Returns how many remote slots were issued.
 */
static unsigned
fanout_start (struct fanout *f, struct quorum_conn *conn, enum op_type type,
              uint32_t mask, void *rbuf, size_t direct, const void *wbuf,
              uint32_t count, uint64_t offset, uint32_t flags, bool own)
{
  struct slot *local = NULL;
  unsigned issued = 0;
  size_t i;

  if (!f->started) {
    clock_gettime (CLOCK_MONOTONIC, &f->start);
    f->started = true;
  }
  f->type = type;
  f->count = count;
  f->offset = offset;

  mask = spare_mask (type, mask, offset, count);
  if (own)
    fanout_own_begin (f, conn, type, mask);
  /* Sockets parked by the last request alone: the reactor reads the
   * replies of those we do not read ourselves.
   */
  reactor_unpark (mask & ~f->own_mask);
  for (i = 0; i < quorum_nr_slots (); ++i) {
    struct slot *s = &f->slots[i];

    if (!(mask & (UINT32_C (1) << i)) || s->used)
      continue;
    s->used = true;
    if (f->early)
      clock_gettime (CLOCK_MONOTONIC, &s->sent);
    if (type == OP_READ)
      STAT_ADD (&quorum_children[i], reads, 1);
    else if (type == OP_WRITE || type == OP_ZERO || type == OP_TRIM)
      STAT_ADD (&quorum_children[i], writes, 1);
    if (type == OP_READ) {
      if (i == direct)
        s->buf = rbuf;
      else {
        s->buf = bufpool_get (count);
        if (s->buf == NULL) {
          s->err = ENOMEM;
          continue;
        }
        s->pooled = true;
      }
    }
    if (child_is_local (&quorum_children[i])) {
      local = s;                /* after the remote ones are on their way */
    }
    else {
      slot_issue (s, type, wbuf, count, offset, flags);
      issued++;
    }
  }

  if (local && conn->local)
    fanout_run_local (conn, local, type, wbuf, count, offset, flags);
  else if (local)
    local->err = ENOTCONN;      /* no plugin context (resync) */
  return issued;
}

struct fanout *
fanout_run (struct quorum_conn *conn, enum op_type type, uint32_t mask,
            void *rbuf, size_t direct, const void *wbuf,
            uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  struct fanout *f;

  f = fanout_new (type == OP_READ ? count : 0);
  if (f == NULL) {
    *err = errno;
    nbdkit_error ("quorum: calloc: %m");
    return NULL;
  }
  fanout_start (f, conn, type, mask, rbuf, direct, wbuf, count, offset,
                flags, true);
  fanout_wait (f, &f->start);
  spare_done (f, type, offset, count);
  return f;
}

struct fanout *
fanout_run_until (struct quorum_conn *conn, enum op_type type, uint32_t mask,
                  void *rbuf, size_t direct, const void *wbuf,
                  uint32_t count, uint64_t offset, uint32_t flags,
                  fanout_enough_fn *enough, void *arg, int *err)
{
  struct fanout *f;
  struct timespec deadline;
  unsigned issued, wake_from;
  size_t i;

  f = fanout_new (type == OP_READ ? count : 0);
  if (f == NULL) {
    *err = errno;
    nbdkit_error ("quorum: calloc: %m");
    return NULL;
  }
  f->early = true;
  /* enough needs vote-threshold successes, the local child's one of
   * them at most: the remote slots that end before could not make it
   * true, and do not wake this thread (a wake-up costs more than the
   * check, and the first reply of three is seldom enough).
   */
  wake_from = quorum_threshold;
  if (quorum_has_local && (mask & 1) && wake_from > 1)
    wake_from--;
  __atomic_store_n (&f->wake_from, wake_from, __ATOMIC_SEQ_CST);
  issued = fanout_start (f, conn, type, mask, rbuf, direct, wbuf, count,
                         offset, flags, false);
  /* Fewer issued: the last of them must post. */
  if (issued < wake_from)
    __atomic_store_n (&f->wake_from, issued, __ATOMIC_SEQ_CST);
  deadline = f->start;
  deadline.tv_sec += quorum_child_timeout;

  /* Every command is issued: drop the issuing count (no post when
   * early).  Each remote slot that ends from wake_from on posts done.
   */
  fanout_unpend (f);
  while (fanout_ended (f) < issued && !enough (f, arg)) {
    if (!fanout_sleep (f, quorum_child_timeout ? &deadline : NULL)) {
      /* As fanout_wait: who is late is cut, and waited for. */
      fanout_cut_late (f);
      while (fanout_ended (f) < issued)
        fanout_sleep (f, NULL);
      break;
    }
  }

  for (i = 0; i < quorum_nr_children; ++i) {
    if (!f->slots[i].used)
      continue;
    if (__atomic_load_n (&f->slots[i].pending, __ATOMIC_ACQUIRE))
      f->late |= UINT32_C (1) << i;
    else if (f->slots[i].timed_out)
      f->slots[i].err = ETIMEDOUT;
  }
  /* The spare still at it keeps the write's buffer and range too (the
   * caller detaches f): else its write could land after the rebuild
   * copied that region again.
   */
  if (quorum_nr_slots () > quorum_nr_children &&
      f->slots[quorum_nr_children].used &&
      __atomic_load_n (&f->slots[quorum_nr_children].pending,
                       __ATOMIC_ACQUIRE))
    f->late_spare = true;
  spare_done (f, type, offset, count);
  return f;
}

uint32_t
fanout_participants (enum op_type type, uint64_t offset, uint64_t count)
{
  const bool reads = type == OP_READ || type == OP_EXTENTS ||
    type == OP_CACHE;
  uint32_t mask = 0, ahead = 0;
  unsigned taking = 0;
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];

    if (!child_is_local (c) && state_get (c) == CHILD_DOWN)
      continue;
    /* Ahead (fanout-ahead.c): nothing until it caught up. */
    if (state_ahead (c) != AHEAD_NONE) {
      ahead |= UINT32_C (1) << i;
      continue;
    }
    taking++;
    /* A stale child takes every change but has no say. */
    if (reads && fresh_stale (c, offset, count))
      continue;
    mask |= UINT32_C (1) << i;
  }
  if (ahead == 0)
    return mask;
  /* An ahead child is left out only while the others are enough: were
   * one of them to go down, every write would fail; were they stale
   * here, the read would.  It takes the request (and once the others
   * that take requests are too few, the late thread calls it back,
   * fanout_ahead_step).  Where it is not stale it is current: every
   * write that left it out made it stale before its answer, and those
   * it owes hold their range until it completed them (a read waits).
   */
  if (reads)
    taking = __builtin_popcount (mask);
  for (i = 0; i < quorum_nr_children; ++i) {
    if (!(ahead & (UINT32_C (1) << i)))
      continue;
    if (taking >= quorum_threshold) {
      if (type == OP_WRITE || type == OP_ZERO || type == OP_TRIM)
        fanout_ahead_missed (i);
    }
    else if (!reads || !fresh_stale (&quorum_children[i], offset, count))
      mask |= UINT32_C (1) << i;
  }
  return mask;
}


struct fanout *
fanout_hedge_new (uint32_t count, uint64_t offset, int *err)
{
  struct fanout *f = fanout_new (count);

  if (f == NULL) {
    *err = errno;
    nbdkit_error ("quorum: calloc: %m");
    return NULL;
  }
  f->early = true;
  f->wake_from = 0;             /* fanout_wait_one: every end posts */
  f->type = OP_READ;
  f->count = count;
  f->offset = offset;
  fanout_unpend (f);            /* nothing to issue yet */
  return f;
}

void
fanout_ask (struct fanout *f, struct quorum_conn *conn, uint32_t mask,
            void *rbuf, size_t direct)
{
  /* The issuing count again, so that pending cannot be seen at 0 while
   * slots are being added.
   */
  fanout_pend (f);
  fanout_start (f, conn, OP_READ, mask, rbuf, direct, NULL, f->count,
                f->offset, 0, false);
  fanout_unpend (f);
}

bool
fanout_wait_one (struct fanout *f, const struct timespec *deadline)
{
  return fanout_sleep (f, deadline);
}

void
fanout_cut_pending (struct fanout *f)
{
  fanout_cut_late (f);
}
