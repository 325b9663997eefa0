/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

#include <config.h>

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <nettle/sha2.h>

#include "vote.h"

static void
sha256 (const void *buf, size_t len, uint8_t *digest)
{
  struct sha256_ctx ctx;

  sha256_init (&ctx);
  sha256_update (&ctx, len, buf);
  sha256_digest (&ctx, SHA256_DIGEST_SIZE, digest);
}

bool
vote_agree (const void *const *bufs, size_t nr, size_t start, size_t len,
            size_t *nr_ok)
{
  const char *first = NULL;
  bool same = true;
  size_t i;

  *nr_ok = 0;
  for (i = 0; i < nr; ++i) {
    if (bufs[i] == NULL)
      continue;
    ++*nr_ok;
    if (first == NULL)
      first = (const char *) bufs[i] + start;
    else if (same && memcmp (first, (const char *) bufs[i] + start, len) != 0)
      same = false;
  }
  return same;
}

void
vote_tally (const void *const *bufs, size_t nr,
            size_t start, size_t len, struct vote_result *r)
{
  uint8_t digest[VOTE_MAX_CHILDREN][SHA256_DIGEST_SIZE];
  size_t votes[VOTE_MAX_CHILDREN];
  size_t first = VOTE_NO_VERSION;
  bool unanimous;
  size_t i, j;

  assert (nr <= VOTE_MAX_CHILDREN);

  r->nr_versions = 0;
  r->winner = VOTE_NO_VERSION;
  r->votes = 0;

  /* The fast path: everyone who answered agrees with the first. */
  unanimous = vote_agree (bufs, nr, start, len, &r->nr_ok);
  for (i = 0; i < nr; ++i) {
    r->version[i] = VOTE_NO_VERSION;
    if (bufs[i] && first == VOTE_NO_VERSION)
      first = i;
  }
  if (first == VOTE_NO_VERSION)
    return;

  if (unanimous) {
    for (i = 0; i < nr; ++i)
      if (bufs[i])
        r->version[i] = first;
    r->nr_versions = 1;
    r->winner = first;
    r->votes = r->nr_ok;
    return;
  }

  /* Disagreement: group by digest.  Versions are discovered in child
   * order, so the first member of each version is its lowest child.
   */
  for (i = 0; i < nr; ++i) {
    votes[i] = 0;
    if (bufs[i] == NULL)
      continue;
    sha256 ((const char *) bufs[i] + start, len, digest[i]);
    for (j = 0; j < i; ++j) {
      if (r->version[j] == j &&
          memcmp (digest[j], digest[i], SHA256_DIGEST_SIZE) == 0)
        break;
    }
    if (j < i)
      r->version[i] = j;
    else {
      r->version[i] = i;
      r->nr_versions++;
    }
    votes[r->version[i]]++;
  }

  /* Strictly more votes replaces the leader: ties keep the lowest. */
  for (i = 0; i < nr; ++i) {
    if (r->version[i] == i && votes[i] > r->votes) {
      r->winner = i;
      r->votes = votes[i];
    }
  }
}

int
vote_errno (const int *errs, size_t nr)
{
  int best = 0;
  size_t best_count = 0;
  size_t i, j;

  for (i = 0; i < nr; ++i) {
    size_t count = 0;

    if (errs[i] == 0)
      continue;
    for (j = 0; j < nr; ++j)
      if (errs[j] == errs[i])
        count++;
    if (count > best_count) {
      best = errs[i];
      best_count = count;
    }
  }
  return best;
}

size_t
vote_first_difference (const void *a, const void *b, size_t len)
{
  const unsigned char *pa = a, *pb = b;
  size_t i = 0;

  /* Skip equal 4 KiB blocks with memcmp, then find the byte. */
  while (i + 4096 <= len && memcmp (pa + i, pb + i, 4096) == 0)
    i += 4096;
  while (i < len && pa[i] == pb[i])
    i++;
  return i;
}

/* See vote.h. */
int
vote_errno_request (const int *errs, size_t nr)
{
  int mapped[VOTE_MAX_CHILDREN];
  size_t i;
  int e;

  for (i = 0; i < nr; ++i) {
    switch (errs[i]) {
    case ENOTCONN: case ETIMEDOUT: case ESHUTDOWN: case ECONNRESET:
    case EPIPE:
      mapped[i] = EIO;
      break;
    default:
      mapped[i] = errs[i];
    }
  }
  e = vote_errno (mapped, nr);
  return e ? e : EIO;
}
