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
 * write-intent map are mirrored in the state file (statefile.c), whose
 * every change that matters is durable before the write it protects is
 * sent (intent) or acknowledged (stale).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "cleanup.h"
#include "dirty.h"
#include "fresh.h"
#include "internal.h"
#include "rangelock.h"
#include "state.h"
#include "statefile.h"


/* One per child, beside struct child: what it took and has not
 * flushed.  unflushed[epoch] gets new writes; the other one is what the
 * flush in progress covers (flush_lock serialises flushes).
 */
struct fresh_child {
  struct dirty_map unflushed[2];
};
static struct fresh_child *fresh_children;
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

/* Persistence hooks, no-ops without state=: see below.  stale_lock
 * orders every change of a stale map in memory and in the file alike
 * (a mark and a clear racing could leave them saying different things
 * otherwise).
 */
static uint64_t persist_stale (struct child *c, uint64_t offset,
                               uint64_t count, bool value);
static int persist_sync (uint64_t ticket);

/* Mark without reporting or syncing: the ticket to sync, 0 if nothing
 * changed on stable storage; *fresh_bits the granules newly stale.
 */
static pthread_mutex_t stale_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t
stale_mark_quiet (struct child *c, uint64_t offset, uint64_t count,
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
stale_newly (struct child *c, uint64_t offset, uint64_t count,
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
  uint64_t newly, ticket = stale_mark_quiet (c, offset, count, &newly);

  stale_newly (c, offset, count, newly, reason, true);
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
took_enter (void)
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
took_leave (unsigned e)
{
  __atomic_sub_fetch (&took_active[e], 1, __ATOMIC_ACQ_REL);
}

static void
took_mark (unsigned e, struct child *c, uint64_t offset, uint64_t count)
{
  dirty_mark (&fresh_children[c->index].unflushed[e], offset, count);
}

void
fresh_took (struct child *c, uint64_t offset, uint64_t count)
{
  unsigned e = took_enter ();

  took_mark (e, c, offset, count);
  took_leave (e);
}

/* Mark every granule set in from stale in c; returns the ticket. */
static uint64_t
stale_from_map (struct child *c, struct dirty_map *from,
                enum fresh_reason reason)
{
  uint64_t pos = 0, offset, count, ticket = 0, t, newly;

  while (dirty_next_run (from, &pos, UINT64_MAX, &offset, &count)) {
    t = stale_mark_quiet (c, offset, count, &newly);
    if (t > ticket)
      ticket = t;
    stale_newly (c, offset, count, newly, reason, true);
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
  t0 = stale_from_map (c, &fc->unflushed[0], reason);
  t1 = stale_from_map (c, &fc->unflushed[1], reason);
  dirty_clear (&fc->unflushed[0], 0, quorum_export_size);
  dirty_clear (&fc->unflushed[1], 0, quorum_export_size);
  return persist_sync (t0 > t1 ? t0 : t1);
}

/* The write path. */

static int persist_intent (uint64_t offset, uint64_t count, int *err);

int
fresh_write_begin (uint64_t offset, uint64_t count, int *err)
{
  return persist_intent (offset, count, err);
}

static int
record_failed (int *err)
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
  unsigned e = took_enter ();
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];
    const uint32_t bit = UINT32_C (1) << i;
    uint64_t t = 0, newly = 0;
    enum fresh_reason reason;

    if (took & bit) {
      took_mark (e, c, offset, count);
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
    t = stale_mark_quiet (c, offset, count, &newly);
    if (t > ticket)
      ticket = t;
    stale_newly (c, offset, count, newly, reason, reason != FRESH_DOWN);
  }
  took_leave (e);
  if (!acked) {
    if (dirty_mark (&unsettled, offset, count))
      fresh_changed ();
  }
  if (persist_sync (ticket) == -1)
    return record_failed (err);
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
      t = stale_from_map (c, m, FRESH_FLUSH_FAILED);
      if (t > ticket)
        ticket = t;
    }
    dirty_clear (m, 0, m->size);
  }
  (void) acked;
  if (persist_sync (ticket) == -1)
    r = record_failed (err);
  pthread_mutex_unlock (&flush_lock);
  return r;
}

