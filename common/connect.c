/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Opening a remote child's handles: the plain data connection and the
 * block status one, and the capabilities of one child.  Called by the
 * supervisor and at start-up, never on the data path.
 */

#include <config.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "cleanup.h"
#include "connect.h"
#include "internal.h"

static void
connect_caps (struct nbd_handle *nbd, struct quorum_caps *caps)
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
 * kernel caps it at net.core.wmem_max, and doubles it); see
 * bench/NOTES.md for what it saved.  TCP tunes its own buffers: setting one would stop
 * that, so only Unix sockets.
 */
static void
connect_widen_send_buffer (int fd)
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
/* Over 80 lines: one handshake, set up, polled and unwound in one
 * place, so that every exit closes the handle.
 */
static struct nbd_handle *
connect_handle (struct child *c, int quit_fd, bool structured, char **why)
{
  struct nbd_handle *nbd;
  struct timespec start, now;

  clock_gettime (CLOCK_MONOTONIC, &start);
  nbd = nbd_create ();
  if (nbd == NULL)
    goto err;
  /* libnbd zeroes every read buffer first, in case a caller looks at
   * the buffer of a failed read: the engine never does (a failed child
   * has no vote), and that memset is costly on sequential reads
   * (bench/NOTES.md).
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
        quorum_ns_between (&start, &now) / 1000000;
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
  connect_widen_send_buffer (nbd_aio_get_fd (nbd));
  /* What each reply costs to read depends on the reply header: plain
   * (16 bytes, then the data), structured (20, then chunks) or, on
   * libnbd >= 1.18 with a server that offers it, extended (32).
   */
  nbdkit_debug ("quorum: child %zu (%s): connected, %s replies", c->index,
                child_name (c),
#ifdef HAVE_NBD_GET_EXTENDED_HEADERS_NEGOTIATED
                nbd_get_extended_headers_negotiated (nbd) == 1 ? "extended" :
#endif
                nbd_get_structured_replies_negotiated (nbd) == 1 ?
                "structured" : "plain");
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
connect_plain (struct child *c, int quit_fd,
               const struct quorum_caps *caps)
{
  struct nbd_handle *nbd;
  char *why = NULL;

  nbd = connect_handle (c, quit_fd, false, &why);
  if (nbd == NULL) {
    nbdkit_debug ("quorum: child %zu (%s): second connection failed: %s: "
                  "one connection does everything", c->index, child_name (c),
                  why ? why : "out of memory");
    free (why);
    return NULL;
  }
  if (nbd_get_size (nbd) != caps->size ||
      (nbd_is_read_only (nbd) == 0) != caps->can_write) {
    nbdkit_debug ("quorum: child %zu (%s): second connection differs in "
                  "size or read-only: one connection does everything",
                  c->index, child_name (c));
    nbd_close (nbd);
    return NULL;
  }
  return nbd;
}

/* See connect.h for which connection does what. */
int
connect_child (struct child *c, int quit_fd, struct quorum_caps *caps,
               struct nbd_handle **nbd, struct nbd_handle **meta,
               char **why)
{
  struct nbd_handle *first, *plain;

  first = connect_handle (c, quit_fd, true, why);
  if (first == NULL)
    return -1;
  connect_caps (first, caps);
  *nbd = first;
  *meta = NULL;
  if (c->command)
    return 0;
  if (!caps->can_extents) {
    plain = connect_plain (c, quit_fd, caps);
    if (plain) {
      connect_close (first, true);
      *nbd = plain;
    }
  }
  else if (caps->can_multi_conn && (caps->can_flush || !caps->can_write)) {
    plain = connect_plain (c, quit_fd, caps);
    if (plain) {
      *nbd = plain;
      *meta = first;
    }
  }
  return 0;
}

void
connect_close (struct nbd_handle *nbd, bool polite)
{
  if (nbd == NULL)
    return;
  if (polite && nbd_aio_is_ready (nbd))
    nbd_shutdown (nbd, 0);
  nbd_close (nbd);
}

void
connect_install (struct child *c, struct nbd_handle *nbd,
                 struct nbd_handle *meta, const struct quorum_caps *caps,
                 struct nbd_handle **old, struct nbd_handle **old_meta)
{
  pthread_rwlock_wrlock (&c->nbd_lock);
  *old = c->nbd;
  *old_meta = c->meta;
  c->nbd = nbd;
  /* child_meta_stale reads it without the lock. */
  __atomic_store_n (&c->meta, meta, __ATOMIC_RELEASE);
  /* Commands read them under the lock: they go with the handle. */
  c->caps = *caps;
  c->caps_known = true;
  pthread_rwlock_unlock (&c->nbd_lock);
}
