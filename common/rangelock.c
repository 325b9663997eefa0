/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

#include <config.h>

#include <pthread.h>
#include <stddef.h>

#include "cleanup.h"
#include "rangelock.h"

/* Every request holding or waiting for a range, oldest first. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static struct range_lock *head, *tail;
static unsigned nr_waiting;
/* How many of them are exclusive: with none, a read goes at once,
 * without walking the list (the whole of a read-only load).
 */
static unsigned nr_exclusive;

static bool
conflicts (const struct range_lock *a, const struct range_lock *b)
{
  return (a->exclusive || b->exclusive) &&
    a->start < b->end && b->start < a->end;
}

static bool
may_go (const struct range_lock *r)
{
  const struct range_lock *e;

  if (!r->exclusive && nr_exclusive == 0)
    return true;
  for (e = head; e != r; e = e->next)
    if (conflicts (e, r))
      return false;
  return true;
}

void
range_lock (struct range_lock *r, uint64_t offset, uint64_t count,
            bool exclusive)
{
  r->start = offset;
  r->end = offset + count;
  r->exclusive = exclusive;
  r->next = NULL;

  SCOPED_LOCK (&lock);
  r->prev = tail;
  if (tail)
    tail->next = r;
  else
    head = r;
  tail = r;
  if (exclusive)
    nr_exclusive++;

  while (!may_go (r)) {
    nr_waiting++;
    pthread_cond_wait (&cond, &lock);
    nr_waiting--;
  }
}

void
range_unlock (struct range_lock *r)
{
  SCOPED_LOCK (&lock);
  if (r->prev)
    r->prev->next = r->next;
  else
    head = r->next;
  if (r->next)
    r->next->prev = r->prev;
  else
    tail = r->prev;
  if (r->exclusive)
    nr_exclusive--;
  /* Nobody waits in the common case of no overlap: skip the wake-up. */
  if (nr_waiting > 0)
    pthread_cond_broadcast (&cond);
}
