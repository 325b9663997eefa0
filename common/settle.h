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

#include <stdbool.h>
#include <stdint.h>

#include "quorum.h"

/* Settle every unsettled granule that [offset, +count) touches, holding
 * each one's range exclusively (at most 1 MiB at a time), in runs over
 * which no child's staleness changes: the current children that can be
 * read through conn vote block by block (vote-block-size), the winner
 * (or, with no version at the threshold, the lowest-index current
 * child's version, reported) is written to those that differ, and the
 * region is settled (fresh_settled).  A current child that cannot take
 * part (down, its read or its rewrite failed) is made stale there
 * (FRESH_UNSETTLED).  Nothing is settled where fewer than
 * vote-threshold current children can be read (*err = EIO), nor, from
 * a background conn, where the filter's plugin is current but no client
 * lends it (*err = EAGAIN): -1, it stays unsettled, to be retried.
 * Takes range locks: never call it holding one.
 */
extern int settle_range (struct quorum_conn *conn, uint64_t offset,
                         uint64_t count, int *err);

/* Helpers shared with resync.c. */

/* The longest prefix of [offset, +count), in whole granules (or to its
 * end), over which no child's staleness changes.
 */
extern uint64_t settle_uniform (uint64_t offset, uint64_t count);
/* Whether conn can read the filter's plugin now. */
extern bool settle_local_readable (struct quorum_conn *conn);
/* The children that can be read through conn at [offset, +count): up,
 * current there (fanout_participants), and the plugin only if conn can
 * read it now.
 */
extern uint32_t settle_readable (struct quorum_conn *conn, uint64_t offset,
                                 uint64_t count);

#endif /* QUORUM_SETTLE_H */
