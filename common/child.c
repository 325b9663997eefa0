/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Remote children: one libnbd handle per child, shared by every client
 * connection.  Request threads queue commands with nbd_aio_* (libnbd
 * locks the handle); the reactor, one thread for all children, reads
 * the replies and libnbd runs the completion callbacks there.
 *
 * When a connection dies the child is down: it takes no part in
 * requests, every write it misses is recorded in its dirty map, and its
 * supervisor thread reconnects with exponential backoff, then copies
 * the dirty regions to it from the other children before it votes on
 * them again.  The dirty map lives in memory only.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "cleanup.h"
#include "internal.h"
#include "rangelock.h"

/* The size every child must have, from the first remote child. */
static int64_t export_size;

enum child_state
child_get_state (struct child *c)
{
  return __atomic_load_n (&c->state, __ATOMIC_ACQUIRE);
}

/* Called with state_lock held. */
static void
set_state_locked (struct child *c, enum child_state state)
{
  __atomic_store_n (&c->state, state, __ATOMIC_RELEASE);
  pthread_cond_broadcast (&c->state_cond);
}

static void
child_set_down (struct child *c, const char *why)
{
  SCOPED_LOCK (&c->state_lock);
  if (c->state == CHILD_DOWN || c->quit)
    return;
  set_state_locked (c, CHILD_DOWN);
  report_down (c->index, why);
}

/* The reactor: one thread serves the connections of every remote
 * child.  It waits on all their sockets at once, feeds libnbd what
 * arrives, and libnbd runs the completion callbacks there.  One thread
 * for all children, not one each: the replies to one request arrive
 * together, and a single wake-up takes them all.
 *
 * A child's handle is served from child_start_io until the reactor
 * sees it die, or until child_stop_io asks and libnbd has retired every
 * command on it; only then may the supervisor close or replace it.
 * "serving" changes under reactor_lock, and c->nbd only while it is
 * false.
 */
static pthread_mutex_t reactor_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reactor_cond = PTHREAD_COND_INITIALIZER;
static pthread_t reactor;
static bool reactor_running, reactor_quit;
static int reactor_wake[2] = { -1, -1 };

static void
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
cut_locked (struct child *c)
{
  if (c->io_fd >= 0)
    shutdown (c->io_fd, SHUT_RDWR);
  if (c->meta_fd >= 0)
    shutdown (c->meta_fd, SHUT_RDWR);
}

/* Called with reactor_lock held.  Unless nbdkit is unloading (the
 * handles are then closed politely), a handle that is no longer read
 * is cut first: a request thread that saw the child up a moment ago
 * may still queue a command on it, and must see it fail at once rather
 * than wait for a reply nobody reads.
 */
static void
stop_serving_locked (struct child *c)
{
  if (!__atomic_load_n (&c->quit, __ATOMIC_ACQUIRE))
    cut_locked (c);
  c->serving = false;
  if (c->io_fd >= 0)
    close (c->io_fd);
  if (c->meta_fd >= 0)
    close (c->meta_fd);
  c->io_fd = c->meta_fd = -1;
  pthread_cond_broadcast (&reactor_cond);
}

/* Queue what was handed over while we held c's handle, then let go. */
static void
submit_drain (struct child *c)
{
  for (;;) {
    struct child_cmd *cmd;

    pthread_mutex_lock (&c->submit_lock);
    cmd = c->handed;
    c->handed = NULL;
    c->handed_tail = &c->handed;
    if (cmd == NULL)
      c->busy = false;
    pthread_mutex_unlock (&c->submit_lock);
    if (cmd == NULL)
      return;
    while (cmd) {
      struct child_cmd *next = cmd->next;

      cmd->issue (cmd);
      cmd = next;
    }
  }
}

/* msg: libnbd's, if this thread saw the error. */
static void
child_lost (struct child *c, const char *msg)
{
  nbdkit_error ("quorum: child %zu (%s): connection lost%s%s",
                c->index, c->name, msg ? ": " : "", msg ? msg : "");
  child_set_down (c, "connection-lost");
}

/* Called with reactor_lock held, when a handle of c died.  Cut the
 * other one too, so that its commands fail at once rather than wait for
 * the supervisor; the reactor stops serving c when both are gone.
 * Returns true the first time, for the caller to report.
 */
static bool
lost_locked (struct child *c)
{
  bool first = !c->io_lost;

  c->io_lost = true;
  cut_locked (c);
  return first;
}

