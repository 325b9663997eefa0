/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The fan-out: every operation goes to its children at the same time.
 * Remote children get asynchronous libnbd commands; the local child
 * (the filter's plugin) runs on the request's thread meanwhile; then
 * the request waits for the remote replies and the results are voted.
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

#include "cleanup.h"
#include "control.h"
#include "internal.h"
#include "rangelock.h"

struct fanout;

static void promise_init (void);

#define container_of(ptr, type, member) \
  ((type *) ((char *) (ptr) - offsetof (type, member)))

/* One child's part of a fan-out. */
struct slot {
  struct fanout *f;
  size_t index;                 /* child */
  bool used;                    /* child takes part in this operation */
  bool pending;                 /* remote command owned by libnbd */
  bool timed_out;               /* child-timeout passed first */
  bool flush_after;             /* FUA asked of a child without it */
  int err;                      /* its errno, 0 if it succeeded */
  /* A remote command may be split in parts (the child's maximum block
   * size): those in flight plus one while they are queued, those that
   * succeeded, and the first error of any.
   */
  unsigned parts, parts_sent, parts_ok;
  int part_err;
  void *buf;                    /* read: where its reply lands */
  bool pooled;                  /* buf came from the buffer pool */
  struct quorum_extent_list extents;
  /* The command, for whichever thread queues it (child_submit). */
  struct child_cmd cmd;
  enum op_type type;
  const void *wbuf;
  uint32_t count;
  uint64_t offset;
  uint32_t flags;
  uint64_t flushes;             /* flush: writes_done when it was sent */
};

/* Request threads, the reactor and the threads queueing commands all
 * touch a fan-out at once: counters are atomic, and the request sleeps
 * on a semaphore posted once, by whoever retires the last command.  (A
 * mutex and condition variable here cost several futex calls per
 * request, each thread waking another only to find the lock taken.)
 */
struct fanout {
  sem_t done;                   /* posted when pending reaches 0 */
  unsigned pending;             /* remote commands + 1 while issuing */
  unsigned refs;                /* the request + remote commands */
  size_t buflen;
  struct slot slots[];          /* one per child */
};

int
quorum_extent_append (struct quorum_extent_list *list,
                      uint64_t offset, uint64_t length, uint32_t type)
{
  if (list->len == list->cap) {
    size_t cap = list->cap ? list->cap * 2 : 16;
    struct quorum_extent *p = realloc (list->ptr, cap * sizeof *p);

    if (p == NULL)
      return -1;
    list->ptr = p;
    list->cap = cap;
  }
  list->ptr[list->len++] = (struct quorum_extent) {
    .offset = offset, .length = length, .type = type
  };
  return 0;
}

static struct fanout *
fanout_new (size_t buflen)
{
  struct fanout *f;
  size_t i;

  f = calloc (1, sizeof *f + quorum_nr_children * sizeof f->slots[0]);
  if (f == NULL)
    return NULL;
  sem_init (&f->done, 0, 0);
  f->pending = 1;               /* until every command is issued */
  f->refs = 1;
  f->buflen = buflen;
  for (i = 0; i < quorum_nr_children; ++i) {
    f->slots[i].f = f;
    f->slots[i].index = i;
  }
  return f;
}

static void
fanout_free (struct fanout *f)
{
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    if (f->slots[i].pooled)
      bufpool_put (f->slots[i].buf, f->buflen);
    free (f->slots[i].extents.ptr);
  }
  sem_destroy (&f->done);
  free (f);
}

/* Drop one reference; the last frees. */
static void
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
  if (__atomic_sub_fetch (&f->pending, 1, __ATOMIC_ACQ_REL) == 0)
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
    /* Who is late, all at one moment; then cut them. */
    for (i = 0; i < quorum_nr_children; ++i)
      if (__atomic_load_n (&f->slots[i].pending, __ATOMIC_ACQUIRE))
        f->slots[i].timed_out = true;
    for (i = 0; i < quorum_nr_children; ++i) {
      if (f->slots[i].timed_out) {
        char why[64];

        snprintf (why, sizeof why, "no reply within child-timeout=%u",
                  quorum_child_timeout);
        child_abort (&quorum_children[i], why);
      }
    }
    fanout_sleep (f, NULL);
  }

  for (i = 0; i < quorum_nr_children; ++i)
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

