/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Scrub, on top of the fan-out and the vote, beside resync: one
 * background thread reads a range of the export, a chunk at a time,
 * from every current child and votes on it block by block as a read
 * does.  It reports every outvoted block (event=bad, error=mismatch),
 * every block a child failed to read (event=bad with the errno) and
 * every block no version had vote-threshold votes for (event=failure);
 * with --repair or rewrite-corrupted=true it rewrites outvoted
 * children with the winning version, and never writes a block that
 * had no winner, nor one a child failed to read.  Blocks that every
 * child reports as zeroes (block status) are not read.  A token bucket
 * keeps it below its rate limit.
 *
 * Each chunk holds its range as a read does (exclusively when it may
 * repair), so no write overlaps its vote.
 *
 * In the filter the plugin (child 0) can be read from here only while
 * a client connection lends its context (quorum_local_ops.available):
 * a chunk scrubbed while none is connected is voted on by the remote
 * children alone and counted in unchecked_bytes, as is one where any
 * child was down or stale.  Nor can the plugin be rewritten from here
 * (a lent context may be read-only): its outvoted blocks are reported,
 * not repaired; a client's read of them with rewrite-corrupted=true
 * repairs them.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "fanout.h"
#include "internal.h"
#include "rangelock.h"
#include "scrub.h"

/* Read at a time (a multiple of every vote-block-size up to it). */
#define SCRUB_CHUNK (1024 * 1024)
/* Most blocks in a chunk: SCRUB_CHUNK of the smallest vote blocks. */
#define MAX_BLOCKS (SCRUB_CHUNK / 512)

/* Scrub runs outside any client connection, as resync does. */
static struct quorum_conn scrub_conn;

/* The state, under lock; nothing nests in it (no report, no I/O).
 * cond (CLOCK_MONOTONIC) wakes the thread from its rate-limit sleep
 * when it is told to stop or the rate changes.
 */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond;
static pthread_once_t cond_once = PTHREAD_ONCE_INIT;
static struct scrub_status status;
static bool stop_asked;
static bool rate_set;           /* rate_limit replaces scrub-rate= */
static uint64_t rate_limit;
static pthread_t thread;
static bool joinable;

static void
cond_init (void)
{
  pthread_condattr_t attr;

  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  pthread_cond_init (&cond, &attr);
  pthread_condattr_destroy (&attr);
}

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void
scrub_set_source (const struct quorum_local_ops *local, void *local_ctx)
{
  scrub_conn.local = local;
  scrub_conn.local_ctx = local_ctx;
  /* Reads and block status only (see the filter's background_ops),
   * unsplit, as resync reads it.
   */
  scrub_conn.local_caps = (struct quorum_caps) {
    .size = quorum_export_size, .can_extents = local != NULL,
  };
}

/* Whether the filter's plugin can be read from here now. */
static bool
local_usable (void)
{
  const struct quorum_local_ops *l = scrub_conn.local;

  return l && (!l->available || l->available (scrub_conn.local_ctx));
}

static uint64_t
rate_locked (void)
{
  return rate_set ? rate_limit : quorum_scrub_rate;
}

uint64_t
scrub_rate (void)
{
  uint64_t r;

  pthread_mutex_lock (&lock);
  r = rate_locked ();
  pthread_mutex_unlock (&lock);
  return r;
}

void
scrub_set_rate (uint64_t bytes_per_second)
{
  pthread_once (&cond_once, cond_init);
  pthread_mutex_lock (&lock);
  rate_set = true;
  rate_limit = bytes_per_second;
  pthread_cond_broadcast (&cond);
  pthread_mutex_unlock (&lock);
}

void
scrub_get (struct scrub_status *st)
{
  pthread_mutex_lock (&lock);
  *st = status;
  pthread_mutex_unlock (&lock);
}

/* The rate limit: a token bucket holding at most one chunk, charged
 * with the bytes each chunk read (not those it skipped), and waited
 * on until it is out of debt.  tokens and last belong to the thread.
 */
struct bucket {
  double tokens;                /* bytes; negative: owed */
  uint64_t last;                /* ns, when last refilled */
};

