/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* What the operations' files (engine.c, engine-read.c, engine-fifo.c)
 * share; included by them only.
 */

#ifndef QUORUM_ENGINE_H
#define QUORUM_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "rangelock.h"

/* End a request that fewer than vote-threshold children served: *err
 * from their errors, the failure reported, and one message with the
 * counts (what the ok children did; NULL when every child failed).
 * Returns -1.
 */
extern int engine_below_threshold (enum op_type type, const int *errs,
                                   uint32_t count, uint64_t offset,
                                   size_t ok, const char *what, int *err);

/* wait-for=threshold: what a request answered early leaves to its
 * fan-out's second step (fanout_detach): on the late thread, or, where
 * it is nothing but freeing this, where the last child ended.
 */
struct engine_late_op {
  struct range_lock rl;         /* held until the last child ended */
  bool ranged;
  uint32_t flags;
  void *data;                   /* write: the client's data, copied; read:
                                   the answer, or NULL */
};

/* Release op's range if it holds one, and free op and its data. */
extern void engine_late_op_free (struct engine_late_op *op);

/* engine-fifo.c: a read with read-pattern=fifo, one child at a time
 * (hedged with wait-for=threshold).
 */
extern int engine_pread_fifo (struct quorum_conn *conn, void *buf,
                              uint32_t count, uint64_t offset, int *err);

#endif /* QUORUM_ENGINE_H */
