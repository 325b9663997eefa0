/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The quorum's state on stable storage (state=FILE): which regions of
 * each child are stale, and which regions have writes in flight (the
 * write-intent map), so that neither is forgotten across a restart or
 * a crash.
 *
 * The file is a sequence of 4 KiB blocks, each stored twice: a change
 * to a block is written over its older copy only, then fdatasync'd, so
 * a crash in the middle of a write tears at most the copy being
 * written, and the other (with a valid checksum and the previous
 * generation) is read at the next start.  Block 0 names the
 * configuration (export size, granule, number of children, a hash of
 * each child's name) and a scrub's checkpoint; the others hold the
 * bitmaps, one bit per granule: map 0 is the write-intent map, map
 * 1 + i child i's stale map.
 *
 * This module knows nothing of children or requests: it keeps bits and
 * a checkpoint in memory, and makes them durable when asked.
 * Thread-safe.  statefile.c opens the file and writes it,
 * statefile-block.c knows its layout (statefile-block.h, inside the
 * module only).
 */

#ifndef QUORUM_STATEFILE_H
#define QUORUM_STATEFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATEFILE_MAP_INTENT 0
#define STATEFILE_MAP_STALE(child) (1 + (child))

struct statefile;

/* What the file must have been written for. */
struct statefile_identity {
  uint64_t size;                /* export size in bytes */
  uint32_t granule;             /* bytes per bit of the stale maps, a
                                 * power of 2 */
  uint32_t intent_granule;      /* bytes per bit of the write-intent map:
                                 * a power of 2, a multiple of granule
                                 * (0: granule) */
  uint32_t nr_children;         /* at most 32 */
  const char *const *names;     /* each child's name (no secrets) */
};

/* Open path, or create it (mode 0600) if it does not exist.  Never
 * follows a final symlink; refuses anything but a regular file, a file
 * written for another size, granule or number of children, a file
 * another process has open (flock), and a file whose blocks have no
 * valid copy.  On success *renamed has bit i set for every child whose
 * name differs from the one in the file (a new disk at that position:
 * the caller treats it as wholly stale; statefile_rename records the
 * new name).  On failure returns NULL and a message in *why (malloc'd;
 * NULL if out of memory).
 */
extern struct statefile *statefile_open (const char *path,
                                         const struct statefile_identity *id,
                                         uint32_t *renamed, char **why);

/* Close; changes not yet made durable are lost. */
extern void statefile_close (struct statefile *st);

/* Number of bits of map. */
extern uint64_t statefile_bits (const struct statefile *st, unsigned map);

/* Whether bit g of map is set.  Lock-free. */
extern bool statefile_test (const struct statefile *st, unsigned map,
                            uint64_t g);

/* Whether any bit of [first, end) of map is set.  Lock-free. */
extern bool statefile_any (const struct statefile *st, unsigned map,
                           uint64_t first, uint64_t end);

/* Bits set in map. */
extern uint64_t statefile_count (const struct statefile *st, unsigned map);

/* The first bit set in map at or after g, or UINT64_MAX. */
extern uint64_t statefile_next (const struct statefile *st, unsigned map,
                                uint64_t g);

/* Set (value true) or clear bits [first, end) of map in memory.
 * Returns the ticket that statefile_sync must be given for the change
 * to be durable, or 0 if every bit already had that value on stable
 * storage.  A bit that is already set and durable needs no sync, so
 * callers that set the write-intent bit before every write pay for
 * stable storage only on the first; one set but not yet durable gets
 * the ticket of the sync in progress.
 * The caller orders its own updates: one that clears a bit must know
 * that no one depends on it being set (no write in flight there).
 */
extern uint64_t statefile_set (struct statefile *st, unsigned map,
                               uint64_t first, uint64_t end, bool value);

/* Record the name of child i in the file (after a replacement). */
extern uint64_t statefile_rename (struct statefile *st, uint32_t child,
                                  const char *name);

/* A scrub's checkpoint (scrub.c), kept in block 0 so that a restart
 * resumes the scrub: its range, how far it came, its counts so far.
 */
struct statefile_scrub {
  uint64_t offset, length;      /* the range */
  uint64_t pos;                 /* scrubbed up to here, in the range */
  bool repair;
  uint64_t mismatched, repaired, unreadable, no_quorum, skipped, unchecked;
};

/* The checkpoint in the file: 1 with it in *ck, 0 if there is none
 * (a file written before checkpoints existed has none), -1 if there is
 * one this build cannot use (a newer record version, or a range or
 * position outside the export): then *why says which (a constant
 * string).
 */
extern int statefile_scrub_get (struct statefile *st,
                                struct statefile_scrub *ck,
                                const char **why);

/* Record ck as the checkpoint, or none (ck NULL), in memory: the
 * ticket to give statefile_sync.
 */
extern uint64_t statefile_scrub_set (struct statefile *st,
                                     const struct statefile_scrub *ck);

/* Make every change up to ticket durable: the changed blocks are
 * written, then the file is fdatasync'd.  One caller writes for
 * everyone waiting at that moment (group commit).  Returns 0, or -1
 * with errno set if the state could not be recorded; after a failure
 * every later call fails too, as the file may no longer say what
 * memory does, so the caller must fail the writes that needed it.
 */
extern int statefile_sync (struct statefile *st, uint64_t ticket);

/* Every change so far, durable: statefile_sync of the latest ticket. */
extern int statefile_sync_all (struct statefile *st);

/* fdatasync calls made, for the benchmarks and tests. */
extern uint64_t statefile_syncs (const struct statefile *st);

#endif /* QUORUM_STATEFILE_H */
