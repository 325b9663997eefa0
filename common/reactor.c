/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The transport under everything: one thread, the reactor, serves the
 * libnbd handles of every remote child.  Request threads queue commands
 * with nbd_aio_* (libnbd locks the handle); the reactor reads the
 * replies and libnbd runs the completion callbacks there.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "cleanup.h"
#include "internal.h"
#include "reactor.h"
#include "state.h"

/* The reactor: one thread serves the connections of every remote
 * child.  It waits on all their sockets at once, feeds libnbd what
 * arrives, and libnbd runs the completion callbacks there.  One thread
 * for all children, not one each: the replies to one request arrive
 * together, and a single wake-up takes them all.
 *
 * A child's handle is served from reactor_serve until the reactor
 * sees it die, or until reactor_release asks and libnbd has retired every
 * command on it; only then may the supervisor close or replace it.
 * "serving" changes under reactor_lock, and c->nbd only while it is
 * false.
 */
static pthread_mutex_t reactor_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reactor_cond = PTHREAD_COND_INITIALIZER;
static pthread_t reactor;
static bool reactor_running, reactor_quit;
static int reactor_wake[2] = { -1, -1 };

void
reactor_kick (void)
{
  char ch = 0;
  ssize_t r = write (reactor_wake[1], &ch, 1);
  (void) r;           /* a full pipe already wakes the reactor */
}

/* Called with reactor_lock held: shutdown(2) c's sockets.  libnbd
 * then sees end of file (the reactor reads it and retires every
 * command), and fails at once any command queued from now on.
 */
static void
reactor_cut_locked (struct child *c)
{
  if (c->link.io_fd >= 0)
    shutdown (c->link.io_fd, SHUT_RDWR);
  if (c->link.meta_fd >= 0)
    shutdown (c->link.meta_fd, SHUT_RDWR);
}

/* Called with reactor_lock held.  Unless nbdkit is unloading (the
 * handles are then closed politely), a handle that is no longer read
 * is cut first: a request thread that saw the child up a moment ago
 * may still queue a command on it, and must see it fail at once rather
 * than wait for a reply nobody reads.
 */
static void
reactor_stop_serving_locked (struct child *c)
{
  if (!state_quitting (c))
    reactor_cut_locked (c);
  c->link.serving = false;
  if (c->link.io_fd >= 0)
    close (c->link.io_fd);
  if (c->link.meta_fd >= 0)
    close (c->link.meta_fd);
  c->link.io_fd = c->link.meta_fd = -1;
  pthread_cond_broadcast (&reactor_cond);
}

/* Queue what was handed over while we held c's handle, then let go. */
static void
reactor_drain (struct child *c)
{
  for (;;) {
    struct reactor_cmd *cmd;

    pthread_mutex_lock (&c->link.submit_lock);
    cmd = c->link.handed;
    c->link.handed = NULL;
    c->link.handed_tail = &c->link.handed;
    if (cmd == NULL)
      c->link.busy = false;
    pthread_mutex_unlock (&c->link.submit_lock);
    if (cmd == NULL)
      return;
    while (cmd) {
      struct reactor_cmd *next = cmd->next;

      cmd->issue (cmd);
      cmd = next;
    }
  }
}

/* msg: libnbd's, if this thread saw the error. */
static void
reactor_lost (struct child *c, const char *msg)
{
  nbdkit_error ("quorum: child %zu (%s): connection lost%s%s",
                c->index, c->name, msg ? ": " : "", msg ? msg : "");
  if (state_set_down (c))
    report_down (c->index, "connection-lost");
}

/* Called with reactor_lock held, when a handle of c died.  Cut the
 * other one too, so that its commands fail at once rather than wait for
 * the supervisor; the reactor stops serving c when both are gone.
 * Returns true the first time, for the caller to report.
 */
static bool
reactor_lost_locked (struct child *c)
{
  bool first = !c->link.lost;

  c->link.lost = true;
  reactor_cut_locked (c);
  return first;
}

/* Called with reactor_lock held: true if c needs no more serving. */
static bool
reactor_idle_locked (struct child *c)
{
  bool gone = reactor_handle_gone (c->nbd) &&
    (!c->meta || reactor_handle_gone (c->meta));

  if (gone)
    return true;
  /* After a timeout the supervisor asks us to stop as soon as the child
   * is down, when reactor_cut has cut the sockets but libnbd may not
   * have read the end of file yet: carry on until it has retired every
   * command, or requests waiting for them would wait until the child is
   * reconnected.
   */
  return c->link.stop &&
    (state_quitting (c) ||
     (nbd_aio_in_flight (c->nbd) <= 0 &&
      (!c->meta || nbd_aio_in_flight (c->meta) <= 0)));
}

