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
#include <sys/epoll.h>
#include <sys/eventfd.h>
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
 * The sockets are in an epoll set (level-triggered), which a request
 * thread can take one out of without waking the reactor: at low queue
 * depth the request reads its own replies (reactor_own_begin), and the
 * reactor sleeps through them.  A request whose commands are all done
 * leaves them out ("parked"), so that the next request alone takes
 * them with no system call at all; any other fan-out puts them back
 * before it sends (reactor_unpark), and the reactor looks at parked
 * sockets for a hang-up every REACTOR_PARKED_CHECK_MS.  Each pass
 * makes the set agree with what libnbd wants of each handle
 * (nbd_aio_get_direction), as poll(2) once did by being given the set
 * afresh.
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
static int reactor_ep = -1;             /* the epoll set */
/* The thread owning sockets (reactor_own_*): whether there is one
 * (atomic), and its wake-up.
 */
static bool own_taken;
static int own_efd = -1;
static __thread bool own_thread;
/* The children whose data socket is parked (child_link.parked), as a
 * mask (atomic; changed under reactor_lock): a fan-out that does not
 * own reads it before it sends, and takes the lock only when one of
 * its children is parked.
 */
static uint32_t parked_mask;
static bool park_used;          /* a socket was ever parked (atomic) */
/* How often the reactor looks for a hang-up on parked sockets, which
 * nobody polls: a child that dies while the quorum is idle is reported
 * within this, not at once.
 */
#define REACTOR_PARKED_CHECK_MS 200

/* epoll data: a socket's child and handle, or the wake-up pipe. */
#define REACTOR_EV_WAKE UINT64_MAX
#define REACTOR_EV(i, meta) ((uint64_t) (i) << 1 | (meta))

void
reactor_kick (void)
{
  char ch = 0;
  ssize_t r = write (reactor_wake[1], &ch, 1);
  (void) r;           /* a full pipe already wakes the reactor */
}

static void reactor_register_locked (struct child *c, bool meta, bool want);

/* Called with reactor_lock held: c's data socket is parked no more;
 * true if it was.
 */
static bool
reactor_park_clear_locked (struct child *c)
{
  if (!c->link.parked)
    return false;
  c->link.parked = false;
  __atomic_and_fetch (&parked_mask, ~(UINT32_C (1) << c->index),
                      __ATOMIC_SEQ_CST);
  return true;
}

/* Called with reactor_lock held: c's data socket, if parked, goes back
 * into the epoll set.
 */
static void
reactor_unpark_locked (struct child *c)
{
  if (reactor_park_clear_locked (c))
    reactor_register_locked (c, false, true);
}

/* The same for every child of mask. */
static void
reactor_unpark_mask_locked (uint32_t mask)
{
  size_t i;

  for (i = 0; i < quorum_nr_slots (); ++i)
    if (mask & (UINT32_C (1) << i))
      reactor_unpark_locked (&quorum_children[i]);
}

/* Called with reactor_lock held: shutdown(2) c's sockets.  libnbd
 * then sees end of file (the reactor reads it and retires every
 * command), and fails at once any command queued from now on.
 */
static void
reactor_cut_locked (struct child *c)
{
  /* The reactor reads the end of file at once, and an owner gives
   * the socket back rather than park it.
   */
  c->link.cut = true;
  reactor_unpark_locked (c);
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
  reactor_park_clear_locked (c);
  if (!state_quitting (c))
    reactor_cut_locked (c);
  /* Our descriptor's file is libnbd's too: closing ours alone would
   * leave it in the set.
   */
  reactor_register_locked (c, false, false);
  reactor_register_locked (c, true, false);
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
                c->index, child_name (c), msg ? ": " : "", msg ? msg : "");
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

  /* Under reactor_lock: a thread owning the data socket and the
   * reactor, reading the block status one, may both get here.
   */
  msg = child_redact (c, nbd_get_error () ?: "I/O error");
  pthread_mutex_lock (&reactor_lock);
  if (c->link.why[0] == '\0')
    snprintf (c->link.why, sizeof c->link.why, "%s", msg ? msg : "I/O error");
  pthread_mutex_unlock (&reactor_lock);
}

