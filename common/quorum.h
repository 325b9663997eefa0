/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The quorum engine: what the filter and the plugin front ends call.
 *
 * The engine owns every parameter, the remote children (libnbd
 * handles, connected once and shared by all client connections), the
 * fan-out of each operation, the vote and the reports.  In the filter
 * the plugin below is child 0, a "local" child that the engine calls
 * synchronously on the request's own thread through struct
 * quorum_local_ops while the remote children's commands are in
 * flight.
 */

#ifndef QUORUM_H
#define QUORUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vector.h"

struct nbdkit_extents;

/* One extent reported by a child, as in the NBD protocol. */
struct quorum_extent {
  uint64_t offset;
  uint64_t length;
  uint32_t type;                /* NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO */
};

/* A growable list of extents: struct quorum_extent_list, with
 * quorum_extent_list_reserve, _append and _free (vector.h).
 */
DEFINE_VECTOR_TYPE (quorum_extent_list, struct quorum_extent)

/* Append an extent; -1 (errno set) if out of memory. */
static inline int
quorum_extent_append (struct quorum_extent_list *list,
                      uint64_t offset, uint64_t length, uint32_t type)
{
  struct quorum_extent e = { .offset = offset, .length = length,
                             .type = type };

  return quorum_extent_list_append (list, e);
}

/* What one child, or the quorum as a whole, can do.  For a child,
 * can_fua and can_zero say that it takes the flag or the command (the
 * plugin below the filter may have nbdkit emulate them); for the
 * export, can_fua says that FUA is offered (the engine emulates it,
 * child by child, with a flush where a child lacks it).
 */
struct quorum_caps {
  int64_t size;
  bool can_write;
  bool can_flush;
  bool can_trim;
  bool can_zero;
  bool can_fast_zero;
  bool can_fua;
  bool can_extents;
  bool can_multi_conn;
  bool can_cache;               /* natively */
  bool is_rotational;
  uint32_t block_min;           /* 0 = no constraint */
  uint32_t block_pref;
  uint32_t block_max;
};

/* The filter's plugin: same calling conventions as nbdkit's next_ops,
 * flags are NBDKIT_FLAG_*, errors are returned as -1 with *err set.
 */
struct quorum_local_ops {
  int (*pread) (void *ctx, void *buf, uint32_t count, uint64_t offset,
                uint32_t flags, int *err);
  int (*pwrite) (void *ctx, const void *buf, uint32_t count,
                 uint64_t offset, uint32_t flags, int *err);
  int (*zero) (void *ctx, uint32_t count, uint64_t offset, uint32_t flags,
               int *err);
  int (*flush) (void *ctx, uint32_t flags, int *err);
  int (*cache) (void *ctx, uint32_t count, uint64_t offset, uint32_t flags,
                int *err);
  /* Extents from offset for up to count bytes, appended to *list. */
  int (*extents) (void *ctx, uint32_t count, uint64_t offset,
                  uint32_t flags, struct quorum_extent_list *list,
                  int *err);
  /* Optional, for the background source passed to quorum_after_fork:
   * whether it can be read now (the filter's plugin only can while a
   * client connection lends its context).
   */
  bool (*available) (void *ctx);
};

/* Per client connection.  Fixed by quorum_conn_init: the front ends'
 * callbacks answer nbdkit from caps and the modes, as they are.
 */
struct quorum_conn {
  const struct quorum_local_ops *local; /* NULL in the plugin */
  void *local_ctx;                      /* the filter's nbdkit_next */
  struct quorum_caps caps;              /* what the export offers */
  struct quorum_caps local_caps;        /* child 0's, in the filter */
  /* NBDKIT_ZERO_*: none if read-only, else native or emulated by
   * nbdkit with writes (a plugin answers caps.can_zero instead, which
   * nbdkit reads as native or emulated).
   */
  int zero_mode;
  /* NBDKIT_FUA_*: native or none, never emulated: the engine honours
   * FUA on each child, flushing one that lacks it, so nbdkit need not
   * flush every child.
   */
  int fua_mode;
  int cache_mode;                       /* NBDKIT_CACHE_*: native or none */
};

/* Parameters.  quorum_config returns 1 if the key is the quorum's, 0 if
 * it is not (the filter passes it on), -1 on a bad value.
 */
extern int quorum_config (const char *key, const char *value);

/* Check the parameters once all are known.  has_local: the filter,
 * whose plugin is child 0.
 */
extern int quorum_config_complete (bool has_local);

/* Open syslog under ident, connect the remote children and check that
 * they agree on the size.  Runs in .get_ready, before nbdkit forks, so
 * that an unreachable child stops nbdkit before it serves anything.
 */
extern int quorum_get_ready (const char *ident);

/* Start the children's I/O and supervisor threads.  Runs in
 * .after_fork, the first hook whose threads survive daemonizing.  The
 * filter passes a way to read its plugin outside a request (or NULL),
 * from which returning children are resynced too while it is
 * available (see quorum_local_ops.available).
 */
extern int quorum_after_fork (const struct quorum_local_ops *local,
                              void *local_ctx);

/* The filter: a client connection has just lent the plugin to
 * background work (quorum_local_ops.available turned true): what was
 * left stale or unsettled for want of it is tried again now.
 */
extern void quorum_local_available (void);

/* export-name=: the only export the quorum serves ("" by default). */
extern const char *quorum_export (void);

