/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Scrub: one background thread reads a range of the export through
 * the vote, reports what it finds and may repair it (scrub.c).  Started
 * and stopped from the control socket.
 */

#ifndef QUORUM_SCRUB_H
#define QUORUM_SCRUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quorum.h"

enum scrub_state { SCRUB_IDLE, SCRUB_RUNNING, SCRUB_DONE };

/* The scrub running, or the last one, for status. */
struct scrub_status {
  enum scrub_state state;
  bool repair;                  /* outvoted children are rewritten */
  bool stopping;                /* scrub stop was asked, not yet done */
  bool stopped;                 /* done because it was stopped */
  uint64_t offset, length;      /* the range */
  uint64_t bytes_done;          /* of length: read, skipped or unchecked */
  uint64_t mismatched;          /* in blocks where a child was outvoted */
  uint64_t repaired;            /* rewritten, summed over children */
  uint64_t unreadable;          /* in blocks a child failed to read */
  uint64_t no_quorum;           /* in blocks no version had the votes */
  uint64_t skipped;             /* every child said zero: not read */
  uint64_t unchecked;           /* read without some child's vote */
  uint64_t since, until;        /* CLOCK_MONOTONIC ns; until 0: running */
  uint64_t done_at_since;       /* bytes_done at since (resumed), for rates */
  bool resumed;                 /* a restart resumed it at resumed_from */
  uint64_t resumed_from;
  bool has_checkpoint;          /* state=: checkpoint is durable, where a */
  uint64_t checkpoint;          /* restart would resume it */
};

/* Where the filter's plugin is read from in the background (see
 * quorum_after_fork); NULL in the plugin form.
 */
extern void scrub_set_source (const struct quorum_local_ops *local,
                              void *local_ctx);

/* Start scrubbing [offset, offset+length) (rounded out to whole vote
 * blocks).  0, or -1 with why in err (one is running already).
 */
extern int scrub_start (bool repair, uint64_t offset, uint64_t length,
                        char *err, size_t errlen);

/* After the fork, once the children are started: with state=, the
 * scrub a restart interrupted (its checkpoint is in the file) runs
 * again from its checkpoint, with its counts.  A checkpoint this build
 * cannot use is ignored, with a message.  0, or -1 after nbdkit_error.
 */
extern int scrub_resume (void);

/* Ask the running scrub to stop after its current chunk; with state=
 * its checkpoint is cleared, so no restart resumes it.  0, or -1 with
 * why in err (none runs).
 */
extern int scrub_stop (char *err, size_t errlen);

/* The rate limit, bytes per second (0: none); scrub-rate= until
 * changed.  Takes effect at once, in a scrub running too.
 */
extern uint64_t scrub_rate (void);
extern void scrub_set_rate (uint64_t bytes_per_second);

extern void scrub_get (struct scrub_status *st);

/* Stop the scrub, if one runs, and wait for its thread (at nbdkit's
 * exit): with state= it records where it was, to resume there at the
 * next start.
 */
extern void scrub_shutdown (void);

/* Between scrub.c and scrub-chunk.c. */

/* Read at a time (a multiple of every vote-block-size up to it). */
#define SCRUB_CHUNK (1024 * 1024)
/* Most blocks in a chunk: SCRUB_CHUNK of the smallest vote blocks. */
#define MAX_BLOCKS (SCRUB_CHUNK / 512)

/* What a chunk found, in bytes. */
struct scrub_findings {
  uint64_t read, mismatched, repaired, unreadable, no_quorum, skipped;
  bool unchecked;               /* some child had no vote in it */
  bool blkverify;               /* blkverify=true, and children differ */
};

/* Scrub runs outside any client connection, as resync does: the
 * filter's plugin through the source of scrub_set_source.
 */
extern struct quorum_conn scrub_conn;

/* Whether the filter's plugin can be read from here now. */
extern bool scrub_local_usable (void);

/* Scrub [off, +count), at most one chunk, holding its range; what it
 * found is added to fd.  repair: rewrite outvoted children.
 */
extern void scrub_chunk (uint64_t off, uint32_t count, bool repair,
                         struct scrub_findings *fd);

#endif /* QUORUM_SCRUB_H */
