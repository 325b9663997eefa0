/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Inside the state file module, between statefile.c (opening, the
 * maps, the group commit) and statefile-block.c (the on-disk format of
 * a block and of block 0's identity and records).  Not for any other
 * module: they use statefile.h.
 */

#ifndef QUORUM_STATEFILE_BLOCK_H
#define QUORUM_STATEFILE_BLOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "statefile.h"

#define BLOCK 4096
#define HEADER 32
#define PAYLOAD (BLOCK - HEADER)
#define BITS_PER_BLOCK ((uint64_t) PAYLOAD * 8)
#define MAX_CHILDREN 32

struct block {
  uint64_t gen;                 /* of the newest valid copy */
  unsigned cur;                 /* which copy holds it, 0 or 1 */
  uint64_t dirty;               /* ticket of the last unwritten change */
  uint64_t last;                /* ticket of the last change, atomic */
};

struct statefile {
  int fd;
  char *path;
  uint64_t bits;                /* per stale map */
  uint64_t intent_bits;         /* of the write-intent map */
  uint64_t blocks_per_map;
  unsigned nr_maps;
  size_t nr_blocks;             /* with block 0 */
  unsigned char ident[PAYLOAD]; /* block 0's payload, under lock */
  unsigned char *maps;          /* nr_maps * blocks_per_map payloads */
  struct block *blocks;

  pthread_mutex_t lock;         /* all below, ident, writers of the maps */
  pthread_cond_t cond;          /* a sync ended */
  uint64_t seq;                 /* the last ticket handed out */
  uint64_t durable;             /* every ticket up to it is on disk */
  bool syncing;                 /* one thread is writing */
  int failed;                   /* errno of a failed write, sticky */
  uint64_t nr_syncs;
};

/* A copy of block b at generation gen, in copy[BLOCK]. */
extern void statefile_make_copy (struct statefile *st, size_t b,
                                 uint64_t gen, unsigned char *copy);

/* Read both copies of block b, keep the newest valid one in memory.
 * false if neither is valid (or the read failed: errno then set).
 */
extern bool statefile_read_block (struct statefile *st, size_t b);

/* pwrite all of buf, through EINTR and short writes.  0 or -1. */
extern int statefile_write_all (int fd, const void *buf, size_t len,
                                off_t offset);

/* Block 0's payload for id: its identity, and no record. */
extern void statefile_ident_make (struct statefile *st,
                                  const struct statefile_identity *id);

/* Block 0 as read was written for id: 0, or -1 with a message in *why
 * (malloc'd, NULL if out of memory).  *renamed as statefile_open's.
 */
extern int statefile_ident_check (const struct statefile *st,
                                  const struct statefile_identity *id,
                                  uint32_t *renamed, char **why);

/* Record name as child's in block 0's payload (lock held). */
extern void statefile_ident_rename (struct statefile *st, uint32_t child,
                                    const char *name);

/* The scrub checkpoint in block 0's payload (lock held): see
 * statefile_scrub_get and statefile_scrub_set.
 */
extern int statefile_record_scrub_get (const struct statefile *st,
                                       struct statefile_scrub *ck,
                                       const char **why);
extern void statefile_record_scrub_put (struct statefile *st,
                                        const struct statefile_scrub *ck);

#endif /* QUORUM_STATEFILE_BLOCK_H */
