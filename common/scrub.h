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

/* Ask the running scrub to stop after its current chunk.  0, or -1
 * with why in err (none runs).
 */
extern int scrub_stop (char *err, size_t errlen);

/* The rate limit, bytes per second (0: none); scrub-rate= until
 * changed.  Takes effect at once, in a scrub running too.
 */
extern uint64_t scrub_rate (void);
extern void scrub_set_rate (uint64_t bytes_per_second);

extern void scrub_get (struct scrub_status *st);

/* Stop the scrub, if one runs, and wait for its thread. */
extern void scrub_shutdown (void);

#endif /* QUORUM_SCRUB_H */
