/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* control=SOCKET: a Unix socket on which the operator asks the running
 * quorum for its state (nbdkit-quorum-ctl(1)).  One JSON object per
 * line each way.  See control.c for the protocol and its bounds.
 */

#ifndef QUORUM_CONTROL_H
#define QUORUM_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* The bounds of the protocol, documented in nbdkit-quorum-ctl(1). */
#define CONTROL_MAX_LINE    65536 /* bytes in a request, newline included */
#define CONTROL_MAX_CLIENTS 16    /* connected at once */
#define CONTROL_TIMEOUT     10    /* s to finish a request or read a reply */
#define CONTROL_IDLE        60    /* s a connection may sit idle */

/* control=: the socket's path (made absolute).  1, or -1 on error. */
extern int control_config (const char *value);

/* .get_ready: create the socket, mode 0600, replacing a stale one of
 * ours; refuse, with a message, a control= path that is not a socket,
 * is another uid's, or that a server listens on.  Connections wait in
 * its backlog until control_start.  0 if there is no control=.
 */
extern int control_listen (void);

/* .after_fork: start the thread that serves it. */
extern int control_start (void);

/* .cleanup: stop that thread and remove the socket. */
extern void control_stop (void);

/* .unload: free the path. */
extern void control_unload (void);

/* Remember a child's latest error for status: report_bad calls it
 * (err 0: its data was outvoted), report_down with the reason.
 */
extern void control_note_error (size_t child, enum op_type type,
                                uint64_t offset, uint64_t length, int err);
extern void control_note_down (size_t child, const char *reason);

#endif /* QUORUM_CONTROL_H */