static void
pace (struct bucket *b, uint64_t bytes)
{
  b->tokens -= bytes;
  pthread_mutex_lock (&lock);
  for (;;) {
    uint64_t rate = rate_locked (), now = now_ns ();
    struct timespec until;
    double wait;

    if (stop_asked || rate == 0) {
      b->tokens = 0;
      b->last = now;
      break;
    }
    b->tokens += (now - b->last) / 1e9 * rate;
    b->last = now;
    if (b->tokens > SCRUB_CHUNK)
      b->tokens = SCRUB_CHUNK;
    if (b->tokens >= 0)
      break;
    /* At most a second at a time: a lower rate set meanwhile is
     * seen, and a higher one wakes us.
     */
    wait = -b->tokens / rate;
    if (wait > 1)
      wait = 1;
    now += (uint64_t) (wait * 1e9);
    until.tv_sec = now / 1000000000;
    until.tv_nsec = now % 1000000000;
    pthread_cond_timedwait (&cond, &lock, &until);
  }
  pthread_mutex_unlock (&lock);
}

/* What a chunk found, in bytes. */
struct findings {
  uint64_t read, mismatched, repaired, unreadable, no_quorum, skipped;
  bool unchecked;               /* some child had no vote in it */
  bool blkverify;               /* blkverify=true, and children differ */
};

/* A run of adjacent blocks with the same finding, reported as one. */
struct run {
  uint64_t start, end;          /* [start, end); empty if equal */
  int err;
};

/* A run of blocks where child i was outvoted: reported, and with
 * repair rewritten with the winners (win holds them from base on).
 */
static void
outvoted_flush (struct run *r, size_t i, bool repair, const char *win,
                uint64_t base, struct findings *fd)
{
  struct fanout *f;
  int err;

  if (r->end == r->start)
    return;
  report_bad (OP_READ, i, r->start, r->end - r->start, 0);
  if (repair && child_is_local (&quorum_children[i]))
    nbdkit_debug ("quorum: scrub: child %zu (the plugin) outvoted at "
                  "%" PRIu64 "+%" PRIu64 ": not repaired from the "
                  "background; a client read with rewrite-corrupted=true "
                  "repairs it", i, r->start, r->end - r->start);
  else if (repair) {
    f = fanout_run (&scrub_conn, OP_WRITE, UINT32_C (1) << i, NULL, 0,
                    win + (r->start - base), r->end - r->start, r->start, 0,
                    &err);
    if (f) {
      if (f->slots[i].err)
        report_bad (OP_WRITE, i, r->start, r->end - r->start,
                    f->slots[i].err);
      else {
        report_repair (i, r->start, r->end - r->start);
        fd->repaired += r->end - r->start;
      }
      fanout_put (f);
    }
  }
  r->start = r->end = 0;
}

static void
failed_flush (struct run *r, size_t i)
{
  if (r->end > r->start)
    report_bad (OP_READ, i, r->start, r->end - r->start, r->err);
  r->start = r->end = 0;
}

/* Whether err says the link to a child failed rather than its disk:
 * reading it block by block would only fail again.
 */
static bool
link_error (int err)
{
  return err == ENOTCONN || err == ETIMEDOUT || err == ESHUTDOWN ||
    err == ECONNRESET || err == EPIPE || err == ENOMEM;
}

/* Child i failed to read [off, +count): read it again a block at a
 * time into buf (count bytes), so that only the blocks it cannot read
 * lose its vote; ok[b] has bit i for each it could.  Each failing run
 * is reported.
 */
static void
narrow (size_t i, uint64_t off, uint32_t count, int err, char *buf,
        uint32_t *ok)
{
  const uint64_t bs = quorum_vote_block;
  struct run r = { 0, 0, 0 };
  uint64_t pos, next;
  size_t b;

  for (pos = off, b = 0; pos < off + count; pos = next, ++b) {
    struct fanout *f;
    int e = err;

    next = pos + bs < off + count ? pos + bs : off + count;
    if (buf && !link_error (err)) {
      f = fanout_run (&scrub_conn, OP_READ, UINT32_C (1) << i,
                      buf + (pos - off), i, NULL, next - pos, pos, 0, &e);
      if (f) {
        e = f->slots[i].err;
        fanout_put (f);
      }
      if (e == 0) {
        ok[b] |= UINT32_C (1) << i;
        continue;
      }
    }
    if (r.end != pos || r.err != e) {
      failed_flush (&r, i);
      r.start = pos;
      r.err = e;
    }
    r.end = next;
  }
  failed_flush (&r, i);
}

/* Over 80 lines: one pass over the blocks of a run keeps the runs of
 * every child (outvoted, for report and repair) and of failures in
 * step, as the read's vote does (engine.c).
 */
