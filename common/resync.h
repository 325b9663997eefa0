/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Recovery: a child's supervisor, its backoff and its resync. */

#ifndef QUORUM_RESYNC_H
#define QUORUM_RESYNC_H

#include <stdbool.h>

#include "quorum.h"

struct child;

/* Where resync reads the filter's plugin from, outside any client
 * connection (see quorum_after_fork); NULL: it is not read.
 */
extern void resync_set_source (const struct quorum_local_ops *local,
                               void *local_ctx);
/* Whether c, offering caps, may join: it must offer what the export
 * promised that the engine cannot make up for it (caps_lacking).
 * Else it is said why, and it stays down.
 */
extern bool resync_fits (struct child *c, const struct quorum_caps *caps);
/* The supervisor thread of one remote child (a struct child *): waits
 * for it to go down, reconnects it with backoff and resyncs it, until
 * the child is asked to quit (state_quit).
 */
extern void *resync_supervisor (void *child);

#endif /* QUORUM_RESYNC_H */
