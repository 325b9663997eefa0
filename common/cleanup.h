/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Scoped cleanup helpers: scratch memory and locks released on every
 * return path.
 */

#ifndef QUORUM_CLEANUP_H
#define QUORUM_CLEANUP_H

#include <pthread.h>
#include <stdlib.h>

static inline void
cleanup_free (void *ptr)
{
  free (*(void **) ptr);
}
#define CLEANUP_FREE __attribute__ ((cleanup (cleanup_free)))

static inline void
cleanup_unlock (pthread_mutex_t **ptr)
{
  pthread_mutex_unlock (*ptr);
}
#define SCOPED_LOCK_CAT2(a, b) a##b
#define SCOPED_LOCK_CAT(a, b) SCOPED_LOCK_CAT2 (a, b)
#define SCOPED_LOCK(mutex)                                               \
  __attribute__ ((cleanup (cleanup_unlock), unused))                     \
  pthread_mutex_t *SCOPED_LOCK_CAT (scoped_lock_, __LINE__) = (mutex);   \
  pthread_mutex_lock (SCOPED_LOCK_CAT (scoped_lock_, __LINE__))

#endif /* QUORUM_CLEANUP_H */
