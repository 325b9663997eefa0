/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Opening a remote child's connections, and what one child offers. */

#ifndef QUORUM_CONNECT_H
#define QUORUM_CONNECT_H

#include <stdbool.h>

#include <libnbd.h>

#include "quorum.h"

struct child;

/* Connect to c and read its capabilities into *caps.  quit_fd, if not
 * -1, interrupts the handshake; one that takes longer than
 * child-timeout is abandoned.  On error returns -1 with the reason in
 * *why (to be freed, NULL if out of memory).
 *
 * With structured replies (needed for block status) a server sends a
 * read's data behind a chunk header and an offset, which libnbd reads
 * with two more system calls than a plain reply's.  So reads and
 * writes go over a connection without them (*nbd) whenever possible:
 *  - a child without block status needs them for nothing: the probing
 *    connection is replaced by a plain one;
 *  - one with block status keeps the probing connection for it (*meta)
 *    if it advertises multi-conn, without which a second connection
 *    might not see the first one's writes (a stale hole loses data),
 *    and can flush, as multi-conn promises only that a flush makes
 *    writes visible on every connection: the engine flushes before it
 *    asks *meta about writes done since the last flush.
 * Never for child-command (each connection would start a server).
 * Otherwise, and if the plain connection fails, *meta is NULL and *nbd
 * does everything.
 */
extern int connect_child (struct child *c, int quit_fd,
                          struct quorum_caps *caps,
                          struct nbd_handle **nbd, struct nbd_handle **meta,
                          char **why);
/* Make nbd and meta c's handles, offering caps, under nbd_lock (taken
 * for writing: no command is being queued on the old ones meanwhile);
 * the old ones are returned in *old and *old_meta for the caller to
 * close once their commands were retired.
 */
extern void connect_install (struct child *c, struct nbd_handle *nbd,
                             struct nbd_handle *meta,
                             const struct quorum_caps *caps,
                             struct nbd_handle **old,
                             struct nbd_handle **old_meta);
/* Close a handle (NULL: nothing), politely if it still works. */
extern void connect_close (struct nbd_handle *nbd, bool polite);

#endif /* QUORUM_CONNECT_H */