/* Keep libnbd's reason for a failed read or write on c's socket,
 * for the report at the top of the next pass.
 */
static void
reactor_lost_why (struct child *c)
{
  CLEANUP_FREE char *msg = NULL;

  if (c->link.why[0] == '\0') {
    msg = child_redact (c, nbd_get_error () ?: "I/O error");
    snprintf (c->link.why, sizeof c->link.why, "%s", msg ? msg : "I/O error");
  }
}

/* One socket to poll: a child's data handle, or its block status one. */
struct reactor_watch {
  struct child *c;
  struct nbd_handle *nbd;
  bool data;
};

static size_t
reactor_watch_add (struct pollfd *fds, struct reactor_watch *w, size_t n,
                   struct child *c, struct nbd_handle *nbd, int fd,
                   bool data)
{
  unsigned dir;

  if (reactor_handle_gone (nbd))
    return n;
  dir = nbd_aio_get_direction (nbd);
  fds[n].fd = fd;
  fds[n].events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
    ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
  fds[n].revents = 0;
  w[n] = (struct reactor_watch) { .c = c, .nbd = nbd, .data = data };
  return n + 1;
}

/* Under reactor_lock: the sockets to poll into fds and w (returns how
 * many), and the children whose handle died into lost (*nr_lost).
 * A child that needs no more serving is let go here.
 */
static size_t
reactor_collect_locked (struct pollfd *fds, struct reactor_watch *w,
                        struct child **lost, size_t *nr_lost)
{
  size_t i, n = 0;

  for (i = 0; i < quorum_nr_slots (); ++i) {
    struct child *c = &quorum_children[i];

    if (!c->link.serving)
      continue;
    /* A handle died: a reply said so, or a request thread found its
     * socket broken.
     */
    if ((reactor_handle_gone (c->nbd) ||
         (c->meta && reactor_handle_gone (c->meta))) &&
        reactor_lost_locked (c))
      lost[(*nr_lost)++] = c;
    if (reactor_idle_locked (c)) {
      reactor_stop_serving_locked (c);
      continue;
    }
    n = reactor_watch_add (fds, w, n, c, c->nbd, c->link.io_fd, true);
    if (c->meta)
      n = reactor_watch_add (fds, w, n, c, c->meta, c->link.meta_fd, false);
  }
  return n;
}

/* Feed libnbd what poll found on one socket.  Whatever this does to a
 * handle, even kill it, the next pass sees: the handles stay open until
 * we stop serving the child.
 */
static void
reactor_dispatch (const struct pollfd *fd, const struct reactor_watch *w)
{
  struct child *c = w->c;

  /* POLLNVAL too: a request thread whose command failed on a broken
   * socket may have made libnbd close it.
   */
  if (fd->revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
    bool owner = false;

    /* Take the data handle, unless a request thread is sending on it:
     * then libnbd's lock makes us wait a moment, and that thread queues
     * what others hand it.  Block status is rare: its handle needs no
     * such care.
     */
    if (w->data) {
      pthread_mutex_lock (&c->link.submit_lock);
      owner = !c->link.busy;
      c->link.busy = true;
      pthread_mutex_unlock (&c->link.submit_lock);
    }
    if (nbd_aio_notify_read (w->nbd) == -1)
      reactor_lost_why (c);
    /* Even on a handle that just died: libnbd then fails them. */
    if (owner)
      reactor_drain (c);
  }
  else if (fd->revents & POLLOUT) {
    if (nbd_aio_notify_write (w->nbd) == -1)
      reactor_lost_why (c);
  }
}

static void *
reactor_thread (void *vp)
{
  struct pollfd fds[2 * VOTE_MAX_CHILDREN + 1];
  struct reactor_watch w[2 * VOTE_MAX_CHILDREN];
  struct child *lost[VOTE_MAX_CHILDREN];

  for (;;) {
    size_t i, n, nr_lost = 0;

    pthread_mutex_lock (&reactor_lock);
    if (reactor_quit) {
      pthread_mutex_unlock (&reactor_lock);
      break;
    }
    n = reactor_collect_locked (fds, w, lost, &nr_lost);
    pthread_mutex_unlock (&reactor_lock);
    for (i = 0; i < nr_lost; ++i)
      reactor_lost (lost[i], lost[i]->link.why[0] ? lost[i]->link.why :
                    "a request found the socket broken");

    fds[n].fd = reactor_wake[0];
    fds[n].events = POLLIN;
    fds[n].revents = 0;
    if (poll (fds, n + 1, -1) == -1) {
      if (errno == EINTR)
        continue;
      /* Only ENOMEM is possible here: try again. */
      nbdkit_error ("quorum: reactor: poll: %m");
      usleep (10000);
      continue;
    }

    if (fds[n].revents & POLLIN) {
      char buf[64];
      ssize_t r = read (reactor_wake[0], buf, sizeof buf);
      (void) r;
    }

    for (i = 0; i < n; ++i)
      reactor_dispatch (&fds[i], &w[i]);
  }
  return NULL;
}

