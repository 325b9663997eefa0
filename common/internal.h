/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* State shared by the engine's modules; not for the front ends.
 *
 * The layers, each calling only those below it:
 *   lifecycle.c             connect all, start, stop (get_ready, after_fork,
 *                           cleanup); control.c, its socket, with
 *                           control-cmd.c and control-status.c, its
 *                           commands and status, reads all
 *   resync.c, identity.c,   supervisors, healer, settler, backoff;
 *   scrub.c, scrub-chunk.c  resync-copy.c, the copy of a child's stale
 *                           regions, several runs at once, each run by
 *                           resync-run.c; a returning child's identity check;
 *                           scrub
 *   replace.c               replacing a child
 *   engine.c, extents.c,    the operations and their votes, block status,
 *   settle.c                settling unsettled regions; engine-read.c
 *                           (quorum reads) and engine-fifo.c (fifo
 *                           reads) share engine.h with engine.c
 *   fanout.c                references, deadlines, participants;
 *                           fanout-late.c, what wait-for=threshold
 *                           finishes after the answer; fanout-ahead.c,
 *                           its ahead mode
 *   fanout-slot.c           a remote slot: its parts, libnbd's callbacks
 *   caps.c                  the promise, a connection's capabilities
 *   connect.c, reactor.c    opening handles; the poll thread, hand-over, cut
 *   fresh.c                 stale, unsettled and unflushed maps;
 *                           fresh-persist.c, state=: the file's maps,
 *                           the intent map's sweeper
 *   statefile.c, state.c,   the state file (statefile-block.c, its
 *   dirty.c                 format on disk); a child's life; bitmaps
 *   vote.c, extmerge.c, rangelock.c, bufpool.c, report.c, uri.c, config.c
 *                           with report-sink.c, where report.c's events
 *                           are written (report.h), and config-complete.c,
 *                           what config.c parsed checked together and
 *                           the children built (config-spec.h)
 *   ratelimit.c             the background work's rate limits
 *   vector.h                growable arrays (the extent lists, the child
 *                           specs)
 *
 * Locks, outermost first:
 *   range lock (rangelock.c)   ordering of overlapping requests; the only
 *                              one held across a wait for children (up to
 *                              child-timeout) and libnbd calls
 *   nbd_lock (struct child)    rwlock: read by whoever queues a command
 *                              (slot_send), written by the supervisor
 *                              swapping handles; held across nbd_aio_*,
 *                              which may run a free callback (atomics and
 *                              sem_post only), never across a wait
 *   reactor_lock (reactor.c)   every child's link: serving, stop, lost
 *   life.lock (state.c)        a child's state and quit (taken inside
 *                              reactor_lock by reactor_cut)
 *   submit_lock (child_link)   busy, the handed list, reading and epoch
 *                              (taken inside reactor_lock by
 *                              reactor_own_begin); nothing nests in it
 *   flush_lock (fresh.c)       serialises flushes (held across the flush's
 *                              fan-out, as the range lock is)
 *   stale_lock (fresh.c)       a stale map in memory and in the file
 *                              together; takes statefile's lock inside
 *   statefile lock             its maps' writers, tickets; dropped while
 *                              it writes and syncs
 *   scrub.lock (scrub.c)       the scrub's state; nothing nests in it
 *   late_lock (fanout-late.c)  the late fan-outs; nothing nests in it
 *   rangelock.c, bufpool.c, report_lock (report-sink.c), last_lock
 *                              (control-status.c), change_lock
 *                              (fresh.c, fresh_wait's counter; taken
 *                              inside flush_lock), sweeper_lock
 *                              (fresh-persist.c, the sweeper's wake-up):
 *                              leaves, each taken alone for a few
 *                              instructions
 * None but the range lock (and flush_lock, both the request's own) is
 * held across a libnbd completion callback, syslog(3) or a wait for a
 * child: state_set_down reports after its caller let go (reactor_cut,
 * reactor_lost).  (Callbacks run on the reactor, or on a request's
 * thread reading its own replies, fanout.c: they take leaf locks
 * only.)  With wait-for=threshold a write's range lock outlives its
 * request: the late thread releases it once every child ended the
 * write (fanout-late.c).
 *
 * Fields that mix atomics and locks:
 *   life.state, life.quit,     written under life.lock, read atomically
 *   life.ahead
 *   meta                       written under nbd_lock (write) with a
 *                              release store, read atomically by
 *                              child_meta_stale
 *   link.busy, link.reading    under submit_lock only (no atomics)
 *   link.epoch                 written under submit_lock, read atomically
 *                              by the reactor's pass
 *   link.parked                under reactor_lock; reactor.c's parked_mask
 *                              (the same as a mask) and park_used are
 *                              atomics changed under it
 *   dirty (struct dirty_map)   atomics; marks and clears under stale_lock
 *                              (fresh.c), tests lock-free
 *   stats, writes_done, writes_flushed   atomics only, no lock
 *   resync_total, _done, _since  atomics only (resync-copy.c writes)
 */

#ifndef QUORUM_INTERNAL_H
#define QUORUM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#include "dirty.h"
#include "quorum.h"
#include "reactor.h"
#include "state.h"
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
/* wait-for=threshold: answer once vote-threshold children did (fanout.c
 * finishes the rest); false: wait for every child.
 */
extern bool quorum_wait_threshold;
extern uint64_t quorum_max_lag;         /* max-lag=, bytes a laggard owes */
#define QUORUM_MAX_LAG_DEFAULT (UINT64_C (64) << 20)
extern char *quorum_workdir;            /* where child commands run */
extern char *quorum_state_file;         /* state=, NULL: in memory only */
extern uint32_t quorum_state_granule;   /* state-granule=, bytes */
#define QUORUM_STATE_GRANULE_DEFAULT (UINT32_C (4) << 20)
extern char *quorum_control_path;       /* control=, absolute, or NULL */
extern uint64_t quorum_scrub_rate;      /* scrub-rate=, bytes/s, 0: none */
#define QUORUM_SCRUB_RATE_DEFAULT (UINT64_C (50) * 1048576)
extern uint64_t quorum_resync_rate;     /* resync-rate=, bytes/s, 0: none */
#define QUORUM_RESYNC_RATE_DEFAULT (UINT64_C (100) * 1048576)
#define QUORUM_RATE_MAX 1048576         /* MiB/s: 1 TiB/s */

/* config.c: a rate in MiB/s (digits, perhaps a point and digits) from 0
 * to QUORUM_RATE_MAX, as bytes per second.  0, or -1 if it is not one;
 * says nothing.
 */
extern int config_parse_rate (const char *value,
                              uint64_t *bytes_per_second);

/* Per child counts, for the summary (updated atomically). */
struct child_stats {
  uint64_t reads, writes, bad_reads, errors, timeouts, bytes_repaired;
};
#define STAT_ADD(c, field, n) \
  __atomic_add_fetch (&(c)->stats.field, (n), __ATOMIC_RELAXED)

/* All children: in the filter children[0] is the local plugin and has
 * no libnbd handle.
 */
struct child {
  size_t index;                 /* in children[] and in reports */
  char *uri;                    /* child=, as given */
  char *command;                /* child-command=, as given */
  char *name;                   /* for messages: secrets removed */
  struct child_stats stats;     /* atomics, from fanout.c and report.c */

  /* The handles, written by lifecycle.c before the threads start and by
   * resync.c after.  Request threads queue commands on nbd holding
   * nbd_lock for reading; the supervisor replaces a dead handle holding
   * it for writing, with caps, which commands consult under the lock.
   */
  pthread_rwlock_t nbd_lock;
  struct quorum_caps caps;      /* what the connection nbd offers */
  bool caps_known;              /* false if unreachable at start-up */
  struct nbd_handle *nbd;       /* NULL for the local child */
  /* Block status, when nbd was opened without structured replies (see
   * connect_child); else NULL and nbd answers it too.
   */
  struct nbd_handle *meta;
  struct child_link link;       /* the reactor's (reactor.c) */

  struct child_life life;       /* up, down, resync (state.c) */
  pthread_t supervisor;
  bool supervisor_running;
  int quit_pipe[2];             /* interrupts a reconnect in progress */

  struct dirty_map dirty;       /* what this child missed */

  /* meta may not see a write done on nbd until a flush (multi-conn
   * promises no more): writes completed on nbd, and how many of them
   * the last successful flush covered (sent after them).
   */
  uint64_t writes_done, writes_flushed;

  /* The resync in progress, for control's status: resync-copy.c
   * writes them atomically, control-status.c reads them.  Bytes stale when it
   * began, bytes it has copied, and when it began (CLOCK_MONOTONIC, ns;
   * 0 while none runs).
   */
  uint64_t resync_total, resync_done, resync_since;
};
extern struct child *quorum_children;
extern size_t quorum_nr_children;
extern bool quorum_has_local;
/* children[] has one entry more than the children, when they are fewer
 * than VOTE_MAX_CHILDREN: the spare, children[quorum_nr_children],
 * which a replace (replace.c) rebuilds before it takes a child's
 * place.  It is never counted in a vote: only the fan-out, the
 * reactor, the freshness maps and its own supervisor see it.  The
 * slots, the spare's included:
 */
static inline size_t
quorum_nr_slots (void)
{
  return quorum_nr_children < VOTE_MAX_CHILDREN ?
    quorum_nr_children + 1 : quorum_nr_children;
}

/* Nanoseconds from *from to *to (negative if to is earlier). */
static inline int64_t
quorum_ns_between (const struct timespec *from, const struct timespec *to)
{
  return (to->tv_sec - from->tv_sec) * INT64_C (1000000000) +
    (to->tv_nsec - from->tv_nsec);
}

/* Zeroed memory for what a request allocates and frees each time.  Not
 * calloc: glibc's calloc never takes from the thread's cache of freed
 * chunks (tcache) that free fills, so with calloc every request's free
 * went the slow way once that cache was full, often walking the fast
 * bins (malloc_consolidate): about 800 instructions a request.
 */
static inline void *
quorum_zalloc (size_t n)
{
  void *p = malloc (n);

  if (p) {
    /* Or the compiler makes the pair a calloc again. */
    __asm__ volatile ("" : : "r" (p) : "memory");
    memset (p, 0, n);
  }
  return p;
}

/* Debug flag: -D quorum.votes=1 */
extern int quorum_debug_votes;

/* lifecycle.c */
/* The size every remote child has, from the first one reachable at
 * start-up; fixed after .get_ready.
 */
extern int64_t quorum_export_size;
/* Connect every remote child and check their sizes agree (before
 * nbdkit forks, so that a failure stops it with a message), then start
 * the reactor and the supervisors (after the fork).
 */
extern int lifecycle_connect_all (void);
extern int lifecycle_start_all (void);
extern void lifecycle_disconnect_all (void);
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
/* The child's name and URI (redacted name, child= as given).  A
 * replace swaps them while other threads print or redact them; the old
 * strings stay valid until the next replace (replace.c).
 */
static inline const char *
child_name (const struct child *c)
{
  return __atomic_load_n (&c->name, __ATOMIC_ACQUIRE);
}
static inline const char *
child_uri (const struct child *c)
{
  return __atomic_load_n (&c->uri, __ATOMIC_ACQUIRE);
}
/* True for the filter's plugin, which is called in-process.  (A
 * replace swaps a remote child's uri while other threads ask: it is
 * never NULL then, before or after.)
 */
static inline bool
child_is_local (const struct child *c)
{
  return child_uri (c) == NULL && c->command == NULL;
}
/* caps.c: what the export offers of the remote children's
 * capabilities, from those reachable at start-up; fixed after
 * .get_ready.
 */
extern struct quorum_caps caps_promise;
/* NULL if a child offering caps can serve that promise (the engine
 * adapts to the rest: FUA emulated with a flush, requests split at its
 * maximum block size, no fast zero, block status all data, cache
 * skipped); else why not, after "it" (perhaps in buf).
 */
extern const char *caps_lacking (const struct quorum_caps *caps,
                                 char *buf, size_t len);
/* Whether child c, offering caps, may join (a reconnection, a
 * replacement): nothing caps_lacking names.  Else it is said why, and
 * it stays down.
 */
extern bool caps_fit (struct child *c, const struct quorum_caps *caps);
/* Make caps_promise, once the children are connected. */
extern void caps_promise_init (void);

/* uri.c: URI with the password and secret-bearing query values
 * replaced by "***"; never NULL except on ENOMEM.
 */
extern char *uri_redact (const char *uri);
/* The name of a child-command= child: "command:" and the command,
 * encoded like a URI's bytes.
 */
extern char *uri_command_name (const char *command);
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
extern const char *report_op_name (enum op_type type);
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
/* The operator's doing (control): fail, return, replace-start,
 * replace-end.
 */
extern void report_admin (const char *event, size_t child);
/* replace-start: child is to be replaced by the server named other;
 * replace-cancel: it is not, after all; replace-end: it was, and other
 * is the old one's name.
 */
extern void report_replace (const char *event, size_t child,
                            const char *other);
/* resync-end: dirty bytes left, copied made current, zeroed of them
 * written as zeroes (all its sources reported zeroes there).
 */
extern void report_resync_end (size_t child, uint64_t dirty,
                               uint64_t copied, uint64_t zeroed);
extern void report_resync (const char *event, size_t child,
                           uint64_t dirty, uint64_t copied);
/* A resync stopped before the end: reason down, write-failed or
 * quitting.
 */
extern void report_resync_stopped (size_t child, uint64_t dirty,
                                   uint64_t copied, const char *reason);
/* A resync has copied another tenth of what was stale when it began. */
extern void report_resync_progress (size_t child, unsigned percent,
                                    uint64_t dirty, uint64_t copied);
/* Freshness (fresh.c, settle.c). */
extern void report_stale (size_t child, uint64_t offset, uint64_t length,
                          const char *reason);
/* An unsettled region was settled: child winner's version, which
 * votes children returned, was written where the others differed
 * (rewritten bytes in all).  Below the threshold it is a warning.
 */
extern void report_settle (uint64_t offset, uint64_t length, size_t winner,
                           size_t votes, uint64_t rewritten);
/* A scrub of [offset, +length) begins; ends, with what it found
 * (struct scrub_status in scrub.h, whose counts it takes: this layer
 * cannot include that header, so they are passed one by one).
 */
extern void report_scrub_start (uint64_t offset, uint64_t length,
                                bool repair, uint64_t rate);
/* A restart resumed the scrub of [offset, +length) at from (state=). */
extern void report_scrub_resume (uint64_t offset, uint64_t length,
                                 uint64_t from, bool repair, uint64_t rate);
extern void report_scrub_end (uint64_t offset, uint64_t length,
                              bool stopped, uint64_t done,
                              uint64_t mismatched, uint64_t repaired,
                              uint64_t unreadable, uint64_t no_quorum,
                              uint64_t skipped, uint64_t unchecked);
/* Who else hears of a child's trouble (control-status.c, which keeps
 * each child's last error for status), from the layers above, so that
 * report.c needs none of them: report_bad calls bad (err 0: its data
 * was outvoted), report_down calls down.  One listener; set before the
 * threads start, NULL for none.
 */
struct report_listener {
  void (*bad) (size_t child, enum op_type type, uint64_t offset,
               uint64_t length, int err);
  void (*down) (size_t child, const char *reason);
};
extern void report_listen (const struct report_listener *listener);

/* bufpool.c: request-sized scratch buffers, reused.  */
extern void *bufpool_get (size_t len);
extern void bufpool_put (void *buf, size_t len);
extern void bufpool_drain (void);

#endif /* QUORUM_INTERNAL_H */