/* The slot's last part is gone: its result, and the fan-out's count. */
static void
slot_done (struct slot *s)
{
  int err = __atomic_load_n (&s->part_err, __ATOMIC_ACQUIRE);

  /* A part libnbd freed without completing it (its handle closed under
   * it) must not count as a success.
   */
  if (err == 0 &&
      __atomic_load_n (&s->parts_ok, __ATOMIC_ACQUIRE) != s->parts_sent)
    err = ENOTCONN;
  s->err = err;
  __atomic_store_n (&s->pending, false, __ATOMIC_RELEASE);
  fanout_release (s->f);
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

/* Where the part of [offset, end) that starts at pos ends, for a child
 * taking at most max bytes at a time (0: no limit): a cut falls on a
 * multiple of align (its minimum block size) when the request allows.
 */
static uint64_t
part_end (uint64_t pos, uint64_t end, uint32_t max, uint32_t align)
{
  uint64_t e;

  if (max == 0 || end - pos <= max)
    return end;
  e = pos + max;
  if (align > 1 && e % align && e - e % align > pos)
    e -= e % align;
  return e;
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
 * reactor, or another request's thread; see child_submit).
 *
 * Only what the child offers is sent (c->caps, which goes with the
 * handle): a request longer than its maximum block size goes in parts;
 * FUA it lacks is asked of write_op as a flush after the write; a
 * trim is a zero that may punch holes, so that every child reads the
 * same afterwards; a fast zero it cannot do fails here with ENOTSUP;
 * block status it lacks says data, and cache it lacks is skipped.
 */
static void
slot_send (struct child_cmd *cmd)
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
    uint64_t e = part_end (pos, end, cc->block_max, cc->block_min);

    r = slot_send_part (s, nbd, pos, e - pos, lflags);
    if (r == -1)
      break;
    pos = e;
  }

 sent:
  if (r == -1) {
    int err;

    /* libnbd says EINVAL ("invalid state") for a dead connection. */
    if (child_handle_gone (nbd)) {
      err = ENOTCONN;
      child_check (c);
    }
    else
      err = nbd_get_errno ();
    slot_answer (s, err ? err : EIO);
    {
      char *msg = child_redact (c, nbd_get_error () ?: "failed");

      nbdkit_debug ("quorum: child %zu (%s): %s: %s", c->index, c->name,
                    op_name (type), msg ? msg : "failed");
      free (msg);
    }
  }
  else if (s->parts_sent)
    child_kick (nbd);
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
  child_submit (&quorum_children[s->index], &s->cmd);
}

/* One call to the local child, for [offset, +count) of the request. */
static int
local_part (struct quorum_conn *conn, struct slot *s, enum op_type type,
            const void *wbuf, uint32_t count, uint64_t offset,
            uint32_t flags, int *err)
{
  const struct quorum_local_ops *ops = conn->local;
  void *ctx = conn->local_ctx;
  uint64_t rel = offset - s->offset;

  switch (type) {
  case OP_READ:
    return ops->pread (ctx, (char *) s->buf + rel, count, offset, 0, err);
  case OP_WRITE:
    return ops->pwrite (ctx, (const char *) wbuf + rel, count, offset,
                        flags, err);
  case OP_ZERO: case OP_TRIM:
    return ops->zero (ctx, count, offset, flags, err);
  case OP_CACHE:
    return ops->cache (ctx, count, offset, 0, err);
  default:
    abort ();
  }
}

/* Run the local child's part on this thread, with what it offers
 * (conn->local_caps), as slot_send does for a remote child; FUA it
 * lacks is a flush after the write, here.
 */
static void
slot_run_local (struct quorum_conn *conn, struct slot *s,
                enum op_type type, const void *wbuf, uint32_t count,
                uint64_t offset, uint32_t flags)
{
  const struct quorum_local_ops *ops = conn->local;
  const struct quorum_caps *lc = &conn->local_caps;
  void *ctx = conn->local_ctx;
  uint64_t pos = offset, end = offset + count;
  uint32_t lflags = 0;
  bool flush_after = false;
  int err = 0, r = 0;

  s->offset = offset;
  switch (type) {
  case OP_FLUSH:
    r = lc->can_flush ? ops->flush (ctx, 0, &err) : (err = EINVAL, -1);
    goto out;
  case OP_EXTENTS:
    if (lc->can_extents)
      r = ops->extents (ctx, count, offset, flags & NBDKIT_FLAG_REQ_ONE,
                        &s->extents, &err);
    else if (quorum_extent_append (&s->extents, offset, count, 0) == -1)
      r = -1, err = ENOMEM;
    goto out;
  case OP_CACHE:
    if (!lc->can_cache)
      goto out;
    break;
  case OP_WRITE: case OP_ZERO: case OP_TRIM:
    if (!lc->can_write || (type != OP_WRITE && !lc->can_zero)) {
      r = -1, err = EROFS;
      goto out;
    }
    if (flags & NBDKIT_FLAG_FUA) {
      if (lc->can_fua)
        lflags |= NBDKIT_FLAG_FUA;
      else
        flush_after = true;
    }
    if (type == OP_TRIM)
      lflags |= NBDKIT_FLAG_MAY_TRIM;
    else if (type == OP_ZERO) {
      lflags |= flags & NBDKIT_FLAG_MAY_TRIM;
      if (flags & NBDKIT_FLAG_FAST_ZERO) {
        if (!lc->can_fast_zero) {
          r = -1, err = ENOTSUP;
          goto out;
        }
        lflags |= NBDKIT_FLAG_FAST_ZERO;
      }
    }
    break;
  case OP_READ:
    break;
  }

  while (r == 0 && pos < end) {
    uint64_t e = part_end (pos, end, lc->block_max, lc->block_min);

    r = local_part (conn, s, type, wbuf, e - pos, pos, lflags, &err);
    pos = e;
  }
  if (r == 0 && flush_after)
    r = lc->can_flush ? ops->flush (ctx, 0, &err) : (err = EINVAL, -1);

 out:
  if (r == -1)
    s->err = err ? err : EIO;
}

