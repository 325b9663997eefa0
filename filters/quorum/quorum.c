/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* nbdkit-quorum-filter: the plugin below is child 0 of a quorum whose
 * other children are NBD servers named by child= parameters.  A thin
 * shell over the engine in common/.
 */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include <nbdkit-filter.h>

#include "quorum.h"

struct quorum_handle {
  struct quorum_conn conn;
  nbdkit_next *next;            /* the plugin, from .prepare to .finalize */
  /* Lent to background work (see below): under lend_lock. */
  bool lent;
  bool writable;                /* it may take background writes */
  unsigned borrowers;
  struct quorum_handle *lend_next;
};

/* Whether connections lend their context of the plugin to background
 * work (below): not if the plugin asked nbdkit to serialize its
 * requests, then only its connections' threads call it.
 */
static bool lend_allowed;

/* The plugin below, as the engine's local child. */
static int
local_pread (void *ctx, void *buf, uint32_t count, uint64_t offset,
             uint32_t flags, int *err)
{
  nbdkit_next *next = ctx;
  return next->pread (next, buf, count, offset, flags, err);
}

static int
local_pwrite (void *ctx, const void *buf, uint32_t count, uint64_t offset,
              uint32_t flags, int *err)
{
  nbdkit_next *next = ctx;
  return next->pwrite (next, buf, count, offset, flags, err);
}

static int
local_zero (void *ctx, uint32_t count, uint64_t offset, uint32_t flags,
            int *err)
{
  nbdkit_next *next = ctx;
  return next->zero (next, count, offset, flags, err);
}

static int
local_flush (void *ctx, uint32_t flags, int *err)
{
  nbdkit_next *next = ctx;
  return next->flush (next, flags, err);
}

static int
local_cache (void *ctx, uint32_t count, uint64_t offset, uint32_t flags,
             int *err)
{
  nbdkit_next *next = ctx;
  return next->cache (next, count, offset, flags, err);
}

static int
local_extents (void *ctx, uint32_t count, uint64_t offset, uint32_t flags,
               struct quorum_extent_list *list, int *err)
{
  nbdkit_next *next = ctx;
  struct nbdkit_extents *exts;
  size_t i;
  int64_t size = next->get_size (next);

  if (size == -1) {
    *err = EIO;
    return -1;
  }
  exts = nbdkit_extents_new (offset, size);
  if (exts == NULL) {
    *err = errno;
    return -1;
  }
  if (next->extents (next, count, offset, flags, exts, err) == -1) {
    nbdkit_extents_free (exts);
    return -1;
  }
  for (i = 0; i < nbdkit_extents_count (exts); ++i) {
    struct nbdkit_extent e = nbdkit_get_extent (exts, i);

    if (quorum_extent_append (list, e.offset, e.length, e.type) == -1) {
      *err = errno;
      nbdkit_extents_free (exts);
      return -1;
    }
  }
  nbdkit_extents_free (exts);
  return 0;
}

static const struct quorum_local_ops local_ops = {
  .pread = local_pread,
  .pwrite = local_pwrite,
  .zero = local_zero,
  .flush = local_flush,
  .cache = local_cache,
  .extents = local_extents,
};

static void
quorum_filter_unload (void)
{
  quorum_unload ();
}

#ifdef HAVE_STRUCT_NBDKIT_FILTER_DUMP_PLUGIN
/* --dump-plugin: newer nbdkit asks filters too, after the plugin. */
static void
quorum_filter_dump_plugin (void)
{
  quorum_dump ();
}
#endif

/* Our keys are the quorum's; everything else is the plugin's. */
static int
quorum_filter_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
                      const char *key, const char *value)
{
  int r = quorum_config (key, value);

  if (r == -1)
    return -1;
  if (r == 1)
    return 0;
  return next (nxdata, key, value);
}

static int
quorum_filter_config_complete (nbdkit_next_config_complete *next,
                               nbdkit_backend *nxdata)
{
  if (quorum_config_complete (true) == -1)
    return -1;
  return next (nxdata);
}

static int
quorum_filter_get_ready (int thread_model)
{
  lend_allowed = thread_model == NBDKIT_THREAD_MODEL_PARALLEL;
  if (!lend_allowed)
    nbdkit_debug ("quorum: the plugin serializes its requests: resync "
                  "reads the remote children only");
  return quorum_get_ready ("nbdkit-quorum-filter");
}