void
fresh_settled (uint64_t offset, uint64_t count)
{
  dirty_clear (&unsettled, offset, count);
}

/* Persistence, with state=.  The stale maps have the granule of c->dirty
 * (DIRTY_GRANULE) in the file too; the write-intent map has
 * quorum_state_granule.
 */
static struct statefile *state;
static unsigned intent_shift;
/* Written to since the sweeper's last pass, at DIRTY_GRANULE: a hint
 * for the sweeper to leave busy regions in the map.
 */
static struct dirty_map recent;

static uint64_t
persist_stale (struct child *c, uint64_t offset, uint64_t count, bool value)
{
  uint64_t first, end;

  if (state == NULL || count == 0)
    return 0;
  /* The granules dirty_mark and dirty_clear change. */
  if (value) {
    first = offset >> DIRTY_SHIFT;
    end = (offset + count + DIRTY_GRANULE - 1) >> DIRTY_SHIFT;
  }
  else {
    first = (offset + DIRTY_GRANULE - 1) >> DIRTY_SHIFT;
    end = offset + count >= c->dirty.size ? c->dirty.nr_granules :
      (offset + count) >> DIRTY_SHIFT;
  }
  if (first >= end)
    return 0;
  return statefile_set (state, STATEFILE_MAP_STALE (c->index), first, end,
                        value);
}

static int
persist_sync (uint64_t ticket)
{
  if (state == NULL || ticket == 0)
    return 0;
  return statefile_sync (state, ticket);
}

static void sweeper_sync_ahead (void);

/* A write at offset continues one just before it: a sequential stream,
 * which will soon need the next intent granule.
 */
static bool
sequential (uint64_t offset)
{
  return offset >= DIRTY_GRANULE &&
    dirty_test (&recent, offset - DIRTY_GRANULE, DIRTY_GRANULE);
}

static int
persist_intent (uint64_t offset, uint64_t count, int *err)
{
  const uint64_t granule = UINT64_C (1) << intent_shift;
  uint64_t first, end, ticket;
  bool ahead;

  if (state == NULL || count == 0)
    return 0;
  first = offset >> intent_shift;
  end = ((offset + count - 1) >> intent_shift) + 1;
  /* In the second half of its granule, a stream marks the next one
   * too, and has it made durable in the background: by the time the
   * stream gets there it costs no wait.  (A mark never needed costs a
   * settle of that granule after a crash, nothing else.)
   */
  ahead = (offset + count) % granule > granule / 2 &&
    end < statefile_bits (state, STATEFILE_MAP_INTENT) &&
    !statefile_test (state, STATEFILE_MAP_INTENT, end) && sequential (offset);
  dirty_mark (&recent, offset, count);
  ticket = statefile_set (state, STATEFILE_MAP_INTENT, first, end, true);
  if (ahead && statefile_set (state, STATEFILE_MAP_INTENT, end, end + 1, true))
    sweeper_sync_ahead ();
  if (persist_sync (ticket) == -1) {
    nbdkit_error ("quorum: state=%s: cannot record where writes are in "
                  "flight: %m; failing the write (the state file must be "
                  "writable: see \"state=\" in the manual)",
                  quorum_state_file);
    *err = EIO;
    return -1;
  }
  return 0;
}

struct statefile *
fresh_statefile (void)
{
  return state;
}

uint64_t
fresh_syncs (void)
{
  return state ? statefile_syncs (state) : 0;
}

/* Whether intent granule g may leave the map: no write in flight there
 * (the caller holds its range), not unsettled, and every child flushed
 * what it took there, so that even a power loss of the children leaves
 * them equal there.
 */
static bool
intent_done (uint64_t offset, uint64_t count)
{
  size_t i, j;

  if (dirty_test (&recent, offset, count) ||
      dirty_test (&unsettled, offset, count))
    return false;
  for (i = 0; i < quorum_nr_children; ++i)
    for (j = 0; j < 2; ++j)
      if (dirty_test (&fresh_children[i].unflushed[j], offset, count))
        return false;
  return true;
}

