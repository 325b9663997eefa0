/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* replace N URI: the new server is connected as the spare, the slot
 * one past the children (internal.h), and is wholly stale.  From then
 * on the fan-out sends it every write, zero and trim (fanout.c); it
 * takes no part in reads or votes.  Its own supervisor rebuilds it in
 * the background like any child that lost its contents (resync.c:
 * copied from vote-threshold agreeing children, zeroed where they all
 * report zeroes, at resync-rate=, reconnected with backoff if it dies
 * meanwhile).  Child N keeps voting all along, as mdadm --replace
 * does.
 *
 * Once the spare is complete, N's own supervisor (which alone changes
 * N's handles) swaps it in, holding the whole export's range and the
 * flush lock, so that no write or flush is in flight: the spare is
 * flushed, N gets a new connection to the new server and its name,
 * state= records the new name (before N's stale map is cleared: a
 * restart with either URI is then safe), N is current everywhere, and
 * the old server's connection is closed.  The spare's connection goes
 * too.  A replace in progress is in memory only: a restart forgets it
 * and keeps the old child.  (Keeping it would mean keeping the new
 * server's URI, which may hold a password, in the state file, and a
 * stale map for a slot that is no member.)
 *
 * replace N --cancel (replace_cancel) takes the same range and lock as
 * the swap, so that either the swap is done or the spare leaves the
 * fan-out with nothing in flight to it; then its supervisor is stopped
 * and its connection closed, and child N never knew.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "connect.h"
#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "rangelock.h"
#include "reactor.h"
#include "replace.h"
#include "state.h"

/* The replace in progress.  target and ready are written by the
 * control thread (replace_start), the spare's supervisor
 * (replace_rebuilt) and the target's (the swap), read atomically.
 */
static size_t target = SIZE_MAX;
static bool ready;              /* the spare is complete: swap it in */
/* Swaps being tried (atomic): one reads the spare's name and URI, so
 * a new replace must not free them meanwhile.
 */
static unsigned swapping;

/* The spare's supervisor thread (replace_set_supervisor). */
static void *(*spare_supervisor) (void *);

void
replace_set_supervisor (void *(*supervisor) (void *))
{
  spare_supervisor = supervisor;
}

/* The swap's flush of the spare, outside any client connection. */
static struct quorum_conn replace_conn;

static struct child *
spare_child (void)
{
  if (quorum_nr_slots () == quorum_nr_children)
    return NULL;
  return &quorum_children[quorum_nr_children];
}

size_t
replace_target (void)
{
  return __atomic_load_n (&target, __ATOMIC_ACQUIRE);
}

const char *
replace_name (void)
{
  struct child *s = spare_child ();
  const char *name = s ? child_name (s) : NULL;

  return name ? name : "";
}

/* The spare's supervisor is done (it quit): join it, let go of its
 * handles.
 */
static void
spare_retire (struct child *s)
{
  if (s->supervisor_running) {
    state_quit (s);
    if (s->quit_pipe[1] >= 0) {
      close (s->quit_pipe[1]);  /* interrupts a handshake */
      s->quit_pipe[1] = -1;
    }
    pthread_join (s->supervisor, NULL);
    s->supervisor_running = false;
  }
  reactor_release (s);
  connect_close (s->nbd, true);
  connect_close (s->meta, true);
  s->nbd = s->meta = NULL;
  if (s->quit_pipe[0] >= 0) {
    close (s->quit_pipe[0]);
    s->quit_pipe[0] = -1;
  }
}