/* Send one operation to the children in mask and wait for all of them.
 * For a read, child "direct" reads into rbuf and the others into
 * pooled buffers.  Returns the fan-out (the caller puts it), or NULL
 * with *err set.
 */
static struct fanout *
fanout_run (struct quorum_conn *conn, enum op_type type, uint32_t mask,
            void *rbuf, size_t direct, const void *wbuf,
            uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  struct fanout *f;
  struct slot *local = NULL;
  struct timespec start;
  size_t i;

  clock_gettime (CLOCK_MONOTONIC, &start);
  f = fanout_new (type == OP_READ ? count : 0);
  if (f == NULL) {
    *err = errno;
    nbdkit_error ("quorum: calloc: %m");
    return NULL;
  }

  for (i = 0; i < quorum_nr_children; ++i) {
    struct slot *s = &f->slots[i];

    if (!(mask & (UINT32_C (1) << i)))
      continue;
    s->used = true;
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
    else
      slot_issue (s, type, wbuf, count, offset, flags);
  }

  if (local && conn->local)
    slot_run_local (conn, local, type, wbuf, count, offset, flags);
  else if (local)
    local->err = ENOTCONN;      /* no plugin context (resync) */

  fanout_wait (f, &start);
  return f;
}

/* The children that take part in an operation on [offset, +count):
 * not those that are down; for reads and extents, not those that
 * missed writes there either.
 */
static uint32_t
participants (enum op_type type, uint64_t offset, uint64_t count)
{
  uint32_t mask = 0;
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];

    if (!child_is_local (c)) {
      enum child_state st = child_get_state (c);

      if (st == CHILD_DOWN)
        continue;
      if ((type == OP_READ || type == OP_EXTENTS || type == OP_CACHE) &&
          child_is_dirty (c, offset, count))
        continue;
    }
    mask |= UINT32_C (1) << i;
  }
  return mask;
}

/* The voted errno, or EIO when only absent children failed.  A child
 * that could not be reached (connection lost, timed out, shutting down)
 * votes EIO: its errno describes the link to the child, not the
 * request, and nbdkit would pass ENOTCONN or ETIMEDOUT to the client
 * as EINVAL, and ESHUTDOWN as "the server is shutting down".
 */
static int
voted_errno (const int *errs, size_t nr)
{
  int mapped[VOTE_MAX_CHILDREN];
  size_t i;
  int e;

  for (i = 0; i < nr; ++i) {
    switch (errs[i]) {
    case ENOTCONN: case ETIMEDOUT: case ESHUTDOWN: case ECONNRESET:
    case EPIPE:
      mapped[i] = EIO;
      break;
    default:
      mapped[i] = errs[i];
    }
  }
  e = vote_errno (mapped, nr);
  return e ? e : EIO;
}

/* Vote on the results of a write, zero, trim, flush or cache. */
static int
write_vote (struct fanout *f, enum op_type type, uint32_t count,
            uint64_t offset, uint32_t flags, int *err)
{
  int errs[VOTE_MAX_CHILDREN];
  bool changes = type == OP_WRITE || type == OP_ZERO || type == OP_TRIM;
  size_t i, ok = 0;

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];

    errs[i] = f->slots[i].used ? f->slots[i].err : 0;
    if (f->slots[i].used && errs[i] == 0)
      ok++;
    /* A child that missed a change must not vote on that range until
     * it is copied there again; one that took a whole granule is clean.
     */
    if (changes && !child_is_local (c)) {
      if (!f->slots[i].used || errs[i])
        child_mark_dirty (c, offset, count);
      else
        child_clear_dirty (c, offset, count);
    }
  }

  /* A fast zero that any child cannot do fast is refused as a whole:
   * the client then writes zeroes the slow way, everywhere.
   */
  if (type == OP_ZERO && (flags & NBDKIT_FLAG_FAST_ZERO)) {
    for (i = 0; i < quorum_nr_children; ++i) {
      if (errs[i] == ENOTSUP || errs[i] == EOPNOTSUPP) {
        *err = ENOTSUP;
        return -1;
      }
    }
  }

  for (i = 0; i < quorum_nr_children; ++i)
    if (errs[i])
      report_bad (type, i, offset, count, errs[i]);

  if (ok >= quorum_threshold)
    return 0;

  *err = voted_errno (errs, quorum_nr_children);
  report_failure_errors (type, offset, count, *err, ok);
  nbdkit_error ("quorum: %s %" PRIu32 "@%" PRIu64 ": %zu of %zu children "
                "succeeded, vote-threshold is %u: %s",
                op_name (type), count, offset, ok, quorum_nr_children,
                quorum_threshold, strerror (*err));
  return -1;
}

