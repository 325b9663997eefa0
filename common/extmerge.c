/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The extents merge (see extmerge.h). */

#include <config.h>

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "extmerge.h"
#include "vote.h"

int
extmerge_add (struct quorum_extent_list *out, uint64_t offset,
              uint64_t length, uint32_t type)
{
  struct quorum_extent *last = out->len ? &out->ptr[out->len - 1] : NULL;

  if (length == 0)
    return 0;
  if (last && last->type == type && last->offset + last->length == offset) {
    last->length += length;
    return 0;
  }
  return quorum_extent_append (out, offset, length, type);
}

uint64_t
extmerge_covered (const struct quorum_extent_list *list, uint64_t offset,
                  uint64_t end)
{
  uint64_t pos = offset;
  size_t i;

  /* Compared before adding: a child's lengths may sum past 2^64. */
  for (i = 0; i < list->len && pos < end; ++i) {
    if (list->ptr[i].length >= end - pos)
      return end;
    pos += list->ptr[i].length;
  }
  return pos;
}

/* A child's place in its list during the merge: extent i, which
 * begins at start.
 */
struct extmerge_cursor {
  size_t i;
  uint64_t start;
};

/* Move c to the extent of list holding pos, and return where that
 * extent ends (at most end).  pos is below what list covers.
 */
static uint64_t
extmerge_seek (const struct quorum_extent_list *list,
               struct extmerge_cursor *c, uint64_t pos, uint64_t end)
{
  while (list->ptr[c->i].length <= pos - c->start) {
    c->start += list->ptr[c->i].length;
    c->i++;
    assert (c->i < list->len);
  }
  if (list->ptr[c->i].length >= end - c->start)
    return end;
  return c->start + list->ptr[c->i].length;
}

int
extmerge_lists (const struct quorum_extent_list *const *lists, size_t nr,
                uint64_t offset, uint64_t count,
                struct quorum_extent_list *out)
{
  struct extmerge_cursor cursor[VOTE_MAX_CHILDREN];
  uint64_t end = offset + count, pos, next;
  uint32_t type;
  size_t i;

  assert (nr <= VOTE_MAX_CHILDREN);
  assert (count > 0 && count <= UINT64_MAX - offset);
  for (i = 0; i < nr; ++i) {
    end = extmerge_covered (lists[i], offset, end);
    cursor[i].i = 0;
    cursor[i].start = offset;
  }
  if (nr == 0 || end == offset)
    return extmerge_add (out, offset, count, 0);

  /* Each step ends where the first of the children's extents ends. */
  for (pos = offset; pos < end; pos = next) {
    type = EXTMERGE_HOLE | EXTMERGE_ZERO;
    next = end;
    for (i = 0; i < nr; ++i) {
      uint64_t e = extmerge_seek (lists[i], &cursor[i], pos, end);

      type &= lists[i]->ptr[cursor[i].i].type;
      if (e < next)
        next = e;
    }
    if (extmerge_add (out, pos, next - pos, type) == -1)
      return -1;
  }
  return 0;
}
