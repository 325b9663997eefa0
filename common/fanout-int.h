/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Inside the fan-out only (fanout*.c): the reference and pending
 * counts of a fan-out, the queueing of one slot's command, and ahead
 * mode's steps.
 */

#ifndef QUORUM_FANOUT_INT_H
#define QUORUM_FANOUT_INT_H

#include <semaphore.h>

#include "fanout.h"

static inline void
fanout_get (struct fanout *f)
{
  __atomic_add_fetch (&f->refs, 1, __ATOMIC_RELAXED);
}

/* One command more in flight, or one less; the caller holds a
 * reference, so f outlives the post.
 */
static inline void
fanout_pend (struct fanout *f)
{
  __atomic_add_fetch (&f->pending, 1, __ATOMIC_RELAXED);
}

static inline void
fanout_unpend (struct fanout *f)
{
  /* Sequentially consistent: slot_done reads detached after it, and
   * the late thread reads pending after setting detached.
   */
  if (__atomic_sub_fetch (&f->pending, 1, __ATOMIC_SEQ_CST) == 0) {
    if (!f->early) {
      sem_post (&f->done);
      /* Its request polls the sockets itself (fanout.c): tell it, if
       * this is not its thread.
       */
      if (__atomic_load_n (&f->own, __ATOMIC_SEQ_CST))
        reactor_own_poke ();
    }
    /* Whoever ends the last command of a detached fan-out hands it to
     * the late thread: a slot may end inside slot_send's own hold (a
     * command refused at once), after the kick of slot_done.
     */
    else if (__atomic_load_n (&f->detached, __ATOMIC_SEQ_CST))
      fanout_late_kick (f);
  }
}

/* One reference and one pending count more on f, and back: for each
 * command until libnbd frees it, and around the call that queues one,
 * so that the request sees the errno of a command libnbd refused (and
 * freed inside the call).
 */
static inline void
fanout_hold (struct fanout *f)
{
  fanout_get (f);
  fanout_pend (f);
}

static inline void
fanout_release (struct fanout *f)
{
  fanout_unpend (f);
  fanout_put (f);
}

/* fanout-slot.c: queue one remote child's command of s->f (the caller
 * marked the slot used): on its handle, now or by the thread holding it
 * (reactor_submit); the slot ends, and the fan-out is told, when libnbd
 * has retired every part of it.
 */
extern void slot_issue (struct slot *s, enum op_type type, const void *wbuf,
                        uint32_t count, uint64_t offset, uint32_t flags);

/* fanout-ahead.c, for the late thread (fanout-late.c).  Whether child
 * i may be put ahead: the others that take requests (up, not ahead)
 * are at least vote-threshold.
 */
extern bool fanout_ahead_may (size_t i);
/* Child i, owing bytes in slots late requests, is put ahead. */
extern void fanout_ahead_begin (size_t i, uint64_t bytes, unsigned slots);
/* Each pass, for every child: the next step of an ahead one (busy: it
 * still owes a reply), drained, caught up or recalled.
 */
extern void fanout_ahead_step (size_t i, bool busy);

#endif /* QUORUM_FANOUT_INT_H */