/* FUA on the remote children that lack it: a flush of each of them
 * once its write succeeded, which fails its part of the write if it
 * fails.
 */
static void
fua_flush (struct quorum_conn *conn, struct fanout *f)
{
  struct fanout *fl;
  uint32_t mask = 0;
  size_t i;
  int err;

  for (i = 0; i < quorum_nr_children; ++i)
    if (f->slots[i].used && f->slots[i].err == 0 && f->slots[i].flush_after)
      mask |= UINT32_C (1) << i;
  if (mask == 0)
    return;
  fl = fanout_run (conn, OP_FLUSH, mask, NULL, 0, NULL, 0, 0, 0, &err);
  for (i = 0; i < quorum_nr_children; ++i) {
    if (mask & (UINT32_C (1) << i))
      f->slots[i].err = fl ? fl->slots[i].err : err;
  }
  if (fl)
    fanout_put (fl);
}

/* Write-type operations: all children, then vote.  Writes, zeroes and
 * trims hold their range exclusively so that every child applies
 * overlapping ones in the same order.
 */
static int
write_op (struct quorum_conn *conn, enum op_type type, const void *buf,
          uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  bool ordered = type == OP_WRITE || type == OP_ZERO || type == OP_TRIM;
  struct range_lock rl;
  struct fanout *f;
  int r = -1;

  if (ordered)
    range_lock (&rl, offset, count, true);
  f = fanout_run (conn, type, participants (type, offset, count), NULL, 0,
                  buf, count, offset, flags, err);
  if (f && (flags & NBDKIT_FLAG_FUA))
    fua_flush (conn, f);
  if (f) {
    r = write_vote (f, type, count, offset, flags, err);
    fanout_put (f);
  }
  if (ordered)
    range_unlock (&rl);
  return r;
}

int
quorum_pwrite (struct quorum_conn *conn, const void *buf, uint32_t count,
               uint64_t offset, uint32_t flags, int *err)
{
  return write_op (conn, OP_WRITE, buf, count, offset, flags, err);
}

int
quorum_zero (struct quorum_conn *conn, uint32_t count, uint64_t offset,
             uint32_t flags, int *err)
{
  return write_op (conn, OP_ZERO, NULL, count, offset, flags, err);
}

/* NBD leaves trimmed bytes unspecified: a child may read zeroes there
 * or the old data, and children that differ would be outvoted.  So a
 * trim goes to every child as a zero that may punch holes (slot_send,
 * slot_run_local), offered only when every child can zero.
 */
int
quorum_trim (struct quorum_conn *conn, uint32_t count, uint64_t offset,
             uint32_t flags, int *err)
{
  return write_op (conn, OP_TRIM, NULL, count, offset,
                   flags & NBDKIT_FLAG_FUA, err);
}

int
quorum_flush (struct quorum_conn *conn, uint32_t flags, int *err)
{
  return write_op (conn, OP_FLUSH, NULL, 0, 0, 0, err);
}

int
quorum_cache (struct quorum_conn *conn, uint32_t count, uint64_t offset,
              uint32_t flags, int *err)
{
  return write_op (conn, OP_CACHE, NULL, count, offset, 0, err);
}

/* rewrite-corrupted: write the winning data over child i's outvoted
 * span.  A failed repair is reported and does not fail the read, which
 * already has its answer.
 */
static void
repair (struct quorum_conn *conn, size_t i, const void *buf,
        uint32_t count, uint64_t offset)
{
  struct fanout *f;
  int err;

  f = fanout_run (conn, OP_WRITE, UINT32_C (1) << i, NULL, 0, buf, count,
                  offset, 0, &err);
  if (f == NULL)
    return;
  if (f->slots[i].err)
    report_bad (OP_WRITE, i, offset, count, f->slots[i].err);
  else
    report_repair (i, offset, count);
  fanout_put (f);
}

/* Adjacent blocks with the same outcome make one report, not one per
 * block: a run of blocks in which a child was outvoted, or in which no
 * version reached the threshold with the same children on each side.
 */
struct run {
  uint64_t start, end;          /* [start, end), empty if equal */
};

struct failed_run {
  struct run r;
  size_t votes;                 /* of the best version */
  size_t version[VOTE_MAX_CHILDREN];  /* who sided with whom */
};

static void
failed_run_flush (struct failed_run *fr)
{
  if (fr->r.end > fr->r.start)
    report_failure_votes (OP_READ, fr->r.start, fr->r.end - fr->r.start,
                          fr->votes, fr->version, quorum_nr_children);
  fr->r.start = fr->r.end = 0;
}

/* The children disagree somewhere in the request: vote each block of
 * vote-block-size on its own (blocks are aligned on the export, so
 * reports name the same blocks whatever the request), so that children
 * corrupted in different places outvote each other block by block.
 * The winners are assembled in buf.
 */