/* Over 80 lines: each check has its own refusal. */
int
replace_start (size_t n, const char *uri, char *err, size_t errlen)
{
  struct child *c = &quorum_children[n], *s = spare_child ();
  struct nbd_handle *nbd = NULL, *meta = NULL;
  struct quorum_caps caps;
  char *why = NULL, *disk = NULL, *name, buf[128];
  const char *lack;
  size_t i;
  int e;

  if (child_is_local (c)) {
    snprintf (err, errlen, "replace %zu: child %zu is the filter's plugin, "
              "which cannot be replaced", n, n);
    return -1;
  }
  if (c->command) {
    snprintf (err, errlen, "replace %zu: child %zu is a child-command= "
              "child: only child=URI children can be replaced", n, n);
    return -1;
  }
  if (s == NULL) {
    snprintf (err, errlen, "replace %zu: there is no slot for the new "
              "server beside %d children", n, VOTE_MAX_CHILDREN);
    return -1;
  }
  if (replace_target () != SIZE_MAX) {
    snprintf (err, errlen, "replace %zu: child %zu is being replaced "
              "already (by %s)", n, replace_target (), replace_name ());
    return -1;
  }
  if (__atomic_load_n (&swapping, __ATOMIC_ACQUIRE)) {
    snprintf (err, errlen, "replace %zu: the last replace is still being "
              "wound up: try again in a moment", n);
    return -1;
  }
  /* The last one's spare, done. */
  spare_retire (s);

  /* Not a disk the quorum has already. */
  disk = uri_disk (uri);
  name = uri_redact (uri);
  if (disk == NULL || name == NULL) {
    snprintf (err, errlen, "replace %zu: out of memory", n);
    goto err;
  }
  for (i = 0; i < quorum_nr_children; ++i) {
    char *d = quorum_children[i].uri ? uri_disk (quorum_children[i].uri)
      : NULL;
    bool same = d && strcmp (d, disk) == 0;

    free (d);
    if (same) {
      snprintf (err, errlen, "replace %zu: %s is child %zu already", n,
                name, i);
      goto err;
    }
  }

  free (s->uri);
  free (s->name);
  s->index = quorum_nr_children;
  s->uri = strdup (uri);
  s->name = name;
  name = NULL;
  s->command = NULL;
  if (s->uri == NULL) {
    snprintf (err, errlen, "replace %zu: out of memory", n);
    goto err;
  }
  if (pipe2 (s->quit_pipe, O_CLOEXEC) == -1) {
    snprintf (err, errlen, "replace %zu: pipe2: %s", n, strerror (errno));
    s->quit_pipe[0] = s->quit_pipe[1] = -1;
    goto err;
  }
  if (connect_child (s, s->quit_pipe[0], &caps, &nbd, &meta, &why) == -1) {
    char *msg = why ? child_redact (s, why) : NULL;

    snprintf (err, errlen, "replace %zu: cannot connect to %s: %s", n,
              s->name, msg ? msg : "out of memory");
    free (msg);
    free (why);
    goto err;
  }
  if (caps.size != quorum_export_size) {
    snprintf (err, errlen, "replace %zu: %s has %" PRIi64 " bytes, the "
              "export %" PRIi64 ": the sizes must be the same", n, s->name,
              caps.size, quorum_export_size);
    goto err;
  }
  lack = caps_lacking (&caps, buf, sizeof buf);
  if (lack) {
    snprintf (err, errlen, "replace %zu: %s cannot serve the export: it %s",
              n, s->name, lack);
    goto err;
  }

  /* No thread knows the spare yet. */
  s->nbd = nbd;
  s->meta = meta;
  s->caps = caps;
  s->caps_known = true;
  memset (&s->stats, 0, sizeof s->stats);
  s->writes_done = s->writes_flushed = 0;
  s->resync_total = s->resync_done = s->resync_since = 0;
  state_reset (s, CHILD_RESYNC);
  fresh_spare_reset (s);
  reactor_serve (s);
  /* Every write from now on reaches it, before its rebuild reads. */
  __atomic_store_n (&ready, false, __ATOMIC_RELEASE);
  __atomic_store_n (&target, n, __ATOMIC_RELEASE);
  fanout_set_spare (s->index);
  e = spare_supervisor == NULL ? ENOSYS :
    pthread_create (&s->supervisor, NULL, spare_supervisor, s);
  if (e) {
    fanout_set_spare (SIZE_MAX);
    __atomic_store_n (&target, SIZE_MAX, __ATOMIC_RELEASE);
    snprintf (err, errlen, "replace %zu: pthread_create: %s", n,
              strerror (e));
    reactor_release (s);
    nbd = s->nbd;
    meta = s->meta;
    s->nbd = s->meta = NULL;
    goto err;
  }
  s->supervisor_running = true;
  nbdkit_debug ("quorum: child %zu (%s): being replaced by %s, rebuilt as "
                "child %zu meanwhile", n, c->name, s->name, s->index);
  report_replace ("replace-start", n, s->name);
  free (disk);
  return 0;

 err:
  connect_close (nbd, true);
  connect_close (meta, true);
  free (disk);
  free (name);
  return -1;
}

