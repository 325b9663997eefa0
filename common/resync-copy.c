/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Recovery: the copy of a child's stale regions to it (resync_child),
 * on top of the fan-out, for the threads of resync.c.
 *
 * A copy needs vote-threshold current children that agree, block by
 * block (vote-block-size), as a read does: blocks without such a
 * version stay stale, for the caller to retry.  Where every source
 * reports zeroes (block status) the child is zeroed and nothing is
 * read.  The bytes read are paced by resync-rate=, and what was copied
 * is flushed a tenth at a time.
 *
 * The copy goes one run at a time (RESYNC_RUN, under its range lock;
 * up to RESYNC_ZERO_RUN where the last block status said zeroes), several
 * runs at once: the resyncing thread hands them to workers of
 * its own, up to RESYNC_DEPTH in flight, so that the sources read the
 * next runs while the child writes the last.  Fewer at a low
 * resync-rate=, which would otherwise see a burst of runs at the start.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "rangelock.h"
#include "ratelimit.h"
#include "resync-int.h"
#include "resync.h"
#include "settle.h"
#include "state.h"

/* resync-rate=, or what control's rate set: each child's resync has a
 * bucket of its own, charged with the bytes it read to copy (not those
 * it zeroed).
 */
static struct ratelimit resync_limit =
  RATELIMIT_INIT (&quorum_resync_rate, RESYNC_RUN);

uint64_t
resync_rate (void)
{
  return ratelimit_get (&resync_limit);
}

void
resync_set_rate (uint64_t bytes_per_second)
{
  ratelimit_set (&resync_limit, bytes_per_second);
}

/* A resync's rate-limit sleep ends when its child goes down or quits. */
static bool
resync_cancelled (void *vp)
{
  struct child *c = vp;

  return state_quitting (c) ||
    (!child_is_local (c) && state_get (c) == CHILD_DOWN);
}

/* Resync runs outside any client connection: in the filter it reaches
 * the plugin through the context of a client connection, when one
 * lends it (quorum_local_ops.available).
 */
struct quorum_conn resync_conn;

void
resync_set_source (const struct quorum_local_ops *local, void *local_ctx)
{
  resync_conn.local = local;
  resync_conn.local_ctx = local_ctx;
  /* What the lent context takes: plain reads and writes, which the
   * filter passes to a writable client context only.
   */
  resync_conn.local_caps.can_write = local != NULL;
  resync_conn.local_caps.can_extents = local != NULL;
}


/* A worker: the runs its job is given, until quit. */
static void *
resync_worker (void *vp)
{
  struct resync_job *j = vp;
  struct resync_pipe *p = j->p;

  pthread_mutex_lock (&p->lock);
  for (;;) {
    struct resync_tally t = { 0 };
    bool failed;

    while (!j->busy && !p->quit)
      pthread_cond_wait (&p->work, &p->lock);
    if (!j->busy)
      break;
    pthread_mutex_unlock (&p->lock);
    failed = resync_range (p, p->c, j->offset, j->count, &t) == -1;
    pthread_mutex_lock (&p->lock);
    j->failed = failed;
    j->copied = t.copied;
    j->zeroed = t.zeroed;
    j->read = t.read;
    j->busy = false;
    j->finished = true;
    pthread_cond_signal (&p->idle);
  }
  pthread_mutex_unlock (&p->lock);
  return NULL;
}

/* Runs in flight at once: a twentieth of a second's worth at the rate
 * limit (the burst a resync starts with), from 1 to RESYNC_DEPTH.
 */
static unsigned
resync_depth (void)
{
  const uint64_t rate = ratelimit_get (&resync_limit);
  uint64_t n;

  if (rate == 0)
    return RESYNC_DEPTH;
  n = rate / 20 / RESYNC_RUN;
  return n < 1 ? 1 : n > RESYNC_DEPTH ? RESYNC_DEPTH : n;
}

static void
resync_pipe_init (struct resync_pipe *p, struct child *c)
{
  size_t i;

  memset (p, 0, sizeof *p);
  p->c = c;
  pthread_mutex_init (&p->lock, NULL);
  pthread_cond_init (&p->work, NULL);
  pthread_cond_init (&p->idle, NULL);
  pthread_cond_init (&p->answered, NULL);
  p->ahead = RESYNC_RUN;
  for (i = 0; i < RESYNC_DEPTH; ++i)
    p->jobs[i].p = p;
}

/* How long the next run from pos may be: RESYNC_RUN, or up to
 * RESYNC_ZERO_RUN inside what the last block status said every source
 * holds as zeroes (asked again under the run's range), and no more than
 * a tenth of the copy's total, so that no progress report is skipped.
 */
static uint64_t
resync_run_max (struct resync_pipe *p, uint64_t pos, uint64_t total)
{
  uint64_t max = RESYNC_RUN, tenth = total / 10 / RESYNC_RUN * RESYNC_RUN;

  pthread_mutex_lock (&p->lock);
  if (p->zero_start <= pos && pos + RESYNC_RUN < p->zero_end) {
    max = (p->zero_end - pos) / RESYNC_RUN * RESYNC_RUN;
    if (max > RESYNC_ZERO_RUN)
      max = RESYNC_ZERO_RUN;
    if (max > tenth)
      max = tenth > RESYNC_RUN ? tenth : RESYNC_RUN;
  }
  pthread_mutex_unlock (&p->lock);
  return max;
}

