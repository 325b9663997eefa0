/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Settling: making the children equal where a region is unsettled
 * (fresh.h), on the engine's layer (it votes and writes through the
 * fan-out).
 */

#ifndef QUORUM_SETTLE_H
#define QUORUM_SETTLE_H

#include <stdint.h>

#include "quorum.h"

/* Settle every unsettled granule that [offset, +count) touches, holding
 * each one's range exclusively: the current children that can be read
 * vote, the winner (or, with no version at the threshold, the
 * lowest-index current child's version, reported) is written to those
 * that differ, and the region is settled (fresh_settled).  A current
 * child that cannot take part is made stale there (FRESH_UNSETTLED).
 * -1 with *err set if it could not be settled (it stays unsettled).
 */
extern int settle_range (struct quorum_conn *conn, uint64_t offset,
                         uint64_t count, int *err);

#endif /* QUORUM_SETTLE_H */
