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
#include "dirty.h"
#include "internal.h"
#include "rangelock.h"
#include "reactor.h"
#include "state.h"

/* The size every child must have, from the first remote child. */
static int64_t export_size;

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

/* Copy every dirty region to c from the quorum.  -1 if c went down. */
static int
child_resync (struct child *c)
{
  uint64_t pos = 0, offset, count, copied = 0;
  struct range_lock rl;

  report_resync ("resync-start", c->index, dirty_bytes (&c->dirty), 0);

  /* Writers that saw this child down mark its map when they finish:
   * wait for every one in flight, after which all include the child.
   */
  range_lock (&rl, 0, export_size, true);
  range_unlock (&rl);

  for (;;) {
    if (state_get (c) == CHILD_DOWN ||
        state_quitting (c))
      return -1;
    /* Up to 1 MiB of consecutive dirty granules at a time. */
    if (!dirty_next_run (&c->dirty, &pos, 16, &offset, &count))
      break;
    if (engine_resync_range (c, offset, count) == 0)
      copied += count;
  }

  report_resync ("resync-end", c->index, dirty_bytes (&c->dirty), copied);
  return 0;
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

    if (!state_wait_down (c))
      break;

    /* The reactor saw the death and let go, or is told to. */
    reactor_release (c);

    if (!state_sleep (c, delay))
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
    reactor_serve (c);

    state_set (c, CHILD_RESYNC);
    report_up (c->index);
    delay = quorum_reconnect_delay;

    if (child_resync (c) == 0)
      state_resync_done (c);
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
      state_set (c, CHILD_DOWN);
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

    if (dirty_init (&c->dirty, export_size) == -1) {
      nbdkit_error ("calloc: %m");
      return -1;
    }
    /* Unreachable at start: nothing it holds can be trusted. */
    if (state_get (c) == CHILD_DOWN) {
      dirty_mark (&c->dirty, 0, export_size);
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

  if (reactor_start () == -1)
    return -1;

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];

    if (child_is_local (c))
      continue;
    if (c->nbd)
      reactor_serve (c);
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
      state_quit (c);
      close (c->quit_pipe[1]);  /* interrupts a handshake */
      c->quit_pipe[1] = -1;
      pthread_join (c->supervisor, NULL);
      c->supervisor_running = false;
    }
    reactor_release (c);
    close_pair (c->quit_pipe);
    close_handle (c->nbd, true);
    close_handle (c->meta, true);
    c->nbd = c->meta = NULL;
  }

  reactor_stop ();
}
