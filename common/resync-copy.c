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
 * The copy goes one run at a time (RESYNC_RUN, under its range lock),
 * several runs at once: the resyncing thread hands them to workers of
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

#include "extmerge.h"
#include "fanout.h"
#include "fresh.h"
#include "internal.h"
#include "rangelock.h"
#include "ratelimit.h"
#include "resync-int.h"
#include "resync.h"
#include "settle.h"
#include "state.h"

/* Runs in flight at once, at most (each holds its sources' replies). */
#define RESYNC_DEPTH 8
/* Block status is asked ahead of the run, up to this much, where the
 * sources report data beyond it (see resync_zeroes).
 */
#define RESYNC_AHEAD_MAX (UINT64_C (1) << 30)

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

static size_t
resync_popcount (uint32_t mask)
{
  return __builtin_popcount (mask);
}

/* One resync's runs in flight (see the top of the file).  The
 * resyncing thread, the dispatcher, hands a run to an idle job and
 * takes its results when it is finished; each job has a worker thread,
 * started when first needed.
 */
struct resync_pipe;

struct resync_job {
  struct resync_pipe *p;
  pthread_t thread;
  bool running;                 /* its thread was started */
  bool busy;                    /* it has a run, not finished */
  bool finished;                /* its results are not taken yet */
  uint64_t offset, count;       /* the run */
  uint64_t copied, zeroed, read; /* its results */
};

struct resync_pipe {
  struct child *c;
  pthread_mutex_t lock;         /* the jobs' flags, quit, the hint */
  pthread_cond_t work;          /* a job has a run, or quit */
  pthread_cond_t idle;          /* a job finished */
  pthread_cond_t answered;      /* block status came back */
  bool quit;
  struct resync_job jobs[RESYNC_DEPTH];
  /* The dispatcher's alone. */
  uint64_t copied, zeroed;
  /* Block status seen ahead: [data_start, data_end) is data on some
   * source (so it is read whatever it holds now: reading is never
   * wrong), and the next question asks this far.
   */
  uint64_t data_start, data_end;
  uint64_t ahead;
  bool asking;                  /* a job asks block status */
};

/* What one run did: bytes written (copied, zeroed among them) and
 * read, and the span just written whose staleness is not cleared yet:
 * cleared once the span ends (at a block that stays stale, or at the
 * end of the run), so that granules written in parts, a zero and a
 * copy, are cleared too.  Its range is held meanwhile.
 */
struct resync_tally {
  uint64_t copied, zeroed, read;
  uint64_t start, end;
};

/* The span written so far is no longer stale. */
static void
resync_clear (struct child *c, struct resync_tally *t)
{
  if (t->end > t->start)
    fresh_stale_clear (c, t->start, t->end - t->start);
  t->start = t->end = 0;
}

/* c took [s, +len). */
static void
resync_took (struct child *c, struct resync_tally *t, uint64_t s,
             uint64_t len)
{
  fresh_took (c, s, len);
  STAT_ADD (c, bytes_repaired, len);
  t->copied += len;
  if (s != t->end) {
    resync_clear (c, t);
    t->start = s;
  }
  t->end = s + len;
}

/* Write what out holds at [s, e) (out holds [offset, ...)) to c. */
static int
resync_write (struct child *c, const char *out, uint64_t offset,
              uint64_t s, uint64_t e, struct resync_tally *t)
{
  struct fanout *w;
  int err = 0, r = -1;

  w = fanout_run (&resync_conn, OP_WRITE, UINT32_C (1) << c->index,
                  NULL, 0, out + (s - offset), e - s, s, 0, &err);
  if (w) {
    err = w->slots[c->index].err;
    fanout_put (w);
  }
  if (w && err == 0) {
    resync_took (c, t, s, e - s);
    r = 0;
  }
  else if (err != ENOTCONN || !child_is_local (c))
    report_bad (OP_WRITE, c->index, s, e - s, err ? err : EIO);
  return r;
}

/* The parts of [offset, +count) that every child in mask reports as
 * zeroes (block status), in whole vote blocks (the run's ends count as
 * block boundaries), appended to *zeroes: there is nothing to read.
 * None if one's block status connection may not see its latest writes
 * yet, if one has no block status or fails it, or where the last
 * answers said data.  Called holding the run's range: what is zero is
 * zero until the run is done.
 *
 * A source that reports data far ahead (a full disk) is asked ahead,
 * twice as far each time it still does, up to RESYNC_AHEAD_MAX: some
 * plugins (file, on tmpfs) take as long to answer for a run as for the
 * whole disk.  What it said is data is then read without asking again;
 * what it said is zeroes ahead is never trusted (it may change before
 * that run's range is taken).
 */
