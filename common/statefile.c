/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The state file: see statefile.h for what it holds and why every
 * block is stored twice, statefile-block.c for its layout on disk.
 * Here: creating, locking and loading it, the maps in memory, and the
 * group commit that makes changes durable.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "statefile.h"
#include "statefile-block.h"

/* A new file, first at a temporary name beside path, then linked into
 * place only when whole and on disk: a crash leaves no half-made file
 * under path, and a file someone else created meanwhile is not
 * replaced.
 */
static int
create_file (struct statefile *st, char **why)
{
  char *tmp = NULL, *dir = NULL, *d;
  unsigned char copy[BLOCK];
  size_t b;
  int fd = -1, dfd;

  if (asprintf (&tmp, "%s.new-XXXXXX", st->path) == -1) {
    tmp = NULL;
    goto nomem;
  }
  /* mkostemp: O_EXCL, mode 0600. */
  fd = mkostemp (tmp, O_CLOEXEC);
  if (fd == -1) {
    if (asprintf (why, "state=%s: cannot create %s: %m", st->path, tmp) == -1)
      *why = NULL;
    free (tmp);
    return -1;
  }
  st->fd = fd;
  if (flock (fd, LOCK_EX | LOCK_NB) == -1 ||
      ftruncate (fd, st->nr_blocks * 2 * (off_t) BLOCK) == -1)
    goto io_error;
  for (b = 0; b < st->nr_blocks; ++b) {
    st->blocks[b].gen = 1;
    st->blocks[b].cur = 0;
    statefile_make_copy (st, b, 1, copy);
    if (statefile_write_all (fd, copy, BLOCK, 2 * b * (off_t) BLOCK) == -1)
      goto io_error;
  }
  if (fsync (fd) == -1)
    goto io_error;
  if (link (tmp, st->path) == -1) {
    if (asprintf (why, "state=%s: cannot create it: %m", st->path) == -1)
      *why = NULL;
    goto error;
  }
  unlink (tmp);
  /* The new name must survive a crash too. */
  dir = strdup (st->path);
  if (dir == NULL)
    goto nomem;
  d = dirname (dir);
  dfd = open (d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd == -1 || fsync (dfd) == -1) {
    if (asprintf (why, "state=%s: fsync of %s: %m", st->path, d) == -1)
      *why = NULL;
    if (dfd >= 0)
      close (dfd);
    unlink (st->path);
    goto error;
  }
  close (dfd);
  free (dir);
  free (tmp);
  return 0;

 io_error:
  if (asprintf (why, "state=%s: writing %s: %m", st->path, tmp) == -1)
    *why = NULL;
  goto error;
 nomem:
  *why = NULL;
 error:
  if (tmp)
    unlink (tmp);
  free (tmp);
  free (dir);
  return -1;
}

/* The file exists: check it was written for this configuration. */
static int
load_file (struct statefile *st, const struct statefile_identity *id,
           uint32_t *renamed, char **why)
{
  struct stat sb;
  size_t b;

  if (fstat (st->fd, &sb) == -1) {
    if (asprintf (why, "state=%s: %m", st->path) == -1)
      *why = NULL;
    return -1;
  }
  if (!S_ISREG (sb.st_mode)) {
    if (asprintf (why, "state=%s: not a regular file: give the path of "
                  "a file, or of one to be created", st->path) == -1)
      *why = NULL;
    return -1;
  }
  if (flock (st->fd, LOCK_EX | LOCK_NB) == -1) {
    if (asprintf (why, "state=%s: %s", st->path,
                  errno == EWOULDBLOCK ?
                  "in use by another process (each quorum needs its own "
                  "state file)" : strerror (errno)) == -1)
      *why = NULL;
    return -1;
  }
  if (!statefile_read_block (st, 0)) {
    if (asprintf (why, "state=%s: %s", st->path,
                  errno ? strerror (errno) :
                  "not a quorum state file, or damaged (no valid copy of "
                  "its first block)") == -1)
      *why = NULL;
    return -1;
  }
  if (statefile_ident_check (st, id, renamed, why) == -1)
    return -1;
  if (sb.st_size != (off_t) (st->nr_blocks * 2 * BLOCK)) {
    if (asprintf (why, "state=%s: damaged: %" PRIi64 " bytes, expected "
                  "%zu", st->path, (int64_t) sb.st_size,
                  st->nr_blocks * 2 * BLOCK) == -1)
      *why = NULL;
    return -1;
  }
  for (b = 1; b < st->nr_blocks; ++b) {
    if (!statefile_read_block (st, b)) {
      int r;

      if (errno)
        r = asprintf (why, "state=%s: reading block %zu: %m", st->path, b);
      else
        r = asprintf (why, "state=%s: damaged: no valid copy of block %zu",
                      st->path, b);
      if (r == -1)
        *why = NULL;
      return -1;
    }
  }

  return 0;
}

