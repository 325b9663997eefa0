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
#include <time.h>

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
  bool lagged;                  /* cut for max-lag (fanout-late.c) */
  struct timespec sent;         /* early fan-outs: when it was issued */
};

/* Request threads, the reactor and the threads queueing commands all
 * touch a fan-out at once: counters are atomic, and the request sleeps
 * on a semaphore posted once, by whoever retires the last command.  (A
 * mutex and condition variable here cost several futex calls per
 * request, each thread waking another only to find the lock taken.)
 */
/* With wait-for=threshold (fanout_run_until) the request wakes at the
 * slots' ends instead, to see whether it has enough (from the first
 * end that could make it so: one wake-up, not one a child); if it
 * answers before every slot ended, the fan-out is detached: its
 * reference goes to the late thread (fanout-late.c), which cuts
 * children past child-timeout or max-lag and, once the last command is
 * gone, runs finish on the slots that were late, and puts it.
 */
typedef void fanout_finish_fn (struct fanout *f, void *arg);
/* The common case of a finish, cheap enough for whichever thread ended
 * the last command (the reactor's, inside libnbd's callback): true if
 * it finished f's second step itself, with nothing to report, repair,
 * flush or record; false, having changed nothing, leaves it to finish
 * on the late thread.  It must not block or call libnbd.
 */
