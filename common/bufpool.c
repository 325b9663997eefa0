/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Scratch buffers for the children's replies, reused between requests.
 * Fresh memory costs a page fault per page on first touch, far more
 * than the copy it holds, so buffers go back to a free list by size
 * class (powers of two) instead of to the allocator.  What the lists
 * keep is bounded; beyond that buffers are freed.
 */

#include <config.h>

#include <pthread.h>
#include <stdlib.h>

#include "cleanup.h"
#include "internal.h"

#define MIN_SHIFT 12                    /* 4 KiB */
#define MAX_SHIFT 26                    /* 64 MiB */
#define NR_CLASSES (MAX_SHIFT - MIN_SHIFT + 1)
#define MAX_KEPT_BYTES (128u << 20)     /* free buffers kept in all */

struct free_buf {
  struct free_buf *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct free_buf *free_lists[NR_CLASSES];
static size_t kept_bytes;

static unsigned
size_class (size_t len)
{
  unsigned c = 0;

  while (((size_t) 1 << (MIN_SHIFT + c)) < len)
    c++;
  return c;
}

void *
bufpool_get (size_t len)
{
  unsigned c = size_class (len);
  size_t size = (size_t) 1 << (MIN_SHIFT + c);
  void *buf = NULL;

  if (c < NR_CLASSES) {
    SCOPED_LOCK (&lock);
    if (free_lists[c]) {
      struct free_buf *b = free_lists[c];

      free_lists[c] = b->next;
      kept_bytes -= size;
      return b;
    }
  }
  else
    size = len;

  if (posix_memalign (&buf, 4096, size) != 0)
    return NULL;
  return buf;
}

void
bufpool_put (void *buf, size_t len)
{
  unsigned c = size_class (len);
  size_t size = (size_t) 1 << (MIN_SHIFT + c);

  if (buf == NULL)
    return;
  if (c < NR_CLASSES) {
    SCOPED_LOCK (&lock);
    if (kept_bytes + size <= MAX_KEPT_BYTES) {
      struct free_buf *b = buf;

      b->next = free_lists[c];
      free_lists[c] = b;
      kept_bytes += size;
      return;
    }
  }
  free (buf);
}

void
bufpool_drain (void)
{
  unsigned c;

  SCOPED_LOCK (&lock);
  for (c = 0; c < NR_CLASSES; ++c) {
    while (free_lists[c]) {
      struct free_buf *b = free_lists[c];

      free_lists[c] = b->next;
      free (b);
    }
  }
  kept_bytes = 0;
}