static int
read_vote_blocks (struct quorum_conn *conn, const void *const *bufs,
                  void *buf, uint32_t count, uint64_t offset, int *err)
{
  const uint64_t bs = quorum_vote_block, end = offset + count;
  struct run bad[VOTE_MAX_CHILDREN] = { { 0, 0 } };
  struct run span[VOTE_MAX_CHILDREN] = { { 0, 0 } };  /* for repair */
  struct failed_run fr = { .r = { 0, 0 } };
  uint64_t pos, next, nr_failed = 0, nr_outvoted = 0, first_failed = 0;
  size_t i, n = quorum_nr_children;
  struct vote_result v;

  for (pos = offset; pos < end; pos = next) {
    const size_t rel = pos - offset;

    next = (pos / bs + 1) * bs;
    if (next > end)
      next = end;
    vote_tally (bufs, n, rel, next - pos, &v);

    if (v.votes < quorum_threshold) {
      if (nr_failed++ == 0)
        first_failed = pos;
      if (fr.r.end != pos || fr.votes != v.votes ||
          memcmp (fr.version, v.version, n * sizeof v.version[0]) != 0) {
        failed_run_flush (&fr);
        fr.r.start = pos;
        fr.votes = v.votes;
        memcpy (fr.version, v.version, n * sizeof v.version[0]);
      }
      fr.r.end = next;
      continue;
    }
    failed_run_flush (&fr);

    if (bufs[v.winner] != buf)
      memcpy ((char *) buf + rel, (const char *) bufs[v.winner] + rel,
              next - pos);
    if (v.nr_versions == 1)
      continue;
    nr_outvoted++;
    for (i = 0; i < n; ++i) {
      if (v.version[i] == VOTE_NO_VERSION || v.version[i] == v.winner)
        continue;
      if (bad[i].end != pos) {
        if (bad[i].end > bad[i].start)
          report_bad (OP_READ, i, bad[i].start, bad[i].end - bad[i].start, 0);
        bad[i].start = pos;
      }
      bad[i].end = next;
      if (span[i].end == span[i].start)
        span[i].start = pos;
      span[i].end = next;
    }
  }
  failed_run_flush (&fr);
  for (i = 0; i < n; ++i)
    if (bad[i].end > bad[i].start)
      report_bad (OP_READ, i, bad[i].start, bad[i].end - bad[i].start, 0);

  if (quorum_debug_votes)
    nbdkit_debug ("quorum: read %" PRIu32 "@%" PRIu64 ": children differ: "
                  "%" PRIu64 " blocks of %" PRIu64 " bytes outvoted a "
                  "child, %" PRIu64 " had no quorum",
                  count, offset, nr_outvoted, bs, nr_failed);

  if (nr_failed) {
    nbdkit_error ("quorum: read %" PRIu32 "@%" PRIu64 ": no version has "
                  "vote-threshold=%u votes in %" PRIu64 " blocks of %" PRIu64
                  " bytes, the first at %" PRIu64, count, offset,
                  quorum_threshold, nr_failed, bs, first_failed);
    *err = EIO;
    return -1;
  }

  /* The whole span from a child's first to its last outvoted block is
   * rewritten: blocks in between already hold the winning data, and no
   * write can come between (the read holds its range).
   */
  if (quorum_rewrite_corrupted)
    for (i = 0; i < n; ++i)
      if (span[i].end > span[i].start)
        repair (conn, i, (const char *) buf + (span[i].start - offset),
                span[i].end - span[i].start, span[i].start);
  return 0;
}

/* Vote on a quorum read whose replies are in f; the answer goes to buf. */
static int
read_vote (struct quorum_conn *conn, struct fanout *f, void *buf,
           uint32_t count, uint64_t offset, int *err)
{
  const void *bufs[VOTE_MAX_CHILDREN];
  int errs[VOTE_MAX_CHILDREN];
  size_t i, n = quorum_nr_children, nr_ok, winner;
  bool agree;

  for (i = 0; i < n; ++i) {
    errs[i] = f->slots[i].used ? f->slots[i].err : 0;
    bufs[i] = f->slots[i].used && errs[i] == 0 ? f->slots[i].buf : NULL;
    if (errs[i])
      report_bad (OP_READ, i, offset, count, errs[i]);
  }

  /* Agreement, the usual case, costs one memcmp per child and no
   * hash; disagreement is voted block by block, without hashing the
   * whole request first.
   */
  agree = vote_agree (bufs, n, 0, count, &nr_ok);

  if (nr_ok < quorum_threshold) {
    *err = voted_errno (errs, n);
    report_failure_errors (OP_READ, offset, count, *err, nr_ok);
    nbdkit_error ("quorum: read %" PRIu32 "@%" PRIu64 ": %zu of %zu "
                  "children returned data, vote-threshold is %u: %s",
                  count, offset, nr_ok, n, quorum_threshold,
                  strerror (*err));
    return -1;
  }

  if (quorum_blkverify && !agree) {
    size_t d = vote_first_difference (bufs[0], bufs[1], count);

    report_failure_blkverify (offset, count, offset + d);
    nbdkit_error ("quorum: blkverify: children differ at byte %" PRIu64
                  " (read %" PRIu32 "@%" PRIu64 "): shutting down",
                  offset + d, count, offset);
    nbdkit_shutdown ();
    *err = EIO;
    return -1;
  }

  if (!agree)
    return read_vote_blocks (conn, bufs, buf, count, offset, err);

  /* Unanimous: the first child that answered speaks for all. */
  for (winner = 0; bufs[winner] == NULL; ++winner)
    ;
  if (quorum_debug_votes && nr_ok < n)
    nbdkit_debug ("quorum: read %" PRIu32 "@%" PRIu64 ": child %zu wins "
                  "with %zu of %zu votes", count, offset, winner, nr_ok, n);
  if (bufs[winner] != buf)
    memcpy (buf, bufs[winner], count);
  return 0;
}

