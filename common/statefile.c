/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The state file: see statefile.h for what it holds and why every
 * block is stored twice.
 *
 * Layout, all integers little-endian.  Block b (b = 0, 1, ...) has its
 * two copies at byte offsets 2*b*4096 and (2*b+1)*4096.  A copy is a
 * 32-byte header and 4064 bytes of payload:
 *   0  magic "QUORUMST"
 *   8  u32 format version (1)
 *  12  u32 block number b
 *  16  u64 generation (0: never written, so never valid)
 *  24  u64 checksum: the first 8 bytes of the SHA-256 of bytes 0-23
 *      and the payload
 * Block 0's payload: u64 export size, u32 granule (of the stale maps),
 * u32 number of children, the SHA-256 of each of 32 children's names
 * (zeroes past the last), u32 granule of the write-intent map.  Blocks 1... hold
 * the maps, each map in blocks_per_map consecutive blocks of 32512
 * bits, bit g of a map in byte g/8, bit g%8.
 */

#include <config.h>

#include <endian.h>
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

#include <nettle/sha2.h>

#include "statefile.h"

#define BLOCK 4096
#define HEADER 32
#define PAYLOAD (BLOCK - HEADER)
#define BITS_PER_BLOCK ((uint64_t) PAYLOAD * 8)
#define FORMAT_VERSION 1
#define MAX_CHILDREN 32
#define INTENT_GRANULE_AT (16 + MAX_CHILDREN * SHA256_DIGEST_SIZE)

static const char magic[8] = "QUORUMST";

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
  unsigned char ident[PAYLOAD]; /* block 0's payload */
  unsigned char *maps;          /* nr_maps * blocks_per_map payloads */
  struct block *blocks;

  pthread_mutex_t lock;         /* all below, and writers of the maps */
  pthread_cond_t cond;          /* a sync ended */
  uint64_t seq;                 /* the last ticket handed out */
  uint64_t durable;             /* every ticket up to it is on disk */
  bool syncing;                 /* one thread is writing */
  int failed;                   /* errno of a failed write, sticky */
  uint64_t nr_syncs;
};

static void
name_hash (const char *name, unsigned char *digest)
{
  struct sha256_ctx ctx;

  sha256_init (&ctx);
  sha256_update (&ctx, strlen (name), (const uint8_t *) name);
  sha256_digest (&ctx, SHA256_DIGEST_SIZE, digest);
}

static uint64_t
checksum (const unsigned char *copy)
{
  struct sha256_ctx ctx;
  unsigned char digest[SHA256_DIGEST_SIZE];
  uint64_t r;

  sha256_init (&ctx);
  sha256_update (&ctx, 24, copy);
  sha256_update (&ctx, PAYLOAD, copy + HEADER);
  sha256_digest (&ctx, SHA256_DIGEST_SIZE, digest);
  memcpy (&r, digest, 8);
  return le64toh (r);
}

static void
put32 (unsigned char *p, uint32_t v)
{
  v = htole32 (v);
  memcpy (p, &v, 4);
}

static void
put64 (unsigned char *p, uint64_t v)
{
  v = htole64 (v);
  memcpy (p, &v, 8);
}

static uint32_t
get32 (const unsigned char *p)
{
  uint32_t v;
  memcpy (&v, p, 4);
  return le32toh (v);
}

static uint64_t
get64 (const unsigned char *p)
{
  uint64_t v;
  memcpy (&v, p, 8);
  return le64toh (v);
}

static unsigned char *
payload_of (struct statefile *st, size_t b)
{
  return b == 0 ? st->ident : st->maps + (b - 1) * PAYLOAD;
}

/* A copy of block b at generation gen, in copy[BLOCK]. */
static void
make_copy (struct statefile *st, size_t b, uint64_t gen, unsigned char *copy)
{
  memcpy (copy, magic, 8);
  put32 (copy + 8, FORMAT_VERSION);
  put32 (copy + 12, b);
  put64 (copy + 16, gen);
  memcpy (copy + HEADER, payload_of (st, b), PAYLOAD);
  put64 (copy + 24, checksum (copy));
}

static bool
copy_valid (const unsigned char *copy, size_t b)
{
  return memcmp (copy, magic, 8) == 0 && get32 (copy + 8) == FORMAT_VERSION &&
    get32 (copy + 12) == b && get64 (copy + 16) != 0 &&
    get64 (copy + 24) == checksum (copy);
}

/* Read both copies of block b, keep the newest valid one in memory.
 * false if neither is valid (or the read failed: errno then set).
 */