/* 0 if a client may open exportname (NBD's canonical name, after
 * .default_export), else -1 with an error naming it and export-name=.
 */
extern int quorum_check_export (const char *exportname);

/* --dump-plugin: quorum_* keys on stdout, one per line. */
extern void quorum_dump (void);

/* Disconnect the remote children. */
extern void quorum_cleanup (void);

/* Free what the parameters allocated. */
extern void quorum_unload (void);

/* Set up a client connection: local_caps describes child 0 in the
 * filter (NULL in the plugin).  The export offers what the remote
 * children reachable at start-up offered (fixed then: a child that
 * joins later must offer as much) and the plugin below the filter
 * offers.  Refuses a plugin of another size, and rewrite-corrupted on
 * a read-only export.
 */
extern int quorum_conn_init (struct quorum_conn *conn,
                             const struct quorum_local_ops *local,
                             void *local_ctx,
                             const struct quorum_caps *local_caps,
                             bool readonly);

/* .block_size: the export's constraints (conn->caps). */
extern int quorum_block_size (const struct quorum_conn *conn,
                              uint32_t *minimum, uint32_t *preferred,
                              uint32_t *maximum);

/* The data path.  Flags are NBDKIT_FLAG_*.  Return 0, or -1 with *err
 * set to a positive errno.
 */
extern int quorum_pread (struct quorum_conn *conn, void *buf,
                         uint32_t count, uint64_t offset, uint32_t flags,
                         int *err);
extern int quorum_pwrite (struct quorum_conn *conn, const void *buf,
                          uint32_t count, uint64_t offset, uint32_t flags,
                          int *err);
extern int quorum_zero (struct quorum_conn *conn, uint32_t count,
                        uint64_t offset, uint32_t flags, int *err);
extern int quorum_trim (struct quorum_conn *conn, uint32_t count,
                        uint64_t offset, uint32_t flags, int *err);
extern int quorum_flush (struct quorum_conn *conn, uint32_t flags,
                         int *err);
extern int quorum_cache (struct quorum_conn *conn, uint32_t count,
                         uint64_t offset, uint32_t flags, int *err);
extern int quorum_extents (struct quorum_conn *conn, uint32_t count,
                           uint64_t offset, uint32_t flags,
                           struct nbdkit_extents *extents, int *err);

/* The help text shared by both front ends. */
#define QUORUM_CONFIG_HELP_CHILD \
  "child=URI                 NBD URI of a child (repeat for each child)\n" \
  "child-command=COMMAND     Or a server the quorum starts itself with\n" \
  "                          systemd socket activation (run by /bin/sh)\n"
#define QUORUM_CONFIG_HELP \
  "vote-threshold=N          Votes a version needs, 1 to the number of\n" \
  "                          children (default: majority)\n" \
  "child-timeout=SECONDS     A remote child that has not answered by then\n" \
  "                          loses its vote and is disconnected, 0 to\n" \
  "                          86400 (default: 30, 0 = wait for ever)\n" \
  "reconnect-delay=SECONDS   First retry after a child is lost, 1 to\n" \
  "                          86400 (default: 1)\n" \
  "reconnect-max-delay=SECONDS  Longest wait between retries, doubling\n" \
  "                          from reconnect-delay, up to 86400\n" \
  "                          (default: 30)\n" \
  "vote-block-size=SIZE      Children are voted on per block of SIZE, a\n" \
  "                          power of 2 from 512 to 32M (default: 4K)\n" \
  "wait-for=all|threshold    Answer once every child did, or once\n" \
  "                          vote-threshold children did and finish the\n" \
  "                          rest later (default: all)\n" \
  "max-lag=SIZE              With wait-for=threshold, bytes a slow child\n" \
  "                          may owe before it is sent nothing until it\n" \
  "                          caught up, 4K to 1T (default: 64M)\n" \
  "read-pattern=quorum|fifo  Read all and vote, or first that works\n" \
  "                          (default: quorum)\n" \
  "blkverify=BOOL            Two children must agree byte for byte;\n" \
  "                          stop the server on mismatch (default: false)\n" \
  "rewrite-corrupted=BOOL    Write the winning version back to outvoted\n" \
  "                          children (default: false)\n" \
  "start-degraded=BOOL       Start with unreachable children if enough\n" \
  "                          are reachable (default: false)\n" \
  "report=FILE               Append every event as a JSON line to FILE\n" \
  "                          (a regular file or a new one, never a link)\n" \
  "syslog=BOOL               Send reports to syslog(3) (default: true)\n" \
  "state=FILE                Keep which children are stale, and where\n" \
  "                          writes were in flight, in FILE across\n" \
  "                          restarts and crashes (default: in memory)\n" \
  "state-granule=SIZE        Write-intent granule of state=, a power of\n" \
  "                          2 from 64K to 1G (default: 4M)\n" \
  "control=SOCKET            Serve nbdkit-quorum-ctl(1) on a Unix socket\n" \
  "                          created mode 0600 (default: none)\n" \
  "scrub-rate=MIB/S          Most a scrub reads, MiB/s, 0 = no limit\n" \
  "                          (default: 50)\n" \
  "resync-rate=MIB/S         Most a resync or rebuild copies, MiB/s per\n" \
  "                          child, 0 = no limit (default: 100)\n" \
  "export-name=NAME          The one export served; clients asking for\n" \
  "                          another are refused (default: \"\")"

#endif /* QUORUM_H */