/* Called with reactor_lock held: true if c needs no more serving. */
static bool
idle_locked (struct child *c)
{
  bool gone = child_handle_gone (c->nbd) && (!c->meta || child_handle_gone (c->meta));

  if (gone)
    return true;
  /* After a timeout the supervisor asks us to stop as soon as the child
   * is down, when child_abort has cut the sockets but libnbd may not
   * have read the end of file yet: carry on until it has retired every
   * command, or requests waiting for them would wait until the child is
   * reconnected.
   */
  return c->io_stop &&
    (__atomic_load_n (&c->quit, __ATOMIC_ACQUIRE) ||
     (nbd_aio_in_flight (c->nbd) <= 0 &&
      (!c->meta || nbd_aio_in_flight (c->meta) <= 0)));
}

/* Keep libnbd's reason for a failed read or write on c's socket,
 * for the report at the top of the next pass.
 */
static void
lost_why (struct child *c)
{
  CLEANUP_FREE char *msg = NULL;

  if (c->io_why[0] == '\0') {
    msg = child_redact (c, nbd_get_error () ?: "I/O error");
    snprintf (c->io_why, sizeof c->io_why, "%s", msg ? msg : "I/O error");
  }
}

/* One socket to poll: a child's data handle, or its block status one. */
struct watch {
  struct child *c;
  struct nbd_handle *nbd;
  bool data;
};

static size_t
watch_add (struct pollfd *fds, struct watch *w, size_t n, struct child *c,
           struct nbd_handle *nbd, int fd, bool data)
{
  unsigned dir;

  if (child_handle_gone (nbd))
    return n;
  dir = nbd_aio_get_direction (nbd);
  fds[n].fd = fd;
  fds[n].events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
    ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
  fds[n].revents = 0;
  w[n] = (struct watch) { .c = c, .nbd = nbd, .data = data };
  return n + 1;
}

static void *
reactor_thread (void *vp)
{
  struct pollfd fds[2 * VOTE_MAX_CHILDREN + 1];
  struct watch w[2 * VOTE_MAX_CHILDREN];
  struct child *lost[VOTE_MAX_CHILDREN];

  for (;;) {
    size_t i, n = 0, nr_lost = 0;

    pthread_mutex_lock (&reactor_lock);
    if (reactor_quit) {
      pthread_mutex_unlock (&reactor_lock);
      break;
    }
    for (i = 0; i < quorum_nr_children; ++i) {
      struct child *c = &quorum_children[i];

      if (!c->serving)
        continue;
      /* A handle died: a reply said so, or a request thread found its
       * socket broken.
       */
      if ((child_handle_gone (c->nbd) || (c->meta && child_handle_gone (c->meta))) &&
          lost_locked (c))
        lost[nr_lost++] = c;
      if (idle_locked (c)) {
        stop_serving_locked (c);
        continue;
      }
      n = watch_add (fds, w, n, c, c->nbd, c->io_fd, true);
      if (c->meta)
        n = watch_add (fds, w, n, c, c->meta, c->meta_fd, false);
    }
    pthread_mutex_unlock (&reactor_lock);
    for (i = 0; i < nr_lost; ++i)
      child_lost (lost[i], lost[i]->io_why[0] ? lost[i]->io_why :
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

    /* Whatever this does to a handle, even kill it, the next pass sees:
     * the handles stay open until we stop serving the child.
     */
    for (i = 0; i < n; ++i) {
      struct child *c = w[i].c;

      /* POLLNVAL too: a request thread whose command failed on a
       * broken socket may have made libnbd close it.
       */
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
        bool owner = false;

        /* Take the data handle, unless a request thread is sending on
         * it: then libnbd's lock makes us wait a moment, and that
         * thread queues what others hand it.  Block status is rare:
         * its handle needs no such care.
         */
        if (w[i].data) {
          pthread_mutex_lock (&c->submit_lock);
          owner = !c->busy;
          c->busy = true;
          pthread_mutex_unlock (&c->submit_lock);
        }
        if (nbd_aio_notify_read (w[i].nbd) == -1)
          lost_why (c);
        /* Even on a handle that just died: libnbd then fails them. */
        if (owner)
          submit_drain (c);
      }
      else if (fds[i].revents & POLLOUT) {
        if (nbd_aio_notify_write (w[i].nbd) == -1)
          lost_why (c);
      }
    }
  }
  return NULL;
}

void
child_check (struct child *c)
{
  (void) c;
  reactor_kick ();
}

void
child_submit (struct child *c, struct child_cmd *cmd)
{
  pthread_mutex_lock (&c->submit_lock);
  if (c->busy) {
    cmd->next = NULL;
    *c->handed_tail = cmd;
    c->handed_tail = &cmd->next;
    pthread_mutex_unlock (&c->submit_lock);
    return;
  }
  c->busy = true;
  pthread_mutex_unlock (&c->submit_lock);
  cmd->issue (cmd);
  submit_drain (c);
}

