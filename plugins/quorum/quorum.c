/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* nbdkit-quorum-plugin: a quorum of NBD servers named by child=
 * parameters, all reached through libnbd.  A thin shell over the
 * engine in common/.
 */

#include <config.h>

#include <errno.h>
#include <stdlib.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "quorum.h"

struct quorum_handle {
  struct quorum_conn conn;
};

static void
quorum_plugin_unload (void)
{
  quorum_unload ();
}

/* --dump-plugin: what this build can do, for scripts to test. */
static void
quorum_plugin_dump_plugin (void)
{
  quorum_dump ();
}

static int
quorum_plugin_config (const char *key, const char *value)
{
  int r = quorum_config (key, value);

  if (r == 0) {
    nbdkit_error ("unknown parameter '%s': see nbdkit quorum --help", key);
    return -1;
  }
  return r == 1 ? 0 : -1;
}

static int
quorum_plugin_config_complete (void)
{
  return quorum_config_complete (false);
}

static int
quorum_plugin_get_ready (void)
{
  return quorum_get_ready ("nbdkit-quorum-plugin");
}

static int
quorum_plugin_after_fork (void)
{
  return quorum_after_fork (NULL, NULL);
}

static void
quorum_plugin_cleanup (void)
{
  quorum_cleanup ();
}

/* One export: the one the children are the replicas of. */
static int
quorum_plugin_list_exports (int readonly, int is_tls,
                            struct nbdkit_exports *exports)
{
  return nbdkit_add_export (exports, quorum_export (), NULL);
}

static const char *
quorum_plugin_default_export (int readonly, int is_tls)
{
  return quorum_export ();
}

