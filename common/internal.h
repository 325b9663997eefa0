/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* State shared by the engine's modules; not for the front ends. */

#ifndef QUORUM_INTERNAL_H
#define QUORUM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libnbd.h>

#include "quorum.h"
#include "vote.h"

enum read_pattern { READ_PATTERN_QUORUM, READ_PATTERN_FIFO };

/* Operation types, as named in reports. */
enum op_type {
  OP_READ, OP_WRITE, OP_ZERO, OP_TRIM, OP_FLUSH, OP_CACHE, OP_EXTENTS,
};

/* Settings, fixed after .config_complete. */
extern unsigned quorum_threshold;
extern enum read_pattern quorum_read_pattern;
extern bool quorum_blkverify;
extern bool quorum_rewrite_corrupted;
extern bool quorum_syslog;
extern unsigned quorum_reconnect_delay;  /* seconds, first retry */
extern unsigned quorum_reconnect_max;    /* seconds, longest backoff */
extern bool quorum_start_degraded;
extern unsigned quorum_child_timeout;   /* seconds, 0 = none */
extern uint32_t quorum_vote_block;      /* bytes voted on apart */
extern char *quorum_workdir;            /* where child commands run */

/* A remote child's life: up; down (its connection died: it takes part
 * in nothing, writes it misses are recorded in its dirty map, and its
 * supervisor reconnects it); resync (connected again: it takes every
 * write, and reads where it is not dirty, while its supervisor copies
 * the dirty regions to it from the quorum).
 */
enum child_state { CHILD_UP, CHILD_DOWN, CHILD_RESYNC };

/* Per child counts, for the summary (updated atomically). */
struct child_stats {
  uint64_t reads, writes, bad_reads, errors, timeouts, bytes_repaired;
};
#define STAT_ADD(c, field, n) \
  __atomic_add_fetch (&(c)->stats.field, (n), __ATOMIC_RELAXED)

/* The dirty map's granularity: 64 KiB. */
#define DIRTY_SHIFT 16

/* A command for a child's handle: see child_submit. */
struct child_cmd {
  struct child_cmd *next;
  void (*issue) (struct child_cmd *cmd);
};

/* All children: in the filter children[0] is the local plugin and has
 * no libnbd handle.
 */
struct child {
  size_t index;                 /* in children[] and in reports */
  char *uri;                    /* child=, as given */
  char *command;                /* child-command=, as given */
  char *name;                   /* for messages: secrets removed */
  /* What its connection nbd offers.  Commands consult it under
   * nbd_lock, and the supervisor changes it with nbd under the write
   * lock.
   */
  struct quorum_caps caps;
  bool caps_known;              /* false if unreachable at start-up */
  struct child_stats stats;

  /* Request threads queue commands on nbd holding nbd_lock for reading;
   * the supervisor replaces a dead handle holding it for writing.
   */
  pthread_rwlock_t nbd_lock;
  struct nbd_handle *nbd;       /* NULL for the local child */
  /* Block status, when nbd was opened without structured replies (see
   * child_open); else NULL and nbd answers it too.
   */
  struct nbd_handle *meta;
  int io_fd, meta_fd;           /* their sockets, for the reactor */
  bool serving;                 /* the reactor polls them (reactor_lock) */
  bool io_stop;                 /* asks it to stop when they are idle */
  bool io_lost;                 /* the reactor saw one die */
  char io_why[160];             /* libnbd's reason, if it saw it */
  pthread_mutex_t submit_lock;  /* busy, handed */
  bool busy;                    /* a thread is queueing on or reading nbd */
  struct child_cmd *handed, **handed_tail;  /* for it to queue */

  pthread_mutex_t state_lock;   /* state, quit */
  pthread_cond_t state_cond;    /* wakes the supervisor */
  enum child_state state;
  bool quit;                    /* cleanup: threads stop */
  pthread_t supervisor;
  bool supervisor_running;
  int quit_pipe[2];             /* interrupts a reconnect in progress */

  uint64_t *dirty;              /* bit per granule this child missed */
  uint64_t nr_dirty;            /* granules set, for a fast "clean" */

  /* meta may not see a write done on nbd until a flush (multi-conn
   * promises no more): writes completed on nbd, and how many of them
   * the last successful flush covered (sent after them).
   */
  uint64_t writes_done, writes_flushed;

  /* The resync in progress, for control's status: child_resync writes
   * them atomically.  Bytes stale when it began, bytes it has copied,
   * and when it began (CLOCK_MONOTONIC, ns; 0 while none runs).
   */
  uint64_t resync_total, resync_done, resync_since;
};
extern struct child *quorum_children;
extern size_t quorum_nr_children;
extern bool quorum_has_local;

/* Debug flag: -D quorum.votes=1 */
extern int quorum_debug_votes;

/* child.c */
/* Connect every remote child and check their sizes agree (before
 * nbdkit forks, so that a failure stops it with a message), then start
 * the reactor and the supervisors (after the fork).
 */