void
child_kick (struct nbd_handle *nbd)
{
  /* Only needed when libnbd could not send everything at once: the
   * reactor may be polling this socket for input only.
   */
  if (nbd_aio_get_direction (nbd) & LIBNBD_AIO_DIRECTION_WRITE)
    reactor_kick ();
}

void
child_abort (struct child *c, const char *why)
{
  nbdkit_error ("quorum: child %zu (%s): %s: disconnecting", c->index,
                c->name, why);
  /* Cut before marking the child down: once it is down the supervisor
   * has the reactor let go of an idle handle, and a handle nobody reads
   * must not be left able to take a command.  Both under reactor_lock,
   * so that the reactor cannot report the end of file as a lost
   * connection first.
   */
  pthread_mutex_lock (&reactor_lock);
  cut_locked (c);
  child_set_down (c, "timeout");
  pthread_mutex_unlock (&reactor_lock);
}

/* The dirty map. */

static void
granules (uint64_t offset, uint64_t count, uint64_t *first, uint64_t *end)
{
  *first = offset >> DIRTY_SHIFT;
  *end = (offset + count + (UINT64_C (1) << DIRTY_SHIFT) - 1) >> DIRTY_SHIFT;
}

void
child_mark_dirty (struct child *c, uint64_t offset, uint64_t count)
{
  uint64_t g, first, end;

  if (c->dirty == NULL || count == 0)
    return;
  granules (offset, count, &first, &end);
  for (g = first; g < end; ++g) {
    uint64_t bit = UINT64_C (1) << (g & 63);
    uint64_t old = __atomic_fetch_or (&c->dirty[g >> 6], bit,
                                      __ATOMIC_ACQ_REL);
    if (!(old & bit))
      __atomic_add_fetch (&c->nr_dirty, 1, __ATOMIC_ACQ_REL);
  }
}

void
child_clear_dirty (struct child *c, uint64_t offset, uint64_t count)
{
  uint64_t g, first, end;
  uint64_t gsize = UINT64_C (1) << DIRTY_SHIFT;

  if (c->dirty == NULL || count == 0 ||
      __atomic_load_n (&c->nr_dirty, __ATOMIC_ACQUIRE) == 0)
    return;
  /* Only whole granules; the last one may end at the end of the disk. */
  first = (offset + gsize - 1) >> DIRTY_SHIFT;
  if (offset + count >= (uint64_t) export_size)
    end = ((uint64_t) export_size + gsize - 1) >> DIRTY_SHIFT;
  else
    end = (offset + count) >> DIRTY_SHIFT;
  for (g = first; g < end; ++g) {
    uint64_t bit = UINT64_C (1) << (g & 63);
    uint64_t old = __atomic_fetch_and (&c->dirty[g >> 6], ~bit,
                                       __ATOMIC_ACQ_REL);
    if (old & bit)
      __atomic_sub_fetch (&c->nr_dirty, 1, __ATOMIC_ACQ_REL);
  }
}

bool
child_is_dirty (struct child *c, uint64_t offset, uint64_t count)
{
  uint64_t g, first, end;

  if (c->dirty == NULL ||
      __atomic_load_n (&c->nr_dirty, __ATOMIC_ACQUIRE) == 0)
    return false;
  if (count == 0)
    return true;                /* flush: any dirt at all */
  granules (offset, count, &first, &end);
  for (g = first; g < end; ++g)
    if (__atomic_load_n (&c->dirty[g >> 6], __ATOMIC_ACQUIRE) &
        (UINT64_C (1) << (g & 63)))
      return true;
  return false;
}

/* Connecting. */

static void
child_get_caps (struct child *c, struct nbd_handle *nbd,
                struct quorum_caps *caps)
{
  int64_t r;

  caps->size = nbd_get_size (nbd);
  caps->can_write = nbd_is_read_only (nbd) == 0;
  caps->can_flush = nbd_can_flush (nbd) == 1;
  caps->can_trim = nbd_can_trim (nbd) == 1;
  caps->can_zero = nbd_can_zero (nbd) == 1;
  caps->can_fast_zero = nbd_can_fast_zero (nbd) == 1;
  caps->can_fua = nbd_can_fua (nbd) == 1;
  caps->can_extents =
    nbd_can_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  caps->can_multi_conn = nbd_can_multi_conn (nbd) == 1;
  caps->can_cache = nbd_can_cache (nbd) == 1;
  caps->is_rotational = nbd_is_rotational (nbd) == 1;
  r = nbd_get_block_size (nbd, LIBNBD_SIZE_MINIMUM);
  caps->block_min = r > 0 ? r : 0;
  r = nbd_get_block_size (nbd, LIBNBD_SIZE_PREFERRED);
  caps->block_pref = r > 0 ? r : 0;
  r = nbd_get_block_size (nbd, LIBNBD_SIZE_MAXIMUM);
  caps->block_max = r > 0 ? r : 0;
}