/* What to wait for on nbd's socket, as poll(2) events: input always,
 * output while libnbd has a command it could not send in full.
 * libnbd's direction is read without its lock: while another thread
 * sends, it may say "write" or nothing, for a moment.  A registration
 * made then, which nothing made the reactor look at again, would leave
 * the replies unread; input is always safe to ask for: a reply or an
 * end of file is read once the sender let go.
 */
static unsigned
reactor_events (struct nbd_handle *nbd)
{
  unsigned dir = nbd_aio_get_direction (nbd);

  return POLLIN | ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
}

/* Called with reactor_lock held: make c's data (or block status)
 * socket's place in the epoll set agree with want (it should be
 * polled: served, alive, not owned) and with what libnbd waits for.
 * POLLIN and POLLOUT are EPOLLIN and EPOLLOUT; an entry asking for no
 * event still reports a hang-up or an error, as poll(2) did.
 */
static void
reactor_register_locked (struct child *c, bool meta, bool want)
{
  struct reactor_reg *reg = meta ? &c->link.meta_reg : &c->link.io_reg;
  struct nbd_handle *nbd = meta ? c->meta : c->nbd;
  int fd = meta ? c->link.meta_fd : c->link.io_fd;
  struct epoll_event ev = { .data.u64 = REACTOR_EV (c->index, meta) };

  if (want && (fd < 0 || nbd == NULL || reactor_handle_gone (nbd)))
    want = false;
  if (!want) {
    if (reg->on && epoll_ctl (reactor_ep, EPOLL_CTL_DEL, fd, NULL) == -1)
      nbdkit_debug ("quorum: reactor: epoll_ctl: %m");
    reg->on = false;
    return;
  }
  ev.events = reactor_events (nbd);
  if (reg->on && reg->events == ev.events)
    return;
  if (epoll_ctl (reactor_ep, reg->on ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd,
                 &ev) == -1) {
    /* Only ENOMEM or ENOSPC: the next pass tries again. */
    nbdkit_error ("quorum: child %zu: epoll_ctl: %m", c->index);
    return;
  }
  reg->on = true;
  reg->events = ev.events;
}

/* Under reactor_lock: bring the epoll set up to date, and put the
 * children whose handle died into lost (*nr_lost).  A child that needs
 * no more serving is let go here.  One whose data socket a request
 * thread owns is left served: that thread kicks us when it gives it
 * back.  A parked one stays out of the set, unless it must be let go.
 */
static void
reactor_collect_locked (struct child **lost, size_t *nr_lost)
{
  size_t i;

  for (i = 0; i < quorum_nr_slots (); ++i) {
    struct child *c = &quorum_children[i];
    bool died;

    if (!c->link.serving)
      continue;
    if (c->link.owned) {
      /* Its block status socket is still ours: a dead handle's shut
       * socket would report a hang-up at every pass.
       */
      reactor_register_locked (c, true, c->meta != NULL);
      continue;
    }
    /* A handle died: a reply said so, or a request thread found its
     * socket broken.
     */
    died = reactor_handle_gone (c->nbd) ||
      (c->meta && reactor_handle_gone (c->meta));
    if (c->link.parked && !c->link.stop && !died) {
      reactor_register_locked (c, true, c->meta != NULL);
      continue;
    }
    /* Served as usual from here: registered below, or let go. */
    reactor_park_clear_locked (c);
    if (died && reactor_lost_locked (c))
      lost[(*nr_lost)++] = c;
    if (reactor_idle_locked (c)) {
      reactor_stop_serving_locked (c);
      continue;
    }
    reactor_register_locked (c, false, true);
    reactor_register_locked (c, true, c->meta != NULL);
    c->link.seen = __atomic_load_n (&c->link.epoch, __ATOMIC_ACQUIRE);
  }
}

/* Feed libnbd what poll found on one of c's sockets (the data one, or
 * block status).  Whatever this does to a handle, even kill it, the
 * next pass sees: the handles stay open until we stop serving the
 * child.  by_reactor: called by the reactor, which drops an event of the
 * data socket from before a thread took it (see child_link.epoch); a
 * thread owning it is its only reader.
 */
