/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The extents merge: block status for the export from what several
 * children answered.  Pure logic, no I/O and no nbdkit calls:
 * unit-tested by test-extmerge.c, fuzzed by fuzz-extmerge.c.
 *
 * Each child describes the request contiguously from its offset, as
 * far as it likes (the protocol lets it stop short or run past the
 * end); the extents' own offset fields are not read.  The answer
 * covers, from the request's offset, what every child covered, and a
 * byte is a hole (or reads as zeroes) there only if every child said
 * so: one child's data is reason enough to read it.
 */

#ifndef QUORUM_EXTMERGE_H
#define QUORUM_EXTMERGE_H

#include <stddef.h>
#include <stdint.h>

#include "quorum.h"

/* The type bits of base:allocation (NBD protocol), the same as
 * NBDKIT_EXTENT_HOLE and NBDKIT_EXTENT_ZERO; others are dropped.
 */
#define EXTMERGE_HOLE 1
#define EXTMERGE_ZERO 2

/* Append [offset, +length) of type to *out, extending the last extent
 * instead if it ends at offset with the same type; nothing if length
 * is 0.  -1 with errno set if out of memory.
 */
extern int extmerge_add (struct quorum_extent_list *out, uint64_t offset,
                         uint64_t length, uint32_t type);

/* Where list, describing from offset, stops covering [offset, end). */
extern uint64_t extmerge_covered (const struct quorum_extent_list *list,
                                  uint64_t offset, uint64_t end);

/* Merge the answers of nr children (at most VOTE_MAX_CHILDREN) to
 * block status of [offset, +count), count > 0, appending to *out: from
 * offset up to where the child that covered least stopped, as the
 * fewest extents, none of length 0, each of the types all children
 * agree on.  If a child covered nothing (or nr is 0) the whole request
 * is one extent of data.  -1 with errno set if out of memory.
 */
extern int extmerge_lists (const struct quorum_extent_list *const *lists,
                           size_t nr, uint64_t offset, uint64_t count,
                           struct quorum_extent_list *out);

#endif /* QUORUM_EXTMERGE_H */