/* Background work (resync) reads the plugin through the context of a
 * client connection, lent from .prepare to .finalize.  nbdkit could
 * give a context of its own (nbdkit_next_context_open, shared), but a
 * shared context has no connection, and so no export name: a plugin of
 * API version 2 learns it only from nbdkit_export_name, which then
 * fails (the file plugin with dir= dies of it).  Every client
 * connection has opened the plugin with export-name=, the export the
 * quorum serves, and nbdkit has asked it its size and what it can do.
 * While no client is connected, the remote children are the only
 * sources.
 */
static pthread_mutex_t lend_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t lend_cond = PTHREAD_COND_INITIALIZER;
static struct quorum_handle *lend_list;
static void
lend_add (struct quorum_handle *h)
{
  if (!lend_allowed)
    return;
  pthread_mutex_lock (&lend_lock);
  h->lend_next = lend_list;
  lend_list = h;
  h->lent = true;
  pthread_mutex_unlock (&lend_lock);
  quorum_local_available ();
}

/* Take h back, once nobody is using its context. */
static void
lend_take_back (struct quorum_handle *h)
{
  struct quorum_handle **p;

  pthread_mutex_lock (&lend_lock);
  if (h->lent) {
    for (p = &lend_list; *p != h; p = &(*p)->lend_next)
      ;
    *p = h->lend_next;
    h->lent = false;
  }
  while (h->borrowers > 0)
    pthread_cond_wait (&lend_cond, &lend_lock);
  pthread_mutex_unlock (&lend_lock);
}

static struct quorum_handle *
lend_borrow (bool write)
{
  struct quorum_handle *h;

  pthread_mutex_lock (&lend_lock);
  for (h = lend_list; h && write && !h->writable; h = h->lend_next)
    ;
  if (h)
    h->borrowers++;
  pthread_mutex_unlock (&lend_lock);
  return h;
}

static void
lend_give_back (struct quorum_handle *h)
{
  pthread_mutex_lock (&lend_lock);
  if (--h->borrowers == 0)
    pthread_cond_broadcast (&lend_cond);
  pthread_mutex_unlock (&lend_lock);
}

static bool
background_available (void *ctx)
{
  bool r;

  pthread_mutex_lock (&lend_lock);
  r = lend_list != NULL;
  pthread_mutex_unlock (&lend_lock);
  return r;
}

/* Background work reads, and writes what it copies or settles to the
 * plugin: only through a context that can write (nbdkit asserts it).
 */
static int
background_pread (void *ctx, void *buf, uint32_t count, uint64_t offset,
                  uint32_t flags, int *err)
{
  struct quorum_handle *h = lend_borrow (false);
  int r;

  if (h == NULL) {
    *err = ENOTCONN;
    return -1;
  }
  r = local_pread (h->next, buf, count, offset, flags, err);
  lend_give_back (h);
  return r;
}

static int
background_extents (void *ctx, uint32_t count, uint64_t offset,
                    uint32_t flags, struct quorum_extent_list *list,
                    int *err)
{
  struct quorum_handle *h = lend_borrow (false);
  int r;

  if (h == NULL) {
    *err = ENOTCONN;
    return -1;
  }
  r = local_extents (h->next, count, offset, flags, list, err);
  lend_give_back (h);
  return r;
}

static int
background_pwrite (void *ctx, const void *buf, uint32_t count,
                   uint64_t offset, uint32_t flags, int *err)
{
  struct quorum_handle *h = lend_borrow (true);
  int r;

  if (h == NULL) {
    *err = ENOTCONN;
    return -1;
  }
  r = local_pwrite (h->next, buf, count, offset, 0, err);
  lend_give_back (h);
  return r;
}

static int
background_zero (void *ctx, uint32_t count, uint64_t offset,
                 uint32_t flags, int *err)
{
  *err = EROFS;
  return -1;
}

static int
background_flush (void *ctx, uint32_t flags, int *err)
{
  *err = EROFS;
  return -1;
}

static int
background_cache (void *ctx, uint32_t count, uint64_t offset,
                  uint32_t flags, int *err)
{
  *err = ENOTSUP;
  return -1;
}

static const struct quorum_local_ops background_ops = {
  .pread = background_pread,
  .pwrite = background_pwrite,
  .zero = background_zero,
  .flush = background_flush,
  .cache = background_cache,
  .extents = background_extents,
  .available = background_available,
};