/* A Unix socket queues no more than its send buffer (212992 bytes by
 * default), less than one 256 KiB write from nbdcopy: libnbd would
 * send the rest when the reactor sees room, and the child would read
 * each request in pieces, waking several times.  Ask for 4 MiB (the
 * kernel caps it at net.core.wmem_max, and doubles it); measured with
 * nbdcopy, sequential writes went 20% faster and the children spent
 * 15% less CPU.  TCP tunes its own buffers: setting one would stop
 * that, so only Unix sockets.
 */
static void
widen_send_buffer (int fd)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int size = 4 << 20;

  if (fd >= 0 &&
      getsockname (fd, (struct sockaddr *) &ss, &len) == 0 &&
      ss.ss_family == AF_UNIX &&
      setsockopt (fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size) == -1)
    nbdkit_debug ("quorum: setsockopt SO_SNDBUF: %m");
}

/* Open a connection to c's URI.  quit_fd, if not -1, interrupts it;
 * a handshake that takes longer than child-timeout is abandoned.  With
 * structured, ask for structured replies and block status.  On error
 * returns NULL with the reason in *why (to be freed).
 */
static struct nbd_handle *
child_open_handle (struct child *c, int quit_fd, bool structured,
                   char **why)
{
  struct nbd_handle *nbd;
  struct timespec start, now;

  clock_gettime (CLOCK_MONOTONIC, &start);
  nbd = nbd_create ();
  if (nbd == NULL)
    goto err;
  /* libnbd zeroes every read buffer first, in case a caller looks at
   * the buffer of a failed read: the engine never does (a failed child
   * has no vote), and that memset was most of the front's own CPU time
   * on sequential reads.
   */
  if (nbd_set_pread_initialize (nbd, false) == -1)
    goto err;
  if (structured) {
    if (nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1)
      goto err;
  }
  else if (nbd_set_request_structured_replies (nbd, false) == -1)
    goto err;
  if (c->command) {
    /* libnbd starts the server with a listening socket (systemd socket
     * activation) and kills it when the handle is closed.  The shell
     * runs the command as the operator wrote it, in nbdkit's starting
     * directory, and execs it, so that the server keeps the PID that
     * LISTEN_PID names.
     */
    CLEANUP_FREE char *script = NULL;
    char *argv[] = { (char *) "/bin/sh", (char *) "-c", NULL,
                     quorum_workdir, NULL };

    if (asprintf (&script, "cd -- \"$0\" && exec %s", c->command) == -1) {
      script = NULL;
      goto err;
    }
    argv[2] = script;
    if (nbd_aio_connect_systemd_socket_activation (nbd, argv) == -1)
      goto err;
  }
  /* The operator wrote these URIs: let them name TLS key files. */
  else if (nbd_set_uri_allow_local_file (nbd, true) == -1 ||
           nbd_aio_connect_uri (nbd, c->uri) == -1)
    goto err;

  while (nbd_aio_is_connecting (nbd)) {
    struct pollfd fds[2];
    unsigned dir = nbd_aio_get_direction (nbd);
    int ms = -1, r;

    fds[0].fd = nbd_aio_get_fd (nbd);
    fds[0].events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
      ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
    fds[0].revents = 0;
    fds[1].fd = quit_fd;
    fds[1].events = POLLIN;
    fds[1].revents = 0;
    if (quorum_child_timeout) {
      /* child-timeout is at most a day: this fits an int. */
      clock_gettime (CLOCK_MONOTONIC, &now);
      ms = (int64_t) quorum_child_timeout * 1000 -
        ((now.tv_sec - start.tv_sec) * 1000 +
         (now.tv_nsec - start.tv_nsec) / 1000000);
      if (ms <= 0) {
        *why = strdup ("handshake timed out (child-timeout)");
        nbd_close (nbd);
        return NULL;
      }
    }
    r = poll (fds, quit_fd >= 0 ? 2 : 1, ms);
    if (r == -1 && errno != EINTR)
      goto err;
    if (r > 0 && (fds[1].revents & (POLLIN | POLLHUP))) {
      *why = strdup ("stopping");
      nbd_close (nbd);
      return NULL;
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (nbd_aio_notify_read (nbd) == -1)
        goto err;
    }
    else if (fds[0].revents & POLLOUT) {
      if (nbd_aio_notify_write (nbd) == -1)
        goto err;
    }
  }
  if (!nbd_aio_is_ready (nbd))
    goto err;
  widen_send_buffer (nbd_aio_get_fd (nbd));
  return nbd;

 err:
  /* libnbd's message names the cause (refused, no such socket, TLS),
   * quoting the URI and the key file as given.
   */
  *why = child_redact (c, nbd_get_error () ?: "connection failed");
  nbd_close (nbd);
  return NULL;
}

