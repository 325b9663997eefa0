/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Settling unsettled regions: see settle.h.  XXX Not written yet: the
 * regions stay unsettled.
 */

#include <config.h>

#include "fresh.h"
#include "internal.h"
#include "settle.h"

int
settle_range (struct quorum_conn *conn, uint64_t offset, uint64_t count,
              int *err)
{
  (void) conn; (void) offset; (void) count; (void) err;
  return 0;
}
