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

#include "internal.h"
#include "scrub.h"


/* Scrub runs outside any client connection, as resync does. */
struct quorum_conn scrub_conn;

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

bool
scrub_local_usable (void)
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
    struct scrub_findings fd = { 0 };

    if (next > end)
      next = end;
    scrub_chunk (pos, next - pos, repair, &fd);
    if (fd.unchecked && quorum_has_local && !scrub_local_usable () &&
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
