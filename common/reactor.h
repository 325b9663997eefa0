/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The reactor: one thread serves the sockets of every remote child's
 * libnbd handles, feeds libnbd what arrives, and libnbd runs the
 * completion callbacks there.  Request threads hand their commands
 * over with reactor_submit.  Nothing here knows about requests, votes
 * or recovery: the layers above call down into this one.
 */

#ifndef QUORUM_REACTOR_H
#define QUORUM_REACTOR_H

#include <pthread.h>
#include <stdbool.h>

#include <libnbd.h>

struct child;

/* A command for a child's handle: see reactor_submit. */
struct reactor_cmd {
  struct reactor_cmd *next;
  void (*issue) (struct reactor_cmd *cmd);
};

/* A child's link, written by this module only.  reactor_lock (in
 * reactor.c) protects serving, stop, lost and why, and the sockets
 * while serving; submit_lock protects busy and the handed list.
 */
struct child_link {
  int io_fd, meta_fd;           /* dups of the handles' sockets */
  bool serving;                 /* the reactor polls them */
  bool stop;                    /* asks it to stop when they are idle */
  bool lost;                    /* the reactor saw one die */
  char why[160];                /* libnbd's reason, if it saw it */
  pthread_mutex_t submit_lock;  /* busy, handed */
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