/* The sweeper: once a second, intent bits whose writes are done and
 * that were idle for SWEEP_IDLE seconds leave the map, and the file is
 * written once for all of them.  A region written to again within
 * seconds stays (each return would cost a sync again).  Clearing is
 * never urgent: a bit left set costs a settle after a crash, nothing
 * more.  It also makes marks ahead of sequential writes durable, at
 * once, off the writers' path.
 */
#define SWEEP_IDLE 5
static pthread_t sweeper;
static bool sweeper_running, sweeper_quit, sweeper_ahead;
static pthread_mutex_t sweeper_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sweeper_cond = PTHREAD_COND_INITIALIZER;
static unsigned char *idle_passes;      /* per intent granule, sweeper's */

static void
sweeper_sync_ahead (void)
{
  SCOPED_LOCK (&sweeper_lock);
  sweeper_ahead = true;
  pthread_cond_signal (&sweeper_cond);
}

static void
sweep (void)
{
  const uint64_t granule = UINT64_C (1) << intent_shift;
  uint64_t g = 0, cleared = 0;

  while ((g = statefile_next (state, STATEFILE_MAP_INTENT, g)) != UINT64_MAX) {
    const uint64_t offset = g << intent_shift;
    uint64_t count = granule;
    struct range_lock rl;

    if (offset + count > (uint64_t) quorum_export_size)
      count = quorum_export_size - offset;
    if (dirty_test (&recent, offset, count))
      idle_passes[g] = 0;
    else if (idle_passes[g] < SWEEP_IDLE)
      idle_passes[g]++;
    else if (intent_done (offset, count)) {
      range_lock (&rl, offset, count, true);
      if (intent_done (offset, count) &&
          statefile_set (state, STATEFILE_MAP_INTENT, g, g + 1, false))
        cleared++;
      range_unlock (&rl);
      idle_passes[g] = 0;
    }
    g++;
  }
  dirty_clear (&recent, 0, quorum_export_size);
  if (cleared && statefile_sync_all (state) == -1)
    nbdkit_debug ("quorum: state=%s: sweep: %m", quorum_state_file);
}

static void *
sweeper_thread (void *arg)
{
  struct timespec next;

  (void) arg;
  clock_gettime (CLOCK_REALTIME, &next);
  next.tv_sec++;
  pthread_mutex_lock (&sweeper_lock);
  while (!sweeper_quit) {
    int r = 0;

    while (!sweeper_quit && !sweeper_ahead && r != ETIMEDOUT)
      r = pthread_cond_timedwait (&sweeper_cond, &sweeper_lock, &next);
    if (sweeper_quit)
      break;
    if (sweeper_ahead) {
      sweeper_ahead = false;
      pthread_mutex_unlock (&sweeper_lock);
      if (statefile_sync_all (state) == -1)
        nbdkit_debug ("quorum: state=%s: %m", quorum_state_file);
      pthread_mutex_lock (&sweeper_lock);
      continue;
    }
    pthread_mutex_unlock (&sweeper_lock);
    sweep ();
    clock_gettime (CLOCK_REALTIME, &next);
    next.tv_sec++;
    pthread_mutex_lock (&sweeper_lock);
  }
  pthread_mutex_unlock (&sweeper_lock);
  return NULL;
}