/* read-pattern=fifo: one child at a time, in order, until one works. */
static int
pread_fifo (struct quorum_conn *conn, void *buf, uint32_t count,
            uint64_t offset, int *err)
{
  int errs[VOTE_MAX_CHILDREN];
  size_t i;

  uint32_t mask = participants (OP_READ, offset, count);

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

  *err = voted_errno (errs, quorum_nr_children);
  report_failure_errors (OP_READ, offset, count, *err, 0);
  nbdkit_error ("quorum: read %" PRIu32 "@%" PRIu64 ": every child "
                "failed: %s", count, offset, strerror (*err));
  return -1;
}

int
quorum_pread (struct quorum_conn *conn, void *buf, uint32_t count,
              uint64_t offset, uint32_t flags, int *err)
{
  struct range_lock rl;
  struct fanout *f;
  int r = -1;

  if (quorum_read_pattern == READ_PATTERN_FIFO)
    return pread_fifo (conn, buf, count, offset, err);

  /* No write may overlap a vote in progress: children would differ
   * only because of it, and rewrite-corrupted would write old data
   * over new.  With rewrite-corrupted a read may write, so it keeps
   * other reads out too: they would vote on a repair half done.
   */
  range_lock (&rl, offset, count, quorum_rewrite_corrupted);
  /* Child 0 reads straight into the caller's buffer. */
  f = fanout_run (conn, OP_READ, participants (OP_READ, offset, count),
                  buf, 0, NULL, count, offset, 0, err);
  if (f) {
    r = read_vote (conn, f, buf, count, offset, err);
    fanout_put (f);
  }
  range_unlock (&rl);
  return r;
}

/* Where a child's extents stop covering [offset, end). */
static uint64_t
extents_end (const struct quorum_extent_list *list, uint64_t offset,
             uint64_t end)
{
  uint64_t pos = offset;
  size_t i;

  for (i = 0; i < list->len && pos < end; ++i)
    pos += list->ptr[i].length;
  return pos < end ? pos : end;
}

int
quorum_extents (struct quorum_conn *conn, uint32_t count, uint64_t offset,
                uint32_t flags, struct nbdkit_extents *extents, int *err)
{
  struct fanout *f;
  size_t i, n = quorum_nr_children, ok = 0;
  size_t pos_i[VOTE_MAX_CHILDREN] = { 0 };
  uint64_t start_i[VOTE_MAX_CHILDREN];
  uint64_t end = offset + count, pos;
  int errs[VOTE_MAX_CHILDREN] = { 0 };
  uint32_t mask = participants (OP_EXTENTS, offset, count), stale = 0;
  int r = -1;

  /* A child answering block status on a second connection sees the
   * writes of its first only once they are flushed: flush those with
   * writes completed since.  One whose flush fails has no vote.
   */
  for (i = 0; i < n; ++i) {
    if ((mask & (UINT32_C (1) << i)) &&
        child_meta_stale (&quorum_children[i]))
      stale |= UINT32_C (1) << i;
  }
  if (stale) {
    f = fanout_run (conn, OP_FLUSH, stale, NULL, 0, NULL, 0, 0, 0, err);
    if (f == NULL)
      return -1;
    for (i = 0; i < n; ++i) {
      if (f->slots[i].used && f->slots[i].err) {
        errs[i] = f->slots[i].err;
        mask &= ~(UINT32_C (1) << i);
      }
    }
    fanout_put (f);
  }

  f = fanout_run (conn, OP_EXTENTS, mask, NULL, 0, NULL, count, offset,
                  flags, err);
  if (f == NULL)
    return -1;

  for (i = 0; i < n; ++i) {
    if (f->slots[i].used)
      errs[i] = f->slots[i].err;
    if (errs[i])
      report_bad (OP_EXTENTS, i, offset, count, errs[i]);
    else if (f->slots[i].used)
      ok++;
  }
  if (ok < quorum_threshold) {
    *err = voted_errno (errs, n);
    report_failure_errors (OP_EXTENTS, offset, count, *err, ok);
    nbdkit_error ("quorum: extents %" PRIu32 "@%" PRIu64 ": %zu of %zu "
                  "children answered, vote-threshold is %u: %s",
                  count, offset, ok, n, quorum_threshold, strerror (*err));
    goto out;
  }

  /* A child that failed to answer may have data anywhere. */
  if (vote_errno (errs, n) != 0) {
    r = nbdkit_add_extent (extents, offset, count, 0);
    if (r == -1)
      *err = errno;
    goto out;
  }

  /* Children describe the range contiguously from offset, each as far
   * as it likes: merge over what all of them covered.
   */
  for (i = 0; i < n; ++i) {
    uint64_t e;

    start_i[i] = offset;
    if (!f->slots[i].used)
      continue;
    e = extents_end (&f->slots[i].extents, offset, end);
    if (e < end)
      end = e;
  }
  if (end <= offset) {
    r = nbdkit_add_extent (extents, offset, count, 0);
    if (r == -1)
      *err = errno;
    goto out;
  }

  for (pos = offset; pos < end; ) {
    uint32_t type = NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;
    uint64_t next = end;

    for (i = 0; i < n; ++i) {
      const struct quorum_extent_list *list = &f->slots[i].extents;
      uint64_t e_end;

      if (!f->slots[i].used)
        continue;
      /* Advance child i to its extent holding pos. */
      while (start_i[i] + list->ptr[pos_i[i]].length <= pos) {
        start_i[i] += list->ptr[pos_i[i]].length;
        pos_i[i]++;
      }
      type &= list->ptr[pos_i[i]].type;
      e_end = start_i[i] + list->ptr[pos_i[i]].length;
      if (e_end < next)
        next = e_end;
    }
    if (nbdkit_add_extent (extents, pos, next - pos, type) == -1) {
      *err = errno;
      goto out;
    }
    pos = next;
  }
  r = 0;

 out:
  fanout_put (f);
  return r;
}