void
replace_rebuilt (struct child *s)
{
  size_t n = replace_target ();

  if (n == SIZE_MAX)
    return;
  nbdkit_debug ("quorum: child %zu (%s): rebuilt: to take the place of "
                "child %zu", s->index, s->name, n);
  __atomic_store_n (&ready, true, __ATOMIC_RELEASE);
  state_wake (&quorum_children[n]);
}

/* Flush the spare, holding the flush lock (fresh_flush_begin). */
static bool
spare_flush (struct child *s)
{
  struct fanout *f;
  bool ok;
  int err = 0;

  if (!s->caps.can_flush)
    return true;
  f = fanout_run (&replace_conn, OP_FLUSH, UINT32_C (1) << s->index, NULL,
                  0, NULL, 0, 0, 0, &err);
  ok = f && f->slots[s->index].err == 0;
  if (f)
    fanout_put (f);
  fresh_spare_flush_end (s, ok);
  return ok;
}

/* On c's supervisor: the swap (see the top of the file).  False if it
 * could not be done now; it is tried again when the spare is complete
 * again, or soon.
 */
/* Over 80 lines: the steps under the locks belong together. */
static bool
replace_swap (struct child *c, struct child *s)
{
  struct nbd_handle *nbd, *meta, *old, *old_meta;
  struct quorum_caps caps;
  struct range_lock rl;
  char *why = NULL, *old_uri, *old_name;
  bool complete;
  int err;

  /* c's new connection, to the spare's server. */
  if (connect_child (s, c->quit_pipe[0], &caps, &nbd, &meta, &why) == -1) {
    nbdkit_debug ("quorum: child %zu: replace: cannot connect to %s again: "
                  "%s", c->index, s->name, why ? why : "out of memory");
    free (why);
    return false;
  }
  if (caps.size != quorum_export_size || !caps_fit (c, &caps)) {
    connect_close (nbd, true);
    connect_close (meta, true);
    return false;
  }

  /* Nothing in flight: no write, zero, trim, read or flush. */
  range_lock (&rl, 0, quorum_export_size, true);
  fresh_flush_begin ();
  /* Not cancelled meanwhile (replace_cancel holds this range too). */
  complete = replace_target () == c->index && state_get (s) == CHILD_UP &&
    !fresh_stale (s, 0, 0) && spare_flush (s);
  if (complete)
    complete = fresh_rename (c, s->name) == 0;
  if (!complete) {
    /* Its supervisor heals it and says when it is complete again. */
    __atomic_store_n (&ready, false, __ATOMIC_RELEASE);
    fresh_flush_end (0, 0, false, &err);
    range_unlock (&rl);
    connect_close (nbd, true);
    connect_close (meta, true);
    return false;
  }
  /* The spare takes nothing more. */
  fanout_set_spare (SIZE_MAX);

  /* c is out of every request while its handles change (caches, which
   * take no range, would not reach it).  Quietly: it is not lost.
   */
  if (state_get (c) != CHILD_DOWN)
    state_set (c, CHILD_DOWN);
  reactor_release (c);
  connect_install (c, nbd, meta, &caps, &old, &old_meta);
  /* The names: c's old ones stay with the spare until the next replace
   * (a message may be printing them now).
   */
  old_uri = c->uri;
  old_name = c->name;
  __atomic_store_n (&c->uri, s->uri, __ATOMIC_RELEASE);
  __atomic_store_n (&c->name, s->name, __ATOMIC_RELEASE);
  __atomic_store_n (&s->uri, old_uri, __ATOMIC_RELEASE);
  __atomic_store_n (&s->name, old_name, __ATOMIC_RELEASE);
  /* What the spare holds is current everywhere: c is now. */
  fresh_stale_clear (c, 0, quorum_export_size);
  reactor_serve (c);
  state_replaced (c);
  __atomic_store_n (&target, SIZE_MAX, __ATOMIC_RELEASE);
  __atomic_store_n (&ready, false, __ATOMIC_RELEASE);
  fresh_flush_end (0, 0, false, &err);
  range_unlock (&rl);

  /* The old server sees its connection close. */
  connect_close (old, false);
  connect_close (old_meta, false);
  spare_retire (s);
  nbdkit_debug ("quorum: child %zu: replaced: now %s (was %s)", c->index,
                c->name, s->name);
  report_replace ("replace-end", c->index, s->name);
  return true;
}

