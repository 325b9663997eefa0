/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Unit tests of the vote. */

#include <config.h>

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test-check.h"
#include "vote.h"

#define LEN 4096

static char a[LEN], b[LEN], c[LEN], d[LEN];

static void
test_unanimous (void)
{
  const void *bufs[3] = { a, a, a };
  struct vote_result r;

  vote_tally (bufs, 3, 0, LEN, &r);
  CHECK (r.nr_ok == 3);
  CHECK (r.nr_versions == 1);
  CHECK (r.winner == 0);
  CHECK (r.votes == 3);
  CHECK (r.version[0] == 0 && r.version[1] == 0 && r.version[2] == 0);
}

static void
test_separate_equal_buffers (void)
{
  /* Equal content in different memory is one version. */
  char *x = malloc (LEN), *y = malloc (LEN);
  const void *bufs[2] = { x, y };
  struct vote_result r;

  memcpy (x, a, LEN);
  memcpy (y, a, LEN);
  vote_tally (bufs, 2, 0, LEN, &r);
  CHECK (r.nr_versions == 1 && r.votes == 2);
  free (x);
  free (y);
}

static void
test_one_outvoted (void)
{
  const void *bufs[3] = { a, b, a };
  struct vote_result r;

  vote_tally (bufs, 3, 0, LEN, &r);
  CHECK (r.nr_ok == 3);
  CHECK (r.nr_versions == 2);
  CHECK (r.winner == 0);
  CHECK (r.votes == 2);
  CHECK (r.version[1] == 1);
  CHECK (r.version[2] == 0);

  /* The majority wins even when child 0 is the odd one out. */
  bufs[0] = b; bufs[1] = a; bufs[2] = a;
  vote_tally (bufs, 3, 0, LEN, &r);
  CHECK (r.winner == 1 && r.votes == 2);
  CHECK (r.version[0] == 0 && r.version[2] == 1);
}

static void
test_all_different (void)
{
  const void *bufs[4] = { a, b, c, d };
  struct vote_result r;

  vote_tally (bufs, 4, 0, LEN, &r);
  CHECK (r.nr_versions == 4);
  CHECK (r.votes == 1);
  CHECK (r.winner == 0);        /* tie: lowest child */
}

static void
test_tie_lowest_child (void)
{
  /* 2 against 2: the version child 0 returned wins; swap the order and
   * the other one does.
   */
  const void *bufs[4] = { b, a, a, b };
  struct vote_result r;

  vote_tally (bufs, 4, 0, LEN, &r);
  CHECK (r.votes == 2 && r.winner == 0);
  bufs[0] = a; bufs[3] = a; bufs[1] = b; bufs[2] = b;
  vote_tally (bufs, 4, 0, LEN, &r);
  CHECK (r.votes == 2 && r.winner == 0);
  CHECK (r.version[1] == 1 && r.version[2] == 1);
}

static void
test_failed_children (void)
{
  const void *bufs[3] = { NULL, a, NULL };
  struct vote_result r;

  vote_tally (bufs, 3, 0, LEN, &r);
  CHECK (r.nr_ok == 1);
  CHECK (r.winner == 1 && r.votes == 1);
  CHECK (r.version[0] == VOTE_NO_VERSION);
  CHECK (r.version[2] == VOTE_NO_VERSION);

  bufs[1] = NULL;
  vote_tally (bufs, 3, 0, LEN, &r);
  CHECK (r.nr_ok == 0);
  CHECK (r.winner == VOTE_NO_VERSION);
  CHECK (r.votes == 0);

  /* A failure among disagreeing children. */
  bufs[0] = b; bufs[1] = NULL; bufs[2] = a;
  vote_tally (bufs, 3, 0, LEN, &r);
  CHECK (r.nr_ok == 2 && r.nr_versions == 2);
  CHECK (r.winner == 0 && r.votes == 1);
}

static void
test_byte_range (void)
{
  /* b differs from a only in its last block: a vote on the first
   * block is unanimous, on the last is not.
   */
  const void *bufs[3] = { a, b, a };
  struct vote_result r;
  char *e = malloc (LEN);

  memcpy (e, a, LEN);
  e[LEN - 1] ^= 1;
  bufs[1] = e;
  vote_tally (bufs, 3, 0, LEN - 512, &r);
  CHECK (r.nr_versions == 1 && r.votes == 3);
  vote_tally (bufs, 3, LEN - 512, 512, &r);
  CHECK (r.nr_versions == 2 && r.votes == 2 && r.version[1] == 1);
  free (e);
}

static void
test_errno (void)
{
  int e1[] = { 0, EIO, ENOSPC, ENOSPC };
  int e2[] = { EPERM, EIO, 0 };
  int e3[] = { 0, 0 };

  CHECK (vote_errno (e1, 4) == ENOSPC);
  CHECK (vote_errno (e2, 3) == EPERM);  /* tie: lowest child */
  CHECK (vote_errno (e3, 2) == 0);
}

static void
test_first_difference (void)
{
  char *x = malloc (3 * LEN), *y = malloc (3 * LEN);

  memset (x, 0x55, 3 * LEN);
  memset (y, 0x55, 3 * LEN);
  CHECK (vote_first_difference (x, y, 3 * LEN) == 3 * LEN);
  y[LEN + 17] = 0;
  CHECK (vote_first_difference (x, y, 3 * LEN) == LEN + 17);
  y[5] = 0;
  CHECK (vote_first_difference (x, y, 3 * LEN) == 5);
  CHECK (vote_first_difference (x, y, 5) == 5);
  free (x);
  free (y);
}

int
main (void)
{
  memset (a, 'a', LEN);
  memset (b, 'b', LEN);
  memset (c, 'c', LEN);
  memcpy (d, a, LEN);
  d[100] = 'd';

  test_unanimous ();
  test_separate_equal_buffers ();
  test_one_outvoted ();
  test_all_different ();
  test_tie_lowest_child ();
  test_failed_children ();
  test_byte_range ();
  test_errno ();
  test_first_difference ();

  if (failures) {
    fprintf (stderr, "test-vote: %u checks failed\n", failures);
    exit (EXIT_FAILURE);
  }
  printf ("test-vote: all checks passed\n");
  exit (EXIT_SUCCESS);
}