/* A connection to c without structured replies, which must show the
 * export that caps describe; NULL if not (said in the debug log).
 */
static struct nbd_handle *
child_open_plain (struct child *c, int quit_fd,
                  const struct quorum_caps *caps)
{
  struct nbd_handle *nbd;
  char *why = NULL;

  nbd = child_open_handle (c, quit_fd, false, &why);
  if (nbd == NULL) {
    nbdkit_debug ("quorum: child %zu (%s): second connection failed: %s: "
                  "one connection does everything", c->index, c->name,
                  why ? why : "out of memory");
    free (why);
    return NULL;
  }
  if (nbd_get_size (nbd) != caps->size ||
      (nbd_is_read_only (nbd) == 0) != caps->can_write) {
    nbdkit_debug ("quorum: child %zu (%s): second connection differs in "
                  "size or read-only: one connection does everything",
                  c->index, c->name);
    nbd_close (nbd);
    return NULL;
  }
  return nbd;
}

static void close_handle (struct nbd_handle *nbd, bool polite);

/* Connect to c and read its capabilities into *caps.
 *
 * With structured replies (needed for block status) a server sends a
 * read's data behind a chunk header and an offset, which libnbd reads
 * with two more system calls than a plain reply's: on small reads that
 * was a fifth of the front's CPU.  So reads and writes go over a
 * connection without them (*nbd) whenever possible:
 *  - a child without block status needs them for nothing: the probing
 *    connection is replaced by a plain one;
 *  - one with block status keeps the probing connection for it (*meta)
 *    if it advertises multi-conn, without which a second connection
 *    might not see the first one's writes (a stale hole loses data),
 *    and can flush, as multi-conn promises only that a flush makes
 *    writes visible on every connection: the engine flushes before it
 *    asks *meta about writes done since the last flush.
 * Never for child-command (each connection would start a server).
 * Otherwise, and if the plain connection fails, *meta is NULL and *nbd
 * does everything.
 */
static int
child_open (struct child *c, int quit_fd, struct quorum_caps *caps,
            struct nbd_handle **nbd, struct nbd_handle **meta, char **why)
{
  struct nbd_handle *first, *plain;

  first = child_open_handle (c, quit_fd, true, why);
  if (first == NULL)
    return -1;
  child_get_caps (c, first, caps);
  *nbd = first;
  *meta = NULL;
  if (c->command)
    return 0;
  if (!caps->can_extents) {
    plain = child_open_plain (c, quit_fd, caps);
    if (plain) {
      close_handle (first, true);
      *nbd = plain;
    }
  }
  else if (caps->can_multi_conn && (caps->can_flush || !caps->can_write)) {
    plain = child_open_plain (c, quit_fd, caps);
    if (plain) {
      *nbd = plain;
      *meta = first;
    }
  }
  return 0;
}

/* Close c's handles, politely if they still work. */
static void
close_handle (struct nbd_handle *nbd, bool polite)
{
  if (nbd == NULL)
    return;
  if (polite && nbd_aio_is_ready (nbd))
    nbd_shutdown (nbd, 0);
  nbd_close (nbd);
}

/* A descriptor of our own for nbd's socket: libnbd closes its own when
 * the connection dies, in whichever thread sees that, and the number
 * could be reused at once by any other open; ours is closed only when
 * the reactor lets go.
 */
static int
dup_fd (struct nbd_handle *nbd)
{
  int fd = nbd ? nbd_aio_get_fd (nbd) : -1;

  return fd >= 0 ? fcntl (fd, F_DUPFD_CLOEXEC, 0) : -1;
}

/* Hand c's handles to the reactor. */
static void
child_start_io (struct child *c)
{
  pthread_mutex_lock (&reactor_lock);
  c->io_fd = dup_fd (c->nbd);
  c->meta_fd = dup_fd (c->meta);
  c->io_stop = false;
  c->io_lost = false;
  c->io_why[0] = '\0';
  c->serving = true;
  pthread_mutex_unlock (&reactor_lock);
  reactor_kick ();
}

