/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The control socket's status: the quorum, each child, the scrub and
 * the persistent state, as JSON (documented in nbdkit-quorum-ctl(1)).
 * Status reads the engine's counters with atomic loads and takes none
 * of its locks; it keeps each child's last error, which report.c tells
 * it of through a listener, and samples progress once a second for the
 * rates.
 */

#include <config.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json.h>

#include <nbdkit-filter.h>

#include "cleanup.h"
#include "control.h"
#include "dirty.h"
#include "fresh.h"
#include "internal.h"
#include "replace.h"
#include "resync.h"
#include "scrub.h"
#include "state.h"

/* The last error of each child, written by report_bad and report_down
 * (any thread) through the listener, read by status.  This lock
 * protects last_errors.
 */
struct last_error {
  bool set;
  bool down;                    /* a lost connection, not a command */
  struct timespec when;         /* CLOCK_REALTIME */
  enum op_type type;
  uint64_t offset, length;
  int err;                      /* 0: outvoted */
  char reason[96];              /* down: why */
};
static pthread_mutex_t last_lock = PTHREAD_MUTEX_INITIALIZER;
static struct last_error last_errors[VOTE_MAX_CHILDREN];

/* Rates over the last RATE_WINDOW seconds: samples of each child's
 * resync_done, and of the scrub's bytes_done (the last ring), taken
 * about once a second by the control thread alone (status runs there
 * too).  A ring follows one run, named by when it began.
 */
#define RATE_WINDOW 10
#define SCRUB_RING VOTE_MAX_CHILDREN
struct rate_ring {
  uint64_t since;               /* the run sampled; 0: none */
  size_t n, head;               /* samples held, next slot */
  struct { double t; uint64_t done; } s[RATE_WINDOW + 1];
};
static struct rate_ring rates[VOTE_MAX_CHILDREN + 1];
static double last_sample;

