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
 *
 * With state= the scrub records a checkpoint in the state file (its
 * range, how far it came, its counts) every CHECKPOINT_NS or
 * CHECKPOINT_BYTES, and where it was when nbdkit exits; a start with
 * the same state= resumes it there (scrub_resume).  Its end, and scrub
 * stop, clear the checkpoint.  A crash loses at most what it did since
 * the last one: those chunks are scrubbed again.
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

#include "fresh.h"
#include "internal.h"
#include "ratelimit.h"
#include "scrub.h"
#include "statefile.h"


/* Scrub runs outside any client connection, as resync does. */
struct quorum_conn scrub_conn;

/* The state, under lock; nothing nests in it (no report, no I/O, not
 * the state file's lock).  stop_asked is written under it and read
 * atomically by scrub_stopping (under the rate limit's lock, which
 * wakes the thread from its sleep when the rate changes or it is told
 * to stop); stop_cleared says it was scrub stop, whose scrub leaves no
 * checkpoint, not nbdkit's exit.
 */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct scrub_status status;
static bool stop_asked, stop_cleared;
static pthread_t thread;
static bool joinable;
static struct ratelimit limit =
  RATELIMIT_INIT (&quorum_scrub_rate, SCRUB_CHUNK);

/* Checkpoints, at most this far apart (the first bound reached). */
#define CHECKPOINT_NS (UINT64_C (5) * 1000000000)
#define CHECKPOINT_BYTES (UINT64_C (256) << 20)

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

/* Record st's checkpoint at pos in the state file, durably, or clear
 * it (keep false); nothing without state=.  A failure is said once:
 * the scrub goes on (the data path fails the writes that need the
 * file).
 */
static void
scrub_checkpoint (const struct scrub_status *st, uint64_t pos, bool keep)
{
  static bool warned;
  struct statefile *sf = fresh_statefile ();
  const struct statefile_scrub ck = {
    .offset = st->offset, .length = st->length, .pos = pos,
    .repair = st->repair, .mismatched = st->mismatched,
    .repaired = st->repaired, .unreadable = st->unreadable,
    .no_quorum = st->no_quorum, .skipped = st->skipped,
    .unchecked = st->unchecked,
  };

  if (sf == NULL)
    return;
  if (statefile_sync (sf, statefile_scrub_set (sf, keep ? &ck : NULL))
      == -1) {
    if (!warned)
      nbdkit_error ("quorum: state=%s: scrub: cannot record its "
                    "checkpoint: %m", quorum_state_file);
    warned = true;
    return;
  }
  pthread_mutex_lock (&lock);
  status.has_checkpoint = keep;
  status.checkpoint = keep ? pos : 0;
  pthread_mutex_unlock (&lock);
}

/* The scrub ended at pos, of end.  Stopped by nbdkit's exit: resumed
 * there at the next start.  Done, stopped by scrub stop or by
 * blkverify: nothing to resume.
 */
static void
scrub_finish (uint64_t pos, uint64_t end, bool blkverify)
{
  struct scrub_status st;
  bool keep;

  pthread_mutex_lock (&lock);
  keep = pos < end && !stop_cleared && !blkverify;
  st = status;
  pthread_mutex_unlock (&lock);
  scrub_checkpoint (&st, pos, keep);

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
}

static void *
scrub_thread (void *vp)
{
  struct ratelimit_bucket bucket;
  const uint64_t chunk = quorum_vote_block > SCRUB_CHUNK ?
    quorum_vote_block : SCRUB_CHUNK;
  uint64_t pos, end, local_missed = 0, ck_pos, ck_ns;
  bool repair, stop = false, blkverify = false;
  struct scrub_status st;

  ratelimit_bucket_init (&bucket);
  pthread_mutex_lock (&lock);
  pos = status.offset + status.bytes_done;
  end = status.offset + status.length;
  repair = status.repair;
  st = status;
  pthread_mutex_unlock (&lock);
  if (st.resumed)
    report_scrub_resume (st.offset, st.length, pos, repair, scrub_rate ());
  else
    report_scrub_start (pos, end - pos, repair, scrub_rate ());
  ck_pos = pos;
  ck_ns = now_ns ();

  while (pos < end && !stop) {
    uint64_t next = (pos / chunk + 1) * chunk, t;
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
      blkverify = true;
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
    st = status;
    pthread_mutex_unlock (&lock);

    pos = next;
    t = now_ns ();
    if (pos < end && !stop &&
        (t - ck_ns >= CHECKPOINT_NS || pos - ck_pos >= CHECKPOINT_BYTES)) {
      scrub_checkpoint (&st, pos, true);
      ck_pos = pos;
      ck_ns = t;
    }
    if (!stop)
      ratelimit_pace (&limit, &bucket, fd.read, scrub_stopping, NULL);
  }

  scrub_finish (pos, end, blkverify);
  return NULL;
}