static void
resync_zeroes (struct resync_pipe *p, uint32_t mask, uint64_t offset,
               uint32_t count, struct quorum_extent_list *zeroes)
{
  const uint64_t end = offset + count, bs = quorum_vote_block;
  const struct quorum_extent_list *lists[VOTE_MAX_CHILDREN];
  struct quorum_extent_list merged = { 0 };
  const struct quorum_extent *last;
  struct fanout *f = NULL;
  uint64_t ask, data_start = 0, data_end = 0;
  size_t i, nr = 0;
  int err;

  for (i = 0; i < quorum_nr_children; ++i)
    if ((mask & (UINT32_C (1) << i)) &&
        child_meta_stale (&quorum_children[i]))
      return;

  /* One question at a time: its answer may do for the next runs. */
  pthread_mutex_lock (&p->lock);
  while (p->asking)
    pthread_cond_wait (&p->answered, &p->lock);
  if (p->data_start <= offset && end <= p->data_end) {
    pthread_mutex_unlock (&p->lock);
    return;
  }
  ask = p->ahead;
  p->asking = true;
  pthread_mutex_unlock (&p->lock);
  if (ask > quorum_export_size - offset)
    ask = quorum_export_size - offset;
  if (ask > RESYNC_AHEAD_MAX)
    ask = RESYNC_AHEAD_MAX;
  if (ask < count)
    ask = count;

  f = fanout_run (&resync_conn, OP_EXTENTS, mask, NULL, 0, NULL, ask,
                  offset, 0, &err);
  if (f == NULL)
    goto out;
  for (i = 0; i < quorum_nr_children; ++i) {
    const struct slot *s = &f->slots[i];

    if (!s->used)
      continue;
    if (s->err)
      goto out;
    lists[nr++] = &s->extents;
  }
  /* As far as they all answered, which may be past the question (the
   * file plugin answers to the next change).
   */
  if (nr == 0 ||
      extmerge_lists (lists, nr, offset, quorum_export_size - offset,
                      &merged) == -1)
    goto out;

  for (i = 0; i < merged.len; ++i) {
    const struct quorum_extent *e = &merged.ptr[i];
    const uint64_t s = e->offset, t = e->offset + e->length;

    if (!(e->type & EXTMERGE_ZERO)) {
      if (t > end && data_end == 0) {
        data_start = s;
        data_end = t;
      }
    }
    else if (s < end) {
      uint64_t zs = s <= offset ? offset : (s + bs - 1) & ~(bs - 1);
      uint64_t ze = t >= end ? end : t & ~(bs - 1);

      if (zs < ze &&
          extmerge_add (zeroes, zs, ze - zs, EXTMERGE_ZERO) == -1) {
        zeroes->len = 0;        /* read it all */
        goto out;
      }
    }
  }

  /* Data to the end of the question: ask further next time. */
  last = merged.len ? &merged.ptr[merged.len - 1] : NULL;
  if (last && !(last->type & EXTMERGE_ZERO) &&
      last->offset + last->length >= offset + ask)
    ask = ask * 2 < RESYNC_AHEAD_MAX ? ask * 2 : RESYNC_AHEAD_MAX;
  else
    ask = RESYNC_RUN;
 out:
  pthread_mutex_lock (&p->lock);
  p->ahead = ask;
  if (data_end > p->data_end) {
    p->data_start = data_start;
    p->data_end = data_end;
  }
  p->asking = false;
  pthread_cond_broadcast (&p->answered);
  pthread_mutex_unlock (&p->lock);
  quorum_extent_list_free (&merged);
  if (f)
    fanout_put (f);
}

/* Zero [offset, +count) of c, where all its sources hold zeroes: with
 * the zero command where c offers it (holes allowed), else by writing
 * zeroes.
 */
static int
resync_zero (struct child *c, uint64_t offset, uint32_t count,
             struct resync_tally *t)
{
  struct fanout *w;
  char *buf = NULL;
  int err = 0;

  /* Only this child's supervisor changes c->caps (resync_rejoin), and
   * not while it copies.
   */
  if (!child_is_local (c) && c->caps.can_zero)
    w = fanout_run (&resync_conn, OP_ZERO, UINT32_C (1) << c->index,
                    NULL, 0, NULL, count, offset, NBDKIT_FLAG_MAY_TRIM,
                    &err);
  else {
    buf = bufpool_get (count);
    if (buf == NULL)
      return -1;
    memset (buf, 0, count);
    w = fanout_run (&resync_conn, OP_WRITE, UINT32_C (1) << c->index,
                    NULL, 0, buf, count, offset, 0, &err);
  }
  if (w) {
    err = w->slots[c->index].err;
    fanout_put (w);
  }
  if (buf)
    bufpool_put (buf, count);
  if (w == NULL || err) {
    if (err != ENOTCONN || !child_is_local (c))
      report_bad (OP_ZERO, c->index, offset, count, err ? err : EIO);
    return -1;
  }
  resync_took (c, t, offset, count);
  t->zeroed += count;
  return 0;
}

