/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The freshness model: see fresh.h.
 *
 * In memory, per child: its stale map (c->dirty) and two unflushed
 * maps, what it took since the flush before last and since the last
 * one (fresh_flush_begin swaps them); for the export: the unsettled
 * map.  All at DIRTY_GRANULE.  With state=, the stale maps and the
 * write-intent map are mirrored in the state file (fresh-persist.c),
 * whose every change that matters is durable before the write it
 * protects is sent (intent) or acknowledged (stale).
 */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "cleanup.h"
#include "dirty.h"
#include "fresh-int.h"
#include "fresh.h"
#include "internal.h"
#include "state.h"


/* One per child, beside struct child: what it took and has not
 * flushed.  unflushed[epoch] gets new writes; the other one is what the
 * flush in progress covers (flush_lock serialises flushes).
 */
struct fresh_child {
  struct dirty_map unflushed[2];
};
static struct fresh_child *fresh_children;
static bool fresh_spare_slot;   /* fresh_children has the spare's too */
static unsigned epoch;                  /* under flush_lock; read atomically */
static pthread_mutex_t flush_lock = PTHREAD_MUTEX_INITIALIZER;
/* Threads marking unflushed[e] now: a flush waits for those of the
 * epoch it covers, so that a write that completed before the flush was
 * sent is never marked in its map after the flush dealt with it.
 */
static unsigned took_active[2];

static struct dirty_map unsettled;

/* Changes for fresh_wait: a counter under change_lock. */
static pthread_mutex_t change_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t change_cond = PTHREAD_COND_INITIALIZER;
static uint64_t changes;

const char *
fresh_reason_name (enum fresh_reason reason)
{
  switch (reason) {
  case FRESH_WRITE_FAILED: return "write-failed";
  case FRESH_FLUSH_FAILED: return "flush-failed";
  case FRESH_DOWN: return "down";
  case FRESH_LOST_CONTENTS: return "lost-contents";
  case FRESH_UNSETTLED: return "unsettled";
  case FRESH_NEW_DISK: return "new-disk";
  case FRESH_UNREACHABLE: return "unreachable";
  case FRESH_LAGGING: return "lagging";
  }
  return "unknown";
}

static void
fresh_changed (void)
{
  SCOPED_LOCK (&change_lock);
  changes++;
  pthread_cond_broadcast (&change_cond);
}

bool
fresh_wait (uint64_t *seen, unsigned ms)
{
  struct timespec deadline;
  bool r;

  clock_gettime (CLOCK_REALTIME, &deadline);
  deadline.tv_sec += ms / 1000;
  deadline.tv_nsec += (long) (ms % 1000) * 1000000;
  if (deadline.tv_nsec >= 1000000000) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000;
  }
  SCOPED_LOCK (&change_lock);
  while (changes == *seen &&
         pthread_cond_timedwait (&change_cond, &change_lock,
                                 &deadline) != ETIMEDOUT)
    ;
  r = changes != *seen;
  *seen = changes;
  return r;
}

void
fresh_wake (void)
{
  fresh_changed ();
}

bool
fresh_stale (struct child *c, uint64_t offset, uint64_t count)
{
  return dirty_test (&c->dirty, offset, count);
}

bool
fresh_unsettled (uint64_t offset, uint64_t count)
{
  return dirty_test (&unsettled, offset, count);
}

uint64_t
fresh_stale_bytes (struct child *c)
{
  return dirty_bytes (&c->dirty);
}

uint64_t
fresh_unsettled_bytes (void)
{
  return dirty_bytes (&unsettled);
}

bool
fresh_next_stale (struct child *c, uint64_t *pos, uint64_t max_bytes,
                  uint64_t *offset, uint64_t *count)
{
  return dirty_next_run (&c->dirty, pos, max_bytes >> DIRTY_SHIFT ?: 1,
                         offset, count);
}

bool
fresh_next_unsettled (uint64_t *pos, uint64_t max_bytes,
                      uint64_t *offset, uint64_t *count)
{
  return dirty_next_run (&unsettled, pos, max_bytes >> DIRTY_SHIFT ?: 1,
                         offset, count);
}