/* Take it back, once libnbd has retired every command on it. */
static void
child_stop_io (struct child *c)
{
  pthread_mutex_lock (&reactor_lock);
  if (c->serving) {
    c->io_stop = true;
    reactor_kick ();
    while (c->serving)
      pthread_cond_wait (&reactor_cond, &reactor_lock);
  }
  pthread_mutex_unlock (&reactor_lock);
}

/* For control's status: a resync of what is stale now begins. */
static void
resync_progress_begin (struct child *c, uint64_t gsize)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  __atomic_store_n (&c->resync_total,
                    __atomic_load_n (&c->nr_dirty, __ATOMIC_ACQUIRE) * gsize,
                    __ATOMIC_RELEASE);
  __atomic_store_n (&c->resync_done, 0, __ATOMIC_RELEASE);
  __atomic_store_n (&c->resync_since,
                    (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec,
                    __ATOMIC_RELEASE);
}

/* Copy every dirty region to c from the quorum.  -1 if c went down. */
static int
child_resync (struct child *c)
{
  uint64_t gsize = UINT64_C (1) << DIRTY_SHIFT;
  uint64_t nr_granules = ((uint64_t) export_size + gsize - 1) >> DIRTY_SHIFT;
  uint64_t g, copied = 0, skipped = 0;
  struct range_lock rl;

  report_resync ("resync-start", c->index,
                 __atomic_load_n (&c->nr_dirty, __ATOMIC_ACQUIRE) * gsize, 0);
  resync_progress_begin (c, gsize);

  /* Writers that saw this child down mark its map when they finish:
   * wait for every one in flight, after which all include the child.
   */
  range_lock (&rl, 0, export_size, true);
  range_unlock (&rl);

  for (g = 0; g < nr_granules; ) {
    uint64_t run = 0, offset, count;

    if (child_get_state (c) == CHILD_DOWN ||
        __atomic_load_n (&c->quit, __ATOMIC_ACQUIRE)) {
      __atomic_store_n (&c->resync_since, 0, __ATOMIC_RELEASE);
      return -1;
    }
    if (!(__atomic_load_n (&c->dirty[g >> 6], __ATOMIC_ACQUIRE) &
          (UINT64_C (1) << (g & 63)))) {
      g++;
      continue;
    }
    /* Up to 1 MiB of consecutive dirty granules at a time. */
    while (g + run < nr_granules && run < 16 &&
           (__atomic_load_n (&c->dirty[(g + run) >> 6], __ATOMIC_ACQUIRE) &
            (UINT64_C (1) << ((g + run) & 63))))
      run++;
    offset = g * gsize;
    count = run * gsize;
    if (offset + count > (uint64_t) export_size)
      count = export_size - offset;
    if (engine_resync_range (c, offset, count) == 0) {
      copied += count;
      __atomic_add_fetch (&c->resync_done, count, __ATOMIC_RELEASE);
    }
    else
      skipped += count;
    g += run;
  }

  report_resync ("resync-end", c->index,
                 __atomic_load_n (&c->nr_dirty, __ATOMIC_ACQUIRE) * gsize,
                 copied);
  __atomic_store_n (&c->resync_since, 0, __ATOMIC_RELEASE);
  (void) skipped;
  return 0;
}

/* Sleep for seconds, or until cleanup.  false if we must stop. */
static bool
child_backoff (struct child *c, unsigned seconds)
{
  struct timespec deadline;
  bool quit;

  clock_gettime (CLOCK_REALTIME, &deadline);
  deadline.tv_sec += seconds;
  pthread_mutex_lock (&c->state_lock);
  while (!c->quit &&
         pthread_cond_timedwait (&c->state_cond, &c->state_lock,
                                 &deadline) != ETIMEDOUT)
    ;
  quit = c->quit;
  pthread_mutex_unlock (&c->state_lock);
  return !quit;
}

/* Whether c, offering caps, may join: it must offer what the export
 * promised that the engine cannot make up for it (engine_caps_lacking).
 * Else it is said why, and it stays down.
 */
static bool
child_fits (struct child *c, const struct quorum_caps *caps)
{
  char buf[128];
  const char *lack = engine_caps_lacking (caps, buf, sizeof buf);

  if (lack == NULL)
    return true;
  nbdkit_error ("quorum: child %zu (%s): not joining: it %s; next try "
                "in %u s", c->index, c->name, lack, quorum_reconnect_max);
  return false;
}

