/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Inside recovery: what the threads (resync.c: supervisors, healer,
 * settler) take from the copy (resync-copy.c).  Only resync*.c
 * include this; the layers above include resync.h.
 */

#ifndef QUORUM_RESYNC_INT_H
#define QUORUM_RESYNC_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dirty.h"
#include "quorum.h"

struct child;

/* Up to this much of a child's consecutive stale granules (or of the
 * unsettled regions) at a time.
 */
#define RESYNC_RUN (16 * DIRTY_GRANULE)

/* A run inside what the last block status said every source holds as
 * zeroes may be up to this long: one zero command for a long hole, not
 * one a RESYNC_RUN.  Its block status is asked again under its range;
 * what turns out to be data is read RESYNC_RUN at a time.
 */
#define RESYNC_ZERO_RUN (64 * RESYNC_RUN)

/* The connection recovery reads and writes through, outside any
 * client's (resync_set_source sets its local part).
 */
extern struct quorum_conn resync_conn;

/* Copy every stale region to c from the quorum.  rejoined: it was just
 * reconnected.  0 if nothing is stale any more, 1 if something is
 * left or a write to c failed, -1 if c went down or is quitting.
 */
extern int resync_child (struct child *c, bool rejoined);

/* Runs in flight at once, at most (each holds its sources' replies). */
#define RESYNC_DEPTH 8

static inline size_t
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
  bool failed;                  /* a write to the child failed */
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
  bool write_failed;            /* a run's write to the child failed */
  /* Block status seen ahead: [data_start, data_end) is data on some
   * source (so it is read whatever it holds now: reading is never
   * wrong), and the next question asks this far.
   */
  uint64_t data_start, data_end;
  /* [zero_start, zero_end): zeroes on every source when last asked,
   * for the length of the next runs only (never trusted for a copy).
   */
  uint64_t zero_start, zero_end;
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

/* Copy [offset, +count) to child c where vote-threshold current
 * children agree, block by block, and zero it where they all report
 * zeroes (resync-run.c).  Holds the range.  -1 if writing to c failed;
 * leftovers are not an error (they stay stale).
 */
extern int resync_range (struct resync_pipe *p, struct child *c,
                         uint64_t offset, uint32_t count,
                         struct resync_tally *t);

#endif /* QUORUM_RESYNC_INT_H */