/* Read [off, +count), a whole number of vote blocks but perhaps the
 * export's last, from the children in mask and vote block by block.
 */
static void
scrub_run (uint64_t off, uint32_t count, uint32_t mask, bool repair,
           struct findings *fd)
{
  const uint64_t bs = quorum_vote_block;
  const size_t n = quorum_nr_children;
  const void *bufs[VOTE_MAX_CHILDREN], *vbufs[VOTE_MAX_CHILDREN];
  char *own[VOTE_MAX_CHILDREN] = { NULL };
  struct run bad[VOTE_MAX_CHILDREN] = { { 0, 0, 0 } };
  struct run nq = { 0, 0, 0 };
  uint32_t ok[MAX_BLOCKS] = { 0 }, voters = mask;
  size_t nq_votes = 0, nq_version[VOTE_MAX_CHILDREN];
  char *win = NULL;
  struct vote_result v;
  struct fanout *f;
  uint64_t pos, next;
  size_t i, b, nblocks = (count + bs - 1) / bs;
  int err;

  f = fanout_run (&scrub_conn, OP_READ, mask, NULL, SIZE_MAX, NULL, count,
                  off, 0, &err);
  if (f == NULL) {
    fd->unchecked = true;
    return;
  }
  fd->read += count;
  for (i = 0; i < n; ++i) {
    int e = f->slots[i].err;

    bufs[i] = NULL;
    if (!f->slots[i].used)
      continue;
    if (e == 0) {
      bufs[i] = f->slots[i].buf;
      for (b = 0; b < nblocks; ++b)
        ok[b] |= UINT32_C (1) << i;
    }
    else if (child_is_local (&quorum_children[i]) && e == ENOTCONN) {
      /* The last client left since we looked: no vote, no error. */
      voters &= ~(UINT32_C (1) << i);
      fd->unchecked = true;
    }
    else {
      own[i] = nblocks > 1 ? malloc (count) : NULL;
      narrow (i, off, count, e, own[i], ok);
      bufs[i] = own[i];
    }
  }
  if (repair)
    win = malloc (count);

  for (pos = off, b = 0; pos < off + count; pos = next, ++b) {
    const size_t rel = pos - off;

    next = pos + bs < off + count ? pos + bs : off + count;
    for (i = 0; i < n; ++i)
      vbufs[i] = ok[b] & (UINT32_C (1) << i) ? bufs[i] : NULL;
    vote_tally (vbufs, n, rel, next - pos, &v);
    if ((ok[b] & voters) != voters)
      fd->unreadable += next - pos;

    if (v.votes < quorum_threshold) {
      fd->no_quorum += next - pos;
      if (nq.end != pos || nq_votes != v.votes ||
          memcmp (nq_version, v.version, n * sizeof v.version[0]) != 0) {
        if (nq.end > nq.start)
          report_failure_votes (OP_READ, nq.start, nq.end - nq.start,
                                nq_votes, nq_version, n);
        nq.start = pos;
        nq_votes = v.votes;
        memcpy (nq_version, v.version, n * sizeof v.version[0]);
      }
      nq.end = next;
      continue;
    }
    if (v.nr_versions == 1)
      continue;
    if (quorum_blkverify) {
      fd->blkverify = true;
      report_failure_blkverify (pos, next - pos, pos);
      break;
    }
    fd->mismatched += next - pos;
    if (win)
      memcpy (win + rel, (const char *) vbufs[v.winner] + rel, next - pos);
    for (i = 0; i < n; ++i) {
      if (v.version[i] == VOTE_NO_VERSION || v.version[i] == v.winner)
        continue;
      if (bad[i].end != pos)
        outvoted_flush (&bad[i], i, win != NULL, win, off, fd);
      if (bad[i].end == bad[i].start)
        bad[i].start = pos;
      bad[i].end = next;
    }
  }
  if (nq.end > nq.start)
    report_failure_votes (OP_READ, nq.start, nq.end - nq.start, nq_votes,
                          nq_version, n);
  for (i = 0; i < n; ++i)
    outvoted_flush (&bad[i], i, win != NULL, win, off, fd);
  if (repair && win == NULL)
    nbdkit_error ("quorum: scrub: out of memory: %" PRIu32 "@%" PRIu64
                  " not repaired", count, off);

  free (win);
  for (i = 0; i < n; ++i)
    free (own[i]);
  fanout_put (f);
}