/* stale_lock orders every change of a stale map in memory and in the
 * file (persist_stale, fresh-persist.c) alike: a mark and a clear
 * racing could leave them saying different things otherwise.
 */
static pthread_mutex_t stale_lock = PTHREAD_MUTEX_INITIALIZER;

/* Mark without reporting or syncing: the ticket to sync, 0 if nothing
 * changed on stable storage; *newly the granules newly stale.
 */
static uint64_t
fresh_mark_quiet (struct child *c, uint64_t offset, uint64_t count,
                  uint64_t *newly)
{
  SCOPED_LOCK (&stale_lock);
  *newly = dirty_mark (&c->dirty, offset, count);
  return persist_stale (c, offset, count, true);
}

/* newly granules of [offset, +count) of c became stale: say so (but a
 * child that is down misses every write: the write path does not
 * report each, its resync-start says how much) and wake who heals it.
 */
static void
fresh_newly_stale (struct child *c, uint64_t offset, uint64_t count,
                   uint64_t newly, enum fresh_reason reason, bool report)
{
  if (newly == 0)
    return;
  if (report)
    report_stale (c->index, offset, count, fresh_reason_name (reason));
  state_kick (c);
  fresh_changed ();
}

int
fresh_stale_mark (struct child *c, uint64_t offset, uint64_t count,
                  enum fresh_reason reason)
{
  uint64_t newly, ticket = fresh_mark_quiet (c, offset, count, &newly);

  fresh_newly_stale (c, offset, count, newly, reason, true);
  return persist_sync (ticket);
}

void
fresh_stale_clear (struct child *c, uint64_t offset, uint64_t count)
{
  if (!dirty_test (&c->dirty, offset, count))
    return;
  SCOPED_LOCK (&stale_lock);
  dirty_clear (&c->dirty, offset, count);
  persist_stale (c, offset, count, false);
}

/* Around marks of unflushed maps: the epoch to mark. */
static unsigned
fresh_took_enter (void)
{
  for (;;) {
    unsigned e = __atomic_load_n (&epoch, __ATOMIC_ACQUIRE);

    __atomic_add_fetch (&took_active[e], 1, __ATOMIC_ACQ_REL);
    if (__atomic_load_n (&epoch, __ATOMIC_ACQUIRE) == e)
      return e;
    /* A flush began meanwhile: mark the new epoch (the write is then
     * not counted as covered, which is only cautious).
     */
    __atomic_sub_fetch (&took_active[e], 1, __ATOMIC_ACQ_REL);
  }
}

static void
fresh_took_leave (unsigned e)
{
  __atomic_sub_fetch (&took_active[e], 1, __ATOMIC_ACQ_REL);
}

static void
fresh_took_mark (unsigned e, struct child *c, uint64_t offset,
                 uint64_t count)
{
  dirty_mark (&fresh_children[c->index].unflushed[e], offset, count);
}

void
fresh_took (struct child *c, uint64_t offset, uint64_t count)
{
  unsigned e = fresh_took_enter ();

  fresh_took_mark (e, c, offset, count);
  fresh_took_leave (e);
}

/* Mark every granule set in from stale in c; returns the ticket. */
static uint64_t
fresh_stale_from_map (struct child *c, struct dirty_map *from,
                      enum fresh_reason reason)
{
  uint64_t pos = 0, offset, count, ticket = 0, t, newly;

  while (dirty_next_run (from, &pos, UINT64_MAX, &offset, &count)) {
    t = fresh_mark_quiet (c, offset, count, &newly);
    if (t > ticket)
      ticket = t;
    fresh_newly_stale (c, offset, count, newly, reason, true);
  }
  return ticket;
}

int
fresh_lost_unflushed (struct child *c, enum fresh_reason reason)
{
  struct fresh_child *fc = &fresh_children[c->index];
  uint64_t t0, t1;

  /* Both maps: a flush in progress does not reach a child that went
   * down.  Called before c takes writes again (it is down, or being
   * failed), so nothing sets them meanwhile.
   */
  t0 = fresh_stale_from_map (c, &fc->unflushed[0], reason);
  t1 = fresh_stale_from_map (c, &fc->unflushed[1], reason);
  dirty_clear (&fc->unflushed[0], 0, quorum_export_size);
  dirty_clear (&fc->unflushed[1], 0, quorum_export_size);
  return persist_sync (t0 > t1 ? t0 : t1);
}