/* Under p->lock: wait until at most max_busy jobs are busy, take the
 * results of those finished.  Returns the bytes they read.
 */
static uint64_t
resync_pipe_reap_locked (struct resync_pipe *p, unsigned max_busy)
{
  uint64_t read = 0;
  unsigned busy;
  size_t i;

  for (;;) {
    busy = 0;
    for (i = 0; i < RESYNC_DEPTH; ++i) {
      struct resync_job *j = &p->jobs[i];

      if (j->finished) {
        p->copied += j->copied;
        p->zeroed += j->zeroed;
        read += j->read;
        p->write_failed |= j->failed;
        j->finished = false;
      }
      busy += j->busy;
    }
    if (busy <= max_busy)
      return read;
    pthread_cond_wait (&p->idle, &p->lock);
  }
}

/* Wait until at most max_busy jobs are busy, take the results of those
 * finished: returns the bytes they read.
 */
static uint64_t
resync_pipe_reap (struct resync_pipe *p, unsigned max_busy)
{
  uint64_t read;

  pthread_mutex_lock (&p->lock);
  read = resync_pipe_reap_locked (p, max_busy);
  pthread_mutex_unlock (&p->lock);
  return read;
}

/* Hand [offset, +count) to an idle job, waiting for one if none is (a
 * worker more is started while there are fewer than RESYNC_DEPTH):
 * returns the bytes read by those finished meanwhile.  Run here if no
 * worker can be started.
 */
static uint64_t
resync_pipe_give (struct resync_pipe *p, uint64_t offset, uint64_t count)
{
  struct resync_job *j = NULL;
  struct resync_tally t = { 0 };
  uint64_t read;
  unsigned running;
  size_t i;
  int err;

  pthread_mutex_lock (&p->lock);
  read = resync_pipe_reap_locked (p, RESYNC_DEPTH - 1);
  for (;;) {
    running = 0;
    for (i = 0; i < RESYNC_DEPTH; ++i) {
      running += p->jobs[i].running;
      if (j == NULL && p->jobs[i].running && !p->jobs[i].busy)
        j = &p->jobs[i];
    }
    if (j)
      break;
    /* Every worker is busy, and fewer than RESYNC_DEPTH: one more. */
    for (i = 0; i < RESYNC_DEPTH && p->jobs[i].running; ++i)
      ;
    if (i == RESYNC_DEPTH) {
      read += resync_pipe_reap_locked (p, RESYNC_DEPTH - 1);
      continue;
    }
    err = pthread_create (&p->jobs[i].thread, NULL, resync_worker,
                          &p->jobs[i]);
    if (err == 0) {
      p->jobs[i].running = true;
      j = &p->jobs[i];
      break;
    }
    nbdkit_debug ("quorum: child %zu: resync: pthread_create: %s",
                  p->c->index, strerror (err));
    if (running == 0) {
      /* None at all: this thread copies. */
      pthread_mutex_unlock (&p->lock);
      if (resync_range (p, p->c, offset, count, &t) == -1)
        p->write_failed = true;
      p->copied += t.copied;
      p->zeroed += t.zeroed;
      return read + t.read;
    }
    read += resync_pipe_reap_locked (p, running - 1);
  }
  j->offset = offset;
  j->count = count;
  j->busy = true;
  pthread_cond_broadcast (&p->work);
  pthread_mutex_unlock (&p->lock);
  return read;
}

/* Wait for every run in flight, take their results, stop the workers.
 * Returns the bytes read.
 */
static uint64_t
resync_pipe_end (struct resync_pipe *p)
{
  uint64_t read;
  size_t i;

  pthread_mutex_lock (&p->lock);
  read = resync_pipe_reap_locked (p, 0);
  p->quit = true;
  pthread_cond_broadcast (&p->work);
  pthread_mutex_unlock (&p->lock);
  for (i = 0; i < RESYNC_DEPTH; ++i)
    if (p->jobs[i].running)
      pthread_join (p->jobs[i].thread, NULL);
  pthread_cond_destroy (&p->work);
  pthread_cond_destroy (&p->idle);
  pthread_cond_destroy (&p->answered);
  pthread_mutex_destroy (&p->lock);
  return read;
}

/* What a resync copied is on stable storage on remote child c, if it
 * can flush: else it would all be stale again were c to go down before
 * a client's flush.  (The plugin's copies wait for a client's flush: a
 * lent context may not flush.)
 */