typedef bool fanout_quick_fn (struct fanout *f, void *arg);
struct fanout {
  sem_t done;                   /* posted when pending reaches 0, or
                                   early: at each remote slot's end */
  unsigned pending;             /* remote commands + 1 while issuing */
  unsigned refs;                /* the request + remote commands */
  size_t buflen;
  bool early;                   /* fanout_run_until, fanout_hedge_new */
  bool own;                     /* its request reads its replies (atomic) */
  uint32_t own_mask;            /* the children whose sockets it took */
  /* early: remote slots ended (atomic), and from how many on each end
   * posts done (0: every one).  Before that no answer can be enough.
   */
  unsigned ended, wake_from;
  bool started;                 /* start is set */
  uint32_t late;                /* slots still in flight at the answer */
  bool late_spare;              /* the spare's too (never in late: it
                                   takes no part in the vote) */
  bool detached;                /* the late thread owns the request's ref */
  struct timespec start;        /* child-timeout counts from here */
  enum op_type type;
  uint32_t count;
  uint64_t offset;
  /* The late thread's, under late_lock (fanout-late.c). */
  fanout_finish_fn *finish;
  fanout_quick_fn *quick;       /* may be NULL */
  void *arg;
  uint64_t seq;                 /* order of detaching, for flushes */
  struct fanout *late_next, *late_prev;
  /* Whoever saw its last command gone pushed it on the ready stack. */
  bool late_queued;             /* atomic */
  struct fanout *ready_next;
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
/* wait-for=threshold: fanout_run, but the request returns as soon as
 * enough says so (called after the local child's part and then as
 * remote slots end, once vote-threshold children could have answered,
 * with the slots ended so far: those with pending false may be read;
 * enough must need vote-threshold successes) or when every slot ended.
 * f->late says which slots were still in flight then: the caller must
 * not read them, and hands f to fanout_detach if there are any.
 */
typedef bool fanout_enough_fn (const struct fanout *f, void *arg);
extern struct fanout *fanout_run_until (struct quorum_conn *conn,
                                        enum op_type type, uint32_t mask,
                                        void *rbuf, size_t direct,
                                        const void *wbuf, uint32_t count,
                                        uint64_t offset, uint32_t flags,
                                        fanout_enough_fn *enough,
                                        void *arg, int *err);
/* read-pattern=fifo hedging (wait-for=threshold): an early fan-out of a
 * read of [offset, +count) with no child asked yet; fanout_ask asks
 * the children of mask (the local one has answered when it returns,
 * into rbuf if it is child direct); fanout_wait_one sleeps until a
 * remote slot ends (true) or the deadline passes (false);
 * fanout_cut_pending cuts the children still at it (child-timeout),
 * whose slots then end soon.  Afterwards the caller sets f->late and
 * detaches or puts f as after fanout_run_until.
 */
extern struct fanout *fanout_hedge_new (uint32_t count, uint64_t offset,
                                        int *err);
extern void fanout_ask (struct fanout *f, struct quorum_conn *conn,
                        uint32_t mask, void *rbuf, size_t direct);
extern bool fanout_wait_one (struct fanout *f,
                             const struct timespec *deadline);
extern void fanout_cut_pending (struct fanout *f);
/* The recent read latency of the fastest child, in ns (a moving
 * average of the reads of early fan-outs), or 0 if none is known.
 */
extern uint64_t fanout_read_latency (void);

/* Whether slot i of f has ended (its results may be read). */
static inline bool
fanout_slot_ended (const struct fanout *f, size_t i)
{
  return f->slots[i].used &&
    !__atomic_load_n (&f->slots[i].pending, __ATOMIC_ACQUIRE);
}

/* fanout-late.c: the second step of a request answered early.  The
 * caller's reference to f (with f->late set) goes to the late thread,
 * which counts what the late slots owe (max-lag=: data of writes and
 * buffers of reads), puts a child that owes more ahead (state.h:
 * fanout_participants leaves it out until it caught up), cuts one that
 * has not answered within child-timeout, and once every command of f
 * is gone calls finish (f, arg) on its thread (late slots timed out
 * have err ETIMEDOUT), then puts f.  finish may run fan-outs of its own
 * (a repair) but must not wait for a range lock.  Before that, the
 * thread that ended the last command tries quick (if not NULL), where
 * no late slot failed, timed out or lagged and no late child is ahead:
 * the late thread is then not woken at all.
 */
extern void fanout_detach (struct fanout *f, fanout_finish_fn *finish,
                           fanout_quick_fn *quick, void *arg);
/* For a flush: the children of mask that have completed every write
 * detached before this call, waiting until at least need of them have
 * (or every one of mask).  Returns them.
 */
extern uint32_t fanout_drained (uint32_t mask, unsigned need);
/* Cleanup, before the children are disconnected: wait until every
 * detached fan-out is finished (a late child gets until child-timeout),
 * then stop the late thread.
 */
extern void fanout_late_stop (void);
/* Whether child i owes replies to more than FANOUT_LAGGING_READS reads
 * answered without it: new reads may leave it out (engine.c), so that
 * a child slower than the rest is not sent reads it cannot keep up
 * with; it is asked again once it caught up.
 */
#define FANOUT_LAGGING_READS 16
extern bool fanout_lagging (size_t i);
/* A child owing replies to more requests answered without it than
 * this is put ahead, as one owing more than max-lag= bytes: libnbd
 * finds a reply's command, and queues a new one, by walking the
 * handle's lists, and the range locks of the writes it owes are
 * walked by every request, so a long backlog slows every request, not
 * just the child.
 */
#define FANOUT_AHEAD_SLOTS 256
/* fanout.c, for fanout-ahead.c: a write left out ahead child i. */
extern void fanout_ahead_missed (size_t i);
/* fanout-slot.c, for fanout-late.c: a slot of detached fan-out f
 * ended (f is finished on the late thread once its last did).
 */
extern void fanout_late_kick (struct fanout *f);
/* A connection with no local child, for fan-outs of the late thread. */
extern struct quorum_conn fanout_no_conn;

/* Drop one reference; the last frees. */
extern void fanout_put (struct fanout *f);
/* The children that take part in an operation on [offset, +count):
 * not those that are down or ahead (state.h); for reads, extents and
 * cache, not those stale there either (fresh.h).
 */
extern uint32_t fanout_participants (enum op_type type, uint64_t offset,
                                     uint64_t count);

#endif /* QUORUM_FANOUT_H */
