/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* replace N URI (control's): a new server rebuilt in the background
 * as the spare (children[quorum_nr_children], see internal.h) while
 * child N keeps voting, then swapped in as child N.
 */

#ifndef QUORUM_REPLACE_H
#define QUORUM_REPLACE_H

#include <stdbool.h>
#include <stddef.h>

struct child;

/* Begin replacing remote child n with the server at uri: connected,
 * its size and capabilities checked, wholly stale, then rebuilt by its
 * own supervisor.  0, or -1 with why in err.
 */
extern int replace_start (size_t n, const char *uri, char *err,
                          size_t errlen);
/* Cancel the replace of child n in progress: the new server leaves
 * the fan-out and is disconnected and forgotten, child n goes on as it
 * was (with state=, the file still names it).  0, or -1 with why in
 * err (no replace in progress, or of another child, or it was just
 * done).
 */
extern int replace_cancel (size_t n, char *err, size_t errlen);
/* The child being replaced, or SIZE_MAX. */
extern size_t replace_target (void);
/* The new server's name (secrets removed), or "". */
extern const char *replace_name (void);
/* resync.c, on the spare's supervisor: the spare is complete (nothing
 * stale): ask the target's supervisor to swap it in.
 */
extern void replace_rebuilt (struct child *spare);
/* resync.c, on child c's supervisor (any child): if a complete spare
 * waits to take c's place, swap it in now: true if c was replaced.
 */
extern bool replace_swap_if_ready (struct child *c);
/* lifecycle.c, at start: the thread that rebuilds a spare (resync.c's
 * supervisor; given from above so that replace.c calls nothing of the
 * layer above it).
 */
extern void replace_set_supervisor (void *(*supervisor) (void *));
/* Cleanup, before the children are disconnected: stop the spare. */
extern void replace_stop (void);

#endif /* QUORUM_REPLACE_H */