/* The write path. */

int
fresh_write_begin (uint64_t offset, uint64_t count, int *err)
{
  return persist_intent (offset, count, err);
}

static int
fresh_record_failed (int *err)
{
  nbdkit_error ("quorum: state=%s: cannot record which children are "
                "stale: %m; failing the write", quorum_state_file);
  *err = EIO;
  return -1;
}

int
fresh_write_end (uint64_t offset, uint64_t count, uint32_t sent,
                 uint32_t took, bool acked, int *err)
{
  uint64_t ticket = 0;
  unsigned e = fresh_took_enter ();
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];
    const uint32_t bit = UINT32_C (1) << i;
    uint64_t t = 0, newly = 0;
    enum fresh_reason reason;

    if (took & bit) {
      fresh_took_mark (e, c, offset, count);
      /* A stale child that took a whole granule holds what the others
       * hold there: but only if the write counts.
       */
      if (acked)
        fresh_stale_clear (c, offset, count);
      continue;
    }
    /* The write failed as a whole: the region is unsettled, and this
     * child (failed, or down and holding the old version, which is as
     * good there) is settled with the rest; marking it stale would
     * leave fewer current copies than settling and copying need.
     */
    if (!acked)
      continue;
    reason = sent & bit ? FRESH_WRITE_FAILED : FRESH_DOWN;
    t = fresh_mark_quiet (c, offset, count, &newly);
    if (t > ticket)
      ticket = t;
    fresh_newly_stale (c, offset, count, newly, reason,
                       reason != FRESH_DOWN);
  }
  fresh_took_leave (e);
  if (!acked) {
    if (dirty_mark (&unsettled, offset, count))
      fresh_changed ();
  }
  if (persist_sync (ticket) == -1)
    return fresh_record_failed (err);
  return 0;
}

void
fresh_flush_begin (void)
{
  unsigned covered;

  pthread_mutex_lock (&flush_lock);
  /* What was taken until now is what this flush covers: new writes go
   * to the other map, which the last flush left empty.  Marks of the
   * covered map in progress end first (a few instructions each).
   */
  covered = epoch;
  __atomic_store_n (&epoch, covered ^ 1, __ATOMIC_RELEASE);
  while (__atomic_load_n (&took_active[covered], __ATOMIC_ACQUIRE))
    sched_yield ();
}

int
fresh_flush_end (uint32_t sent, uint32_t took, bool acked, int *err)
{
  const unsigned covered = epoch ^ 1;
  uint64_t ticket = 0, t;
  size_t i;
  int r = 0;

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];
    struct dirty_map *m = &fresh_children[i].unflushed[covered];
    const uint32_t bit = UINT32_C (1) << i;

    if (!(sent & bit))
      continue;                 /* down: fresh_lost_unflushed did it */
    if (!(took & bit)) {
      t = fresh_stale_from_map (c, m, FRESH_FLUSH_FAILED);
      if (t > ticket)
        ticket = t;
    }
    dirty_clear (m, 0, m->size);
  }
  (void) acked;
  if (persist_sync (ticket) == -1)
    r = fresh_record_failed (err);
  pthread_mutex_unlock (&flush_lock);
  return r;
}

void
fresh_settled (uint64_t offset, uint64_t count)
{
  dirty_clear (&unsettled, offset, count);
}

/* For fresh-persist.c (fresh-int.h): what the sweeper and the loading
 * of the state file need of the maps in memory.
 */

bool
fresh_all_flushed (uint64_t offset, uint64_t count)
{
  size_t i, j;

  if (dirty_test (&unsettled, offset, count))
    return false;
  for (i = 0; i < quorum_nr_children; ++i)
    for (j = 0; j < 2; ++j)
      if (dirty_test (&fresh_children[i].unflushed[j], offset, count))
        return false;
  return true;
}

void
fresh_mark_unsettled (uint64_t offset, uint64_t count)
{
  dirty_mark (&unsettled, offset, count);
}