static void *
child_supervisor (void *vp)
{
  struct child *c = vp;
  unsigned delay = quorum_reconnect_delay;

  for (;;) {
    struct nbd_handle *nbd, *meta, *old, *old_meta;
    struct quorum_caps caps;
    char *why = NULL;

    pthread_mutex_lock (&c->state_lock);
    while (!c->quit && c->state != CHILD_DOWN)
      pthread_cond_wait (&c->state_cond, &c->state_lock);
    if (c->quit) {
      pthread_mutex_unlock (&c->state_lock);
      break;
    }
    pthread_mutex_unlock (&c->state_lock);

    /* The reactor saw the death and let go, or is told to. */
    child_stop_io (c);

    if (!child_backoff (c, delay))
      break;
    if (child_open (c, c->quit_pipe[0], &caps, &nbd, &meta, &why) == -1) {
      /* Both at most a day: the double cannot wrap. */
      delay = delay * 2 < quorum_reconnect_max ?
        delay * 2 : quorum_reconnect_max;
      nbdkit_debug ("quorum: child %zu (%s): reconnect failed: %s; next "
                    "try in %u s", c->index, c->name,
                    why ? why : "out of memory", delay);
      free (why);
      continue;
    }
    if (caps.size != export_size) {
      nbdkit_error ("quorum: child %zu (%s): came back with size %" PRIi64
                    ", not %" PRIi64 ": not rejoining", c->index, c->name,
                    caps.size, export_size);
      close_handle (nbd, true);
      close_handle (meta, true);
      delay = quorum_reconnect_max;
      continue;
    }

    if (!child_fits (c, &caps)) {
      close_handle (nbd, true);
      close_handle (meta, true);
      delay = quorum_reconnect_max;
      continue;
    }

    pthread_rwlock_wrlock (&c->nbd_lock);
    old = c->nbd;
    old_meta = c->meta;
    c->nbd = nbd;
    /* child_meta_stale reads it without the lock. */
    __atomic_store_n (&c->meta, meta, __ATOMIC_RELEASE);
    /* Commands read them under the lock: they go with the handle. */
    c->caps = caps;
    c->caps_known = true;
    pthread_rwlock_unlock (&c->nbd_lock);
    /* Dead, or idle and cut: their commands were all retired. */
    close_handle (old, false);
    close_handle (old_meta, false);
    child_start_io (c);

    pthread_mutex_lock (&c->state_lock);
    set_state_locked (c, CHILD_RESYNC);
    pthread_mutex_unlock (&c->state_lock);
    report_up (c->index);
    delay = quorum_reconnect_delay;

    if (child_resync (c) == 0) {
      SCOPED_LOCK (&c->state_lock);
      if (c->state == CHILD_RESYNC)
        set_state_locked (c, CHILD_UP);
    }
  }
  return NULL;
}

/* A child-command server is a child process of the process that
 * started it, and nbdkit forks after .get_ready (to daemonize, or to
 * run the --run command) and serves from the new process, which could
 * neither wait for a server started before nor be sure to stop it.  So
 * the server started in .get_ready only checks the child at start-up
 * and is stopped there; the serving process starts its own.
 */
static void
child_stop_command (struct child *c)
{
  close_handle (c->nbd, false); /* kills the server and waits for it */
  c->nbd = NULL;
}

static int
child_start_command (struct child *c)
{
  struct quorum_caps caps;
  char *why = NULL;

  if (!c->caps_known)           /* unreachable at start-up: the */
    return 0;                   /* supervisor keeps trying */
  if (child_open (c, -1, &caps, &c->nbd, &c->meta, &why) == -1) {
    nbdkit_error ("child-command=%s: cannot start child %zu again after "
                  "nbdkit forked: %s", c->command, c->index,
                  why ? why : "out of memory");
    free (why);
    return -1;
  }
  if (caps.size != export_size) {
    nbdkit_error ("child-command=%s: child %zu changed size from %" PRIi64
                  " to %" PRIi64 " when started again", c->command,
                  c->index, export_size, caps.size);
    return -1;
  }
  if (!child_fits (c, &caps))
    return -1;
  c->caps = caps;
  return 0;
}