/* zero[b]: every child in mask says block b of [off, +count) reads as
 * zeroes.  All false if any cannot say so for sure.
 */
static void
scrub_zeroes (uint64_t off, uint32_t count, uint32_t mask, bool *zero,
              size_t nblocks)
{
  const uint64_t bs = quorum_vote_block, end = off + count;
  struct fanout *f;
  size_t i, b;
  int err;

  memset (zero, 0, nblocks * sizeof *zero);
  /* A block status connection may not see writes not yet flushed. */
  for (i = 0; i < quorum_nr_children; ++i)
    if ((mask & (UINT32_C (1) << i)) &&
        child_meta_stale (&quorum_children[i]))
      return;
  f = fanout_run (&scrub_conn, OP_EXTENTS, mask, NULL, 0, NULL, count, off,
                  0, &err);
  if (f == NULL)
    return;
  for (i = 0; i < quorum_nr_children; ++i)
    if (f->slots[i].used && f->slots[i].err) {
      fanout_put (f);
      return;
    }
  memset (zero, 1, nblocks * sizeof *zero);
  for (i = 0; i < quorum_nr_children; ++i) {
    const struct quorum_extent_list *list = &f->slots[i].extents;
    uint64_t epos = off;
    size_t k = 0;

    if (!f->slots[i].used)
      continue;
    for (b = 0; b < nblocks; ++b) {
      uint64_t bstart = off + b * bs;
      uint64_t bend = bstart + bs < end ? bstart + bs : end;
      uint64_t p;
      size_t kk;

      while (k < list->len && epos + list->ptr[k].length <= bstart) {
        epos += list->ptr[k].length;
        k++;
      }
      for (p = epos, kk = k; p < bend; p += list->ptr[kk++].length)
        if (kk >= list->len || list->ptr[kk].length == 0 ||
            !(list->ptr[kk].type & NBDKIT_EXTENT_ZERO)) {
          zero[b] = false;
          break;
        }
    }
  }
  fanout_put (f);
}

/* Scrub one chunk [off, +count), holding its range. */
static void
scrub_chunk (uint64_t off, uint32_t count, bool repair, struct findings *fd)
{
  const uint64_t bs = quorum_vote_block;
  const uint32_t all = quorum_nr_children == 32 ? UINT32_MAX :
    (UINT32_C (1) << quorum_nr_children) - 1;
  size_t i, b, nblocks = (count + bs - 1) / bs, voters = 0;
  bool zero[MAX_BLOCKS];
  struct range_lock rl;
  uint32_t mask;

  range_lock (&rl, off, count, repair);
  mask = fanout_participants (OP_READ, off, count);
  for (i = 0; i < quorum_nr_children; ++i) {
    if (child_is_local (&quorum_children[i]) && !local_usable ())
      mask &= ~(UINT32_C (1) << i);
    if (mask & (UINT32_C (1) << i))
      voters++;
  }
  if (mask != all)
    fd->unchecked = true;
  if (voters < quorum_threshold)        /* nothing could win: skip it */
    goto out;

  scrub_zeroes (off, count, mask, zero, nblocks);
  for (b = 0; b < nblocks && !fd->blkverify; ) {
    size_t e;

    if (zero[b]) {
      fd->skipped += (off + (b + 1) * bs < off + count ? bs :
                      off + count - (off + b * bs));
      b++;
      continue;
    }
    for (e = b + 1; e < nblocks && !zero[e]; ++e)
      ;
    scrub_run (off + b * bs,
               (e == nblocks ? count : e * bs) - b * bs, mask, repair, fd);
    b = e;
  }
 out:
  range_unlock (&rl);
}

