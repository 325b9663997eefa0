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
#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "reactor.h"
#include "state.h"

#define container_of(ptr, type, member) \
  ((type *) ((char *) (ptr) - offsetof (type, member)))

static struct fanout *
fanout_new (size_t buflen)
{
  struct fanout *f;
  size_t i;

  f = calloc (1, sizeof *f + quorum_nr_slots () * sizeof f->slots[0]);
  if (f == NULL)
    return NULL;
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
}

void
fanout_put (struct fanout *f)
{
  if (__atomic_sub_fetch (&f->refs, 1, __ATOMIC_ACQ_REL) == 0)
    fanout_free (f);
}

static void
fanout_get (struct fanout *f)
{
  __atomic_add_fetch (&f->refs, 1, __ATOMIC_RELAXED);
}

/* One command more in flight, or one less; the caller holds a
 * reference, so f outlives the post.
 */
static void
fanout_pend (struct fanout *f)
{
  __atomic_add_fetch (&f->pending, 1, __ATOMIC_RELAXED);
}

static void
fanout_unpend (struct fanout *f)
{
  /* Sequentially consistent: slot_done reads detached after it, and
   * the late thread reads pending after setting detached.
   */
  if (__atomic_sub_fetch (&f->pending, 1, __ATOMIC_SEQ_CST) == 0 &&
      !f->early)
    sem_post (&f->done);
}

/* One reference and one pending count more on f, and back: for each
 * command until libnbd frees it, and around the call that queues one,
 * so that the request sees the errno of a command libnbd refused (and
 * freed inside the call).
 */
static void
fanout_hold (struct fanout *f)
{
  fanout_get (f);
  fanout_pend (f);
}

static void
fanout_release (struct fanout *f)
{
  fanout_unpend (f);
  fanout_put (f);
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
      ns = (deadline->tv_sec - now.tv_sec) * INT64_C (1000000000) +
        (deadline->tv_nsec - now.tv_nsec);
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
  size_t i;

  deadline.tv_sec += quorum_child_timeout;

  /* Every command is issued: drop the issuing count. */
  fanout_unpend (f);
  if (!fanout_sleep (f, quorum_child_timeout ? &deadline : NULL)) {
    fanout_cut_late (f);
    fanout_sleep (f, NULL);
  }

  for (i = 0; i < quorum_nr_slots (); ++i)
    if (f->slots[i].timed_out)
      f->slots[i].err = ETIMEDOUT;
}

/* libnbd: the command finished (in the reactor thread). */
static int
slot_complete (void *vp, int *error)
{
  struct slot *s = vp;
  struct child *c = &quorum_children[s->index];

  if (*error) {
    int zero = 0;

    __atomic_compare_exchange_n (&s->part_err, &zero, *error, false,
                                 __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
  }
  else
    __atomic_add_fetch (&s->parts_ok, 1, __ATOMIC_ACQ_REL);
  switch (s->type) {
  case OP_WRITE: case OP_ZERO: case OP_TRIM:
    /* Failed or not, it may have changed something. */
    __atomic_add_fetch (&c->writes_done, 1, __ATOMIC_ACQ_REL);
    break;
  case OP_FLUSH:
    if (*error == 0) {
      uint64_t old = __atomic_load_n (&c->writes_flushed, __ATOMIC_ACQUIRE);

      while (old < s->flushes &&
             !__atomic_compare_exchange_n (&c->writes_flushed, &old,
                                           s->flushes, false,
                                           __ATOMIC_ACQ_REL,
                                           __ATOMIC_ACQUIRE))
        ;
    }
    break;
  default:
    break;
  }
  return 1;                     /* retire the command */
}

/* Each child's recent read latency (ns, a moving average over about 8
 * reads of early fan-outs; 0: none yet), for hedged reads.  Updated
 * racily, atomically: a lost sample costs nothing.
 */
static uint64_t read_latency[VOTE_MAX_CHILDREN];

static void
fanout_latency_sample (const struct slot *s)
{
  struct timespec now;
  int64_t ns;
  uint64_t old;

  clock_gettime (CLOCK_MONOTONIC, &now);
  ns = (now.tv_sec - s->sent.tv_sec) * INT64_C (1000000000) +
    (now.tv_nsec - s->sent.tv_nsec);
  if (ns <= 0)
    ns = 1;
  old = __atomic_load_n (&read_latency[s->index], __ATOMIC_RELAXED);
  __atomic_store_n (&read_latency[s->index],
                    old ? old - old / 8 + (uint64_t) ns / 8 : (uint64_t) ns,
                    __ATOMIC_RELAXED);
}

uint64_t
fanout_read_latency (void)
{
  uint64_t best = 0, l;
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    l = __atomic_load_n (&read_latency[i], __ATOMIC_RELAXED);
    if (l && (best == 0 || l < best))
      best = l;
  }
  return best;
}