static void *
quorum_plugin_open (int readonly)
{
  struct quorum_handle *h;

  /* nbdkit has made "" the default export, export-name=, already. */
  if (quorum_check_export (nbdkit_export_name ()) == -1)
    return NULL;
  h = calloc (1, sizeof *h);
  if (h == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  if (quorum_conn_init (&h->conn, NULL, NULL, NULL, readonly) == -1) {
    free (h);
    return NULL;
  }
  return h;
}

static void
quorum_plugin_close (void *handle)
{
  free (handle);
}

static int64_t
quorum_plugin_get_size (void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.size;
}

static int
quorum_plugin_block_size (void *handle, uint32_t *minimum,
                          uint32_t *preferred, uint32_t *maximum)
{
  struct quorum_handle *h = handle;
  return quorum_block_size (&h->conn, minimum, preferred, maximum);
}

static int
quorum_plugin_can_write (void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.can_write;
}

static int
quorum_plugin_can_flush (void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.can_flush;
}

static int
quorum_plugin_is_rotational (void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.is_rotational;
}

static int
quorum_plugin_can_trim (void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.can_trim;
}

/* false: nbdkit emulates zero with writes of zeroes (see
 * quorum_conn.zero_mode).
 */
static int
quorum_plugin_can_zero (void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.can_zero;
}

static int
quorum_plugin_can_fast_zero (void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.can_fast_zero;
}

static int
quorum_plugin_can_extents (void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.can_extents;
}

static int
quorum_plugin_can_fua (void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.fua_mode;
}

static int
quorum_plugin_can_multi_conn (void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.caps.can_multi_conn;
}

static int
quorum_plugin_can_cache (void *handle)
{
  struct quorum_handle *h = handle;
  return h->conn.cache_mode;
}

/* The engine returns a positive errno in *err; nbdkit wants it set.
 * r is evaluated, and *err set, before this is called.
 */
static int
quorum_plugin_result (int r, const int *err)
{
  if (r == -1)
    nbdkit_set_error (*err ? *err : EIO);
  return r;
}

static int
quorum_plugin_pread (void *handle, void *buf, uint32_t count,
                     uint64_t offset, uint32_t flags)
{
  struct quorum_handle *h = handle;
  int err = 0;

  return quorum_plugin_result (quorum_pread (&h->conn, buf, count, offset,
                                             flags, &err), &err);
}

static int
quorum_plugin_pwrite (void *handle, const void *buf, uint32_t count,
                      uint64_t offset, uint32_t flags)
{
  struct quorum_handle *h = handle;
  int err = 0;

  return quorum_plugin_result (quorum_pwrite (&h->conn, buf, count, offset,
                                              flags, &err), &err);
}

static int
quorum_plugin_flush (void *handle, uint32_t flags)
{
  struct quorum_handle *h = handle;
  int err = 0;

  return quorum_plugin_result (quorum_flush (&h->conn, flags, &err), &err);
}

static int
quorum_plugin_trim (void *handle, uint32_t count, uint64_t offset,
                    uint32_t flags)
{
  struct quorum_handle *h = handle;
  int err = 0;

  return quorum_plugin_result (quorum_trim (&h->conn, count, offset, flags,
                                            &err), &err);
}

static int
quorum_plugin_zero (void *handle, uint32_t count, uint64_t offset,
                    uint32_t flags)
{
  struct quorum_handle *h = handle;
  int err = 0;

  return quorum_plugin_result (quorum_zero (&h->conn, count, offset, flags,
                                            &err), &err);
}

static int
quorum_plugin_extents (void *handle, uint32_t count, uint64_t offset,
                       uint32_t flags, struct nbdkit_extents *extents)
{
  struct quorum_handle *h = handle;
  int err = 0;

  return quorum_plugin_result (quorum_extents (&h->conn, count, offset, flags,
                                               extents, &err), &err);
}

static int
quorum_plugin_cache (void *handle, uint32_t count, uint64_t offset,
                     uint32_t flags)
{
  struct quorum_handle *h = handle;
  int err = 0;

  return quorum_plugin_result (quorum_cache (&h->conn, count, offset, flags,
                                             &err), &err);
}

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static struct nbdkit_plugin plugin = {
  .name               = "quorum",
  .longname           = "nbdkit quorum plugin",
  .version            = PACKAGE_VERSION,
  .description        = "vote over several NBD servers",
  .unload             = quorum_plugin_unload,
  .dump_plugin        = quorum_plugin_dump_plugin,
  .config             = quorum_plugin_config,
  .config_complete    = quorum_plugin_config_complete,
  .config_help        = QUORUM_CONFIG_HELP_CHILD QUORUM_CONFIG_HELP,
  .get_ready          = quorum_plugin_get_ready,
  .after_fork         = quorum_plugin_after_fork,
  .cleanup            = quorum_plugin_cleanup,
  .list_exports       = quorum_plugin_list_exports,
  .default_export     = quorum_plugin_default_export,
  .open               = quorum_plugin_open,
  .close              = quorum_plugin_close,
  .get_size           = quorum_plugin_get_size,
  .block_size         = quorum_plugin_block_size,
  .can_write          = quorum_plugin_can_write,
  .can_flush          = quorum_plugin_can_flush,
  .is_rotational      = quorum_plugin_is_rotational,
  .can_trim           = quorum_plugin_can_trim,
  .can_zero           = quorum_plugin_can_zero,
  .can_fast_zero      = quorum_plugin_can_fast_zero,
  .can_extents        = quorum_plugin_can_extents,
  .can_fua            = quorum_plugin_can_fua,
  .can_multi_conn     = quorum_plugin_can_multi_conn,
  .can_cache          = quorum_plugin_can_cache,
  .pread              = quorum_plugin_pread,
  .pwrite             = quorum_plugin_pwrite,
  .flush              = quorum_plugin_flush,
  .trim               = quorum_plugin_trim,
  .zero               = quorum_plugin_zero,
  .extents            = quorum_plugin_extents,
  .cache              = quorum_plugin_cache,
  .errno_is_preserved = 0,
};

NBDKIT_REGISTER_PLUGIN (plugin)