static void
reactor_dispatch (struct child *c, bool data, unsigned revents,
                  bool by_reactor)
{
  struct nbd_handle *nbd = data ? c->nbd : c->meta;
  bool owner = false;

  if (!(revents & (POLLIN | POLLOUT | POLLHUP | POLLERR | POLLNVAL)))
    return;
  /* Take the data handle, unless a request thread is sending on it:
   * then libnbd's lock makes us wait a moment, and that thread queues
   * what others hand it.  Block status is rare, and never owned: its
   * handle needs no such care.
   */
  if (data) {
    pthread_mutex_lock (&c->link.submit_lock);
    if (by_reactor && c->link.seen != c->link.epoch) {
      pthread_mutex_unlock (&c->link.submit_lock);
      return;                   /* the next pass looks again */
    }
    owner = !c->link.busy;
    c->link.busy = true;
    c->link.reading = by_reactor;
    pthread_mutex_unlock (&c->link.submit_lock);
  }
  /* POLLNVAL too: a request thread whose command failed on a broken
   * socket may have made libnbd close it.
   */
  if (revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
    if (nbd_aio_notify_read (nbd) == -1)
      reactor_lost_why (c);
  }
  else if (nbd_aio_notify_write (nbd) == -1)
    reactor_lost_why (c);
  if (data && by_reactor) {
    pthread_mutex_lock (&c->link.submit_lock);
    c->link.reading = false;
    pthread_mutex_unlock (&c->link.submit_lock);
  }
  /* Even on a handle that just died: libnbd then fails them. */
  if (owner)
    reactor_drain (c);
}

#define REACTOR_EVENTS (2 * VOTE_MAX_CHILDREN + 1)

/* Parked sockets have nobody polling them: every
 * REACTOR_PARKED_CHECK_MS, one that hung up, failed, or has something
 * to read (nothing is in flight on it: a protocol error, for libnbd to
 * find) goes back into the set, where the next pass sees why.
 */
static void
reactor_check_parked (void)
{
  struct pollfd fds[VOTE_MAX_CHILDREN];
  struct child *cs[VOTE_MAX_CHILDREN];
  size_t i, n = 0;

  pthread_mutex_lock (&reactor_lock);
  for (i = 0; i < quorum_nr_slots (); ++i) {
    struct child *c = &quorum_children[i];

    if (!c->link.parked || c->link.io_fd < 0)
      continue;
    fds[n].fd = c->link.io_fd;
    fds[n].events = POLLIN | POLLRDHUP;
    fds[n].revents = 0;
    cs[n++] = c;
  }
  /* Nothing should be in flight on a parked socket; should something
   * be, the reactor reads it from now on.
   */
  if (n > 0 && poll (fds, n, 0) >= 0) {
    for (i = 0; i < n; ++i)
      if (fds[i].revents || nbd_aio_in_flight (cs[i]->nbd) > 0) {
        reactor_unpark_locked (cs[i]);
        /* Nobody took it since it was parked: its first event is not
         * one from before a claim (child_link.epoch).
         */
        cs[i]->link.seen = __atomic_load_n (&cs[i]->link.epoch,
                                            __ATOMIC_ACQUIRE);
      }
  }
  pthread_mutex_unlock (&reactor_lock);
}

static void *
reactor_thread (void *vp)
{
  struct epoll_event ev[REACTOR_EVENTS];
  struct child *lost[VOTE_MAX_CHILDREN];
  char why[VOTE_MAX_CHILDREN][sizeof lost[0]->link.why];
  struct timespec checked = { 0 };

  for (;;) {
    size_t i, nr_lost = 0;
    int n, ms = -1;

    pthread_mutex_lock (&reactor_lock);
    if (reactor_quit) {
      pthread_mutex_unlock (&reactor_lock);
      break;
    }
    reactor_collect_locked (lost, &nr_lost);
    for (i = 0; i < nr_lost; ++i)
      snprintf (why[i], sizeof why[i], "%s", lost[i]->link.why[0] ?
                lost[i]->link.why : "a request found the socket broken");
    pthread_mutex_unlock (&reactor_lock);
    for (i = 0; i < nr_lost; ++i)
      reactor_lost (lost[i], why[i]);

    /* Once sockets are parked at all, they may be parked at any time
     * without a word to us: wake up often enough to look at them.
     */
    if (__atomic_load_n (&park_used, __ATOMIC_SEQ_CST)) {
      struct timespec now;
      long long since;

      clock_gettime (CLOCK_MONOTONIC, &now);
      since = quorum_ns_between (&checked, &now) / 1000000;
      if (since >= REACTOR_PARKED_CHECK_MS) {
        if (__atomic_load_n (&parked_mask, __ATOMIC_SEQ_CST))
          reactor_check_parked ();
        checked = now;
        since = 0;
      }
      ms = REACTOR_PARKED_CHECK_MS - since;
    }
    n = epoll_wait (reactor_ep, ev, REACTOR_EVENTS, ms);
    if (n == -1) {
      if (errno == EINTR)
        continue;
      nbdkit_error ("quorum: reactor: epoll_wait: %m");
      usleep (10000);
      continue;
    }

    /* Each event is of a socket in the set when the wait began: its
     * child is served (only this thread stops that, above), though a
     * request thread may have taken its data socket since: then
     * reactor_dispatch drops the event (child_link.epoch).
     */
    for (i = 0; i < (size_t) n; ++i) {
      uint64_t u = ev[i].data.u64;

      if (u == REACTOR_EV_WAKE) {
        char buf[64];
        ssize_t r = read (reactor_wake[0], buf, sizeof buf);
        (void) r;
        continue;
      }
      reactor_dispatch (&quorum_children[u >> 1], !(u & 1),
                        ev[i].events & (POLLIN | POLLOUT | POLLHUP |
                                        POLLERR), true);
    }
  }
  return NULL;
}

