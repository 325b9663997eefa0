/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* libFuzzer harness for the vote: random children (some failed, many
 * sharing a version), random thresholds and byte ranges, checked
 * against a plain reference model of the rules that compares buffers
 * directly instead of by digest.
 *
 *   clang -fsanitize=fuzzer,address,undefined -I. -I.. \
 *         fuzz-vote.c vote.c -lnettle -o fuzz-vote
 *   ./fuzz-vote -max_total_time=60
 */

#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vote.h"

#define MAX_LEN 64

/* The rules, stated as simply as possible. */
static void
model (const void *const *bufs, size_t nr, size_t start, size_t len,
       size_t *winner, size_t *votes, size_t *nr_versions, size_t *nr_ok,
       size_t *version)
{
  size_t i, j;

  *winner = VOTE_NO_VERSION;
  *votes = 0;
  *nr_versions = 0;
  *nr_ok = 0;
  for (i = 0; i < nr; ++i) {
    version[i] = VOTE_NO_VERSION;
    if (bufs[i] == NULL)
      continue;
    (*nr_ok)++;
    /* My version is that of the first child with the same bytes. */
    for (j = 0; j <= i; ++j) {
      if (bufs[j] &&
          memcmp ((const char *) bufs[j] + start,
                  (const char *) bufs[i] + start, len) == 0) {
        version[i] = j;
        break;
      }
    }
    if (version[i] == i)
      (*nr_versions)++;
  }
  /* Most votes; on a tie, the version of the lowest child. */
  for (i = 0; i < nr; ++i) {
    size_t count = 0;

    if (version[i] != i)
      continue;
    for (j = 0; j < nr; ++j)
      if (version[j] == i)
        count++;
    if (count > *votes) {
      *votes = count;
      *winner = i;
    }
  }
}

static int
model_errno (const int *errs, size_t nr)
{
  size_t i, j, best_count = 0;
  int best = 0;

  for (i = 0; i < nr; ++i) {
    size_t count = 0;

    if (errs[i] == 0)
      continue;
    for (j = 0; j < nr; ++j)
      count += errs[j] == errs[i];
    if (count > best_count) {
      best_count = count;
      best = errs[i];
    }
  }
  return best;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static uint8_t store[VOTE_MAX_CHILDREN][MAX_LEN];
  const void *bufs[VOTE_MAX_CHILDREN];
  int errs[VOTE_MAX_CHILDREN];
  size_t version[VOTE_MAX_CHILDREN];
  struct vote_result r;
  size_t nr, len, start, i, winner, votes, nr_versions, nr_ok;
  size_t pos = 3;

  if (size < 3)
    return 0;
  nr = 1 + data[0] % VOTE_MAX_CHILDREN;
  len = 1 + data[1] % MAX_LEN;
  start = data[2] % len;

  for (i = 0; i < nr; ++i) {
    uint8_t b = pos < size ? data[pos++] : 0;

    /* Low bits choose failure or one of a few versions, so that equal
     * versions are common; the next byte perturbs one byte.
     */
    errs[i] = 0;
    if ((b & 7) == 7) {
      bufs[i] = NULL;
      errs[i] = 1 + (b >> 3) % 3;
      continue;
    }
    memset (store[i], 'a' + (b & 3), len);
    if (b & 4) {
      uint8_t p = pos < size ? data[pos++] : 0;
      store[i][p % len] ^= 1 + (b >> 3);
    }
    bufs[i] = store[i];
  }

  vote_tally (bufs, nr, start, len - start, &r);
  model (bufs, nr, start, len - start, &winner, &votes, &nr_versions,
         &nr_ok, version);
  if (r.winner != winner || r.votes != votes ||
      r.nr_versions != nr_versions || r.nr_ok != nr_ok)
    abort ();
  for (i = 0; i < nr; ++i)
    if (r.version[i] != version[i])
      abort ();
  {
    size_t ok;

    /* The fast path agrees with the model's count of versions. */
    if (vote_agree (bufs, nr, start, len - start, &ok) !=
        (nr_versions <= 1) || ok != nr_ok)
      abort ();
  }
  if (vote_errno (errs, nr) != model_errno (errs, nr))
    abort ();
  if (nr >= 2 && bufs[0] && bufs[1]) {
    size_t d = vote_first_difference (bufs[0], bufs[1], len);

    if (d > len || (d < len && store[0][d] == store[1][d]) ||
        memcmp (store[0], store[1], d) != 0)
      abort ();
  }
  return 0;
}
