/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* control=SOCKET: a Unix socket on which the operator asks the running
 * quorum for its state and runs operations on it
 * (nbdkit-quorum-ctl(1)).  One JSON object per line each way.  The
 * server is control.c (its protocol and its bounds), the commands
 * control-cmd.c.  At the top of the layers, beside lifecycle.c: it
 * calls into everything, and nothing below calls into it.
 */

#ifndef QUORUM_CONTROL_H
#define QUORUM_CONTROL_H

#include <stddef.h>

struct json_object;

/* The bounds of the protocol, documented in nbdkit-quorum-ctl(1). */
#define CONTROL_MAX_LINE    65536 /* bytes in a request, newline included */
#define CONTROL_MAX_CLIENTS 16    /* connected at once */
#define CONTROL_TIMEOUT     10    /* s to finish a request or read a reply */
#define CONTROL_IDLE        60    /* s a connection may sit idle */

/* control.c, for lifecycle.c. */

/* .get_ready: create the socket at control= (quorum_control_path),
 * mode 0600, replacing a stale one of ours; refuse, with a message, a
 * path that is not a socket, is another uid's, or that a server listens
 * on.  Connections wait in its backlog until control_start.  0 if there
 * is no control=.
 */
extern int control_listen (void);

/* .after_fork: start the thread that serves it. */
extern int control_start (void);

/* .cleanup: stop a scrub and that thread, and remove the socket. */
extern void control_stop (void);

/* control-cmd.c, for control.c: the requests. */

/* The reply to one request line (without its newline); never NULL. */
extern struct json_object *control_request (const char *line, size_t len);

/* {"ok": false, "error": msg}. */
extern struct json_object *control_error_reply (const char *msg);

/* Stop what the commands started (a scrub), waiting for it. */
extern void control_cmd_stop (void);

/* control-status.c: the status command's reply. */

/* Start keeping what status shows (each child's last error): before
 * the children are connected.
 */
extern void control_status_init (void);

/* About once a second, on the control thread: sample the progress of
 * resyncs and of a scrub for their rates.  now: CLOCK_MONOTONIC, s.
 */
extern void control_status_tick (double now);

/* Add "quorum", "children" and "scrub" to reply.  0. */
extern int control_status (struct json_object *reply);

#endif /* QUORUM_CONTROL_H */