bool
reactor_owned (void)
{
  return __atomic_load_n (&own_taken, __ATOMIC_SEQ_CST);
}

void
reactor_own_poke (void)
{
  uint64_t one = 1;
  ssize_t r;

  if (own_thread)
    return;
  r = write (own_efd, &one, sizeof one);
  (void) r;           /* a full counter already wakes the owner */
}

/* Under reactor_lock: whether c's data socket may be owned. */
static bool
reactor_own_may_locked (struct child *c)
{
  return c->link.serving && !c->link.stop && !c->link.lost &&
    !c->link.owned && c->link.io_fd >= 0 && !reactor_handle_gone (c->nbd);
}

bool
reactor_own_begin (uint32_t mask, const unsigned *active)
{
  bool expected = false;
  size_t i;

  if (!reactor_running || mask == 0)
    return false;
  if (!__atomic_compare_exchange_n (&own_taken, &expected, true, false,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
    return false;
  /* After taking own_taken: a fan-out counted from now on sees it and
   * pokes us; one counted before is seen here.
   */
  if (__atomic_load_n (active, __ATOMIC_SEQ_CST) != 1)
    goto refused;
  pthread_mutex_lock (&reactor_lock);
  for (i = 0; i < quorum_nr_slots (); ++i)
    if ((mask & (UINT32_C (1) << i)) &&
        !reactor_own_may_locked (&quorum_children[i])) {
      pthread_mutex_unlock (&reactor_lock);
      goto refused;
    }
  /* From here the reactor reads none of them, unless it is reading one
   * now, or someone holds the handle (the reactor draining what was
   * handed to it: a command it then sends only in part would want
   * output that our poll would not ask for): then give up (a new epoch
   * only costs the reactor a pass).
   */
  for (i = 0; i < quorum_nr_slots (); ++i) {
    struct child *c = &quorum_children[i];
    bool held;

    if (!(mask & (UINT32_C (1) << i)))
      continue;
    pthread_mutex_lock (&c->link.submit_lock);
    held = c->link.reading || c->link.busy;
    if (!held)
      __atomic_add_fetch (&c->link.epoch, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock (&c->link.submit_lock);
    if (held) {
      pthread_mutex_unlock (&reactor_lock);
      goto refused;
    }
  }
  for (i = 0; i < quorum_nr_slots (); ++i) {
    struct child *c = &quorum_children[i];

    if (!(mask & (UINT32_C (1) << i)))
      continue;
    /* Parked: out of the set already, no system call. */
    if (!reactor_park_clear_locked (c))
      reactor_register_locked (c, false, false);
    c->link.owned = true;
  }
  pthread_mutex_unlock (&reactor_lock);
  own_thread = true;
  return true;

 refused:
  __atomic_store_n (&own_taken, false, __ATOMIC_SEQ_CST);
  return false;
}

enum reactor_own_result
reactor_own_poll (uint32_t mask, int ms)
{
  struct pollfd fds[VOTE_MAX_CHILDREN + 1];
  struct child *cs[VOTE_MAX_CHILDREN];
  enum reactor_own_result ret = REACTOR_OWN_EVENTS;
  size_t i, n = 0;
  int r;

  /* While we own them the reactor leaves them served, as they are. */
  for (i = 0; i < quorum_nr_slots (); ++i) {
    struct child *c = &quorum_children[i];

    if (!(mask & (UINT32_C (1) << i)))
      continue;
    /* A dead handle's commands are failed already; its shut socket
     * would say so again at every poll.
     */
    fds[n].fd = reactor_handle_gone (c->nbd) ? -1 : c->link.io_fd;
    fds[n].events = fds[n].fd >= 0 ? reactor_events (c->nbd) : 0;
    fds[n].revents = 0;
    cs[n++] = c;
  }
  fds[n].fd = own_efd;
  fds[n].events = POLLIN;
  fds[n].revents = 0;
  r = poll (fds, n + 1, ms);
  if (r == -1)
    return REACTOR_OWN_EVENTS;  /* EINTR or ENOMEM: the caller comes back */
  if (r == 0)
    return REACTOR_OWN_TIMEOUT;
  if (fds[n].revents & POLLIN) {
    uint64_t v;
    ssize_t rr = read (own_efd, &v, sizeof v);
    (void) rr;
    ret = REACTOR_OWN_POKED;
  }
  for (i = 0; i < n; ++i)
    if (fds[i].revents)
      reactor_dispatch (cs[i], true, fds[i].revents, false);
  return ret;
}

void
reactor_own_end (uint32_t mask, bool park, const unsigned *active)
{
  uint32_t parked = 0;
  bool kick = false;
  size_t i;

  own_thread = false;
  pthread_mutex_lock (&reactor_lock);
  for (i = 0; i < quorum_nr_slots (); ++i) {
    struct child *c = &quorum_children[i];

    if (!(mask & (UINT32_C (1) << i)))
      continue;
    c->link.owned = false;
    /* What the reactor would have acted on meanwhile: it looks now.
     * A socket parks only idle (belt and braces: fanout_start unparks
     * before it sends, and only a fan-out alone parks).
     */
    if (reactor_handle_gone (c->nbd) || c->link.stop || c->link.cut)
      kick = true;
    else if (park && nbd_aio_in_flight (c->nbd) == 0) {
      c->link.parked = true;
      parked |= UINT32_C (1) << i;
    }
    else
      reactor_register_locked (c, false, true);
  }
  if (parked) {
    /* Sequentially consistent, against reactor_unpark: a fan-out
     * counted in *active before this load sees it above 1, and we put
     * them back; one counted after sees them parked, and does.
     */
    __atomic_or_fetch (&parked_mask, parked, __ATOMIC_SEQ_CST);
    if (__atomic_load_n (active, __ATOMIC_SEQ_CST) != 1)
      reactor_unpark_mask_locked (parked);
    /* From the first time on, the reactor waits no longer than the
     * check's period (reactor_thread): it needs waking once.
     */
    if (!__atomic_exchange_n (&park_used, true, __ATOMIC_SEQ_CST))
      kick = true;
  }
  pthread_mutex_unlock (&reactor_lock);
  __atomic_store_n (&own_taken, false, __ATOMIC_SEQ_CST);
  if (kick)
    reactor_kick ();
}

void
reactor_unpark (uint32_t mask)
{
  if (!(__atomic_load_n (&parked_mask, __ATOMIC_SEQ_CST) & mask))
    return;
  pthread_mutex_lock (&reactor_lock);
  reactor_unpark_mask_locked (mask);
  pthread_mutex_unlock (&reactor_lock);
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
                child_name (c), why);
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
  c->link.cut = false;
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
  own_efd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (own_efd == -1) {
    nbdkit_error ("eventfd: %m");
    return -1;
  }
  reactor_ep = epoll_create1 (EPOLL_CLOEXEC);
  if (reactor_ep == -1) {
    nbdkit_error ("epoll_create1: %m");
    return -1;
  }
  {
    struct epoll_event ev = {
      .events = EPOLLIN, .data.u64 = REACTOR_EV_WAKE,
    };

    if (epoll_ctl (reactor_ep, EPOLL_CTL_ADD, reactor_wake[0], &ev) == -1) {
      nbdkit_error ("epoll_ctl: %m");
      return -1;
    }
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
  if (reactor_ep >= 0)
    close (reactor_ep);
  if (own_efd >= 0)
    close (own_efd);
  reactor_ep = own_efd = -1;
}
