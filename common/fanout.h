/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The fan-out: one operation sent to a set of children at once, and
 * their results in its slots, for the operations (engine.c, extents.c)
 * and recovery (resync.c) above to vote on.
 */

#ifndef QUORUM_FANOUT_H
#define QUORUM_FANOUT_H

#include <semaphore.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "reactor.h"

struct fanout;

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
  /* The command, for whichever thread queues it (reactor_submit). */
  struct reactor_cmd cmd;
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

/* Where the part of [offset, end) that starts at pos ends, for a child
 * taking at most max bytes at a time (0: no limit): a cut falls on a
 * multiple of align (its minimum block size) when the request allows.
 */
static inline uint64_t
fanout_part_end (uint64_t pos, uint64_t end, uint32_t max, uint32_t align)
{
  uint64_t e;

  if (max == 0 || end - pos <= max)
    return end;
  e = pos + max;
  if (align > 1 && e % align && e - e % align > pos)
    e -= e % align;
  return e;
}

/* fanout-local.c: run the local child's part of an operation on this
 * thread, with what it offers (conn->local_caps), as slot_send does for
 * a remote child; FUA it lacks is a flush after the write, here.
 */
extern void fanout_run_local (struct quorum_conn *conn, struct slot *s,
                              enum op_type type, const void *wbuf,
                              uint32_t count, uint64_t offset,
                              uint32_t flags);

/* Send one operation to the children in mask and wait for all of them
 * (a child that has not answered within child-timeout is cut and loses
 * its vote).  For a read, child "direct" reads into rbuf and the others
 * into pooled buffers.  Returns the fan-out (the caller puts it), or
 * NULL with *err set.
 */
extern struct fanout *fanout_run (struct quorum_conn *conn,
                                  enum op_type type, uint32_t mask,
                                  void *rbuf, size_t direct,
                                  const void *wbuf, uint32_t count,
                                  uint64_t offset, uint32_t flags,
                                  int *err);
/* From now on write-type fan-outs go to the spare at index too
 * (SIZE_MAX: none; see fanout.c).  replace.c's.
 */
extern void fanout_set_spare (size_t index);
/* Drop one reference; the last frees. */
extern void fanout_put (struct fanout *f);
/* The children that take part in an operation on [offset, +count):
 * not those that are down; for reads, extents and cache, not those
 * stale there either (fresh.h).
 */
extern uint32_t fanout_participants (enum op_type type, uint64_t offset,
                                     uint64_t count);

#endif /* QUORUM_FANOUT_H */
