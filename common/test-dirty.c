/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Unit tests of the dirty map: granule arithmetic and runs. */

#include <config.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "dirty.h"
#include "test-check.h"

#define G DIRTY_GRANULE

static void
test_mark_touches (void)
{
  struct dirty_map m;

  CHECK (dirty_init (&m, 10 * G) == 0);
  CHECK (!dirty_test (&m, 0, 10 * G));
  CHECK (!dirty_test (&m, 0, 0));
  /* One byte on each side of a boundary: two granules. */
  dirty_mark (&m, 2 * G - 1, 2);
  CHECK (m.nr_dirty == 2);
  CHECK (dirty_bytes (&m) == 2 * G);
  CHECK (dirty_test (&m, G, 1));
  CHECK (dirty_test (&m, 2 * G + G - 1, 1));
  CHECK (!dirty_test (&m, 0, G));
  CHECK (!dirty_test (&m, 3 * G, G));
  CHECK (dirty_test (&m, 0, 0));         /* flush: any dirt */
  /* Marking again counts nothing new; count 0 marks nothing. */
  dirty_mark (&m, G, 2 * G);
  dirty_mark (&m, 5 * G, 0);
  CHECK (m.nr_dirty == 2);
  dirty_free (&m);
  CHECK (m.bits == NULL);
}

static void
test_clear_whole_only (void)
{
  struct dirty_map m;

  CHECK (dirty_init (&m, 10 * G) == 0);
  dirty_mark (&m, 0, 10 * G);
  CHECK (m.nr_dirty == 10);
  /* Half of granule 1 to half of granule 3: only 2 is whole. */
  dirty_clear (&m, G + G / 2, 2 * G);
  CHECK (m.nr_dirty == 9);
  CHECK (!dirty_test (&m, 2 * G, G));
  CHECK (dirty_test (&m, G, 1));
  CHECK (dirty_test (&m, 3 * G, 1));
  dirty_clear (&m, 0, 0);
  CHECK (m.nr_dirty == 9);
  dirty_free (&m);
}

static void
test_clear_at_end (void)
{
  struct dirty_map m;
  uint64_t size = 3 * G + 512;  /* the last granule is short */

  CHECK (dirty_init (&m, size) == 0);
  CHECK (m.nr_granules == 4);
  dirty_mark (&m, size - 1, 1);
  CHECK (dirty_test (&m, 3 * G, 1));
  /* A write to the end of the export covers the short granule. */
  dirty_clear (&m, 3 * G, 512);
  CHECK (m.nr_dirty == 0);
  CHECK (!dirty_test (&m, 0, 0));
  dirty_free (&m);
}

static void
test_next_run (void)
{
  struct dirty_map m;
  uint64_t pos = 0, offset, count, size = 40 * G + 100;

  CHECK (dirty_init (&m, size) == 0);
  CHECK (!dirty_next_run (&m, &pos, 16, &offset, &count));
  dirty_mark (&m, 2 * G, 3 * G);        /* 2, 3, 4 */
  dirty_mark (&m, 10 * G, 20 * G);      /* 10 to 29 */
  dirty_mark (&m, 40 * G, 1);           /* the short last one */
  pos = 0;
  CHECK (dirty_next_run (&m, &pos, 16, &offset, &count));
  CHECK (offset == 2 * G && count == 3 * G && pos == 5 * G);
  CHECK (dirty_next_run (&m, &pos, 16, &offset, &count));
  CHECK (offset == 10 * G && count == 16 * G && pos == 26 * G);
  CHECK (dirty_next_run (&m, &pos, 16, &offset, &count));
  CHECK (offset == 26 * G && count == 4 * G && pos == 30 * G);
  CHECK (dirty_next_run (&m, &pos, 16, &offset, &count));
  CHECK (offset == 40 * G && count == 100);
  CHECK (!dirty_next_run (&m, &pos, 16, &offset, &count));
  dirty_free (&m);
}

/* Maps of many words: marks report what was new, clears of whole words
 * keep the count right, runs are found past clean words.
 */
static void
test_large (void)
{
  struct dirty_map m;
  uint64_t pos = 0, offset, count;

  CHECK (dirty_init (&m, 1000 * G) == 0);
  CHECK (dirty_mark (&m, 5 * G, G) == 1);
  CHECK (dirty_mark (&m, 5 * G, G) == 0);
  CHECK (dirty_mark (&m, 63 * G, 3 * G) == 3);
  CHECK (dirty_mark (&m, 700 * G, 1) == 1);
  CHECK (dirty_bytes (&m) == 5 * G);
  CHECK (dirty_next_run (&m, &pos, 16, &offset, &count));
  CHECK (offset == 5 * G && count == G);
  CHECK (dirty_next_run (&m, &pos, 16, &offset, &count));
  CHECK (offset == 63 * G && count == 3 * G);
  CHECK (dirty_next_run (&m, &pos, 16, &offset, &count));
  CHECK (offset == 700 * G && count == G);
  CHECK (!dirty_next_run (&m, &pos, 16, &offset, &count));
  /* From granule 1: words 0 (partly), 1..9 whole, 10 partly. */
  dirty_clear (&m, G, 680 * G);
  CHECK (dirty_bytes (&m) == G);
  CHECK (dirty_test (&m, 700 * G, 1));
  dirty_clear (&m, 0, 1000 * G);
  CHECK (dirty_bytes (&m) == 0 && !dirty_test (&m, 0, 0));
  dirty_free (&m);
}

static void
test_unmapped (void)
{
  struct dirty_map m = { .bits = NULL };
  uint64_t pos = 0, offset, count;

  dirty_mark (&m, 0, G);
  dirty_clear (&m, 0, G);
  CHECK (!dirty_test (&m, 0, G));
  CHECK (!dirty_test (&m, 0, 0));
  CHECK (!dirty_next_run (&m, &pos, 16, &offset, &count));
  dirty_free (&m);
}

int
main (void)
{
  test_mark_touches ();
  test_clear_whole_only ();
  test_clear_at_end ();
  test_next_run ();
  test_large ();
  test_unmapped ();
  if (failures) {
    fprintf (stderr, "test-dirty: %u checks failed\n", failures);
    exit (EXIT_FAILURE);
  }
  printf ("test-dirty: all checks passed\n");
  exit (EXIT_SUCCESS);
}
