/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Recovery: a child's supervisor, its backoff, its identity check and
 * its resync; the plugin's healer; the settler.
 */

#ifndef QUORUM_RESYNC_H
#define QUORUM_RESYNC_H

#include <stdbool.h>
#include <stdint.h>

#include "quorum.h"

struct child;

/* Where resync reads the filter's plugin from, outside any client
 * connection (see quorum_after_fork); NULL: it is not read.
 */
extern void resync_set_source (const struct quorum_local_ops *local,
                               void *local_ctx);
/* The supervisor thread of one remote child (a struct child *): when
 * it goes down, reconnects it with backoff, checks it is the same disk
 * and resyncs it; when it becomes stale while up, heals it at once;
 * retries what is left with backoff, until the child is asked to quit
 * (state_quit).
 */
extern void *resync_supervisor (void *child);
/* After the supervisors (lifecycle_start_all): the filter's plugin's healer
 * (as children[0].supervisor) and the settler.  -1 after nbdkit_error.
 */
extern int resync_start (void);
/* The resync rate limit, bytes per second per child (0: none):
 * resync-rate= until changed.  Takes effect at once.
 */
extern uint64_t resync_rate (void);
extern void resync_set_rate (uint64_t bytes_per_second);
/* At cleanup, before the children are disconnected: stop them. */
extern void resync_stop (void);

#endif /* QUORUM_RESYNC_H */
