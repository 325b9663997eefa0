/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The reactor: one thread serves the sockets of every remote child's
 * libnbd handles, feeds libnbd what arrives, and libnbd runs the
 * completion callbacks there; but a request alone in flight reads its
 * own replies (reactor_own_*).  Request threads hand their commands
 * over with reactor_submit.  Nothing here knows about requests, votes
 * or recovery: the layers above call down into this one.
 */

#ifndef QUORUM_REACTOR_H
#define QUORUM_REACTOR_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <libnbd.h>

struct child;

/* A command for a child's handle: see reactor_submit. */
struct reactor_cmd {
  struct reactor_cmd *next;
  void (*issue) (struct reactor_cmd *cmd);
};

/* A socket's place in the reactor's epoll set: whether it is in, and
 * for which events.
 */
struct reactor_reg {
  bool on;
  unsigned events;
};

/* A child's link, written by this module only.  reactor_lock (in
 * reactor.c) protects serving, stop, lost, cut, why, the
 * registrations, owned and parked, and the sockets while serving;
 * submit_lock protects busy and the handed list.
 */
struct child_link {
  int io_fd, meta_fd;           /* dups of the handles' sockets */
  bool serving;                 /* the reactor polls them */
  bool stop;                    /* asks it to stop when they are idle */
  bool lost;                    /* the reactor saw one die */
  bool cut;                     /* reactor_cut shut them down */
  char why[160];                /* libnbd's reason, if it saw it */
  struct reactor_reg io_reg, meta_reg;
  /* A request thread polls the data socket itself (reactor_own_begin):
   * out of the epoll set, and served on until it gives it back.
   */
  bool owned;
  /* Given back by a request alone in flight, whose commands were all
   * done: out of the epoll set still, for the next such request to take
   * with no system call.  Idle: nobody has a command in flight on it
   * (a fan-out that does not own puts it back in before it sends:
   * reactor_unpark).  The reactor looks at it every
   * REACTOR_PARKED_CHECK_MS for a hang-up.
   */
  bool parked;
  /* libnbd reads a reply only when told the socket has one: told so
   * when the reply was read already, it waits in REPLY.START for the
   * next, and queues every new command until then.  So the data socket
   * has one reader at a time, who has just seen it readable.  epoch
   * counts the times a thread took it (atomic, changed under
   * submit_lock): the reactor drops an event seen before (seen: epoch
   * then, the reactor's own), and a thread does not take it while the
   * reactor is reading.
   */
  unsigned epoch, seen;
  bool reading;                 /* the reactor is in notify_read */
  pthread_mutex_t submit_lock;  /* busy, handed, reading, epoch */
  bool busy;                    /* a thread is queueing on or reading nbd */
  struct reactor_cmd *handed, **handed_tail;  /* for it to queue */
};

/* libnbd fails every command on a handle that dies, and refuses new
 * ones.  (These two calls take no lock.)
 */
static inline bool
reactor_handle_gone (struct nbd_handle *nbd)
{
  return nbd_aio_is_dead (nbd) || nbd_aio_is_closed (nbd);
}

/* Before any thread: c's link is idle. */
extern void reactor_link_init (struct child *c);
/* Start the reactor thread (.after_fork), and stop it (.cleanup, once
 * every child is released).
 */
extern int reactor_start (void);
extern void reactor_stop (void);
/* Hand c's handles (c->nbd, c->meta) to the reactor.  It serves them
 * until it sees them die, or until reactor_release asks and libnbd has
 * retired every command on them; only then may the caller close or
 * replace them.  reactor_release waits for that (a no-op when the
 * reactor is not running).
 */
extern void reactor_serve (struct child *c);
extern void reactor_release (struct child *c);
/* Queue cmd on c's handle (cmd->issue).  libnbd locks the handle while
 * one thread sends a command or the reactor reads replies, for one or
 * several system calls, and a thread that wanted it too would sleep and
 * be woken: instead it hands its command to the thread in there, which
 * queues it before it lets go.  A holder only queues commands, which
 * never blocks: nobody waits for another request's reply.
 */
extern void reactor_submit (struct child *c, struct reactor_cmd *cmd);
/* Low queue depth: a request thread alone in flight reads its own
 * replies instead of sleeping until the reactor has read them and
 * wakes it (a hand-over costing a wake-up of each thread, on the
 * request's path).  One thread at a time owns: reactor_own_begin takes
 * the data sockets of the children of mask out of the reactor's set,
 * if the caller's count of fan-outs in flight (*active, counted before
 * a fan-out's first command: see fanout.c) is 1 and every one of those
 * children is served and idle; otherwise it returns false (having
 * cost the reactor a pass at most).
 * reactor_own_poll waits up to ms (-1: no limit) for one of them and
 * feeds libnbd what came, as the reactor does: completion callbacks
 * run on this thread.  It returns REACTOR_OWN_POKED once
 * reactor_own_poke was called (another fan-out started, or another
 * thread ended a command of ours: the caller looks again), and
 * REACTOR_OWN_TIMEOUT when ms passed.  reactor_own_end gives the
 * sockets back; with park (every command of the caller's is done),
 * it leaves them out of the set for the next request alone, unless
 * *active says another fan-out started meanwhile.
 * reactor_unpark: before a fan-out that does not own sends on the
 * children of mask, once it is counted in *active: the parked ones go
 * back into the reactor's set (an atomic load when none is parked).
 */
enum reactor_own_result {
  REACTOR_OWN_EVENTS, REACTOR_OWN_TIMEOUT, REACTOR_OWN_POKED,
};
extern bool reactor_own_begin (uint32_t mask, const unsigned *active);
extern enum reactor_own_result reactor_own_poll (uint32_t mask, int ms);
extern void reactor_own_end (uint32_t mask, bool park,
                             const unsigned *active);
extern void reactor_unpark (uint32_t mask);
/* Whether a thread owns sockets; wake it (a no-op on that thread). */
extern bool reactor_owned (void);
extern void reactor_own_poke (void);
/* Wake the reactor to look at every child again: a command failed
 * because its connection is dead.
 */
extern void reactor_kick (void);
/* Tell the reactor that a command was queued on nbd (a child's). */
extern void reactor_kick_handle (struct nbd_handle *nbd);
/* Cut c's connection (why: for the message) and mark it down: libnbd
 * then fails every command in flight on it.
 */
extern void reactor_cut (struct child *c, const char *why);
/* The same, reported as down for reason (reactor_cut's: "timeout"). */
extern void reactor_cut_reason (struct child *c, const char *why,
                                const char *reason);

#endif /* QUORUM_REACTOR_H */