/* Start-up with state=: what the file says, into memory. */
static int
persist_load (void)
{
  struct statefile_identity id = {
    .size = quorum_export_size, .granule = DIRTY_GRANULE,
    .intent_granule = quorum_state_granule,
    .nr_children = quorum_nr_children,
  };
  const char *names[VOTE_MAX_CHILDREN];
  uint32_t renamed = 0;
  uint64_t g, n;
  char *why = NULL;
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i)
    names[i] = quorum_children[i].name;
  id.names = names;
  intent_shift = __builtin_ctz (quorum_state_granule);
  idle_passes = calloc (quorum_export_size ?
                        ((quorum_export_size - 1) >> intent_shift) + 1 : 1, 1);
  if (idle_passes == NULL || dirty_init (&recent, quorum_export_size) == -1) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  state = statefile_open (quorum_state_file, &id, &renamed, &why);
  if (state == NULL) {
    nbdkit_error ("quorum: %s", why ? why : "state=: out of memory");
    free (why);
    return -1;
  }

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];

    if (renamed & (UINT32_C (1) << i)) {
      /* Another disk at this position: it holds nothing of ours. */
      nbdkit_debug ("quorum: child %zu (%s): not the child state=%s "
                    "knew at this position: a new disk, wholly stale",
                    i, c->name, quorum_state_file);
      fresh_stale_mark (c, 0, quorum_export_size, FRESH_NEW_DISK);
      statefile_rename (state, i, c->name);
      continue;
    }
    n = 0;
    for (g = statefile_next (state, STATEFILE_MAP_STALE (i), 0);
         g != UINT64_MAX;
         g = statefile_next (state, STATEFILE_MAP_STALE (i), g + 1)) {
      dirty_mark (&c->dirty, g << DIRTY_SHIFT, DIRTY_GRANULE);
      n++;
    }
    if (n)
      nbdkit_debug ("quorum: child %zu (%s): state=%s: %" PRIu64
                    " bytes stale", i, c->name, quorum_state_file,
                    n << DIRTY_SHIFT);
  }
  /* Writes were in flight there when the quorum stopped: the children
   * may differ.  The bits stay until the regions are settled.
   */
  n = 0;
  for (g = statefile_next (state, STATEFILE_MAP_INTENT, 0);
       g != UINT64_MAX;
       g = statefile_next (state, STATEFILE_MAP_INTENT, g + 1)) {
    dirty_mark (&unsettled, g << intent_shift, UINT64_C (1) << intent_shift);
    n++;
  }
  if (n)
    nbdkit_debug ("quorum: state=%s: %" PRIu64 " regions of %" PRIu32
                  " bytes had writes in flight: to be settled",
                  quorum_state_file, n, quorum_state_granule);
  if (statefile_sync_all (state) == -1) {
    nbdkit_error ("quorum: state=%s: %m", quorum_state_file);
    return -1;
  }
  return 0;
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
    if (state == NULL) {
      if (fresh_stale_mark (c, 0, quorum_export_size,
                            FRESH_UNREACHABLE) == -1)
        return -1;
    }
    else if (stale_from_map (c, &unsettled, FRESH_UNSETTLED) &&
             statefile_sync_all (state) == -1) {
      nbdkit_error ("quorum: state=%s: %m", quorum_state_file);
      return -1;
    }
  }
  return 0;
}

int
fresh_start (void)
{
  int err;

  if (state == NULL)
    return 0;
  err = pthread_create (&sweeper, NULL, sweeper_thread, NULL);
  if (err) {
    errno = err;
    nbdkit_error ("pthread_create: %m");
    return -1;
  }
  sweeper_running = true;
  return 0;
}

void
fresh_stop (void)
{
  size_t i, j;

  fresh_wake ();
  if (sweeper_running) {
    pthread_mutex_lock (&sweeper_lock);
    sweeper_quit = true;
    pthread_cond_broadcast (&sweeper_cond);
    pthread_mutex_unlock (&sweeper_lock);
    pthread_join (sweeper, NULL);
    sweeper_running = false;
  }
  if (state) {
    /* What the sweeper cleared last, and clears of the stale maps. */
    if (statefile_sync_all (state) == -1)
      nbdkit_debug ("quorum: state=%s: %m", quorum_state_file);
    statefile_close (state);
    state = NULL;
  }
  dirty_free (&recent);
  free (idle_passes);
  idle_passes = NULL;
  if (fresh_children)
    for (i = 0; i < quorum_nr_children; ++i)
      for (j = 0; j < 2; ++j)
        dirty_free (&fresh_children[i].unflushed[j]);
  free (fresh_children);
  fresh_children = NULL;
  dirty_free (&unsettled);
}

/* ------------------------------------------------------------------ */
/* The spare (internal.h), for replace.c: added by the ops14 branch,
 * in one block so that the rest of this file is as it was.  The spare
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
    stale_from_map (c, m, FRESH_FLUSH_FAILED);
  dirty_clear (m, 0, m->size);
}

int
fresh_rename (struct child *c, const char *name)
{
  if (state == NULL)
    return 0;
  if (persist_sync (statefile_rename (state, c->index, name)) == -1) {
    nbdkit_error ("quorum: state=%s: cannot record the new child %zu: %m",
                  quorum_state_file, c->index);
    return -1;
  }
  return 0;
}