static void *
scrub_thread (void *vp)
{
  struct bucket bucket = { .tokens = 0, .last = now_ns () };
  const uint64_t chunk = quorum_vote_block > SCRUB_CHUNK ?
    quorum_vote_block : SCRUB_CHUNK;
  uint64_t pos, end, local_missed = 0;
  bool repair, stop = false;
  struct scrub_status st;

  pthread_mutex_lock (&lock);
  pos = status.offset;
  end = status.offset + status.length;
  repair = status.repair;
  pthread_mutex_unlock (&lock);
  report_scrub_start (pos, end - pos, repair, scrub_rate ());

  /* XXX state= (issue 12) resumes from a checkpoint: save pos here
   * every so many chunks (and at the end), and after a restart begin
   * there instead of at status.offset, with the counts saved.
   */
  while (pos < end && !stop) {
    uint64_t next = (pos / chunk + 1) * chunk;
    struct findings fd = { 0 };

    if (next > end)
      next = end;
    scrub_chunk (pos, next - pos, repair, &fd);
    if (fd.unchecked && quorum_has_local && !local_usable () &&
        local_missed++ == 0)
      nbdkit_error ("quorum: scrub: the plugin (child 0) cannot be read "
                    "from the background while no client is connected: "
                    "blocks are checked without it meanwhile, and counted "
                    "as unchecked");
    if (fd.blkverify) {
      nbdkit_error ("quorum: blkverify: scrub: children differ in "
                    "%" PRIu64 "+%" PRIu64 ": shutting down", pos,
                    next - pos);
      nbdkit_shutdown ();
    }

    pthread_mutex_lock (&lock);
    status.bytes_done += next - pos;
    status.mismatched += fd.mismatched;
    status.repaired += fd.repaired;
    status.unreadable += fd.unreadable;
    status.no_quorum += fd.no_quorum;
    status.skipped += fd.skipped;
    if (fd.unchecked)
      status.unchecked += next - pos;
    stop = stop_asked || fd.blkverify;
    pthread_mutex_unlock (&lock);

    pace (&bucket, fd.read);
    pos = next;
  }

  pthread_mutex_lock (&lock);
  status.state = SCRUB_DONE;
  status.stopped = pos < end;
  status.stopping = false;
  status.until = now_ns ();
  st = status;
  pthread_mutex_unlock (&lock);
  report_scrub_end (st.offset, st.length, st.stopped, st.bytes_done,
                    st.mismatched, st.repaired, st.unreadable,
                    st.no_quorum, st.skipped, st.unchecked);
  return NULL;
}

int
scrub_start (bool repair, uint64_t offset, uint64_t length, char *err,
             size_t errlen)
{
  const uint64_t bs = quorum_vote_block, size = quorum_export_size;
  uint64_t end = offset + length;
  sigset_t all, old;
  bool join;
  int e;

  pthread_once (&cond_once, cond_init);
  pthread_mutex_lock (&lock);
  if (status.state == SCRUB_RUNNING) {
    snprintf (err, errlen, "scrub start: a scrub is running already "
              "(%" PRIu64 " of %" PRIu64 " bytes done): \"scrub stop\" it "
              "first", status.bytes_done, status.length);
    pthread_mutex_unlock (&lock);
    return -1;
  }
  join = joinable;
  joinable = false;
  pthread_mutex_unlock (&lock);
  if (join)                     /* done: returns at once */
    pthread_join (thread, NULL);

  /* Whole vote blocks, as reads are voted. */
  offset -= offset % bs;
  if (end % bs) {
    end += bs - end % bs;
    if (end > size)
      end = size;
  }

  pthread_mutex_lock (&lock);
  status = (struct scrub_status) {
    .state = SCRUB_RUNNING, .repair = repair || quorum_rewrite_corrupted,
    .offset = offset, .length = end - offset, .since = now_ns (),
  };
  stop_asked = false;
  /* Signals are for nbdkit's own threads. */
  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  e = pthread_create (&thread, NULL, scrub_thread, NULL);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  if (e) {
    status.state = SCRUB_IDLE;
    snprintf (err, errlen, "scrub start: pthread_create: %s",
              strerror (e));
  }
  else
    joinable = true;
  pthread_mutex_unlock (&lock);
  return e ? -1 : 0;
}

int
scrub_stop (char *err, size_t errlen)
{
  int r = 0;

  pthread_once (&cond_once, cond_init);
  pthread_mutex_lock (&lock);
  if (status.state != SCRUB_RUNNING) {
    snprintf (err, errlen, "scrub stop: no scrub is running");
    r = -1;
  }
  else {
    stop_asked = true;
    status.stopping = true;
    pthread_cond_broadcast (&cond);
  }
  pthread_mutex_unlock (&lock);
  return r;
}

void
scrub_shutdown (void)
{
  bool join;

  pthread_once (&cond_once, cond_init);
  pthread_mutex_lock (&lock);
  stop_asked = true;
  pthread_cond_broadcast (&cond);
  join = joinable;
  joinable = false;
  pthread_mutex_unlock (&lock);
  if (join)
    pthread_join (thread, NULL);
}