void
reactor_submit (struct child *c, struct reactor_cmd *cmd)
{
  pthread_mutex_lock (&c->link.submit_lock);
  if (c->link.busy) {
    cmd->next = NULL;
    *c->link.handed_tail = cmd;
    c->link.handed_tail = &cmd->next;
    pthread_mutex_unlock (&c->link.submit_lock);
    return;
  }
  c->link.busy = true;
  pthread_mutex_unlock (&c->link.submit_lock);
  cmd->issue (cmd);
  reactor_drain (c);
}

void
reactor_kick_handle (struct nbd_handle *nbd)
{
  /* Only needed when libnbd could not send everything at once: the
   * reactor may be polling this socket for input only.
   */
  if (nbd_aio_get_direction (nbd) & LIBNBD_AIO_DIRECTION_WRITE)
    reactor_kick ();
}

void
reactor_cut (struct child *c, const char *why)
{
  reactor_cut_reason (c, why, "timeout");
}

void
reactor_cut_reason (struct child *c, const char *why, const char *reason)
{
  bool down;

  nbdkit_error ("quorum: child %zu (%s): %s: disconnecting", c->index,
                c->name, why);
  /* Cut before marking the child down: once it is down the supervisor
   * has the reactor let go of an idle handle, and a handle nobody reads
   * must not be left able to take a command.  Both under reactor_lock,
   * so that the reactor cannot report the end of file as a lost
   * connection first.
   */
  pthread_mutex_lock (&reactor_lock);
  reactor_cut_locked (c);
  down = state_set_down (c);
  pthread_mutex_unlock (&reactor_lock);
  /* Reports may write to syslog: never under a lock (see Locks). */
  if (down)
    report_down (c->index, reason);
}

/* A descriptor of our own for nbd's socket: libnbd closes its own when
 * the connection dies, in whichever thread sees that, and the number
 * could be reused at once by any other open; ours is closed only when
 * the reactor lets go.
 */
static int
reactor_dup_fd (struct nbd_handle *nbd)
{
  int fd = nbd ? nbd_aio_get_fd (nbd) : -1;

  return fd >= 0 ? fcntl (fd, F_DUPFD_CLOEXEC, 0) : -1;
}

void
reactor_serve (struct child *c)
{
  pthread_mutex_lock (&reactor_lock);
  c->link.io_fd = reactor_dup_fd (c->nbd);
  c->link.meta_fd = reactor_dup_fd (c->meta);
  c->link.stop = false;
  c->link.lost = false;
  c->link.why[0] = '\0';
  c->link.serving = true;
  pthread_mutex_unlock (&reactor_lock);
  reactor_kick ();
}

void
reactor_release (struct child *c)
{
  if (!reactor_running)
    return;
  pthread_mutex_lock (&reactor_lock);
  if (c->link.serving) {
    c->link.stop = true;
    reactor_kick ();
    while (c->link.serving)
      pthread_cond_wait (&reactor_cond, &reactor_lock);
  }
  pthread_mutex_unlock (&reactor_lock);
}


void
reactor_link_init (struct child *c)
{
  c->link.io_fd = c->link.meta_fd = -1;
  pthread_mutex_init (&c->link.submit_lock, NULL);
  c->link.handed_tail = &c->link.handed;
}

int
reactor_start (void)
{
  int err;

  if (pipe2 (reactor_wake, O_CLOEXEC) == -1) {
    nbdkit_error ("pipe2: %m");
    return -1;
  }
  /* A full pipe must not block a request thread. */
  if (fcntl (reactor_wake[1], F_SETFL, O_NONBLOCK) == -1) {
    nbdkit_error ("fcntl: %m");
    return -1;
  }
  err = pthread_create (&reactor, NULL, reactor_thread, NULL);
  if (err) {
    errno = err;
    nbdkit_error ("pthread_create: %m");
    return -1;
  }
  reactor_running = true;
  return 0;
}

void
reactor_stop (void)
{
  if (reactor_running) {
    pthread_mutex_lock (&reactor_lock);
    reactor_quit = true;
    pthread_mutex_unlock (&reactor_lock);
    reactor_kick ();
    pthread_join (reactor, NULL);
    reactor_running = false;
  }
  if (reactor_wake[0] >= 0)
    close (reactor_wake[0]);
  if (reactor_wake[1] >= 0)
    close (reactor_wake[1]);
  reactor_wake[0] = reactor_wake[1] = -1;
}
