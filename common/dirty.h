/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* A child's dirty map: one bit per granule of the export that the child
 * missed a write to (it was down, or the write failed there), so that
 * it takes no vote there until resync has copied the granule to it.
 * Pure logic, no I/O: unit-tested by test-dirty.c.
 *
 * Every granule arithmetic of the engine is here.  Marking covers every
 * granule a range touches, clearing only those it covers entirely (the
 * last one may end at the end of the export), so that a granule is
 * clean only when all of it was written.
 *
 * Lock-free: request threads mark and clear with atomic operations,
 * the supervisor reads runs while they do.  A map whose bits are NULL
 * (the local child, or before dirty_init) is always clean.
 */

#ifndef QUORUM_DIRTY_H
#define QUORUM_DIRTY_H

#include <stdbool.h>
#include <stdint.h>

/* The granularity: 64 KiB. */
#define DIRTY_SHIFT 16
#define DIRTY_GRANULE (UINT64_C (1) << DIRTY_SHIFT)

struct dirty_map {
  uint64_t *bits;               /* bit per granule, atomic */
  uint64_t size;                /* of the export, bytes */
  uint64_t nr_granules;
  uint64_t nr_dirty;            /* granules set, atomic: a fast "clean" */
};

/* A map of size bytes, all clean; -1 with errno set if out of memory. */
extern int dirty_init (struct dirty_map *m, uint64_t size);
extern void dirty_free (struct dirty_map *m);

/* Mark every granule [offset, +count) touches: how many were clean. */
extern uint64_t dirty_mark (struct dirty_map *m, uint64_t offset,
                        uint64_t count);
/* Clear the granules [offset, +count) covers entirely. */
extern void dirty_clear (struct dirty_map *m, uint64_t offset,
                         uint64_t count);
/* Whether any granule [offset, +count) touches is dirty; count 0 (a
 * flush) asks whether any granule at all is.
 */
extern bool dirty_test (struct dirty_map *m, uint64_t offset,
                        uint64_t count);
/* The dirty bytes, counting whole granules. */
extern uint64_t dirty_bytes (struct dirty_map *m);
/* The first run of dirty granules at or after byte *pos, at most
 * max_granules long: true with the run in [*offset, +*count) (cut at
 * the end of the export), false if none is left.  *pos moves past the
 * run.
 */
extern bool dirty_next_run (struct dirty_map *m, uint64_t *pos,
                            uint64_t max_granules,
                            uint64_t *offset, uint64_t *count);

#endif /* QUORUM_DIRTY_H */