static int
quorum_filter_after_fork (nbdkit_backend *backend)
{
  return quorum_after_fork (&background_ops, NULL);
}

static void
quorum_filter_cleanup (nbdkit_backend *backend)
{
  quorum_cleanup ();
}

/* One export: the one whose replicas the children hold. */
static int
quorum_filter_list_exports (nbdkit_next_list_exports *next,
                            nbdkit_backend *nxdata, int readonly,
                            int is_tls, struct nbdkit_exports *exports)
{
  return nbdkit_add_export (exports, quorum_export (), NULL);
}

static const char *
quorum_filter_default_export (nbdkit_next_default_export *next,
                              nbdkit_backend *nxdata, int readonly,
                              int is_tls)
{
  return quorum_export ();
}

static void *
quorum_filter_open (nbdkit_next_open *next, nbdkit_context *context,
                    int readonly, const char *exportname, int is_tls)
{
  struct quorum_handle *h;

  /* "" has become the default export, export-name=, already. */
  if (quorum_check_export (exportname) == -1)
    return NULL;
  if (next (context, readonly, quorum_export ()) == -1)
    return NULL;
  h = calloc (1, sizeof *h);
  if (h == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  return h;
}

static void
quorum_filter_close (void *handle)
{
  lend_take_back (handle);      /* in case .finalize was not reached */
  free (handle);
}

/* What the plugin can do, for the engine to combine with the others. */
static int
quorum_filter_prepare (nbdkit_next *next, void *handle, int readonly)
{
  struct quorum_handle *h = handle;
  struct quorum_caps c = { 0 };
  int r;

  c.size = next->get_size (next);
  if (c.size == -1)
    return -1;
  if ((r = next->can_write (next)) == -1)
    return -1;
  c.can_write = r;
  if ((r = next->can_flush (next)) == -1)
    return -1;
  c.can_flush = r;
  if ((r = next->can_trim (next)) == -1)
    return -1;
  c.can_trim = r;
  /* The plugin below may be emulating zero or FUA: either way its
   * zero and FUA work, so it can take them from us.  Its trim is never
   * called: a trim is a zero that may punch holes.
   */
  if ((r = next->can_zero (next)) == -1)
    return -1;
  c.can_zero = r != NBDKIT_ZERO_NONE;
  if ((r = next->can_fast_zero (next)) == -1)
    return -1;
  c.can_fast_zero = r;
  if ((r = next->can_fua (next)) == -1)
    return -1;
  c.can_fua = r != NBDKIT_FUA_NONE;
  if ((r = next->can_extents (next)) == -1)
    return -1;
  c.can_extents = r;
  if ((r = next->can_multi_conn (next)) == -1)
    return -1;
  c.can_multi_conn = r;
  if ((r = next->can_cache (next)) == -1)
    return -1;
  c.can_cache = r != NBDKIT_CACHE_NONE;
  if ((r = next->is_rotational (next)) == -1)
    return -1;
  c.is_rotational = r;
  if (next->block_size (next, &c.block_min, &c.block_pref,
                        &c.block_max) == -1)
    return -1;

  if (quorum_conn_init (&h->conn, &local_ops, next, &c, readonly) == -1)
    return -1;
  h->next = next;
  h->writable = c.can_write && !readonly;
  lend_add (h);
  return 0;
}

static int
quorum_filter_finalize (nbdkit_next *next, void *handle)
{
  lend_take_back (handle);
  return 0;
}

static int64_t
quorum_filter_get_size (nbdkit_next *next, void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.size;
}

static int
quorum_filter_block_size (nbdkit_next *next, void *handle,
                          uint32_t *minimum, uint32_t *preferred,
                          uint32_t *maximum)
{
  struct quorum_handle *h = handle;
  return quorum_block_size (&h->conn, minimum, preferred, maximum);
}

static int
quorum_filter_can_write (nbdkit_next *next, void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.can_write;
}

static int
quorum_filter_can_flush (nbdkit_next *next, void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.can_flush;
}

static int
quorum_filter_is_rotational (nbdkit_next *next, void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.is_rotational;
}

static int
quorum_filter_can_trim (nbdkit_next *next, void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.can_trim;
}

static int
quorum_filter_can_zero (nbdkit_next *next, void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.zero_mode;
}

static int
quorum_filter_can_fast_zero (nbdkit_next *next, void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.can_fast_zero;
}

static int
quorum_filter_can_extents (nbdkit_next *next, void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.can_extents;
}

static int
quorum_filter_can_fua (nbdkit_next *next, void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.fua_mode;
}

static int
quorum_filter_can_multi_conn (nbdkit_next *next, void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.can_multi_conn;
}

static int
quorum_filter_can_cache (nbdkit_next *next, void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.cache_mode;
}

static int
quorum_filter_pread (nbdkit_next *next, void *handle, void *buf,
                     uint32_t count, uint64_t offset, uint32_t flags,
                     int *err)
{
  struct quorum_handle *h = handle;
  return quorum_pread (&h->conn, buf, count, offset, flags, err);
}

static int
quorum_filter_pwrite (nbdkit_next *next, void *handle, const void *buf,
                      uint32_t count, uint64_t offset, uint32_t flags,
                      int *err)
{
  struct quorum_handle *h = handle;
  return quorum_pwrite (&h->conn, buf, count, offset, flags, err);
}

static int
quorum_filter_flush (nbdkit_next *next, void *handle, uint32_t flags,
                     int *err)
{
  struct quorum_handle *h = handle;
  return quorum_flush (&h->conn, flags, err);
}

static int
quorum_filter_trim (nbdkit_next *next, void *handle, uint32_t count,
                    uint64_t offset, uint32_t flags, int *err)
{
  struct quorum_handle *h = handle;
  return quorum_trim (&h->conn, count, offset, flags, err);
}

static int
quorum_filter_zero (nbdkit_next *next, void *handle, uint32_t count,
                    uint64_t offset, uint32_t flags, int *err)
{
  struct quorum_handle *h = handle;
  return quorum_zero (&h->conn, count, offset, flags, err);
}

static int
quorum_filter_extents (nbdkit_next *next, void *handle, uint32_t count,
                       uint64_t offset, uint32_t flags,
                       struct nbdkit_extents *extents, int *err)
{
  struct quorum_handle *h = handle;
  return quorum_extents (&h->conn, count, offset, flags, extents, err);
}

static int
quorum_filter_cache (nbdkit_next *next, void *handle, uint32_t count,
                     uint64_t offset, uint32_t flags, int *err)
{
  struct quorum_handle *h = handle;
  return quorum_cache (&h->conn, count, offset, flags, err);
}

static struct nbdkit_filter filter = {
  .name               = "quorum",
  .longname           = "nbdkit quorum filter",
  .description        = "vote over the plugin and other NBD servers",
  .unload             = quorum_filter_unload,
  .config             = quorum_filter_config,
  .config_complete    = quorum_filter_config_complete,
  .config_help        = QUORUM_CONFIG_HELP_CHILD QUORUM_CONFIG_HELP,
#ifdef HAVE_STRUCT_NBDKIT_FILTER_DUMP_PLUGIN
  .dump_plugin        = quorum_filter_dump_plugin,
#endif
  .get_ready          = quorum_filter_get_ready,
  .after_fork         = quorum_filter_after_fork,
  .cleanup            = quorum_filter_cleanup,
  .list_exports       = quorum_filter_list_exports,
  .default_export     = quorum_filter_default_export,
  .open               = quorum_filter_open,
  .close              = quorum_filter_close,
  .prepare            = quorum_filter_prepare,
  .finalize           = quorum_filter_finalize,
  .get_size           = quorum_filter_get_size,
  .block_size         = quorum_filter_block_size,
  .can_write          = quorum_filter_can_write,
  .can_flush          = quorum_filter_can_flush,
  .is_rotational      = quorum_filter_is_rotational,
  .can_trim           = quorum_filter_can_trim,
  .can_zero           = quorum_filter_can_zero,
  .can_fast_zero      = quorum_filter_can_fast_zero,
  .can_extents        = quorum_filter_can_extents,
  .can_fua            = quorum_filter_can_fua,
  .can_multi_conn     = quorum_filter_can_multi_conn,
  .can_cache          = quorum_filter_can_cache,
  .pread              = quorum_filter_pread,
  .pwrite             = quorum_filter_pwrite,
  .flush              = quorum_filter_flush,
  .trim               = quorum_filter_trim,
  .zero               = quorum_filter_zero,
  .extents            = quorum_filter_extents,
  .cache              = quorum_filter_cache,
};

NBDKIT_REGISTER_FILTER (filter)
