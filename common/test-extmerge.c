/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Unit tests of the extents merge and of the vector under the extent
 * lists.
 */

#include <config.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "extmerge.h"
#include "test-check.h"

#define H EXTMERGE_HOLE
#define Z EXTMERGE_ZERO

/* A child's answer: nr pairs of length and type. */
static struct quorum_extent_list
make_list (uint64_t offset, size_t nr, const uint64_t *pairs)
{
  struct quorum_extent_list l = { 0 };

  for (; nr > 0; --nr, pairs += 2) {
    if (quorum_extent_append (&l, offset, pairs[0], pairs[1]) == -1)
      abort ();
    offset += pairs[0];
  }
  return l;
}

/* out holds exactly the extents given as offset, length, type triples
 * ending at a length 0.
 */
static int
same (const struct quorum_extent_list *out, const uint64_t *t)
{
  size_t i;

  for (i = 0; t[1]; ++i, t += 3) {
    if (i >= out->len || out->ptr[i].offset != t[0] ||
        out->ptr[i].length != t[1] || out->ptr[i].type != t[2])
      return 0;
  }
  return i == out->len;
}

static void
test_vector (void)
{
  struct quorum_extent_list l = { 0 };
  size_t i;

  CHECK (quorum_extent_list_reserve (&l, 0) == 0);
  for (i = 0; i < 1000; ++i)
    CHECK (quorum_extent_append (&l, i, 1, i & 3) == 0);
  CHECK (l.len == 1000 && l.cap >= 1000);
  CHECK (l.ptr[999].offset == 999 && l.ptr[999].type == 3);
  CHECK (quorum_extent_list_reserve (&l, 5000) == 0);
  CHECK (l.cap >= 6000 && l.len == 1000 && l.ptr[500].offset == 500);
  /* A size that does not fit fails, and leaves the vector whole. */
  CHECK (quorum_extent_list_reserve (&l, SIZE_MAX / 2) == -1);
  CHECK (l.len == 1000 && l.ptr[999].offset == 999);
  quorum_extent_list_free (&l);
  CHECK (l.ptr == NULL && l.len == 0 && l.cap == 0);
}

static void
test_add_coalesces (void)
{
  struct quorum_extent_list out = { 0 };

  CHECK (extmerge_add (&out, 0, 0, H) == 0);
  CHECK (out.len == 0);
  CHECK (extmerge_add (&out, 0, 10, H) == 0);
  CHECK (extmerge_add (&out, 10, 5, H) == 0);
  CHECK (extmerge_add (&out, 15, 5, H | Z) == 0);
  CHECK (extmerge_add (&out, 30, 5, H | Z) == 0);   /* not adjacent */
  CHECK (same (&out, (const uint64_t []) {
        0, 15, H,  15, 5, H | Z,  30, 5, H | Z,  0, 0, 0 }));
  quorum_extent_list_free (&out);
}

static void
test_covered (void)
{
  struct quorum_extent_list l =
    make_list (100, 2, (const uint64_t []) { 10, 0, 20, H });
  struct quorum_extent_list huge =
    make_list (100, 3, (const uint64_t []) { 10, 0, UINT64_MAX - 5, 0,
                                             10, 0 });
  struct quorum_extent_list empty = { 0 };

  CHECK (extmerge_covered (&l, 100, 200) == 130);
  CHECK (extmerge_covered (&l, 100, 120) == 120);
  CHECK (extmerge_covered (&empty, 100, 200) == 100);
  /* Lengths summing past 2^64 cover to the end, not around it. */
  CHECK (extmerge_covered (&huge, 100, 200) == 200);
  quorum_extent_list_free (&l);
  quorum_extent_list_free (&huge);
}

static void
test_merge (void)
{
  /* Child a: 0-4K hole+zero, 4K-8K data, 8K-16K hole+zero.
   * Child b: 0-2K zero, 2K-16K hole+zero.
   */
  struct quorum_extent_list a =
    make_list (0, 3, (const uint64_t []) { 4096, H | Z, 4096, 0,
                                           8192, H | Z });
  struct quorum_extent_list b =
    make_list (0, 2, (const uint64_t []) { 2048, Z, 14336, H | Z });
  const struct quorum_extent_list *lists[] = { &a, &b };
  struct quorum_extent_list out = { 0 };

  CHECK (extmerge_lists (lists, 2, 0, 16384, &out) == 0);
  CHECK (same (&out, (const uint64_t []) {
        0, 2048, Z,  2048, 2048, H | Z,  4096, 4096, 0,
        8192, 8192, H | Z,  0, 0, 0 }));
  quorum_extent_list_free (&out);

  /* One child alone: its extents, coalesced, cut at the request. */
  CHECK (extmerge_lists (lists, 1, 0, 6000, &out) == 0);
  CHECK (same (&out, (const uint64_t []) {
        0, 4096, H | Z,  4096, 1904, 0,  0, 0, 0 }));
  quorum_extent_list_free (&out);
  quorum_extent_list_free (&a);
  quorum_extent_list_free (&b);
}

static void
test_merge_short (void)
{
  /* a stops at 3K, b runs past the request: the answer stops at 3K. */
  struct quorum_extent_list a =
    make_list (1000, 3, (const uint64_t []) { 1024, H | Z, 0, 0,
                                              2048, H | Z });
  struct quorum_extent_list b =
    make_list (1000, 1, (const uint64_t []) { 1 << 20, H | Z });
  struct quorum_extent_list none = { 0 };
  const struct quorum_extent_list *lists[] = { &a, &b, &none };
  struct quorum_extent_list out = { 0 };

  /* a's zero-length extent is skipped, its runs of one type joined. */
  CHECK (extmerge_lists (lists, 2, 1000, 8192, &out) == 0);
  CHECK (same (&out, (const uint64_t []) {
        1000, 3072, H | Z,  0, 0, 0 }));
  quorum_extent_list_free (&out);

  /* A child that described nothing: all of it is data. */
  CHECK (extmerge_lists (lists, 3, 1000, 8192, &out) == 0);
  CHECK (same (&out, (const uint64_t []) { 1000, 8192, 0,  0, 0, 0 }));
  quorum_extent_list_free (&out);

  /* No child at all: data too, never a hole nobody reported. */
  CHECK (extmerge_lists (lists, 0, 1000, 8192, &out) == 0);
  CHECK (same (&out, (const uint64_t []) { 1000, 8192, 0,  0, 0, 0 }));
  quorum_extent_list_free (&out);
  quorum_extent_list_free (&a);
  quorum_extent_list_free (&b);
}

static void
test_merge_other_bits (void)
{
  /* Bits beyond hole and zero are not base:allocation's: dropped. */
  struct quorum_extent_list a =
    make_list (0, 1, (const uint64_t []) { 512, 0xff });
  const struct quorum_extent_list *lists[] = { &a };
  struct quorum_extent_list out = { 0 };

  CHECK (extmerge_lists (lists, 1, 0, 512, &out) == 0);
  CHECK (same (&out, (const uint64_t []) { 0, 512, H | Z,  0, 0, 0 }));
  quorum_extent_list_free (&out);
  quorum_extent_list_free (&a);
}

int
main (void)
{
  test_vector ();
  test_add_coalesces ();
  test_covered ();
  test_merge ();
  test_merge_short ();
  test_merge_other_bits ();
  if (failures) {
    fprintf (stderr, "test-extmerge: %u checks failed\n", failures);
    exit (EXIT_FAILURE);
  }
  printf ("test-extmerge: all checks passed\n");
  exit (EXIT_SUCCESS);
}
