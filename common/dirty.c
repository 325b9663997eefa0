/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include "dirty.h"

int
dirty_init (struct dirty_map *m, uint64_t size)
{
  uint64_t nr_granules = (size + DIRTY_GRANULE - 1) >> DIRTY_SHIFT;
  uint64_t words = (nr_granules + 63) / 64;

  m->bits = calloc (words ? words : 1, sizeof (uint64_t));
  if (m->bits == NULL)
    return -1;
  m->size = size;
  m->nr_granules = nr_granules;
  m->nr_dirty = 0;
  return 0;
}

void
dirty_free (struct dirty_map *m)
{
  free (m->bits);
  m->bits = NULL;
}

static bool
dirty_bit (struct dirty_map *m, uint64_t g)
{
  return __atomic_load_n (&m->bits[g >> 6], __ATOMIC_ACQUIRE) &
    (UINT64_C (1) << (g & 63));
}

/* The granules [offset, +count) touches: [*first, *end). */
static void
dirty_touched (uint64_t offset, uint64_t count,
               uint64_t *first, uint64_t *end)
{
  *first = offset >> DIRTY_SHIFT;
  *end = (offset + count + DIRTY_GRANULE - 1) >> DIRTY_SHIFT;
}

uint64_t
dirty_mark (struct dirty_map *m, uint64_t offset, uint64_t count)
{
  uint64_t g, first, end, newly = 0;

  if (m->bits == NULL || count == 0)
    return 0;
  dirty_touched (offset, count, &first, &end);
  for (g = first; g < end; ++g) {
    uint64_t bit = UINT64_C (1) << (g & 63), old;

    /* Usually set already (an unflushed map between flushes): a load
     * costs no exclusive cache line.
     */
    if (dirty_bit (m, g))
      continue;
    old = __atomic_fetch_or (&m->bits[g >> 6], bit, __ATOMIC_ACQ_REL);
    if (!(old & bit)) {
      __atomic_add_fetch (&m->nr_dirty, 1, __ATOMIC_ACQ_REL);
      newly++;
    }
  }
  return newly;
}

void
dirty_clear (struct dirty_map *m, uint64_t offset, uint64_t count)
{
  uint64_t g, first, end;

  if (m->bits == NULL || count == 0 ||
      __atomic_load_n (&m->nr_dirty, __ATOMIC_ACQUIRE) == 0)
    return;
  /* Only whole granules; the last one may end at the end of the disk. */
  first = (offset + DIRTY_GRANULE - 1) >> DIRTY_SHIFT;
  if (offset + count >= m->size)
    end = m->nr_granules;
  else
    end = (offset + count) >> DIRTY_SHIFT;
  for (g = first; g < end; ) {
    uint64_t *w = &m->bits[g >> 6], old;

    /* A whole word at once, or nothing if it is clean. */
    if ((g & 63) == 0 && g + 64 <= end) {
      if (__atomic_load_n (w, __ATOMIC_ACQUIRE) != 0) {
        old = __atomic_exchange_n (w, 0, __ATOMIC_ACQ_REL);
        if (old)
          __atomic_sub_fetch (&m->nr_dirty, __builtin_popcountll (old),
                              __ATOMIC_ACQ_REL);
      }
      g += 64;
      continue;
    }
    if (dirty_bit (m, g)) {
      uint64_t bit = UINT64_C (1) << (g & 63);

      old = __atomic_fetch_and (w, ~bit, __ATOMIC_ACQ_REL);
      if (old & bit)
        __atomic_sub_fetch (&m->nr_dirty, 1, __ATOMIC_ACQ_REL);
    }
    g++;
  }
}

bool
dirty_test (struct dirty_map *m, uint64_t offset, uint64_t count)
{
  uint64_t g, first, end;

  if (m->bits == NULL ||
      __atomic_load_n (&m->nr_dirty, __ATOMIC_ACQUIRE) == 0)
    return false;
  if (count == 0)
    return true;                /* flush: any dirt at all */
  dirty_touched (offset, count, &first, &end);
  for (g = first; g < end; ++g)
    if (dirty_bit (m, g))
      return true;
  return false;
}

uint64_t
dirty_bytes (struct dirty_map *m)
{
  return __atomic_load_n (&m->nr_dirty, __ATOMIC_ACQUIRE) * DIRTY_GRANULE;
}

bool
dirty_next_run (struct dirty_map *m, uint64_t *pos, uint64_t max_granules,
                uint64_t *offset, uint64_t *count)
{
  uint64_t g = *pos >> DIRTY_SHIFT, run = 0;

  if (m->bits == NULL)
    return false;
  while (g < m->nr_granules && !dirty_bit (m, g)) {
    /* Skip clean words whole. */
    if ((g & 63) == 0 &&
        __atomic_load_n (&m->bits[g >> 6], __ATOMIC_ACQUIRE) == 0)
      g += 64;
    else
      g++;
  }
  if (g >= m->nr_granules) {
    *pos = m->size;
    return false;
  }
  while (g + run < m->nr_granules && run < max_granules &&
         dirty_bit (m, g + run))
    run++;
  *offset = g * DIRTY_GRANULE;
  *count = run * DIRTY_GRANULE;
  if (*offset + *count > m->size)
    *count = m->size - *offset;
  *pos = (g + run) * DIRTY_GRANULE;
  return true;
}