/* Write to c the runs of blocks of [offset, +count) where
 * vote-threshold of bufs (the sources' replies, NULL where one failed)
 * agree (agree: all of them do).  A block without a winner stays stale
 * (and so does its granule).  -1 if a write to c failed.
 */
static int
resync_write_voted (struct child *c, const void *const *bufs,
                    uint64_t offset, uint32_t count, bool agree,
                    struct resync_tally *t)
{
  const uint64_t bs = quorum_vote_block, end = offset + count;
  struct vote_result v;
  uint64_t pos, next, span, nr_lost = 0;
  size_t i;
  char *out;
  int r = 0;

  /* Every source the same (the usual case): written from its reply. */
  if (agree) {
    for (i = 0; bufs[i] == NULL; ++i)
      ;
    return resync_write (c, bufs[i], offset, offset, end, t);
  }

  /* Else block by block, the winners gathered in out. */
  out = bufpool_get (count);
  if (out == NULL)
    return -1;
  for (span = pos = offset; pos < end; pos = next) {
    const size_t rel = pos - offset;

    next = (pos / bs + 1) * bs;
    if (next > end)
      next = end;
    vote_tally (bufs, quorum_nr_children, rel, next - pos, &v);
    if (v.votes >= quorum_threshold) {
      memcpy (out + rel, (const char *) bufs[v.winner] + rel, next - pos);
      continue;
    }
    nr_lost += next - pos;
    if (pos > span && resync_write (c, out, offset, span, pos, t) == -1)
      r = -1;
    span = next;
  }
  if (end > span && resync_write (c, out, offset, span, end, t) == -1)
    r = -1;
  bufpool_put (out, count);
  if (nr_lost)
    nbdkit_debug ("quorum: child %zu: resync %" PRIu32 "@%" PRIu64 ": "
                  "%" PRIu64 " bytes where fewer than vote-threshold=%u "
                  "current children agree: left stale", c->index, count,
                  offset, nr_lost, quorum_threshold);
  return r;
}

/* The sources to read first: vote-threshold of mask, if that many
 * agreeing are more than half of mask (then no other version can win
 * the vote, and the others need not be read); else all of mask.  The
 * filter's plugin first (no socket between), the others in turn from
 * one run to the next.
 */
static uint32_t
resync_first_sources (uint32_t mask, uint64_t offset)
{
  const size_t n = quorum_nr_children;
  uint32_t pick = 0;
  size_t i, k, got = 0;

  if (2 * quorum_threshold <= resync_popcount (mask))
    return mask;
  for (i = 0; i < n; ++i)
    if ((mask & (UINT32_C (1) << i)) && child_is_local (&quorum_children[i])) {
      pick |= UINT32_C (1) << i;
      got++;
    }
  for (k = 0; k < n && got < quorum_threshold; ++k) {
    i = (offset / RESYNC_RUN + k) % n;
    if ((mask & ~pick) & (UINT32_C (1) << i)) {
      pick |= UINT32_C (1) << i;
      got++;
    }
  }
  return pick;
}

/* The replies of f in bufs (NULL where one failed): how many. */
static size_t
resync_replies (const struct fanout *f, const void **bufs)
{
  size_t i, ok = 0;

  for (i = 0; i < quorum_nr_children; ++i) {
    if (!f->slots[i].used)
      continue;
    bufs[i] = f->slots[i].err == 0 ? f->slots[i].buf : NULL;
    if (bufs[i])
      ok++;
  }
  return ok;
}

/* Read [offset, +count) from the sources in mask, and write to c where
 * vote-threshold of them agree: from the first ones if they all agree
 * (resync_first_sources), else from the vote of all.  Called holding
 * the range.
 */
