/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* A remote child's part of a fan-out: its command queued on the
 * child's handle (in parts, as the child's block size limits require),
 * libnbd's callbacks as each part completes, and the slot's end, which
 * tells the waiting request or the late thread.  Callbacks run in the
 * reactor thread and take no lock: atomics and sem_post only.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <semaphore.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "fanout-int.h"
#include "fanout.h"
#include "internal.h"
#include "reactor.h"

#define container_of(ptr, type, member) \
  ((type *) ((char *) (ptr) - offsetof (type, member)))

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
  ns = quorum_ns_between (&s->sent, &now);
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
  if (__atomic_add_fetch (&f->ended, 1, __ATOMIC_SEQ_CST) >=
      __atomic_load_n (&f->wake_from, __ATOMIC_SEQ_CST))
    sem_post (&f->done);
  fanout_unpend (f);
  if (__atomic_load_n (&f->detached, __ATOMIC_SEQ_CST))
    fanout_late_kick (f);
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

      nbdkit_debug ("quorum: child %zu (%s): %s: %s", c->index, child_name (c),
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

void
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
