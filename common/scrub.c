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
#include "ratelimit.h"
#include "scrub.h"


/* Scrub runs outside any client connection, as resync does. */
struct quorum_conn scrub_conn;

/* The state, under lock; nothing nests in it (no report, no I/O).
 * stop_asked is written under it and read atomically by scrub_stopping
 * (under the rate limit's lock, which wakes the thread from its sleep
 * when the rate changes or it is told to stop).
 */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct scrub_status status;
static bool stop_asked;
static pthread_t thread;
static bool joinable;
static struct ratelimit limit =
  RATELIMIT_INIT (&quorum_scrub_rate, SCRUB_CHUNK);

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

uint64_t
scrub_rate (void)
{
  return ratelimit_get (&limit);
}

void
scrub_set_rate (uint64_t bytes_per_second)
{
  ratelimit_set (&limit, bytes_per_second);
}

void
scrub_get (struct scrub_status *st)
{
  pthread_mutex_lock (&lock);
  *st = status;
  pthread_mutex_unlock (&lock);
}

/* The rate limit: a token bucket holding at most one chunk, charged
 * with the bytes each chunk read (not those it skipped).
 */
static bool
scrub_stopping (void *arg)
{
  return __atomic_load_n (&stop_asked, __ATOMIC_ACQUIRE);
}

static void *
scrub_thread (void *vp)
{
  struct ratelimit_bucket bucket;
  const uint64_t chunk = quorum_vote_block > SCRUB_CHUNK ?
    quorum_vote_block : SCRUB_CHUNK;
  uint64_t pos, end, local_missed = 0;
  bool repair, stop = false;
  struct scrub_status st;

  ratelimit_bucket_init (&bucket);
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

    ratelimit_pace (&limit, &bucket, fd.read, scrub_stopping, NULL);
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
  __atomic_store_n (&stop_asked, false, __ATOMIC_RELEASE);
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

  pthread_mutex_lock (&lock);
  if (status.state != SCRUB_RUNNING) {
    snprintf (err, errlen, "scrub stop: no scrub is running");
    r = -1;
  }
  else {
    __atomic_store_n (&stop_asked, true, __ATOMIC_RELEASE);
    status.stopping = true;
  }
  pthread_mutex_unlock (&lock);
  ratelimit_wake (&limit);
  return r;
}

void
scrub_shutdown (void)
{
  bool join;

  pthread_mutex_lock (&lock);
  __atomic_store_n (&stop_asked, true, __ATOMIC_RELEASE);
  join = joinable;
  joinable = false;
  pthread_mutex_unlock (&lock);
  ratelimit_wake (&limit);
  if (join)
    pthread_join (thread, NULL);
}