static bool
read_block (struct statefile *st, size_t b)
{
  unsigned char copy[2][BLOCK];
  int best = -1;
  unsigned i;

  errno = 0;
  for (i = 0; i < 2; ++i) {
    ssize_t r = pread (st->fd, copy[i], BLOCK, (2 * b + i) * (off_t) BLOCK);

    if (r == -1)
      return false;
    if (r == BLOCK && copy_valid (copy[i], b) &&
        (best == -1 || get64 (copy[i] + 16) > get64 (copy[best] + 16)))
      best = i;
  }
  if (best == -1)
    return false;
  st->blocks[b].gen = get64 (copy[best] + 16);
  st->blocks[b].cur = best;
  memcpy (payload_of (st, b), copy[best] + HEADER, PAYLOAD);
  return true;
}

static int
write_all (int fd, const void *buf, size_t len, off_t offset)
{
  while (len > 0) {
    ssize_t r = pwrite (fd, buf, len, offset);

    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    buf = (const char *) buf + r;
    len -= r;
    offset += r;
  }
  return 0;
}

static void
make_ident (struct statefile *st, const struct statefile_identity *id)
{
  uint32_t i;

  memset (st->ident, 0, PAYLOAD);
  put64 (st->ident, id->size);
  put32 (st->ident + 8, id->granule);
  put32 (st->ident + 12, id->nr_children);
  for (i = 0; i < id->nr_children; ++i)
    name_hash (id->names[i], st->ident + 16 + i * SHA256_DIGEST_SIZE);
  put32 (st->ident + INTENT_GRANULE_AT, id->intent_granule);
}

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
    make_copy (st, b, 1, copy);
    if (write_all (fd, copy, BLOCK, 2 * b * (off_t) BLOCK) == -1)
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
  uint64_t size;
  uint32_t granule, intent, nr, i;
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
  if (!read_block (st, 0)) {
    if (asprintf (why, "state=%s: %s", st->path,
                  errno ? strerror (errno) :
                  "not a quorum state file, or damaged (no valid copy of "
                  "its first block)") == -1)
      *why = NULL;
    return -1;
  }
  size = get64 (st->ident);
  granule = get32 (st->ident + 8);
  nr = get32 (st->ident + 12);
  intent = get32 (st->ident + INTENT_GRANULE_AT);
  if (size != id->size || intent != id->intent_granule ||
      nr != id->nr_children) {
    if (asprintf (why, "state=%s was written for %" PRIu32 " children "
                  "of %" PRIu64 " bytes with state-granule=%" PRIu32
                  ", but this quorum has %" PRIu32 " children of %" PRIu64
                  " bytes with state-granule=%" PRIu32 ": give the state "
                  "file of this quorum, or a new path", st->path, nr,
                  size, intent, id->nr_children, id->size,
                  id->intent_granule) == -1)
      *why = NULL;
    return -1;
  }
  if (granule != id->granule) {
    if (asprintf (why, "state=%s keeps stale maps of %" PRIu32 "-byte "
                  "granules, this build %" PRIu32 ": give a new path",
                  st->path, granule, id->granule) == -1)
      *why = NULL;
    return -1;
  }
  if (sb.st_size != (off_t) (st->nr_blocks * 2 * BLOCK)) {
    if (asprintf (why, "state=%s: damaged: %" PRIi64 " bytes, expected "
                  "%zu", st->path, (int64_t) sb.st_size,
                  st->nr_blocks * 2 * BLOCK) == -1)
      *why = NULL;
    return -1;
  }
  for (b = 1; b < st->nr_blocks; ++b) {
    if (!read_block (st, b)) {
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

  *renamed = 0;
  for (i = 0; i < nr; ++i) {
    unsigned char digest[SHA256_DIGEST_SIZE];

    name_hash (id->names[i], digest);
    if (memcmp (digest, st->ident + 16 + i * SHA256_DIGEST_SIZE,
                SHA256_DIGEST_SIZE) != 0)
      *renamed |= UINT32_C (1) << i;
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
    make_ident (st, id);
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
  name_hash (name, st->ident + 16 + child * SHA256_DIGEST_SIZE);
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
    make_copy (st, b, blk->gen, copies + n * BLOCK);
    where[n++] = 2 * b + blk->cur;
  }
  st->syncing = true;
  pthread_mutex_unlock (&st->lock);

  for (i = 0; i < n && err == 0; ++i)
    if (write_all (st->fd, copies + i * BLOCK, BLOCK,
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
