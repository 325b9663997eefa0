/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Remote children: one libnbd handle per child, shared by every client
 * connection, with an I/O thread that waits on the socket and feeds
 * replies to libnbd, which runs the completion callbacks there.
 * Request threads queue commands with nbd_aio_* (libnbd locks the
 * handle) and kick the I/O thread when libnbd has data left to send.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "internal.h"

static void *
child_io_thread (void *vp)
{
  struct child *c = vp;
  int fd = nbd_aio_get_fd (c->nbd);

  for (;;) {
    struct pollfd fds[2];
    unsigned dir = nbd_aio_get_direction (c->nbd);

    fds[0].fd = fd;
    fds[0].events = 0;
    fds[0].revents = 0;
    if (dir & LIBNBD_AIO_DIRECTION_READ)
      fds[0].events |= POLLIN;
    if (dir & LIBNBD_AIO_DIRECTION_WRITE)
      fds[0].events |= POLLOUT;
    fds[1].fd = c->wake[0];
    fds[1].events = POLLIN;
    fds[1].revents = 0;

    if (poll (fds, 2, -1) == -1) {
      if (errno == EINTR)
        continue;
      nbdkit_error ("quorum: child %zu (%s): poll: %m", c->index, c->name);
      break;
    }

    if (fds[1].revents & (POLLIN | POLLHUP)) {
      char buf[64];
      ssize_t r = read (c->wake[0], buf, sizeof buf);

      /* The write end closed: we are asked to stop. */
      if (r == 0)
        break;
    }

    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR))
      nbd_aio_notify_read (c->nbd);
    else if (fds[0].revents & POLLOUT)
      nbd_aio_notify_write (c->nbd);

    /* When the connection dies libnbd fails every command in flight and
     * refuses new ones at once, so nobody waits on a dead child.
     */
    if (nbd_aio_is_dead (c->nbd) || nbd_aio_is_closed (c->nbd)) {
      nbdkit_error ("quorum: child %zu (%s): connection lost: %s",
                    c->index, c->name, nbd_get_error () ?: "closed");
      break;
    }
  }
  return NULL;
}

void
child_kick (struct child *c)
{
  /* Only needed when libnbd could not send everything at once: the I/O
   * thread may be polling for input only.
   */
  if (nbd_aio_get_direction (c->nbd) & LIBNBD_AIO_DIRECTION_WRITE) {
    char ch = 0;
    ssize_t r = write (c->wake[1], &ch, 1);
    (void) r;         /* a full pipe already wakes the thread */
  }
}

void
child_abort (struct child *c, const char *why)
{
  int fd = nbd_aio_get_fd (c->nbd);

  nbdkit_error ("quorum: child %zu (%s): %s: disconnecting", c->index,
                c->name, why);
  /* shutdown(2), not close(2): the descriptor stays libnbd's, and the
   * I/O thread sees end of file, so libnbd retires every command.
   */
  if (fd >= 0)
    shutdown (fd, SHUT_RDWR);
}

static void
child_get_caps (struct child *c)
{
  struct nbd_handle *nbd = c->nbd;
  int64_t r;

  c->caps.size = nbd_get_size (nbd);
  c->caps.can_write = nbd_is_read_only (nbd) == 0;
  c->caps.can_flush = nbd_can_flush (nbd) == 1;
  c->caps.can_trim = nbd_can_trim (nbd) == 1;
  c->caps.can_zero = nbd_can_zero (nbd) == 1;
  c->caps.can_fast_zero = nbd_can_fast_zero (nbd) == 1;
  c->caps.can_fua = nbd_can_fua (nbd) == 1;
  c->caps.can_extents =
    nbd_can_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  c->caps.can_multi_conn = nbd_can_multi_conn (nbd) == 1;
  c->caps.can_cache = nbd_can_cache (nbd) == 1;
  c->caps.is_rotational = nbd_is_rotational (nbd) == 1;
  r = nbd_get_block_size (nbd, LIBNBD_SIZE_MINIMUM);
  c->caps.block_min = r > 0 ? r : 0;
  r = nbd_get_block_size (nbd, LIBNBD_SIZE_PREFERRED);
  c->caps.block_pref = r > 0 ? r : 0;
  r = nbd_get_block_size (nbd, LIBNBD_SIZE_MAXIMUM);
  c->caps.block_max = r > 0 ? r : 0;
}

static int
child_connect (struct child *c)
{
  c->nbd = nbd_create ();
  if (c->nbd == NULL)
    goto err_nbd;
  /* The operator wrote these URIs: let them name TLS key files. */
  if (nbd_set_uri_allow_local_file (c->nbd, true) == -1 ||
      nbd_add_meta_context (c->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1)
    goto err_nbd;
  if (nbd_connect_uri (c->nbd, c->uri) == -1)
    goto err_nbd;

  child_get_caps (c);
  if (c->caps.size < 0)
    goto err_nbd;
  nbdkit_debug ("quorum: child %zu (%s): size %" PRIi64 "%s",
                c->index, c->name, c->caps.size,
                c->caps.can_write ? "" : ", read-only");
  return 0;

 err_nbd:
  /* libnbd's message names the cause (refused, no such socket, TLS). */
  nbdkit_error ("child=%s: cannot connect to child %zu: %s",
                c->name, c->index, nbd_get_error () ?: "out of memory");
  nbd_close (c->nbd);
  c->nbd = NULL;
  return -1;
}

/* Threads do not survive nbdkit's fork, so they start afterwards. */
static int
child_start_thread (struct child *c)
{
  int err;

  if (pipe2 (c->wake, O_CLOEXEC) == -1) {
    nbdkit_error ("pipe2: %m");
    goto err_pipe;
  }
  /* A full pipe must not block a request thread. */
  if (fcntl (c->wake[1], F_SETFL, O_NONBLOCK) == -1) {
    nbdkit_error ("fcntl: %m");
    goto err_thread;
  }
  err = pthread_create (&c->thread, NULL, child_io_thread, c);
  if (err) {
    errno = err;
    nbdkit_error ("pthread_create: %m");
    goto err_thread;
  }
  c->thread_running = true;
  return 0;

 err_thread:
  close (c->wake[0]);
  close (c->wake[1]);
  c->wake[0] = c->wake[1] = -1;
 err_pipe:
  return -1;
}

int
child_start_all (void)
{
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i)
    if (quorum_children[i].nbd &&
        child_start_thread (&quorum_children[i]) == -1)
      return -1;
  return 0;
}

int
child_connect_all (void)
{
  size_t i, first = quorum_has_local ? 1 : 0;
  bool same = true;

  for (i = first; i < quorum_nr_children; ++i)
    if (child_connect (&quorum_children[i]) == -1)
      return -1;

  for (i = first + 1; i < quorum_nr_children; ++i)
    if (quorum_children[i].caps.size != quorum_children[first].caps.size)
      same = false;
  if (!same) {
    char *msg = NULL;
    size_t len = 0;
    FILE *fp = open_memstream (&msg, &len);

    if (fp) {
      for (i = first; i < quorum_nr_children; ++i)
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
  return 0;
}

void
child_disconnect_all (void)
{
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];

    if (c->thread_running) {
      /* Closing the write end makes the I/O thread's read return 0. */
      close (c->wake[1]);
      c->wake[1] = -1;
      pthread_join (c->thread, NULL);
      c->thread_running = false;
      close (c->wake[0]);
      c->wake[0] = -1;
    }
    if (c->nbd) {
      nbd_shutdown (c->nbd, 0);
      nbd_close (c->nbd);
      c->nbd = NULL;
    }
  }
}