int
quorum_get_ready (const char *ident)
{
  if (report_open (ident) == -1)
    return -1;
  if (control_listen () == -1)
    return -1;
  if (child_connect_all () == -1) {
    control_stop ();            /* leaves no socket behind */
    return -1;
  }
  promise_init ();
  return 0;
}

/* Resync runs outside any client connection: in the filter it reaches
 * the plugin through a context of its own, if nbdkit gave one.
 */
static struct quorum_conn background_conn;

int
engine_resync_range (struct child *c, uint64_t offset, uint32_t count)
{
  const void *bufs[VOTE_MAX_CHILDREN];
  struct vote_result v;
  struct range_lock rl;
  struct fanout *f, *w;
  uint32_t mask;
  size_t i, sources = 0, needed;
  int err, r = -1;

  range_lock (&rl, offset, count, true);
  /* The sources: the other children that are up and clean here (and
   * the filter's plugin if it can be read from here).  A clean child
   * took every write made here, the ones that failed too, so it is up
   * to date even when fewer than vote-threshold children are clean:
   * after two children missed the same writes, or with vote-threshold
   * equal to the number of children, where c can never have a vote.
   * Then every source must agree.
   */
  mask = participants (OP_READ, offset, count) &
    ~(UINT32_C (1) << c->index);
  for (i = 0; i < quorum_nr_children; ++i) {
    if (child_is_local (&quorum_children[i]) &&
        (!background_conn.local ||
         (background_conn.local->available &&
          !background_conn.local->available (background_conn.local_ctx))))
      mask &= ~(UINT32_C (1) << i);
    if (mask & (UINT32_C (1) << i))
      sources++;
  }
  needed = sources < quorum_threshold ? sources : quorum_threshold;
  if (needed == 0) {
    nbdkit_debug ("quorum: child %zu: resync %" PRIu32 "@%" PRIu64 ": no "
                  "clean child to copy from: left dirty", c->index, count,
                  offset);
    goto out;
  }
  f = fanout_run (&background_conn, OP_READ, mask, NULL, SIZE_MAX, NULL,
                  count, offset, 0, &err);
  if (f == NULL)
    goto out;
  for (i = 0; i < quorum_nr_children; ++i)
    bufs[i] = f->slots[i].used && f->slots[i].err == 0 ?
      f->slots[i].buf : NULL;
  vote_tally (bufs, quorum_nr_children, 0, count, &v);
  if (v.votes < needed) {
    nbdkit_debug ("quorum: child %zu: resync %" PRIu32 "@%" PRIu64 ": only "
                  "%zu of %zu clean children agree: left dirty",
                  c->index, count, offset, v.votes, sources);
    fanout_put (f);
    goto out;
  }
  w = fanout_run (&background_conn, OP_WRITE, UINT32_C (1) << c->index,
                  NULL, 0, bufs[v.winner], count, offset, 0, &err);
  if (w) {
    if (w->slots[c->index].err == 0) {
      child_clear_dirty (c, offset, count);
      STAT_ADD (c, bytes_repaired, count);
      r = 0;
    }
    else
      report_bad (OP_WRITE, c->index, offset, count,
                  w->slots[c->index].err);
    fanout_put (w);
  }
  fanout_put (f);
 out:
  range_unlock (&rl);
  return r;
}

int
quorum_after_fork (const struct quorum_local_ops *local, void *local_ctx)
{
  background_conn.local = local;
  background_conn.local_ctx = local_ctx;
  if (control_start () == -1)
    return -1;
  return child_start_all ();
}

