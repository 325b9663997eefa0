/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The vote: pure functions over the children's replies, with no I/O,
 * so that they can be unit-tested and fuzzed.
 */

#ifndef QUORUM_VOTE_H
#define QUORUM_VOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most children a quorum may have. */
#define VOTE_MAX_CHILDREN 32

/* version[i] for a child that has no version (its read failed). */
#define VOTE_NO_VERSION ((size_t) -1)

struct vote_result {
  size_t nr_ok;        /* children that returned data */
  size_t nr_versions;  /* distinct versions among them */
  size_t winner;       /* lowest child in the winning version, or
                          VOTE_NO_VERSION if no child returned data */
  size_t votes;        /* children in the winning version */
  /* For each child, the lowest-numbered child holding the same
   * version (so version[i] == i for the first member of a version),
   * or VOTE_NO_VERSION.
   */
  size_t version[VOTE_MAX_CHILDREN];
};

/* Vote over bytes [start, start+len) of nr replies.  bufs[i] is NULL
 * for a child that failed.  Unanimous replies are found with memcmp;
 * only when they differ are they grouped by SHA-256.  The version with
 * the most votes wins; of versions with equally many votes, the one
 * returned by the lowest-numbered child wins.  Taking a byte range
 * lets a caller vote block by block inside one request.
 */
extern void vote_tally (const void *const *bufs, size_t nr,
                        size_t start, size_t len, struct vote_result *r);

/* The fast path of vote_tally alone: true if every reply in bufs
 * holds the same bytes in [start, start+len) (or none succeeded).
 * *nr_ok counts the replies.  Hashes nothing.
 */
extern bool vote_agree (const void *const *bufs, size_t nr, size_t start,
                        size_t len, size_t *nr_ok);

/* Error voting: the most common non-zero errno in errs[0..nr-1]; on a
 * tie, the one of the lowest-numbered child.  0 if there is none.
 */
extern int vote_errno (const int *errs, size_t nr);

/* The errno a request fails with, from its children's errs: the voted
 * one, or EIO when only absent children failed.  A child that could not
 * be reached (connection lost, timed out, shutting down) votes EIO: its
 * errno describes the link to the child, not the request, and nbdkit
 * would pass ENOTCONN or ETIMEDOUT to the client as EINVAL, and
 * ESHUTDOWN as "the server is shutting down".  Never 0.
 */
extern int vote_errno_request (const int *errs, size_t nr);

/* Offset of the first byte that differs between a and b, or len if
 * they are equal.
 */
extern size_t vote_first_difference (const void *a, const void *b,
                                     size_t len);

#endif /* QUORUM_VOTE_H */
