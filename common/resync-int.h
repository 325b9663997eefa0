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

#include <stdbool.h>

#include "dirty.h"
#include "quorum.h"

struct child;

/* Up to this much of a child's consecutive stale granules (or of the
 * unsettled regions) at a time.
 */
#define RESYNC_RUN (16 * DIRTY_GRANULE)

/* The connection recovery reads and writes through, outside any
 * client's (resync_set_source sets its local part).
 */
extern struct quorum_conn resync_conn;

/* Copy every stale region to c from the quorum.  rejoined: it was just
 * reconnected.  0 if nothing is stale any more, 1 if something is
 * left, -1 if c went down or is quitting.
 */
extern int resync_child (struct child *c, bool rejoined);

#endif /* QUORUM_RESYNC_INT_H */
