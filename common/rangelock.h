/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Byte-range locks over the export, across all client connections.
 *
 * Two overlapping writes in flight at once could reach the children in
 * different orders and leave them different for good; a read
 * overlapping a write could see old data on some children and new on
 * others and take that for corruption.  So writes exclude every
 * overlapping request and reads exclude overlapping writes, while
 * everything that does not overlap runs in parallel.  Requests are
 * served in arrival order among those that overlap, so neither reads
 * nor writes starve.
 */

#ifndef QUORUM_RANGELOCK_H
#define QUORUM_RANGELOCK_H

#include <stdbool.h>
#include <stdint.h>

struct range_lock {
  uint64_t start, end;          /* [start, end) */
  bool exclusive;               /* a write, zero or trim */
  struct range_lock *prev, *next;
};

/* Wait until no earlier overlapping request conflicts with this one. */
extern void range_lock (struct range_lock *r, uint64_t offset,
                        uint64_t count, bool exclusive);
extern void range_unlock (struct range_lock *r);

#endif /* QUORUM_RANGELOCK_H */