void
quorum_cleanup (void)
{
  control_stop ();
  child_disconnect_all ();
  report_summary ();
  report_close ();
  bufpool_drain ();
}

/* Combine what one child can do into what the quorum can do.  FUA is
 * offered where every child has it or can flush (the engine flushes
 * those without it after the write).
 */
static void
caps_merge (struct quorum_caps *q, const struct quorum_caps *c)
{
  q->can_write &= c->can_write;
  q->can_flush &= c->can_flush;
  q->can_zero &= c->can_zero;
  q->can_fast_zero &= c->can_fast_zero;
  q->can_fua &= c->can_fua || c->can_flush;
  q->can_extents &= c->can_extents;
  q->can_cache &= c->can_cache;
  q->is_rotational |= c->is_rotational;
  if (c->block_min > q->block_min)
    q->block_min = c->block_min;
  if (c->block_pref > q->block_pref)
    q->block_pref = c->block_pref;
  if (c->block_max && (q->block_max == 0 || c->block_max < q->block_max))
    q->block_max = c->block_max;
}

struct quorum_caps quorum_promise;

/* The remote children reachable at start-up make the promise. */
static void
promise_init (void)
{
  struct quorum_caps q = {
    .size = -1,
    .can_write = true, .can_flush = true, .can_zero = true,
    .can_fast_zero = true, .can_fua = true, .can_extents = true,
    .can_cache = true, .can_multi_conn = true,
  };
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    const struct child *c = &quorum_children[i];

    if (child_is_local (c) || !c->caps_known)
      continue;
    if (q.size == -1)
      q.size = c->caps.size;
    caps_merge (&q, &c->caps);
  }
  quorum_promise = q;
}

/* 0 stands for no minimum. */
static uint32_t
min_block (uint32_t m)
{
  return m ? m : 1;
}

const char *
engine_caps_lacking (const struct quorum_caps *c, char *buf, size_t len)
{
  const struct quorum_caps *p = &quorum_promise;

  if (p->can_write && !c->can_write)
    return "is read-only, and the export is writable";
  if (p->can_flush && !c->can_flush)
    return "cannot flush, and the export offers flush";
  if (p->can_zero && !c->can_zero)
    return "cannot write zeroes, and the export offers zero and trim";
  if (p->can_fua && !c->can_fua && !c->can_flush)
    return "has neither FUA nor flush, and the export offers FUA";
  if (min_block (c->block_min) > min_block (p->block_min)) {
    snprintf (buf, len, "needs requests aligned to %" PRIu32 " bytes, and "
              "the export's minimum block size is %" PRIu32,
              c->block_min, min_block (p->block_min));
    return buf;
  }
  return NULL;
}

static void
refuse_sizes (const struct quorum_caps *local_caps)
{
  char *msg = NULL;
  size_t len = 0, i;
  FILE *fp = open_memstream (&msg, &len);

  if (fp) {
    for (i = 0; i < quorum_nr_children; ++i) {
      const struct child *c = &quorum_children[i];

      if (child_is_local (c))
        fprintf (fp, "%s child %zu (%s): %" PRIi64, i ? "," : "", i,
                 c->name, local_caps->size);
      else if (c->caps_known)
        fprintf (fp, "%s child %zu (%s): %" PRIi64, i ? "," : "", i,
                 c->name, c->caps.size);
    }
    fclose (fp);
  }
  nbdkit_error ("quorum: children have different sizes, refusing the "
                "connection:%s", msg ? msg : " (out of memory)");
  free (msg);
}

int
quorum_conn_init (struct quorum_conn *conn,
                  const struct quorum_local_ops *local, void *local_ctx,
                  const struct quorum_caps *local_caps, bool readonly)
{
  struct quorum_caps q = quorum_promise;

  conn->local = local;
  conn->local_ctx = local_ctx;
  conn->readonly = readonly;

  if (local_caps) {
    if (local_caps->size != q.size) {
      refuse_sizes (local_caps);
      return -1;
    }
    conn->local_caps = *local_caps;
    caps_merge (&q, local_caps);
    /* The remote children are one connection each, shared by every
     * client connection, so a flush on any client connection covers
     * writes from all of them there; only the local child needs to say
     * so for itself.
     */
    q.can_multi_conn = local_caps->can_multi_conn;
  }

  if (readonly)
    q.can_write = false;
  if (!q.can_write)
    q.can_zero = q.can_fast_zero = q.can_fua = false;
  if (!q.can_zero)
    q.can_fast_zero = false;
  /* A trim is a zero that may punch holes (quorum_trim). */
  q.can_trim = q.can_zero;
  if (q.block_max && q.block_pref > q.block_max)
    q.block_pref = q.block_max;

  if (quorum_rewrite_corrupted && !q.can_write) {
    nbdkit_error ("rewrite-corrupted=true: the export is read-only%s, so "
                  "outvoted children cannot be rewritten: drop -r or "
                  "rewrite-corrupted", readonly ? "" : " (a child is)");
    return -1;
  }

  conn->caps = q;
  return 0;
}