static double
now_mono (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The latest error of a child, for status. */
static void
note (size_t child, bool down, enum op_type type, uint64_t offset,
      uint64_t length, int err, const char *reason)
{
  struct last_error *e;

  if (child >= VOTE_MAX_CHILDREN)
    return;
  e = &last_errors[child];
  SCOPED_LOCK (&last_lock);
  e->set = true;
  e->down = down;
  clock_gettime (CLOCK_REALTIME, &e->when);
  if (!down)
    e->type = type;
  e->offset = offset;
  e->length = length;
  e->err = err;
  snprintf (e->reason, sizeof e->reason, "%s", reason);
}

static void
note_bad (size_t child, enum op_type type, uint64_t offset,
          uint64_t length, int err)
{
  note (child, false, type, offset, length, err, "");
}

static void
note_down (size_t child, const char *reason)
{
  note (child, true, 0, 0, 0, 0, reason ? reason : "");
}

static const struct report_listener listener = {
  .bad = note_bad,
  .down = note_down,
};

void
control_status_init (void)
{
  report_listen (&listener);
}

/* Rates. */

static void
ring_sample (struct rate_ring *r, uint64_t since, uint64_t done, double now)
{
  if (since != r->since) {
    r->since = since;
    r->n = r->head = 0;
  }
  if (since == 0)
    return;
  r->s[r->head].t = now;
  r->s[r->head].done = done;
  r->head = (r->head + 1) % (RATE_WINDOW + 1);
  if (r->n < RATE_WINDOW + 1)
    r->n++;
}

void
control_status_tick (double now)
{
  struct scrub_status st;
  size_t i;

  if (now - last_sample < 1)
    return;
  last_sample = now;
  /* The spare too (a replace's rebuild). */
  for (i = 0; i < quorum_nr_slots () && i < VOTE_MAX_CHILDREN; ++i) {
    struct child *c = &quorum_children[i];

    ring_sample (&rates[i],
                 __atomic_load_n (&c->resync_since, __ATOMIC_ACQUIRE),
                 __atomic_load_n (&c->resync_done, __ATOMIC_ACQUIRE), now);
  }
  scrub_get (&st);
  /* A resumed scrub's rate counts from where it resumed. */
  ring_sample (&rates[SCRUB_RING], st.until ? 0 : st.since,
               st.bytes_done - st.done_at_since, now);
}

/* Bytes per second done over the last RATE_WINDOW seconds, or since
 * the run began if it is younger.
 */
static double
rate_of (size_t i, uint64_t since, uint64_t done, double now)
{
  struct rate_ring *r = &rates[i];
  double began = since / 1e9;

  if (r->since == since && r->n > 0) {
    size_t oldest = (r->head + RATE_WINDOW + 1 - r->n) % (RATE_WINDOW + 1);
    double dt = now - r->s[oldest].t;

    if (dt >= 1 && done >= r->s[oldest].done)
      return (done - r->s[oldest].done) / dt;
  }
  if (now - began > 0)
    return done / (now - began);
  return 0;
}

/* Replies. */

/* up, down, resyncing, rebuilding (a resync of a child that was stale
 * everywhere when it began: new, replaced, or one that lost what it
 * held), failed (taken out of service by the operator).
 */
static const char *
state_name (struct child *c, enum child_state state)
{
  switch (state) {
  case CHILD_UP: return "up";
  case CHILD_DOWN:
    return !child_is_local (c) && state_failed (c) ? "failed" : "down";
  case CHILD_RESYNC:
    return __atomic_load_n (&c->resync_total, __ATOMIC_ACQUIRE) >=
      (uint64_t) quorum_export_size ? "rebuilding" : "resyncing";
  }
  return "unknown";
}

static const char *
errno_label (int err, char *buf, size_t len)
{
  const char *s = strerrorname_np (err);

  if (s)
    return s;
  snprintf (buf, len, "errno%d", err);
  return buf;
}

static void
add (json_object *o, const char *key, json_object *v)
{
  json_object_object_add (o, key, v);
}

static json_object *
json_u64 (uint64_t v)
{
  return json_object_new_int64 (v > INT64_MAX ? INT64_MAX : (int64_t) v);
}

static json_object *
last_error_json (size_t i)
{
  struct last_error e;
  json_object *o;
  struct tm tm;
  char when[64], frac[96], buf[32];

  {
    SCOPED_LOCK (&last_lock);
    e = last_errors[i];
  }
  if (!e.set)
    return NULL;
  o = json_object_new_object ();
  gmtime_r (&e.when.tv_sec, &tm);
  strftime (when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf (frac, sizeof frac, "%s.%03dZ", when,
            (int) (e.when.tv_nsec / 1000000));
  add (o, "time", json_object_new_string (frac));
  add (o, "unix_time", json_object_new_int64 (e.when.tv_sec));
  if (e.down) {
    add (o, "type", json_object_new_string ("down"));
    add (o, "error", json_object_new_string (e.reason));
  }
  else {
    add (o, "type", json_object_new_string (report_op_name (e.type)));
    add (o, "offset", json_u64 (e.offset));
    add (o, "length", json_u64 (e.length));
    add (o, "error", json_object_new_string (e.err ? errno_label (e.err, buf,
                                                                  sizeof buf)
                                             : "mismatch"));
  }
  return o;
}

static json_object *
child_json (size_t i, double now, bool *healthy)
{
  struct child *c = &quorum_children[i];
  bool local = child_is_local (c);
  enum child_state state = local ? CHILD_UP : state_get (c);
  uint64_t stale = dirty_bytes (&c->dirty);
  json_object *o = json_object_new_object (), *e;

  add (o, "index", json_object_new_int64 (i));
  add (o, "name", json_object_new_string (child_name (c)));
  add (o, "local", json_object_new_boolean (local));
  add (o, "state", json_object_new_string (state_name (c, state)));
  add (o, "stale_bytes", json_u64 (stale));
  if (state != CHILD_UP || stale)
    *healthy = false;

  if (state == CHILD_RESYNC) {
    uint64_t since = __atomic_load_n (&c->resync_since, __ATOMIC_ACQUIRE);
    uint64_t done = __atomic_load_n (&c->resync_done, __ATOMIC_ACQUIRE);
    uint64_t total = __atomic_load_n (&c->resync_total, __ATOMIC_ACQUIRE);
    double rate = 0;
    json_object *r = json_object_new_object ();

    if (since == 0)             /* about to begin */
      done = 0, total = stale;
    else
      rate = rate_of (i, since, done, now);
    add (r, "bytes_done", json_u64 (done));
    add (r, "bytes_total", json_u64 (total));
    add (r, "rate", json_u64 ((uint64_t) rate));
    add (r, "elapsed_seconds",
         json_u64 (since ? (uint64_t) (now - since / 1e9) : 0));
    add (r, "eta_seconds", rate >= 1 ?
         json_u64 ((uint64_t) (stale / rate + 0.999)) : NULL);
    add (o, "resync", r);
  }
  else
    add (o, "resync", NULL);

  add (o, "reads", json_u64 (__atomic_load_n (&c->stats.reads,
                                              __ATOMIC_RELAXED)));
  add (o, "writes", json_u64 (__atomic_load_n (&c->stats.writes,
                                               __ATOMIC_RELAXED)));
  add (o, "bad_reads", json_u64 (__atomic_load_n (&c->stats.bad_reads,
                                                  __ATOMIC_RELAXED)));
  add (o, "errors", json_u64 (__atomic_load_n (&c->stats.errors,
                                               __ATOMIC_RELAXED)));
  add (o, "timeouts", json_u64 (__atomic_load_n (&c->stats.timeouts,
                                                 __ATOMIC_RELAXED)));
  add (o, "bytes_repaired",
       json_u64 (__atomic_load_n (&c->stats.bytes_repaired,
                                  __ATOMIC_RELAXED)));
  e = last_error_json (i);
  add (o, "last_error", e);
  /* Being replaced: the new server, rebuilt as the spare. */
  if (i < quorum_nr_children) {
    bool ignored = true;

    add (o, "replacement", replace_target () == i ?
         child_json (quorum_nr_children, now, &ignored) : NULL);
  }
  return o;
}


static const char *
scrub_state_name (enum scrub_state state)
{
  switch (state) {
  case SCRUB_IDLE: return "idle";
  case SCRUB_RUNNING: return "running";
  case SCRUB_DONE: return "done";
  }
  return "unknown";
}

static json_object *
scrub_json (double now)
{
  struct scrub_status st;
  json_object *o = json_object_new_object ();
  bool ran;
  double rate = 0, end;

  scrub_get (&st);
  ran = st.state != SCRUB_IDLE;
  end = st.until ? st.until / 1e9 : now;
  if (st.state == SCRUB_RUNNING)
    rate = rate_of (SCRUB_RING, st.since, st.bytes_done - st.done_at_since,
                    now);
  add (o, "state", json_object_new_string (scrub_state_name (st.state)));
  add (o, "repair", json_object_new_boolean (st.repair));
  add (o, "stopping", json_object_new_boolean (st.stopping));
  add (o, "stopped", json_object_new_boolean (st.stopped));
  add (o, "offset", ran ? json_u64 (st.offset) : NULL);
  add (o, "length", ran ? json_u64 (st.length) : NULL);
  add (o, "bytes_total", json_u64 (st.length));
  add (o, "bytes_done", json_u64 (st.bytes_done));
  add (o, "mismatched_bytes", json_u64 (st.mismatched));
  add (o, "repaired_bytes", json_u64 (st.repaired));
  add (o, "unreadable_bytes", json_u64 (st.unreadable));
  add (o, "no_quorum_bytes", json_u64 (st.no_quorum));
  add (o, "skipped_bytes", json_u64 (st.skipped));
  add (o, "unchecked_bytes", json_u64 (st.unchecked));
  add (o, "rate", json_u64 ((uint64_t) rate));
  add (o, "rate_limit", json_u64 (scrub_rate ()));
  add (o, "resumed_from", st.resumed ? json_u64 (st.resumed_from) : NULL);
  add (o, "checkpoint", st.has_checkpoint ? json_u64 (st.checkpoint) : NULL);
  add (o, "elapsed_seconds",
       ran ? json_u64 ((uint64_t) (end - st.since / 1e9)) : NULL);
  add (o, "eta_seconds", st.state == SCRUB_RUNNING && rate >= 1 ?
       json_u64 ((uint64_t) ((st.length - st.bytes_done) / rate + 0.999))
       : NULL);
  return o;
}

/* The freshness model's persistent state (state=): the file, its
 * write-intent granule, the fdatasyncs so far and the unsettled bytes
 * (kept in memory without state= too).
 */
static json_object *
state_json (void)
{
  json_object *o = json_object_new_object ();
  const bool persistent = quorum_state_file != NULL;

  add (o, "file", persistent ?
       json_object_new_string (quorum_state_file) : NULL);
  add (o, "granule", persistent ? json_u64 (quorum_state_granule) : NULL);
  add (o, "syncs", json_u64 (fresh_syncs ()));
  add (o, "unsettled_bytes", json_u64 (fresh_unsettled_bytes ()));
  return o;
}

int
control_status (json_object *reply)
{
  json_object *q = json_object_new_object ();
  json_object *list = json_object_new_array ();
  double now = now_mono ();
  bool healthy = true;
  size_t i, up = 0;

  control_status_tick (now);
  for (i = 0; i < quorum_nr_children; ++i) {
    json_object *c = child_json (i, now, &healthy);
    json_object *st;

    if (json_object_object_get_ex (c, "state", &st) &&
        strcmp (json_object_get_string (st), "up") == 0)
      up++;
    json_object_array_add (list, c);
  }

  add (q, "version", json_object_new_string (PACKAGE_VERSION));
  add (q, "form", json_object_new_string (quorum_has_local ?
                                          "filter" : "plugin"));
  add (q, "state", json_object_new_string (healthy ? "healthy" :
                                           "degraded"));
  add (q, "size", caps_promise.size >= 0 ?
       json_object_new_int64 (caps_promise.size) : NULL);
  add (q, "children", json_object_new_int64 (quorum_nr_children));
  add (q, "children_up", json_object_new_int64 (up));
  add (q, "vote_threshold", json_object_new_int64 (quorum_threshold));
  add (q, "read_pattern", json_object_new_string (
         quorum_read_pattern == READ_PATTERN_FIFO ? "fifo" : "quorum"));
  add (q, "vote_block_size", json_object_new_int64 (quorum_vote_block));
  add (q, "resync_rate_limit", json_u64 (resync_rate ()));
  add (q, "granule_size", json_object_new_int64 (1 << DIRTY_SHIFT));
  add (q, "export_name", json_object_new_string (quorum_export ()));
  add (reply, "quorum", q);
  add (reply, "children", list);
  add (reply, "scrub", scrub_json (now));
  add (reply, "state", state_json ());
  return 0;
}