int
child_connect_all (void)
{
  size_t i, first = quorum_has_local ? 1 : 0, reachable = first;
  size_t ref = SIZE_MAX;        /* first reachable remote child */
  bool same = true;

  for (i = first; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];
    char *why = NULL;

    if (child_open (c, -1, &c->caps, &c->nbd, &c->meta, &why) == -1) {
      if (!quorum_start_degraded) {
        nbdkit_error ("%s=%s: cannot connect to child %zu: %s (see "
                      "start-degraded)",
                      c->command ? "child-command" : "child",
                      c->command ? c->command : c->name, c->index,
                      why ? why : "out of memory");
        free (why);
        return -1;
      }
      nbdkit_error ("quorum: child %zu (%s): unreachable at start-up: %s",
                    c->index, c->name, why ? why : "out of memory");
      free (why);
      c->state = CHILD_DOWN;
      continue;
    }
    c->caps_known = true;
    reachable++;
    if (ref == SIZE_MAX)
      ref = i;
    else if (c->caps.size != quorum_children[ref].caps.size)
      same = false;
    nbdkit_debug ("quorum: child %zu (%s): size %" PRIi64 "%s%s",
                  c->index, c->name, c->caps.size,
                  c->caps.can_write ? "" : ", read-only",
                  c->meta ? ", block status on a second connection" : "");
  }

  if (ref == SIZE_MAX || reachable < quorum_threshold) {
    nbdkit_error ("start-degraded=true: only %zu of %zu children are "
                  "reachable%s, vote-threshold is %u: refusing to start",
                  reachable, quorum_nr_children,
                  ref == SIZE_MAX ? " (no remote child)" : "",
                  quorum_threshold);
    return -1;
  }

  if (!same) {
    char *msg = NULL;
    size_t len = 0;
    FILE *fp = open_memstream (&msg, &len);

    if (fp) {
      for (i = first; i < quorum_nr_children; ++i)
        if (quorum_children[i].caps_known)
          fprintf (fp, "%s child %zu (%s): %" PRIi64,
                   i > first ? "," : "", i, quorum_children[i].name,
                   quorum_children[i].caps.size);
      fclose (fp);
    }
    nbdkit_error ("quorum: children have different sizes, refusing to "
                  "start:%s", msg ? msg : " (out of memory)");
    free (msg);
    return -1;
  }
  export_size = quorum_children[ref].caps.size;

  for (i = first; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];
    uint64_t nr_granules =
      ((uint64_t) export_size + (UINT64_C (1) << DIRTY_SHIFT) - 1)
      >> DIRTY_SHIFT;
    uint64_t words = (nr_granules + 63) / 64;

    c->dirty = calloc (words ? words : 1, sizeof (uint64_t));
    if (c->dirty == NULL) {
      nbdkit_error ("calloc: %m");
      return -1;
    }
    /* Unreachable at start: nothing it holds can be trusted. */
    if (c->state == CHILD_DOWN) {
      child_mark_dirty (c, 0, export_size);
      report_down (c->index, "unreachable");
    }
    if (c->command)
      child_stop_command (c);
  }
  return 0;
}

int
child_start_all (void)
{
  size_t i;
  int err;

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];

    if (child_is_local (c))
      continue;
    if (c->command && child_start_command (c) == -1)
      return -1;
    if (pipe2 (c->quit_pipe, O_CLOEXEC) == -1) {
      nbdkit_error ("pipe2: %m");
      return -1;
    }
  }

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

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];

    if (child_is_local (c))
      continue;
    if (c->nbd)
      child_start_io (c);
    err = pthread_create (&c->supervisor, NULL, child_supervisor, c);
    if (err) {
      errno = err;
      nbdkit_error ("pthread_create: %m");
      return -1;
    }
    c->supervisor_running = true;
  }
  return 0;
}

static void
close_pair (int fds[2])
{
  if (fds[0] >= 0)
    close (fds[0]);
  if (fds[1] >= 0)
    close (fds[1]);
  fds[0] = fds[1] = -1;
}

void
child_disconnect_all (void)
{
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];

    if (c->supervisor_running) {
      pthread_mutex_lock (&c->state_lock);
      __atomic_store_n (&c->quit, true, __ATOMIC_RELEASE);
      pthread_cond_broadcast (&c->state_cond);
      pthread_mutex_unlock (&c->state_lock);
      close (c->quit_pipe[1]);  /* interrupts a handshake */
      c->quit_pipe[1] = -1;
      pthread_join (c->supervisor, NULL);
      c->supervisor_running = false;
    }
    if (reactor_running)
      child_stop_io (c);
    close_pair (c->quit_pipe);
    close_handle (c->nbd, true);
    close_handle (c->meta, true);
    c->nbd = c->meta = NULL;
  }

  if (reactor_running) {
    pthread_mutex_lock (&reactor_lock);
    reactor_quit = true;
    pthread_mutex_unlock (&reactor_lock);
    reactor_kick ();
    pthread_join (reactor, NULL);
    reactor_running = false;
  }
  close_pair (reactor_wake);
}