struct statefile *
statefile_open (const char *path, const struct statefile_identity *id0,
                uint32_t *renamed, char **why)
{
  struct statefile_identity idv = *id0, *id = &idv;
  struct statefile *st;

  *why = NULL;
  *renamed = 0;
  if (id->intent_granule == 0)
    id->intent_granule = id->granule;
  if (id->nr_children == 0 || id->nr_children > MAX_CHILDREN ||
      id->granule == 0 || (id->granule & (id->granule - 1)) != 0 ||
      (id->intent_granule & (id->intent_granule - 1)) != 0 ||
      id->intent_granule < id->granule) {
    if (asprintf (why, "state=%s: bad configuration", path) == -1)
      *why = NULL;
    return NULL;
  }
  st = calloc (1, sizeof *st);
  if (st == NULL)
    return NULL;
  st->fd = -1;
  pthread_mutex_init (&st->lock, NULL);
  pthread_cond_init (&st->cond, NULL);
  st->path = strdup (path);
  st->bits = (id->size + id->granule - 1) / id->granule;
  st->intent_bits = (id->size + id->intent_granule - 1) / id->intent_granule;
  st->blocks_per_map = (st->bits + BITS_PER_BLOCK - 1) / BITS_PER_BLOCK;
  if (st->blocks_per_map == 0)
    st->blocks_per_map = 1;
  st->nr_maps = 1 + id->nr_children;
  st->nr_blocks = 1 + st->nr_maps * st->blocks_per_map;
  st->maps = calloc (st->nr_maps * st->blocks_per_map, PAYLOAD);
  st->blocks = calloc (st->nr_blocks, sizeof *st->blocks);
  if (st->path == NULL || st->maps == NULL || st->blocks == NULL)
    goto error;

  st->fd = open (path, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (st->fd == -1 && errno == ENOENT) {
    statefile_ident_make (st, id);
    if (create_file (st, why) == -1)
      goto error;
  }
  else if (st->fd == -1) {
    if (asprintf (why, "state=%s: %s", path,
                  errno == ELOOP ? "is a symbolic link: give the path of "
                  "the file itself" : strerror (errno)) == -1)
      *why = NULL;
    goto error;
  }
  else if (load_file (st, id, renamed, why) == -1)
    goto error;
  return st;

 error:
  statefile_close (st);
  return NULL;
}

void
statefile_close (struct statefile *st)
{
  if (st == NULL)
    return;
  if (st->fd >= 0)
    close (st->fd);
  pthread_mutex_destroy (&st->lock);
  pthread_cond_destroy (&st->cond);
  free (st->path);
  free (st->maps);
  free (st->blocks);
  free (st);
}

static uint64_t
map_bits (const struct statefile *st, unsigned map)
{
  return map == STATEFILE_MAP_INTENT ? st->intent_bits : st->bits;
}

uint64_t
statefile_bits (const struct statefile *st, unsigned map)
{
  return map_bits (st, map);
}

static size_t
byte_of (const struct statefile *st, unsigned map, uint64_t g)
{
  return map * st->blocks_per_map * PAYLOAD + g / 8;
}

bool
statefile_test (const struct statefile *st, unsigned map, uint64_t g)
{
  if (map >= st->nr_maps || g >= map_bits (st, map))
    return false;
  return __atomic_load_n (&st->maps[byte_of (st, map, g)],
                          __ATOMIC_ACQUIRE) & (1u << (g % 8));
}

bool
statefile_any (const struct statefile *st, unsigned map, uint64_t first,
               uint64_t end)
{
  uint64_t g;

  if (end > map_bits (st, map))
    end = map_bits (st, map);
  for (g = first; g < end; ++g)
    if (statefile_test (st, map, g))
      return true;
  return false;
}

uint64_t
statefile_count (const struct statefile *st, unsigned map)
{
  uint64_t n = 0, i, bytes;

  if (map >= st->nr_maps)
    return 0;
  bytes = (map_bits (st, map) + 7) / 8;
  for (i = 0; i < bytes; ++i)
    n += __builtin_popcount (__atomic_load_n (&st->maps[byte_of (st, map, 0)
                                                        + i],
                                              __ATOMIC_ACQUIRE));
  return n;
}

uint64_t
statefile_next (const struct statefile *st, unsigned map, uint64_t g)
{
  if (map >= st->nr_maps)
    return UINT64_MAX;
  while (g < map_bits (st, map)) {
    unsigned char byte = __atomic_load_n (&st->maps[byte_of (st, map, g)],
                                          __ATOMIC_ACQUIRE) >> (g % 8);

    if (byte)
      return g + __builtin_ctz (byte) < map_bits (st, map) ?
        g + __builtin_ctz (byte) : UINT64_MAX;
    g = (g / 8 + 1) * 8;
  }
  return UINT64_MAX;
}

/* Called with lock held: block b changed (or is about to: the ticket
 * is stored before the bits, so that whoever sees a bit set also sees
 * the ticket that makes it durable).
 */
static uint64_t
changed_locked (struct statefile *st, size_t b)
{
  st->blocks[b].dirty = ++st->seq;
  __atomic_store_n (&st->blocks[b].last, st->seq, __ATOMIC_RELEASE);
  return st->seq;
}

/* The block holding bit g of map. */
static size_t
block_of (const struct statefile *st, unsigned map, uint64_t g)
{
  return 1 + byte_of (st, map, g) / PAYLOAD;
}

uint64_t
statefile_set (struct statefile *st, unsigned map, uint64_t first,
               uint64_t end, bool value)
{
  uint64_t g, ticket = 0;
  size_t b;

  if (map >= st->nr_maps)
    return 0;
  if (end > map_bits (st, map))
    end = map_bits (st, map);
  if (first >= end)
    return 0;
  /* Nothing to change, the usual case for the write-intent map: no
   * lock, but the bits may have been set by a change not yet durable,
   * whose ticket the caller must wait for too.
   */
  for (g = first; g < end; ++g)
    if (statefile_test (st, map, g) != value)
      break;
  if (g >= end) {
    uint64_t durable = __atomic_load_n (&st->durable, __ATOMIC_ACQUIRE);

    for (b = block_of (st, map, first); b <= block_of (st, map, end - 1);
         ++b) {
      uint64_t t = __atomic_load_n (&st->blocks[b].last, __ATOMIC_ACQUIRE);

      if (t > durable && t > ticket)
        ticket = t;
    }
    return ticket;
  }

  pthread_mutex_lock (&st->lock);
  for (g = first; g < end; ++g) {
    size_t byte = byte_of (st, map, g);
    unsigned char bit = 1u << (g % 8);

    if (statefile_test (st, map, g) == value)
      continue;
    ticket = changed_locked (st, block_of (st, map, g));
    if (value)
      __atomic_fetch_or (&st->maps[byte], bit, __ATOMIC_ACQ_REL);
    else
      __atomic_fetch_and (&st->maps[byte], (unsigned char) ~bit,
                          __ATOMIC_ACQ_REL);
  }
  pthread_mutex_unlock (&st->lock);
  return ticket;
}

uint64_t
statefile_rename (struct statefile *st, uint32_t child, const char *name)
{
  uint64_t ticket = 0;

  if (child + 1 >= st->nr_maps)
    return 0;
  pthread_mutex_lock (&st->lock);
  statefile_ident_rename (st, child, name);
  ticket = changed_locked (st, 0);
  pthread_mutex_unlock (&st->lock);
  return ticket;
}

int
statefile_scrub_get (struct statefile *st, struct statefile_scrub *ck,
                     const char **why)
{
  int r;

  pthread_mutex_lock (&st->lock);
  r = statefile_record_scrub_get (st, ck, why);
  pthread_mutex_unlock (&st->lock);
  return r;
}

uint64_t
statefile_scrub_set (struct statefile *st, const struct statefile_scrub *ck)
{
  uint64_t ticket;

  pthread_mutex_lock (&st->lock);
  statefile_record_scrub_put (st, ck);
  ticket = changed_locked (st, 0);
  pthread_mutex_unlock (&st->lock);
  return ticket;
}

/* Called with lock held, as the one writer: write every changed block
 * over its older copy, then fdatasync.  The lock is dropped while
 * writing; changes made meanwhile are for the next writer.
 */
static void
write_changed_locked (struct statefile *st)
{
  uint64_t target = st->seq;
  unsigned char *copies;
  size_t *where, n = 0, b, i;
  int err = 0;

  copies = malloc (st->nr_blocks * (size_t) BLOCK);
  where = malloc (st->nr_blocks * sizeof *where);
  if (copies == NULL || where == NULL) {
    free (copies);
    free (where);
    st->failed = ENOMEM;
    return;
  }
  for (b = 0; b < st->nr_blocks; ++b) {
    struct block *blk = &st->blocks[b];

    if (blk->dirty == 0)
      continue;
    blk->gen++;
    blk->cur ^= 1;
    blk->dirty = 0;
    statefile_make_copy (st, b, blk->gen, copies + n * BLOCK);
    where[n++] = 2 * b + blk->cur;
  }
  st->syncing = true;
  pthread_mutex_unlock (&st->lock);

  for (i = 0; i < n && err == 0; ++i)
    if (statefile_write_all (st->fd, copies + i * BLOCK, BLOCK,
                   where[i] * (off_t) BLOCK) == -1)
      err = errno;
  if (err == 0 && n > 0 && fdatasync (st->fd) == -1)
    err = errno;

  pthread_mutex_lock (&st->lock);
  st->syncing = false;
  if (n > 0)
    __atomic_add_fetch (&st->nr_syncs, 1, __ATOMIC_RELAXED);
  if (err)
    st->failed = err;
  else if (target > st->durable)
    __atomic_store_n (&st->durable, target, __ATOMIC_RELEASE);
  pthread_cond_broadcast (&st->cond);
  free (copies);
  free (where);
}

int
statefile_sync (struct statefile *st, uint64_t ticket)
{
  int r;

  pthread_mutex_lock (&st->lock);
  for (;;) {
    if (st->failed) {
      errno = st->failed;
      r = -1;
      break;
    }
    if (st->durable >= ticket) {
      r = 0;
      break;
    }
    if (st->syncing)
      pthread_cond_wait (&st->cond, &st->lock);
    else
      write_changed_locked (st);
  }
  pthread_mutex_unlock (&st->lock);
  return r;
}

int
statefile_sync_all (struct statefile *st)
{
  uint64_t ticket;

  pthread_mutex_lock (&st->lock);
  ticket = st->seq;
  pthread_mutex_unlock (&st->lock);
  return statefile_sync (st, ticket);
}

uint64_t
statefile_syncs (const struct statefile *st)
{
  return __atomic_load_n (&st->nr_syncs, __ATOMIC_RELAXED);
}
