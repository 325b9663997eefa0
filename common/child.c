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
#include "connect.h"
#include "dirty.h"
#include "internal.h"
#include "rangelock.h"
#include "reactor.h"
#include "state.h"

/* The size every child must have, from the first remote child. */
static int64_t export_size;

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
    if (connect_child (c, c->quit_pipe[0], &caps, &nbd, &meta, &why) == -1) {
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
      connect_close (nbd, true);
      connect_close (meta, true);
      delay = quorum_reconnect_max;
      continue;
    }

    if (!child_fits (c, &caps)) {
      connect_close (nbd, true);
      connect_close (meta, true);
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
    connect_close (old, false);
    connect_close (old_meta, false);
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
  connect_close (c->nbd, false); /* kills the server and waits for it */
  c->nbd = NULL;
}

static int
child_start_command (struct child *c)
{
  struct quorum_caps caps;
  char *why = NULL;

  if (!c->caps_known)           /* unreachable at start-up: the */
    return 0;                   /* supervisor keeps trying */
  if (connect_child (c, -1, &caps, &c->nbd, &c->meta, &why) == -1) {
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

    if (connect_child (c, -1, &c->caps, &c->nbd, &c->meta, &why) == -1) {
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
    connect_close (c->nbd, true);
    connect_close (c->meta, true);
    c->nbd = c->meta = NULL;
  }

  reactor_stop ();
}