/* The slot's last part is gone: its result, and the fan-out's count. */
static void
slot_done (struct slot *s)
{
  struct fanout *f = s->f;
  int err = __atomic_load_n (&s->part_err, __ATOMIC_ACQUIRE);

  /* A part libnbd freed without completing it (its handle closed under
   * it) must not count as a success.
   */
  if (err == 0 &&
      __atomic_load_n (&s->parts_ok, __ATOMIC_ACQUIRE) != s->parts_sent)
    err = ENOTCONN;
  s->err = err;
  __atomic_store_n (&s->pending, false, __ATOMIC_RELEASE);
  if (!f->early) {
    fanout_release (f);
    return;
  }
  /* wait-for=threshold: the request counts slots; once it answered, the
   * late thread counts commands.
   */
  if (s->type == OP_READ && err == 0)
    fanout_latency_sample (s);
  sem_post (&f->done);
  fanout_unpend (f);
  if (__atomic_load_n (&f->detached, __ATOMIC_SEQ_CST))
    fanout_late_kick ();
  fanout_put (f);
}

static void
slot_part_put (struct slot *s)
{
  if (__atomic_sub_fetch (&s->parts, 1, __ATOMIC_ACQ_REL) == 0)
    slot_done (s);
}

/* libnbd: a part is gone, whether it ran or could not be queued. */
static void
slot_free (void *vp)
{
  slot_part_put (vp);
}

/* The slot's answer without a word to the child. */
static void
slot_answer (struct slot *s, int err)
{
  if (err)
    s->part_err = err;
}

/* libnbd: block status for a remote child, appended to its slot. */
static int
slot_extent (void *vp, const char *metacontext, uint64_t offset,
             uint32_t *entries, size_t nr_entries, int *error)
{
  struct slot *s = vp;
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (i = 0; i + 1 < nr_entries; i += 2) {
    if (quorum_extent_append (&s->extents, offset, entries[i],
                              entries[i + 1]) == -1) {
      *error = ENOMEM;
      return -1;
    }
    offset += entries[i];
  }
  return 0;
}

/* Queue one part of a slot's command: [offset, +count) of it. */
static int64_t
slot_send_part (struct slot *s, struct nbd_handle *nbd, uint64_t offset,
                uint32_t count, uint32_t lflags)
{
  nbd_completion_callback cb = {
    .callback = slot_complete, .user_data = s, .free = slot_free,
  };
  uint64_t rel = offset - s->offset;

  __atomic_add_fetch (&s->parts, 1, __ATOMIC_ACQ_REL);
  s->parts_sent++;
  switch (s->type) {
  case OP_READ:
    return nbd_aio_pread (nbd, (char *) s->buf + rel, count, offset, cb, 0);
  case OP_WRITE:
    return nbd_aio_pwrite (nbd, (const char *) s->wbuf + rel, count, offset,
                           cb, lflags);
  case OP_ZERO: case OP_TRIM:
    return nbd_aio_zero (nbd, count, offset, cb, lflags);
  case OP_CACHE:
    return nbd_aio_cache (nbd, count, offset, cb, 0);
  case OP_FLUSH:
    return nbd_aio_flush (nbd, cb, 0);
  case OP_EXTENTS:
    return nbd_aio_block_status (nbd, count, offset,
                                 (nbd_extent_callback) {
                                   .callback = slot_extent, .user_data = s,
                                 },
                                 cb, lflags);
  }
  abort ();
}

/* Queue a slot's command on its child's handle: on the request's own
 * thread, or on whichever thread held the handle when it asked (the
 * reactor, or another request's thread; see reactor_submit).
 *
 * Only what the child offers is sent (c->caps, which goes with the
 * handle): a request longer than its maximum block size goes in parts;
 * FUA it lacks is asked of write_op as a flush after the write; a
 * trim is a zero that may punch holes, so that every child reads the
 * same afterwards; a fast zero it cannot do fails here with ENOTSUP;
 * block status it lacks says data, and cache it lacks is skipped.
 */
/* One function on purpose, over 80 lines: the request path of every
 * remote command, under nbd_lock, kept as it was benchmarked.
 */
