/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The engine's life: connecting every remote child at start-up (before
 * nbdkit forks), starting the reactor and the supervisors after the
 * fork, stopping them at cleanup.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "cleanup.h"
#include "connect.h"
#include "control.h"
#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "reactor.h"
#include "replace.h"
#include "resync.h"
#include "scrub.h"
#include "state.h"

/* The size every child must have, from the first remote child. */
int64_t quorum_export_size;

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
  if (caps.size != quorum_export_size) {
    nbdkit_error ("child-command=%s: child %zu changed size from %" PRIi64
                  " to %" PRIi64 " when started again", c->command,
                  c->index, quorum_export_size, caps.size);
    return -1;
  }
  if (!caps_fit (c, &caps))
    return -1;
  c->caps = caps;
  return 0;
}

/* Over 80 lines: start-up checks in order (reachable, threshold, one
 * size, maps), each with its own message.
 */
int
lifecycle_connect_all (void)
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
                      c->command ? c->command : child_name (c), c->index,
                      why ? why : "out of memory");
        free (why);
        return -1;
      }
      nbdkit_error ("quorum: child %zu (%s): unreachable at start-up: %s",
                    c->index, child_name (c), why ? why : "out of memory");
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
                  c->index, child_name (c), c->caps.size,
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
  quorum_export_size = quorum_children[ref].caps.size;

  if (fresh_init () == -1 || fresh_spare_init () == -1)
    return -1;
  for (i = first; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];

    if (c->command)
      child_stop_command (c);
  }
  return 0;
}

int
lifecycle_start_all (void)
{
  size_t i;
  int err;

  replace_set_supervisor (resync_supervisor);
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
    err = pthread_create (&c->supervisor, NULL, resync_supervisor, c);
    if (err) {
      errno = err;
      nbdkit_error ("pthread_create: %m");
      return -1;
    }
    c->supervisor_running = true;
  }
  return resync_start ();
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
lifecycle_disconnect_all (void)
{
  size_t i;

  replace_stop ();
  resync_stop ();
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

/* The locks and links of children[], which config-complete.c built
 * from the parameters; before any thread, and before cleanup may touch
 * them.
 */
static bool lifecycle_inited;

static void
lifecycle_init_children (void)
{
  size_t i;

  /* The spare too (internal.h). */
  for (i = 0; i < quorum_nr_slots (); ++i) {
    struct child *c = &quorum_children[i];

    reactor_link_init (c);
    c->quit_pipe[0] = c->quit_pipe[1] = -1;
    pthread_rwlock_init (&c->nbd_lock, NULL);
    state_init (c);
  }
  lifecycle_inited = true;
}

int
quorum_get_ready (const char *ident)
{
  lifecycle_init_children ();
  if (report_open (ident) == -1)
    return -1;
  if (control_listen () == -1)
    return -1;
  if (lifecycle_connect_all () == -1) {
    control_stop ();            /* leaves no socket behind */
    return -1;
  }
  caps_promise_init ();
  return 0;
}

int
quorum_after_fork (const struct quorum_local_ops *local, void *local_ctx)
{
  resync_set_source (local, local_ctx);
  scrub_set_source (local, local_ctx);
  if (control_start () == -1)
    return -1;
  if (fresh_start () == -1)
    return -1;
  if (lifecycle_start_all () == -1)
    return -1;
  return scrub_resume ();
}

void
quorum_cleanup (void)
{
  control_stop ();
  /* wait-for=threshold: what the late children still owe lands first. */
  fanout_late_stop ();
  if (lifecycle_inited)
    lifecycle_disconnect_all ();
  report_summary ();
  fresh_stop ();
  report_close ();
  bufpool_drain ();
}

