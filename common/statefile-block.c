/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The state file's on-disk format (statefile.h says what it holds and
 * why every block is stored twice; statefile.c opens it and writes it).
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
 * (zeroes past the last), u32 granule of the write-intent map; at
 * SCRUB_AT the scrub's checkpoint (below).  Blocks 1... hold the maps,
 * each map in blocks_per_map consecutive blocks of 32512 bits, bit g
 * of a map in byte g/8, bit g%8.
 *
 * The scrub checkpoint, at SCRUB_AT of block 0's payload:
 *   0  u32 record version: 0 none, 1 this layout
 *   4  u32 flags: bit 0 repair
 *   8  u64 offset, u64 length: the range
 *  24  u64 position: scrubbed up to here
 *  32  u64 each: mismatched, repaired, unreadable, no-quorum, skipped
 *      and unchecked bytes so far
 * It came after format version 1 without changing it: a file from
 * before has zeroes there (no checkpoint), and an older build loads a
 * file with one, ignores it, and keeps those bytes as they are
 * whenever it rewrites block 0 (it rewrites the payload whole).
 */

#include <config.h>

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nettle/sha2.h>

#include "statefile-block.h"

#define FORMAT_VERSION 1
#define INTENT_GRANULE_AT (16 + MAX_CHILDREN * SHA256_DIGEST_SIZE)
#define SCRUB_AT (INTENT_GRANULE_AT + 8)
#define SCRUB_VERSION 1
#define SCRUB_REPAIR 1

static const char magic[8] = "QUORUMST";

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

void
statefile_make_copy (struct statefile *st, size_t b, uint64_t gen,
                     unsigned char *copy)
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

bool
statefile_read_block (struct statefile *st, size_t b)
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

int
statefile_write_all (int fd, const void *buf, size_t len, off_t offset)
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

void
statefile_ident_make (struct statefile *st,
                      const struct statefile_identity *id)
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

int
statefile_ident_check (const struct statefile *st,
                       const struct statefile_identity *id,
                       uint32_t *renamed, char **why)
{
  const uint64_t size = get64 (st->ident);
  const uint32_t granule = get32 (st->ident + 8);
  const uint32_t nr = get32 (st->ident + 12);
  const uint32_t intent = get32 (st->ident + INTENT_GRANULE_AT);
  uint32_t i;

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

void
statefile_ident_rename (struct statefile *st, uint32_t child,
                        const char *name)
{
  name_hash (name, st->ident + 16 + child * SHA256_DIGEST_SIZE);
}

int
statefile_record_scrub_get (const struct statefile *st,
                            struct statefile_scrub *ck, const char **why)
{
  const unsigned char *p = st->ident + SCRUB_AT;
  const uint64_t size = get64 (st->ident);
  const uint32_t version = get32 (p);

  if (version == 0)
    return 0;
  if (version != SCRUB_VERSION) {
    *why = "written by a newer build (an unknown record version)";
    return -1;
  }
  *ck = (struct statefile_scrub) {
    .repair = get32 (p + 4) & SCRUB_REPAIR,
    .offset = get64 (p + 8), .length = get64 (p + 16),
    .pos = get64 (p + 24),
    .mismatched = get64 (p + 32), .repaired = get64 (p + 40),
    .unreadable = get64 (p + 48), .no_quorum = get64 (p + 56),
    .skipped = get64 (p + 64), .unchecked = get64 (p + 72),
  };
  if (ck->length == 0 || ck->offset >= size ||
      ck->length > size - ck->offset || ck->pos < ck->offset ||
      ck->pos >= ck->offset + ck->length) {
    *why = "its range or position is outside the export";
    return -1;
  }
  return 1;
}

void
statefile_record_scrub_put (struct statefile *st,
                            const struct statefile_scrub *ck)
{
  unsigned char *p = st->ident + SCRUB_AT;

  memset (p, 0, 80);
  if (ck == NULL)
    return;
  put32 (p, SCRUB_VERSION);
  put32 (p + 4, ck->repair ? SCRUB_REPAIR : 0);
  put64 (p + 8, ck->offset);
  put64 (p + 16, ck->length);
  put64 (p + 24, ck->pos);
  put64 (p + 32, ck->mismatched);
  put64 (p + 40, ck->repaired);
  put64 (p + 48, ck->unreadable);
  put64 (p + 56, ck->no_quorum);
  put64 (p + 64, ck->skipped);
  put64 (p + 72, ck->unchecked);
}