static void
slot_send (struct reactor_cmd *cmd)
{
  struct slot *s = container_of (cmd, struct slot, cmd);
  struct fanout *f = s->f;
  struct child *c = &quorum_children[s->index];
  const struct quorum_caps *cc = &c->caps;
  enum op_type type = s->type;
  uint32_t flags = s->flags, lflags = 0;
  uint64_t pos = s->offset, end = s->offset + s->count;
  struct nbd_handle *nbd;
  int64_t r = 0;

  fanout_hold (f);
  /* The supervisor may be replacing a dead handle. */
  pthread_rwlock_rdlock (&c->nbd_lock);
  nbd = type == OP_EXTENTS && c->meta ? c->meta : c->nbd;
  switch (type) {
  case OP_WRITE: case OP_ZERO: case OP_TRIM:
    if (!cc->can_write || (type != OP_WRITE && !cc->can_zero)) {
      slot_answer (s, EROFS);
      goto out;
    }
    if (flags & NBDKIT_FLAG_FUA) {
      if (cc->can_fua)
        lflags |= LIBNBD_CMD_FLAG_FUA;
      else
        s->flush_after = true;
    }
    if (type == OP_ZERO && !(flags & NBDKIT_FLAG_MAY_TRIM))
      lflags |= LIBNBD_CMD_FLAG_NO_HOLE;
    if (type == OP_ZERO && (flags & NBDKIT_FLAG_FAST_ZERO)) {
      if (!cc->can_fast_zero) {
        slot_answer (s, ENOTSUP);
        goto out;
      }
      lflags |= LIBNBD_CMD_FLAG_FAST_ZERO;
    }
    break;
  case OP_FLUSH:
    if (!cc->can_flush) {
      slot_answer (s, EINVAL);
      goto out;
    }
    /* Covers the writes completed before it is sent. */
    s->flushes = __atomic_load_n (&c->writes_done, __ATOMIC_ACQUIRE);
    end = pos + 1;              /* one part */
    break;
  case OP_CACHE:
    if (!cc->can_cache)
      goto out;
    break;
  case OP_EXTENTS:
    if (!cc->can_extents) {
      if (quorum_extent_append (&s->extents, s->offset, s->count, 0) == -1)
        slot_answer (s, ENOMEM);
      goto out;
    }
    /* The child may answer for less: never split. */
    lflags = flags & NBDKIT_FLAG_REQ_ONE ? LIBNBD_CMD_FLAG_REQ_ONE : 0;
    r = slot_send_part (s, nbd, pos, s->count, lflags);
    goto sent;
  case OP_READ:
    break;
  }

  while (pos < end) {
    uint64_t e = fanout_part_end (pos, end, cc->block_max, cc->block_min);

    r = slot_send_part (s, nbd, pos, e - pos, lflags);
    if (r == -1)
      break;
    pos = e;
  }

 sent:
  if (r == -1) {
    int err;

    /* libnbd says EINVAL ("invalid state") for a dead connection. */
    if (reactor_handle_gone (nbd)) {
      err = ENOTCONN;
      reactor_kick ();
    }
    else
      err = nbd_get_errno ();
    slot_answer (s, err ? err : EIO);
    {
      char *msg = child_redact (c, nbd_get_error () ?: "failed");

      nbdkit_debug ("quorum: child %zu (%s): %s: %s", c->index, c->name,
                    report_op_name (type), msg ? msg : "failed");
      free (msg);
    }
  }
  else if (s->parts_sent)
    reactor_kick_handle (nbd);
 out:
  pthread_rwlock_unlock (&c->nbd_lock);
  slot_part_put (s);            /* every part is queued */
  fanout_release (f);
}

/* Queue one remote child's command. */
static void
slot_issue (struct slot *s, enum op_type type, const void *wbuf,
            uint32_t count, uint64_t offset, uint32_t flags)
{
  struct fanout *f = s->f;

  /* Count it before libnbd can free it, which may happen inside the
   * call when queueing fails.
   */
  __atomic_store_n (&s->pending, true, __ATOMIC_RELAXED);
  fanout_hold (f);

  s->parts = 1;                 /* until slot_send has queued them all */
  s->parts_sent = s->parts_ok = 0;
  s->part_err = 0;
  s->err = ENOTCONN;
  s->type = type;
  s->wbuf = wbuf;
  s->count = count;
  s->offset = offset;
  s->flags = flags;
  s->cmd.issue = slot_send;
  reactor_submit (&quorum_children[s->index], &s->cmd);
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
              uint32_t count, uint64_t offset, uint32_t flags)
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
                flags);
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
  unsigned issued;
  size_t i;

  f = fanout_new (type == OP_READ ? count : 0);
  if (f == NULL) {
    *err = errno;
    nbdkit_error ("quorum: calloc: %m");
    return NULL;
  }
  f->early = true;
  issued = fanout_start (f, conn, type, mask, rbuf, direct, wbuf, count,
                         offset, flags);
  deadline = f->start;
  deadline.tv_sec += quorum_child_timeout;

  /* Every command is issued: drop the issuing count (no post when
   * early).  Each remote slot then posts done once, when it ends.
   */
  fanout_unpend (f);
  while (issued > 0 && !enough (f, arg)) {
    if (!fanout_sleep (f, quorum_child_timeout ? &deadline : NULL)) {
      /* As fanout_wait: who is late is cut, and waited for. */
      fanout_cut_late (f);
      while (issued > 0) {
        fanout_sleep (f, NULL);
        issued--;
      }
      break;
    }
    issued--;
  }

  for (i = 0; i < quorum_nr_children; ++i) {
    if (!f->slots[i].used)
      continue;
    if (__atomic_load_n (&f->slots[i].pending, __ATOMIC_ACQUIRE))
      f->late |= UINT32_C (1) << i;
    else if (f->slots[i].timed_out)
      f->slots[i].err = ETIMEDOUT;
  }
  spare_done (f, type, offset, count);
  return f;
}

uint32_t
fanout_participants (enum op_type type, uint64_t offset, uint64_t count)
{
  uint32_t mask = 0;
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];

    if (!child_is_local (c) && state_get (c) == CHILD_DOWN)
      continue;
    /* A stale child takes every change but has no say. */
    if ((type == OP_READ || type == OP_EXTENTS || type == OP_CACHE) &&
        fresh_stale (c, offset, count))
      continue;
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
                f->offset, 0);
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