/* Start the thread for status, set up by the caller (lock held). */
static int
scrub_launch_locked (char *err, size_t errlen)
{
  sigset_t all, old;
  int e;

  __atomic_store_n (&stop_asked, false, __ATOMIC_RELEASE);
  stop_cleared = false;
  /* Signals are for nbdkit's own threads. */
  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  e = pthread_create (&thread, NULL, scrub_thread, NULL);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  if (e) {
    status.state = SCRUB_IDLE;
    snprintf (err, errlen, "scrub start: pthread_create: %s",
              strerror (e));
    return -1;
  }
  joinable = true;
  return 0;
}

int
scrub_start (bool repair, uint64_t offset, uint64_t length, char *err,
             size_t errlen)
{
  const uint64_t bs = quorum_vote_block, size = quorum_export_size;
  uint64_t end = offset + length;
  bool join;
  int r;

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
  r = scrub_launch_locked (err, errlen);
  pthread_mutex_unlock (&lock);
  return r;
}

int
scrub_resume (void)
{
  const uint64_t bs = quorum_vote_block, size = quorum_export_size;
  struct statefile *sf = fresh_statefile ();
  struct statefile_scrub ck;
  const char *why = NULL;
  uint64_t offset, end, pos;
  char err[128];
  int r;

  if (sf == NULL)
    return 0;
  r = statefile_scrub_get (sf, &ck, &why);
  if (r == 0)
    return 0;
  if (r == -1) {
    nbdkit_error ("quorum: state=%s: the scrub checkpoint in it is "
                  "ignored: %s; \"scrub start\" begins a new scrub",
                  quorum_state_file, why);
    return 0;
  }
  /* Whole vote blocks, if vote-block-size changed meanwhile (the
   * range is inside the export: statefile_scrub_get checked).
   */
  offset = ck.offset - ck.offset % bs;
  end = ck.offset + ck.length;
  if (end % bs) {
    end += bs - end % bs;
    if (end > size)
      end = size;
  }
  pos = ck.pos - ck.pos % bs;
  if (pos < offset)
    pos = offset;
  nbdkit_debug ("quorum: state=%s: resuming the scrub of %" PRIu64 "+%"
                PRIu64 " from %" PRIu64, quorum_state_file, offset,
                end - offset, pos);

  pthread_mutex_lock (&lock);
  /* A "scrub start" on the control socket, which is up already, came
   * first: that scrub stands (its checkpoints replace this one).
   */
  if (status.state == SCRUB_RUNNING) {
    pthread_mutex_unlock (&lock);
    nbdkit_debug ("quorum: a scrub was started before the checkpoint's "
                  "could be resumed: not resumed");
    return 0;
  }
  status = (struct scrub_status) {
    .state = SCRUB_RUNNING, .repair = ck.repair || quorum_rewrite_corrupted,
    .offset = offset, .length = end - offset, .since = now_ns (),
    .bytes_done = pos - offset, .done_at_since = pos - offset,
    .mismatched = ck.mismatched, .repaired = ck.repaired,
    .unreadable = ck.unreadable, .no_quorum = ck.no_quorum,
    .skipped = ck.skipped, .unchecked = ck.unchecked,
    .resumed = true, .resumed_from = pos,
    .has_checkpoint = true, .checkpoint = ck.pos,
  };
  r = scrub_launch_locked (err, sizeof err);
  pthread_mutex_unlock (&lock);
  if (r == -1)
    nbdkit_error ("quorum: resuming the scrub: %s", err);
  return r;
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
    stop_cleared = true;
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
