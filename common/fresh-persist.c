/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The freshness model on stable storage, with state= (see fresh.h):
 * the stale maps mirrored in the state file (statefile.c), the
 * write-intent map, and the sweeper that clears intent bits once their
 * writes are done.  The stale maps have the granule of c->dirty
 * (DIRTY_GRANULE) in the file too; the write-intent map has
 * quorum_state_granule.  Without state= every hook here is a no-op.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "cleanup.h"
#include "dirty.h"
#include "fresh-int.h"
#include "fresh.h"
#include "internal.h"
#include "rangelock.h"
#include "statefile.h"

static struct statefile *state;         /* NULL without state= */
static unsigned intent_shift;
/* Written to since the sweeper's last pass, at DIRTY_GRANULE: a hint
 * for the sweeper to leave busy regions in the map.
 */
static struct dirty_map recent;

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

bool
persist_enabled (void)
{
  return state != NULL;
}

uint64_t
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

int
persist_sync (uint64_t ticket)
{
  if (state == NULL || ticket == 0)
    return 0;
  return statefile_sync (state, ticket);
}

int
persist_sync_all (void)
{
  return state ? statefile_sync_all (state) : 0;
}

/* A writer marked ahead: the sweeper makes it durable now. */
static void
persist_sync_ahead (void)
{
  SCOPED_LOCK (&sweeper_lock);
  sweeper_ahead = true;
  pthread_cond_signal (&sweeper_cond);
}

/* A write at offset continues one just before it: a sequential stream,
 * which will soon need the next intent granule.
 */
static bool
persist_sequential (uint64_t offset)
{
  return offset >= DIRTY_GRANULE &&
    dirty_test (&recent, offset - DIRTY_GRANULE, DIRTY_GRANULE);
}

int
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
    !statefile_test (state, STATEFILE_MAP_INTENT, end) &&
    persist_sequential (offset);
  dirty_mark (&recent, offset, count);
  ticket = statefile_set (state, STATEFILE_MAP_INTENT, first, end, true);
  if (ahead && statefile_set (state, STATEFILE_MAP_INTENT, end, end + 1, true))
    persist_sync_ahead ();
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
persist_intent_done (uint64_t offset, uint64_t count)
{
  return !dirty_test (&recent, offset, count) &&
    fresh_all_flushed (offset, count);
}

static void
persist_sweep (void)
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
    else if (persist_intent_done (offset, count)) {
      range_lock (&rl, offset, count, true);
      if (persist_intent_done (offset, count) &&
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
persist_sweeper_thread (void *arg)
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
    persist_sweep ();
    clock_gettime (CLOCK_REALTIME, &next);
    next.tv_sec++;
    pthread_mutex_lock (&sweeper_lock);
  }
  pthread_mutex_unlock (&sweeper_lock);
  return NULL;
}

/* The stale maps of the file into memory; a child the file knew under
 * another name is a new disk, wholly stale.
 */
static void
persist_load_stale (uint32_t renamed)
{
  uint64_t g, n;
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    struct child *c = &quorum_children[i];

    if (renamed & (UINT32_C (1) << i)) {
      /* Another disk at this position: it holds nothing of ours. */
      nbdkit_debug ("quorum: child %zu (%s): not the child state=%s "
                    "knew at this position: a new disk, wholly stale",
                    i, child_name (c), quorum_state_file);
      fresh_stale_mark (c, 0, quorum_export_size, FRESH_NEW_DISK);
      statefile_rename (state, i, child_name (c));
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
                    " bytes stale", i, child_name (c), quorum_state_file,
                    n << DIRTY_SHIFT);
  }
}

int
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

  persist_load_stale (renamed);
  /* Writes were in flight there when the quorum stopped: the children
   * may differ.  The bits stay until the regions are settled.
   */
  n = 0;
  for (g = statefile_next (state, STATEFILE_MAP_INTENT, 0);
       g != UINT64_MAX;
       g = statefile_next (state, STATEFILE_MAP_INTENT, g + 1)) {
    fresh_mark_unsettled (g << intent_shift, UINT64_C (1) << intent_shift);
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
persist_start (void)
{
  int err;

  if (state == NULL)
    return 0;
  err = pthread_create (&sweeper, NULL, persist_sweeper_thread, NULL);
  if (err) {
    errno = err;
    nbdkit_error ("pthread_create: %m");
    return -1;
  }
  sweeper_running = true;
  return 0;
}

void
persist_stop (void)
{
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