static void
resync_flush (struct child *c)
{
  const uint32_t bit = UINT32_C (1) << c->index;
  struct fanout *f;
  bool can_flush;
  int err = 0;

  pthread_rwlock_rdlock (&c->nbd_lock);
  can_flush = c->caps.can_flush;
  pthread_rwlock_unlock (&c->nbd_lock);
  if (!can_flush)
    return;
  fresh_flush_begin ();
  f = fanout_run (&resync_conn, OP_FLUSH, bit, NULL, 0, NULL, 0, 0, 0,
                  &err);
  if (c->index >= quorum_nr_children) {       /* the spare */
    fresh_spare_flush_end (c, f && f->slots[c->index].err == 0);
    fresh_flush_end (0, 0, false, &err);
  }
  else if (f && f->slots[c->index].err == 0)
    fresh_flush_end (bit, bit, true, &err);
  else
    fresh_flush_end (bit, 0, false, &err);
  if (f)
    fanout_put (f);
}

/* For control's status: a resync of what is stale now begins. */
static void
resync_progress_begin (struct child *c, uint64_t total)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  __atomic_store_n (&c->resync_total, total, __ATOMIC_RELEASE);
  __atomic_store_n (&c->resync_done, 0, __ATOMIC_RELEASE);
  __atomic_store_n (&c->resync_since,
                    (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec,
                    __ATOMIC_RELEASE);
}

/* After runs finished: the rate limit charged with what they read,
 * the progress published, and each tenth of what was stale when it
 * began reported, up to 90% (resync-end says 100%), and flushed.
 */
static void
resync_progress (struct resync_pipe *p, struct ratelimit_bucket *bucket,
                 uint64_t read, uint64_t total, unsigned *tenths)
{
  struct child *c = p->c;
  unsigned now;

  ratelimit_pace (&resync_limit, bucket, read, resync_cancelled, c);
  __atomic_store_n (&c->resync_done, p->copied, __ATOMIC_RELEASE);
  /* At the end only the tenths a started series skipped: a copy done
   * in one go (a few granules) reports its end alone, as before.
   */
  now = total == 0 ? 0
    : p->copied >= total ? (*tenths > 0 ? 9 : 0)
    : p->copied * 10 / total;
  if (now > *tenths) {
    /* Every tenth crossed up to 90% is reported (resync-end says
     * 100%), several at once if several runs in flight ended together.
     */
    while (*tenths < now)
      report_resync_progress (c->index, ++*tenths * 10,
                              fresh_stale_bytes (c), p->copied);
    /* What it copied so far survives its going down (a rebuild
     * continues from here): a flush a tenth.
     */
    if (!child_is_local (c))
      resync_flush (c);
  }
}

/* The copy itself (resync-int.h). */
int
resync_child (struct child *c, bool rejoined)
{
  const bool local = child_is_local (c);
  uint64_t pos = 0, offset, count, len, total, left;
  struct ratelimit_bucket bucket;
  struct resync_pipe p;
  unsigned tenths = 0;
  struct range_lock rl;
  bool stopped = false;

  ratelimit_bucket_init (&bucket);

  total = fresh_stale_bytes (c);
  report_resync ("resync-start", c->index, total, 0);
  resync_progress_begin (c, total);

  /* Writers that saw this child down mark it stale when they finish:
   * wait for every one in flight, after which all include the child.
   */
  if (rejoined) {
    range_lock (&rl, 0, quorum_export_size, true);
    range_unlock (&rl);
  }

  resync_pipe_init (&p, c);
  for (;;) {
    if ((!local && state_get (c) == CHILD_DOWN) || state_quitting (c)) {
      stopped = true;
      break;
    }
    if (!fresh_next_stale (c, &pos, resync_run_max (&p, pos, total),
                           &offset, &count))
      break;
    for (; count > 0; offset += len, count -= len) {
      len = settle_uniform (offset, count);
      /* Room for one more (one at a time: the last is done first). */
      resync_progress (&p, &bucket, resync_pipe_reap (&p, resync_depth () - 1),
                       total, &tenths);
      resync_progress (&p, &bucket, resync_pipe_give (&p, offset, len),
                       total, &tenths);
    }
  }
  /* The last runs: waited for even when stopping, to join the workers
   * (each ends soon: a child that went down fails at once).
   */
  if (stopped)
    resync_pipe_end (&p);
  else
    resync_progress (&p, &bucket, resync_pipe_end (&p), total, &tenths);

  /* Stopped, or a write to the child failed: the pass did not reach
   * the end of what it could copy, and resync-end would say it had.
   * Often the connection died and the child is not down yet: it soon
   * is, and its supervisor rejoins it; else the next try comes after a
   * delay.
   */
  if (stopped || p.write_failed) {
    const char *reason = state_quitting (c) ? "quitting" : "down";

    if (!stopped) {
      if (p.copied && !local && state_get (c) != CHILD_DOWN)
        resync_flush (c);
      reason = "write-failed";
    }
    report_resync_stopped (c->index, fresh_stale_bytes (c), p.copied,
                           reason);
    __atomic_store_n (&c->resync_done, p.copied, __ATOMIC_RELEASE);
    __atomic_store_n (&c->resync_since, 0, __ATOMIC_RELEASE);
    return stopped ? -1 : 1;
  }

  if (p.copied && !local)
    resync_flush (c);
  left = fresh_stale_bytes (c);
  report_resync_end (c->index, left, p.copied, p.zeroed);
  __atomic_store_n (&c->resync_since, 0, __ATOMIC_RELEASE);
  return left ? 1 : 0;
}