static int
resync_copy (struct child *c, uint32_t mask, uint64_t offset,
             uint32_t count, struct resync_tally *t)
{
  const void *bufs[VOTE_MAX_CHILDREN] = { NULL };
  const uint32_t first = resync_first_sources (mask, offset);
  struct fanout *f, *g = NULL;
  size_t ok, nr;
  bool agree;
  int err, r;

  f = fanout_run (&resync_conn, OP_READ, first, NULL, SIZE_MAX, NULL,
                  count, offset, 0, &err);
  if (f == NULL)
    return 0;                   /* left stale */
  t->read += count;
  ok = resync_replies (f, bufs);
  agree = ok >= quorum_threshold &&
    vote_agree (bufs, quorum_nr_children, 0, count, &nr);
  if (!agree && first != mask) {
    g = fanout_run (&resync_conn, OP_READ, mask & ~first, NULL, SIZE_MAX,
                    NULL, count, offset, 0, &err);
    if (g)
      ok += resync_replies (g, bufs);
  }
  if (ok < quorum_threshold) {
    nbdkit_debug ("quorum: child %zu: resync %" PRIu32 "@%" PRIu64 ": %zu "
                  "current children could be read, vote-threshold is %u: "
                  "left stale", c->index, count, offset, ok,
                  quorum_threshold);
    r = 0;
  }
  else
    r = resync_write_voted (c, bufs, offset, count, agree, t);
  fanout_put (f);
  if (g)
    fanout_put (g);
  return r;
}

/* Copy [offset, +count) to child c where vote-threshold current
 * children agree, block by block, and zero it where they all report
 * zeroes; over the range no child's staleness changes
 * (settle_uniform).  Holds the range.  -1 if writing to c failed;
 * leftovers are not an error (they stay stale).
 */
static int
resync_range (struct resync_pipe *p, struct child *c, uint64_t offset,
              uint32_t count, struct resync_tally *t)
{
  struct quorum_extent_list zeroes = { 0 };
  struct range_lock rl;
  uint64_t pos = offset;
  uint32_t mask;
  size_t i;
  int err, r = 0;

  /* Where the children may differ without any of them being wrong,
   * make them equal first: the sources then agree.
   */
  if (fresh_unsettled (offset, count))
    settle_range (&resync_conn, offset, count, &err);

  range_lock (&rl, offset, count, true);
  mask = settle_readable (&resync_conn, offset, count) &
    ~(UINT32_C (1) << c->index);
  if (resync_popcount (mask) < quorum_threshold) {
    nbdkit_debug ("quorum: child %zu: resync %" PRIu32 "@%" PRIu64 ": %zu "
                  "current children to copy from, vote-threshold is %u: "
                  "left stale", c->index, count, offset,
                  resync_popcount (mask), quorum_threshold);
    goto out;
  }
  /* Where every source holds zeroes (a sparse disk), nothing is read;
   * the rest is read and voted on.
   */
  resync_zeroes (p, mask, offset, count, &zeroes);
  for (i = 0; r == 0 && i <= zeroes.len; ++i) {
    const uint64_t zs = i < zeroes.len ? zeroes.ptr[i].offset
      : offset + count;

    if (zs > pos)
      r = resync_copy (c, mask, pos, zs - pos, t);
    if (r == 0 && i < zeroes.len) {
      r = resync_zero (c, zs, zeroes.ptr[i].length, t);
      pos = zs + zeroes.ptr[i].length;
    }
  }
 out:
  resync_clear (c, t);
  range_unlock (&rl);
  quorum_extent_list_free (&zeroes);
  return r;
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

    while (!j->busy && !p->quit)
      pthread_cond_wait (&p->work, &p->lock);
    if (!j->busy)
      break;
    pthread_mutex_unlock (&p->lock);
    resync_range (p, p->c, j->offset, j->count, &t);
    pthread_mutex_lock (&p->lock);
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
      resync_range (p, p->c, offset, count, &t);
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
 * began reported (if it is not done: resync-end says that) and flushed.
 */
static void
resync_progress (struct resync_pipe *p, struct ratelimit_bucket *bucket,
                 uint64_t read, uint64_t total, unsigned *tenths)
{
  struct child *c = p->c;

  ratelimit_pace (&resync_limit, bucket, read, resync_cancelled, c);
  __atomic_store_n (&c->resync_done, p->copied, __ATOMIC_RELEASE);
  if (p->copied < total && p->copied * 10 / total > *tenths) {
    *tenths = p->copied * 10 / total;
    report_resync_progress (c->index, *tenths * 10, fresh_stale_bytes (c),
                            p->copied);
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
    if (!fresh_next_stale (c, &pos, RESYNC_RUN, &offset, &count))
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
  if (stopped) {
    resync_pipe_end (&p);
    __atomic_store_n (&c->resync_done, p.copied, __ATOMIC_RELEASE);
    __atomic_store_n (&c->resync_since, 0, __ATOMIC_RELEASE);
    return -1;
  }
  resync_progress (&p, &bucket, resync_pipe_end (&p), total, &tenths);

  if (p.copied && !local)
    resync_flush (c);
  left = fresh_stale_bytes (c);
  report_resync_end (c->index, left, p.copied, p.zeroed);
  __atomic_store_n (&c->resync_since, 0, __ATOMIC_RELEASE);
  return left ? 1 : 0;
}