extern int child_connect_all (void);
extern int child_start_all (void);
extern void child_disconnect_all (void);
/* Queue cmd on c's handle (cmd->issue).  libnbd locks the handle while
 * one thread sends a command or the reactor reads replies, for one or
 * several system calls, and a thread that wanted it too would sleep and
 * be woken: instead it hands its command to the thread in there, which
 * queues it before it lets go.  A holder only queues commands, which
 * never blocks: nobody waits for another request's reply.
 */
extern void child_submit (struct child *c, struct child_cmd *cmd);
/* Ask the reactor to look at c again: a command failed there because
 * its connection is dead.
 */
extern void child_check (struct child *c);
/* Tell the reactor that a command was queued on nbd (a child's). */
extern void child_kick (struct nbd_handle *nbd);
/* True if meta needs a flush on nbd before it may answer block status
 * for writes already completed.
 */
static inline bool
child_meta_stale (struct child *c)
{
  /* Atomic: the supervisor may be replacing meta (under nbd_lock). */
  return __atomic_load_n (&c->meta, __ATOMIC_ACQUIRE) &&
    __atomic_load_n (&c->writes_done, __ATOMIC_ACQUIRE) !=
    __atomic_load_n (&c->writes_flushed, __ATOMIC_ACQUIRE);
}
/* libnbd fails every command on a handle that dies, and refuses new
 * ones.  (These two calls take no lock.)
 */
static inline bool
child_handle_gone (struct nbd_handle *nbd)
{
  return nbd_aio_is_dead (nbd) || nbd_aio_is_closed (nbd);
}
/* Cut c's connection: libnbd then fails every command in flight on it. */
extern void child_abort (struct child *c, const char *why);
/* True for the filter's plugin, which is called in-process. */
static inline bool
child_is_local (const struct child *c)
{
  return c->uri == NULL && c->command == NULL;
}
extern enum child_state child_get_state (struct child *c);
/* Regions a child missed: mark every granule touched, clear only the
 * granules a write covered entirely, test whether any is touched.
 */
extern void child_mark_dirty (struct child *c, uint64_t offset,
                              uint64_t count);
extern void child_clear_dirty (struct child *c, uint64_t offset,
                               uint64_t count);
extern bool child_is_dirty (struct child *c, uint64_t offset,
                            uint64_t count);

/* engine.c: what the export offers of the remote children's
 * capabilities, from those reachable at start-up; fixed after
 * .get_ready.
 */
extern struct quorum_caps quorum_promise;
/* NULL if a child offering caps can serve that promise (the engine
 * adapts to the rest: FUA emulated with a flush, requests split at its
 * maximum block size, no fast zero, block status all data, cache
 * skipped); else why not, after "it" (perhaps in buf).
 */
extern const char *engine_caps_lacking (const struct quorum_caps *caps,
                                        char *buf, size_t len);

/* engine.c, for resync: copy [offset, offset+count) to child c from
 * the other children, voting as a read does.  Holds the range.
 */
extern int engine_resync_range (struct child *c, uint64_t offset,
                                uint32_t count);

/* uri.c: URI with the password and secret-bearing query values
 * replaced by "***"; never NULL except on ENOMEM.
 */
extern char *uri_redact (const char *uri);
/* The name of a child-command= child: "command:" and the command,
 * encoded like a URI's bytes.
 */
extern char *command_name (const char *command);
/* msg with c's secrets removed, for any message that may quote c's
 * URI or a libnbd error about it: the URI as given becomes c's name,
 * and every secret of it (the password, the value of every query key
 * not known to be harmless), as given or percent-decoded, "***".  A
 * child-command's messages are returned as they are.  NULL only on
 * ENOMEM: then print nothing of msg.
 */
extern char *child_redact (const struct child *c, const char *msg);
/* What identifies the disk uri names, to refuse a child given twice:
 * the transport, the host and port (default 10809) or the socket
 * (through realpath(3) if it exists), and the export name; not the
 * user, the TLS settings or the order of the query.  Equal strings,
 * same disk.  NULL on ENOMEM.
 */
extern char *uri_disk (const char *uri);

/* report.c */
extern char *quorum_report_file;        /* report=FILE, or NULL */
extern int report_open (const char *ident);
extern void report_close (void);
extern void report_summary (void);
extern const char *op_name (enum op_type type);
extern void report_bad (enum op_type type, size_t child, uint64_t offset,
                        uint64_t length, int err);
/* No version had the threshold: version[] (as in struct vote_result)
 * says which children returned the same data.
 */
extern void report_failure_votes (enum op_type type, uint64_t offset,
                                  uint64_t length, size_t votes,
                                  const size_t *version, size_t nr);
extern void report_failure_errors (enum op_type type, uint64_t offset,
                                   uint64_t length, int err,
                                   size_t successes);
extern void report_failure_blkverify (uint64_t offset, uint64_t length,
                                      uint64_t first_difference);
extern void report_repair (size_t child, uint64_t offset, uint64_t length);
/* A child's life. */
extern void report_down (size_t child, const char *reason);
extern void report_up (size_t child);
extern void report_resync (const char *event, size_t child,
                           uint64_t dirty, uint64_t copied);

/* bufpool.c: request-sized scratch buffers, reused.  */
extern void *bufpool_get (size_t len);
extern void bufpool_put (void *buf, size_t len);
extern void bufpool_drain (void);

#endif /* QUORUM_INTERNAL_H */