bool
replace_swap_if_ready (struct child *c)
{
  struct child *s = spare_child ();
  bool done = false, tried = false;

  if (s == NULL)
    return false;
  /* Counted before the checks: a replace_start that sees no swap
   * cannot have one read the spare it is about to refill.
   */
  __atomic_add_fetch (&swapping, 1, __ATOMIC_SEQ_CST);
  /* Sequentially consistent, against replace_stop. */
  if (__atomic_load_n (&target, __ATOMIC_SEQ_CST) == c->index &&
      __atomic_load_n (&ready, __ATOMIC_ACQUIRE)) {
    tried = true;
    done = replace_swap (c, s);
  }
  __atomic_sub_fetch (&swapping, 1, __ATOMIC_ACQ_REL);
  if (!tried)
    return false;
  if (done)
    return true;
  /* Soon again, unless the spare is to be healed first (then it says
   * when it is complete).
   */
  if (__atomic_load_n (&ready, __ATOMIC_ACQUIRE) &&
      state_sleep (c, quorum_reconnect_delay))
    state_kick (c);
  return false;
}

int
replace_cancel (size_t n, char *err, size_t errlen)
{
  struct child *s = spare_child ();
  struct range_lock rl;
  size_t t = replace_target ();
  int e;

  if (t == SIZE_MAX) {
    snprintf (err, errlen, "replace %zu --cancel: no replace is in "
              "progress", n);
    return -1;
  }
  if (t != n) {
    snprintf (err, errlen, "replace %zu --cancel: child %zu is being "
              "replaced, not child %zu", n, t, n);
    return -1;
  }

  /* As the swap: no write, zero, trim or flush in flight, nor a swap. */
  range_lock (&rl, 0, quorum_export_size, true);
  fresh_flush_begin ();
  if (replace_target () != n) {
    fresh_flush_end (0, 0, false, &e);
    range_unlock (&rl);
    snprintf (err, errlen, "replace %zu --cancel: too late: %s has just "
              "taken child %zu's place", n, quorum_children[n].name, n);
    return -1;
  }
  fanout_set_spare (SIZE_MAX);
  __atomic_store_n (&target, SIZE_MAX, __ATOMIC_RELEASE);
  __atomic_store_n (&ready, false, __ATOMIC_RELEASE);
  fresh_flush_end (0, 0, false, &e);
  range_unlock (&rl);

  /* Its supervisor stops (a reconnection in progress too), and its
   * connection closes.  Its name stays until the next replace.
   */
  spare_retire (s);
  nbdkit_debug ("quorum: child %zu (%s): replace by %s cancelled",
                n, quorum_children[n].name, s->name);
  report_replace ("replace-cancel", n, s->name);
  return 0;
}

void
replace_stop (void)
{
  struct child *s = spare_child ();

  if (s == NULL)
    return;
  fanout_set_spare (SIZE_MAX);
  /* The children's supervisors still run: one may be swapping the
   * spare in, and retires it itself at the end.  From this store on
   * none starts (replace_swap_if_ready counts itself, then reads the
   * target: sequentially consistent, both sides); wait for any that
   * did, so that the spare is retired by one thread at a time.
   */
  __atomic_store_n (&target, SIZE_MAX, __ATOMIC_SEQ_CST);
  while (__atomic_load_n (&swapping, __ATOMIC_SEQ_CST) > 0) {
    const struct timespec ms = { .tv_nsec = 1000000 };

    nanosleep (&ms, NULL);
  }
  spare_retire (s);
}