int
fresh_init (void)
{
  size_t i, j;

  fresh_children = calloc (quorum_nr_children, sizeof *fresh_children);
  if (fresh_children == NULL ||
      dirty_init (&unsettled, quorum_export_size) == -1) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];

    if (dirty_init (&c->dirty, quorum_export_size) == -1) {
      nbdkit_error ("calloc: %m");
      return -1;
    }
    for (j = 0; j < 2; ++j)
      if (dirty_init (&fresh_children[i].unflushed[j],
                      quorum_export_size) == -1) {
        nbdkit_error ("calloc: %m");
        return -1;
      }
  }
  if (quorum_state_file && persist_load () == -1)
    return -1;

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];

    if (child_is_local (c) || state_get (c) != CHILD_DOWN)
      continue;
    report_down (c->index, "unreachable");
    /* Unreachable at start.  Without state= nothing it holds can be
     * trusted; with it, what it missed is in the file, and it may have
     * missed the writes in flight at the end.
     */
    if (!persist_enabled ()) {
      if (fresh_stale_mark (c, 0, quorum_export_size,
                            FRESH_UNREACHABLE) == -1)
        return -1;
    }
    else if (fresh_stale_from_map (c, &unsettled, FRESH_UNSETTLED) &&
             persist_sync_all () == -1) {
      nbdkit_error ("quorum: state=%s: %m", quorum_state_file);
      return -1;
    }
  }
  return 0;
}

int
fresh_start (void)
{
  return persist_start ();
}

void
fresh_stop (void)
{
  size_t i, j;

  fresh_wake ();
  persist_stop ();
  /* The spare's slot too, which fresh_spare_init added. */
  if (fresh_children)
    for (i = 0; i < quorum_nr_children + fresh_spare_slot; ++i)
      for (j = 0; j < 2; ++j)
        dirty_free (&fresh_children[i].unflushed[j]);
  free (fresh_children);
  fresh_children = NULL;
  fresh_spare_slot = false;
  dirty_free (&unsettled);
}

/* ------------------------------------------------------------------ */
/* The spare (internal.h), for replace.c.  The spare
 * has a stale map and unflushed maps like any child, in memory only:
 * it is not a member until it is swapped in, and the state file has no
 * map for it (statefile_set ignores a map it lacks), so a restart
 * forgets a replace in progress and keeps the old child.  Its writes
 * are counted by the fan-out (fanout.c), not fresh_write_end; its
 * flushes by fresh_spare_flush_end.
 */

int
fresh_spare_init (void)
{
  const size_t s = quorum_nr_children;
  struct fresh_child *fc;
  size_t j;

  if (quorum_nr_slots () == quorum_nr_children)
    return 0;                   /* VOTE_MAX_CHILDREN: no spare */
  /* Before any thread: fresh_children may move. */
  fc = realloc (fresh_children, (s + 1) * sizeof *fc);
  if (fc == NULL) {
    nbdkit_error ("realloc: %m");
    return -1;
  }
  fresh_children = fc;
  memset (&fc[s], 0, sizeof fc[s]);
  fresh_spare_slot = true;
  if (dirty_init (&quorum_children[s].dirty, quorum_export_size) == -1) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  for (j = 0; j < 2; ++j)
    if (dirty_init (&fc[s].unflushed[j], quorum_export_size) == -1) {
      nbdkit_error ("calloc: %m");
      return -1;
    }
  return 0;
}

void
fresh_spare_reset (struct child *c)
{
  struct fresh_child *fc = &fresh_children[c->index];

  dirty_clear (&fc->unflushed[0], 0, quorum_export_size);
  dirty_clear (&fc->unflushed[1], 0, quorum_export_size);
  fresh_stale_mark (c, 0, quorum_export_size, FRESH_NEW_DISK);
}

void
fresh_spare_flush_end (struct child *c, bool ok)
{
  const unsigned covered = epoch ^ 1;
  struct dirty_map *m = &fresh_children[c->index].unflushed[covered];

  if (!ok)
    fresh_stale_from_map (c, m, FRESH_FLUSH_FAILED);
  dirty_clear (m, 0, m->size);
}
