/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* libFuzzer harness for the extents merge: random children's answers
 * (short, long, empty, zero-length extents, stray type bits, lengths
 * near 2^64) to a random request, and the merged answer checked for
 * the properties the export relies on, byte by byte against a direct
 * reading of the children's lists:
 *   - it starts at the request's offset, is contiguous and sorted, has
 *     no extent of length 0 and no two neighbours of one type;
 *   - it ends where the child that covered least stopped (never past
 *     the request), or covers the whole request as data if a child
 *     covered nothing;
 *   - a byte is a hole, or zero, only if every child said so there.
 *
 *   clang -fsanitize=fuzzer,address,undefined -I. -I.. \
 *         fuzz-extmerge.c extmerge.c -o fuzz-extmerge
 *   ./fuzz-extmerge -max_total_time=20
 */

#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "extmerge.h"
#include "vote.h"

#define MAX_EXTENTS 24

/* Takes bytes from the input, zeroes once it is used up. */
struct input {
  const uint8_t *data;
  size_t size, pos;
};

static uint8_t
next_byte (struct input *in)
{
  return in->pos < in->size ? in->data[in->pos++] : 0;
}

/* Mostly small lengths, so that the children's extents interleave;
 * sometimes 0 or one near 2^64.
 */
static uint64_t
next_length (struct input *in)
{
  uint8_t b = next_byte (in);

  switch (b >> 6) {
  case 0:
    return b & 7;
  case 1: case 2:
    return 1 + (b & 63);
  default:
    return (b & 1) ? UINT64_MAX - (b & 31) : UINT64_C (1) << (b & 63);
  }
}

/* Whether list, describing from offset, covers byte pos, and the type
 * it gives there: read directly, without the merge's code.
 */
static bool
covers (const struct quorum_extent_list *list, uint64_t offset,
        uint64_t pos, uint32_t *type)
{
  uint64_t start = offset;
  size_t i;

  for (i = 0; i < list->len; ++i) {
    if (pos - start < list->ptr[i].length) {
      *type = list->ptr[i].type;
      return true;
    }
    start += list->ptr[i].length;
    if (start > pos || start < offset)
      return false;             /* passed pos, or wrapped past 2^64 */
  }
  return false;
}

static void
check (const struct quorum_extent_list *const *lists, size_t nr,
       uint64_t offset, uint64_t count,
       const struct quorum_extent_list *out)
{
  uint64_t end = offset + count, pos = offset, b;
  bool all_data = nr == 0;
  uint32_t t;
  size_t i, j;

  /* Byte by byte (count is small): where the first child stops. */
  for (i = 0; i < nr; ++i) {
    for (b = offset; b < end && covers (lists[i], offset, b, &t); ++b)
      ;
    if (b == offset)
      all_data = true;
    end = b;
  }
  if (all_data) {
    if (out->len != 1 || out->ptr[0].offset != offset ||
        out->ptr[0].length != count || out->ptr[0].type != 0)
      abort ();
    return;
  }

  for (j = 0; j < out->len; ++j) {
    const struct quorum_extent *e = &out->ptr[j];

    if (e->offset != pos || e->length == 0 || e->length > end - pos)
      abort ();
    if ((e->type & ~(uint32_t) (EXTMERGE_HOLE | EXTMERGE_ZERO)) != 0)
      abort ();
    if (j > 0 && out->ptr[j - 1].type == e->type)
      abort ();                 /* not coalesced */
    /* Every byte: the type is what all children agree on there. */
    for (b = e->offset; b - e->offset < e->length; ++b) {
      uint32_t agreed = EXTMERGE_HOLE | EXTMERGE_ZERO;

      for (i = 0; i < nr; ++i) {
        if (!covers (lists[i], offset, b, &t))
          abort ();
        agreed &= t;
      }
      if (e->type != agreed)
        abort ();
    }
    pos += e->length;
  }
  if (pos != end)
    abort ();
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct input in = { .data = data, .size = size };
  struct quorum_extent_list store[VOTE_MAX_CHILDREN] = { { 0 } };
  const struct quorum_extent_list *lists[VOTE_MAX_CHILDREN];
  struct quorum_extent_list out = { 0 };
  uint64_t offset, count;
  size_t nr, i, n, k;
  uint8_t b;

  nr = next_byte (&in) % (VOTE_MAX_CHILDREN + 1);
  /* Offsets near 2^64 too, so that end - pos arithmetic is tested. */
  b = next_byte (&in);
  offset = b & 0x80 ? UINT64_MAX - 1024 - (b & 0x7f) : b;
  count = 1 + next_byte (&in) % 256;

  for (i = 0; i < nr; ++i) {
    n = next_byte (&in) % (MAX_EXTENTS + 1);
    for (k = 0; k < n; ++k) {
      uint64_t len = next_length (&in);
      uint32_t type = next_byte (&in);

      /* Mostly base:allocation's bits, sometimes stray ones. */
      if ((type & 0xf0) != 0xf0)
        type &= EXTMERGE_HOLE | EXTMERGE_ZERO;
      if (quorum_extent_append (&store[i], offset, len, type) == -1)
        abort ();
    }
    lists[i] = &store[i];
  }

  if (extmerge_lists (lists, nr, offset, count, &out) == -1)
    abort ();
  check (lists, nr, offset, count, &out);

  /* Appending to a list that already ends at offset with the first
   * extent's type extends that extent: the same answer, shifted.
   */
  if (out.len > 0) {
    struct quorum_extent_list again = { 0 };
    uint32_t t = out.ptr[0].type;

    if (offset > 0 && extmerge_add (&again, offset - 1, 1, t) == 0 &&
        extmerge_lists (lists, nr, offset, count, &again) == 0) {
      if (again.len != out.len || again.ptr[0].offset != offset - 1 ||
          again.ptr[0].length != out.ptr[0].length + 1)
        abort ();
    }
    quorum_extent_list_free (&again);
  }

  quorum_extent_list_free (&out);
  for (i = 0; i < nr; ++i)
    quorum_extent_list_free (&store[i]);
  return 0;
}
