/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Is a returning child the disk it was?  A sample of the blocks where
 * the quorum holds data is compared (identity.c says how, and how
 * strong that is).
 */

#ifndef QUORUM_IDENTITY_H
#define QUORUM_IDENTITY_H

#include "quorum.h"

struct child;

/* c, reconnected and still down (it takes no part in requests), is
 * compared with the current children, read through conn: 1 if it is
 * the same disk as far as the sample tells, 0 if not (it is then
 * wholly stale, FRESH_LOST_CONTENTS), -1 if it could not be read or
 * its staleness could not be recorded.
 */
extern int identity_same_disk (struct quorum_conn *conn, struct child *c);

#endif /* QUORUM_IDENTITY_H */
