/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Unit tests of the state file: bits survive a reopen, a torn copy
 * falls back to the other one, a file of another configuration or
 * anything but a regular file is refused, concurrent writers share
 * their syncs, and a scrub checkpoint survives a reopen, is absent
 * from an older file, and is ignored if it is outside the export or of
 * a newer record version.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <nettle/sha2.h>

#include "statefile.h"
#include "test-check.h"

static char dir[] = "/tmp/test-statefile.XXXXXX";
static char path[300];

static const char *const names3[] = { "plugin", "nbd://a/", "nbd://b/" };
static const struct statefile_identity id3 = {
  .size = 10 << 20, .granule = 65536, .nr_children = 3, .names = names3,
};

static struct statefile *
open_ok (const struct statefile_identity *id, uint32_t *renamed)
{
  char *why = NULL;
  uint32_t dummy;
  struct statefile *st = statefile_open (path, id, renamed ? renamed : &dummy,
                                         &why);

  if (st == NULL)
    fprintf (stderr, "statefile_open: %s\n", why ? why : "out of memory");
  free (why);
  return st;
}

/* Refused, with a message containing what. */
static void
check_refused (const struct statefile_identity *id, const char *what)
{
  char *why = NULL;
  uint32_t renamed;
  struct statefile *st = statefile_open (path, id, &renamed, &why);

  CHECK (st == NULL);
  CHECK (why != NULL && strstr (why, what) != NULL);
  if (why && strstr (why, what) == NULL)
    fprintf (stderr, "message: %s (expected %s)\n", why, what);
  statefile_close (st);
  free (why);
}

static void
test_create_and_reopen (void)
{
  struct statefile *st;
  uint32_t renamed = 99;
  struct stat sb;
  uint64_t t;

  unlink (path);
  st = open_ok (&id3, &renamed);
  CHECK (st != NULL);
  if (st == NULL)
    return;
  CHECK (renamed == 0);
  CHECK (stat (path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
  CHECK (statefile_bits (st, STATEFILE_MAP_STALE (0)) == 160);
  CHECK (statefile_bits (st, STATEFILE_MAP_INTENT) == 160);
  CHECK (statefile_count (st, STATEFILE_MAP_STALE (1)) == 0);

  t = statefile_set (st, STATEFILE_MAP_STALE (1), 3, 7, true);
  CHECK (t != 0);
  /* Already set but not durable yet: wait for the same change. */
  CHECK (statefile_set (st, STATEFILE_MAP_STALE (1), 4, 6, true) == t);
  CHECK (statefile_set (st, STATEFILE_MAP_INTENT, 159, 200, true) != 0);
  CHECK (statefile_sync (st, t) == 0);
  CHECK (statefile_syncs (st) == 1);
  /* Set and durable: nothing to wait for. */
  CHECK (statefile_set (st, STATEFILE_MAP_STALE (1), 4, 6, true) == 0);
  /* Durable already: no second sync. */
  CHECK (statefile_sync (st, t) == 0);
  CHECK (statefile_syncs (st) == 1);
  CHECK (statefile_sync_all (st) == 0);
  CHECK (statefile_syncs (st) == 1);
  /* A change not synced is lost at close. */
  statefile_set (st, STATEFILE_MAP_STALE (2), 0, 1, true);
  statefile_close (st);

  st = open_ok (&id3, &renamed);
  CHECK (st != NULL);
  if (st == NULL)
    return;
  CHECK (statefile_count (st, STATEFILE_MAP_STALE (1)) == 4);
  CHECK (statefile_test (st, STATEFILE_MAP_STALE (1), 3));
  CHECK (!statefile_test (st, STATEFILE_MAP_STALE (1), 7));
  CHECK (statefile_any (st, STATEFILE_MAP_STALE (1), 6, 100));
  CHECK (!statefile_any (st, STATEFILE_MAP_STALE (1), 7, 100));
  CHECK (statefile_next (st, STATEFILE_MAP_STALE (1), 0) == 3);
  CHECK (statefile_next (st, STATEFILE_MAP_STALE (1), 5) == 5);
  CHECK (statefile_next (st, STATEFILE_MAP_STALE (1), 7) == UINT64_MAX);
  CHECK (statefile_test (st, STATEFILE_MAP_INTENT, 159));
  CHECK (statefile_count (st, STATEFILE_MAP_INTENT) == 1);
  CHECK (statefile_count (st, STATEFILE_MAP_STALE (2)) == 0);
  CHECK (statefile_count (st, STATEFILE_MAP_STALE (0)) == 0);

  /* Clearing is durable too. */
  t = statefile_set (st, STATEFILE_MAP_STALE (1), 0, 160, false);
  CHECK (t != 0 && statefile_sync (st, t) == 0);
  statefile_close (st);
  st = open_ok (&id3, NULL);
  CHECK (st && statefile_count (st, STATEFILE_MAP_STALE (1)) == 0);
  statefile_close (st);
}

/* The write-intent map may have coarser granules than the stale maps,
 * and a file is refused for another one.
 */
static void
test_intent_granule (void)
{
  struct statefile_identity id = id3;
  struct statefile *st;

  unlink (path);
  id.intent_granule = 4 * id.granule;
  st = open_ok (&id, NULL);
  CHECK (st != NULL);
  if (st == NULL)
    return;
  CHECK (statefile_bits (st, STATEFILE_MAP_INTENT) == 40);
  CHECK (statefile_bits (st, STATEFILE_MAP_STALE (2)) == 160);
  CHECK (statefile_set (st, STATEFILE_MAP_INTENT, 39, 41, true) != 0);
  CHECK (statefile_sync_all (st) == 0);
  statefile_close (st);
  st = open_ok (&id, NULL);
  CHECK (st && statefile_test (st, STATEFILE_MAP_INTENT, 39));
  CHECK (st && statefile_count (st, STATEFILE_MAP_INTENT) == 1);
  statefile_close (st);
  check_refused (&id3, "state-granule=262144, but this quorum has 3 "
                 "children of 10485760 bytes with state-granule=65536");
  unlink (path);
}

static void
test_identity (void)
{
  const char *const other_names[] = { "plugin", "nbd://new/", "nbd://b/" };
  struct statefile_identity id = id3;
  struct statefile *st;
  uint32_t renamed;
  uint64_t t;

  id.size = 20 << 20;
  check_refused (&id, "written for 3 children of 10485760 bytes");
  id = id3;
  id.granule = 4096;
  check_refused (&id, "state-granule=65536, but this quorum has 3 children "
                 "of 10485760 bytes with state-granule=4096");
  id = id3;
  id.nr_children = 2;
  check_refused (&id, "but this quorum has 2 children");

  /* Another name at a position: a new disk there. */
  id = id3;
  id.names = other_names;
  st = open_ok (&id, &renamed);
  CHECK (st != NULL && renamed == 2);
  if (st) {
    t = statefile_rename (st, 1, other_names[1]);
    CHECK (t != 0 && statefile_sync (st, t) == 0);
    statefile_close (st);
  }
  st = open_ok (&id, &renamed);
  CHECK (st != NULL && renamed == 0);
  statefile_close (st);
  st = open_ok (&id3, &renamed);
  CHECK (st != NULL && renamed == 2);
  if (st) {
    t = statefile_rename (st, 1, names3[1]);
    CHECK (t != 0 && statefile_sync (st, t) == 0);
  }
  statefile_close (st);
}

/* Write garbage over copy c (0 or 1) of block b. */
static void
tear (size_t b, unsigned c)
{
  int fd = open (path, O_WRONLY);
  char junk[100];

  memset (junk, 0x5a, sizeof junk);
  CHECK (fd >= 0);
  CHECK (pwrite (fd, junk, sizeof junk, (2 * b + c) * 4096 + 1000) ==
         sizeof junk);
  close (fd);
}

static void
test_torn_copy (void)
{
  struct statefile *st;
  uint64_t t;

  unlink (path);
  st = open_ok (&id3, NULL);
  CHECK (st != NULL);
  if (st == NULL)
    return;
  /* Generation 2 of block 1 in copy 1: bits 0-9 of the intent map. */
  t = statefile_set (st, STATEFILE_MAP_INTENT, 0, 10, true);
  CHECK (statefile_sync (st, t) == 0);
  /* Generation 3 in copy 0: bits 0-19. */
  t = statefile_set (st, STATEFILE_MAP_INTENT, 10, 20, true);
  CHECK (statefile_sync (st, t) == 0);
  statefile_close (st);

  /* A crash in the middle of generation 3's write: generation 2. */
  tear (1, 0);
  st = open_ok (&id3, NULL);
  CHECK (st && statefile_count (st, STATEFILE_MAP_INTENT) == 10);
  if (st) {
    /* The next write goes over the torn copy, not over the good one. */
    t = statefile_set (st, STATEFILE_MAP_INTENT, 30, 31, true);
    CHECK (statefile_sync (st, t) == 0);
    statefile_close (st);
  }
  tear (1, 1);
  st = open_ok (&id3, NULL);
  CHECK (st && statefile_count (st, STATEFILE_MAP_INTENT) == 11);
  statefile_close (st);

  /* Both copies torn: refused, never taken as empty. */
  tear (1, 0);
  check_refused (&id3, "damaged: no valid copy of block 1");
  tear (0, 0);
  tear (0, 1);
  check_refused (&id3, "not a quorum state file");
}

static void
test_not_a_file (void)
{
  char target[300], fifo[300];
  int fd;

  /* A symlink where the file would be is never followed. */
  unlink (path);
  snprintf (target, sizeof target, "%s/target", dir);
  fd = open (target, O_WRONLY | O_CREAT, 0600);
  CHECK (fd >= 0);
  close (fd);
  CHECK (symlink (target, path) == 0);
  check_refused (&id3, "is a symbolic link");
  unlink (path);
  /* Nor a dangling one (it would create the file it names). */
  unlink (target);
  CHECK (symlink (target, path) == 0);
  check_refused (&id3, "is a symbolic link");
  CHECK (access (target, F_OK) == -1);
  unlink (path);

  /* A FIFO is refused at once, not waited on. */
  snprintf (fifo, sizeof fifo, "%s/fifo", dir);
  CHECK (mkfifo (fifo, 0600) == 0);
  snprintf (path, sizeof path, "%s", fifo);
  check_refused (&id3, "not a regular file");
  unlink (fifo);
  snprintf (path, sizeof path, "%s/state", dir);

  /* Some other file. */
  fd = open (path, O_WRONLY | O_CREAT, 0600);
  CHECK (fd >= 0 && write (fd, "hello", 5) == 5);
  close (fd);
  check_refused (&id3, "not a quorum state file");
  unlink (path);
}

static void
test_in_use (void)
{
  struct statefile *st;

  unlink (path);
  st = open_ok (&id3, NULL);
  CHECK (st != NULL);
  check_refused (&id3, "in use by another process");
  statefile_close (st);
  st = open_ok (&id3, NULL);
  CHECK (st != NULL);
  statefile_close (st);
}

/* Writers that need durability at the same time share syncs. */
#define THREADS 8
#define ROUNDS 200

static struct statefile *shared;

static void *
writer (void *vp)
{
  uintptr_t n = (uintptr_t) vp;
  unsigned i;

  for (i = 0; i < ROUNDS; ++i) {
    uint64_t g = n * ROUNDS + i;
    uint64_t t = statefile_set (shared, STATEFILE_MAP_STALE (0), g, g + 1,
                                true);

    CHECK (t != 0);
    CHECK (statefile_sync (shared, t) == 0);
  }
  return NULL;
}

static void
test_concurrent (void)
{
  static const char *const names[] = { "a", "b" };
  const struct statefile_identity id = {
    .size = (uint64_t) THREADS * ROUNDS * 4096, .granule = 4096,
    .nr_children = 2, .names = names,
  };
  pthread_t t[THREADS];
  uintptr_t i;

  unlink (path);
  shared = open_ok (&id, NULL);
  CHECK (shared != NULL);
  if (shared == NULL)
    return;
  for (i = 0; i < THREADS; ++i)
    pthread_create (&t[i], NULL, writer, (void *) i);
  for (i = 0; i < THREADS; ++i)
    pthread_join (t[i], NULL);
  CHECK (statefile_count (shared, STATEFILE_MAP_STALE (0)) ==
         THREADS * ROUNDS);
  CHECK (statefile_syncs (shared) <= THREADS * ROUNDS);
  printf ("concurrent: %d durable changes, %llu syncs\n", THREADS * ROUNDS,
          (unsigned long long) statefile_syncs (shared));
  statefile_close (shared);
  shared = open_ok (&id, NULL);
  CHECK (shared &&
         statefile_count (shared, STATEFILE_MAP_STALE (0)) ==
         THREADS * ROUNDS);
  statefile_close (shared);
}

/* A large export spans several blocks per map. */
static void
test_large (void)
{
  static const char *const names[] = { "a", "b", "c" };
  const struct statefile_identity id = {
    .size = UINT64_C (1) << 40, .granule = 1 << 20, .nr_children = 3,
    .names = names,
  };
  struct statefile *st;
  uint64_t t, last;

  unlink (path);
  st = open_ok (&id, NULL);
  CHECK (st != NULL);
  if (st == NULL)
    return;
  last = statefile_bits (st, STATEFILE_MAP_STALE (2)) - 1;
  CHECK (last == (1 << 20) - 1);
  t = statefile_set (st, STATEFILE_MAP_STALE (2), last, last + 1, true);
  statefile_set (st, STATEFILE_MAP_STALE (2), 40000, 40001, true);
  CHECK (statefile_sync (st, t) == 0);
  statefile_close (st);
  st = open_ok (&id, NULL);
  CHECK (st && statefile_count (st, STATEFILE_MAP_STALE (2)) == 2);
  CHECK (st && statefile_next (st, STATEFILE_MAP_STALE (2), 40001) == last);
  CHECK (st && statefile_count (st, STATEFILE_MAP_STALE (1)) == 0);
  statefile_close (st);
  unlink (path);
}

/* Overwrite the u32 at byte at of block 0's payload in both copies,
 * with their checksums made right again: a file as another build
 * could have written it.
 */
static void
poke_block0 (size_t at, uint32_t v)
{
  int fd = open (path, O_RDWR);
  unsigned char copy[4096], digest[SHA256_DIGEST_SIZE];
  struct sha256_ctx ctx;
  unsigned i;

  CHECK (fd >= 0);
  for (i = 0; i < 2; ++i) {
    CHECK (pread (fd, copy, 4096, i * 4096) == 4096);
    copy[32 + at] = v;
    copy[32 + at + 1] = v >> 8;
    copy[32 + at + 2] = v >> 16;
    copy[32 + at + 3] = v >> 24;
    sha256_init (&ctx);
    sha256_update (&ctx, 24, copy);
    sha256_update (&ctx, 4096 - 32, copy + 32);
    sha256_digest (&ctx, SHA256_DIGEST_SIZE, digest);
    memcpy (copy + 24, digest, 8);      /* little-endian on disk */
    CHECK (pwrite (fd, copy, 4096, i * 4096) == 4096);
  }
  close (fd);
}

#define SCRUB_AT 1048           /* the checkpoint in block 0's payload */

static void
test_scrub_checkpoint (void)
{
  const struct statefile_scrub ck = {
    .offset = 1 << 20, .length = 8 << 20, .pos = 3 << 20, .repair = true,
    .mismatched = 4096, .repaired = 8192, .unreadable = 512,
    .no_quorum = 1024, .skipped = 65536, .unchecked = 1 << 20,
  };
  struct statefile_scrub got, bad;
  struct statefile *st;
  const char *why = NULL;
  uint64_t t;

  /* A new file, as a file of a build before checkpoints: none. */
  unlink (path);
  st = open_ok (&id3, NULL);
  CHECK (st != NULL);
  if (st == NULL)
    return;
  CHECK (statefile_scrub_get (st, &got, &why) == 0);
  t = statefile_scrub_set (st, &ck);
  CHECK (t != 0 && statefile_sync (st, t) == 0);
  t = statefile_set (st, STATEFILE_MAP_STALE (2), 5, 6, true);
  CHECK (t != 0 && statefile_sync (st, t) == 0);
  statefile_close (st);

  /* Back after a reopen, whole; and kept when block 0 changes. */
  st = open_ok (&id3, NULL);
  CHECK (st != NULL);
  if (st == NULL)
    return;
  memset (&got, 0, sizeof got);
  CHECK (statefile_scrub_get (st, &got, &why) == 1);
  CHECK (got.offset == ck.offset && got.length == ck.length &&
         got.pos == ck.pos && got.repair);
  CHECK (got.mismatched == 4096 && got.repaired == 8192 &&
         got.unreadable == 512 && got.no_quorum == 1024 &&
         got.skipped == 65536 && got.unchecked == 1 << 20);
  CHECK (statefile_test (st, STATEFILE_MAP_STALE (2), 5));
  t = statefile_rename (st, 1, "nbd://other/");
  CHECK (t != 0 && statefile_sync (st, t) == 0);
  statefile_close (st);
  st = open_ok (&id3, NULL);
  CHECK (st && statefile_scrub_get (st, &got, &why) == 1 &&
         got.pos == ck.pos);

  /* Outside the export, or a position outside its range: ignored. */
  if (st) {
    bad = ck;
    bad.offset = 9 << 20;
    bad.pos = 9 << 20;
    t = statefile_scrub_set (st, &bad);
    CHECK (t != 0 && statefile_sync (st, t) == 0);
    statefile_close (st);
  }
  st = open_ok (&id3, NULL);
  why = NULL;
  CHECK (st && statefile_scrub_get (st, &got, &why) == -1);
  CHECK (why && strstr (why, "outside the export"));
  if (st) {
    bad = ck;
    bad.pos = bad.offset + bad.length;
    statefile_sync (st, statefile_scrub_set (st, &bad));
    CHECK (statefile_scrub_get (st, &got, &why) == -1);

    /* Cleared: none. */
    t = statefile_scrub_set (st, &ck);
    CHECK (statefile_sync (st, t) == 0);
    t = statefile_scrub_set (st, NULL);
    CHECK (t != 0 && statefile_sync (st, t) == 0);
    statefile_close (st);
  }
  st = open_ok (&id3, NULL);
  CHECK (st && statefile_scrub_get (st, &got, &why) == 0);
  if (st) {
    statefile_sync (st, statefile_scrub_set (st, &ck));
    statefile_close (st);
  }

  /* A newer build's record: the file loads, the record is ignored. */
  poke_block0 (SCRUB_AT, 2);
  st = open_ok (&id3, NULL);
  why = NULL;
  CHECK (st && statefile_scrub_get (st, &got, &why) == -1);
  CHECK (why && strstr (why, "newer build"));
  CHECK (st && statefile_test (st, STATEFILE_MAP_STALE (2), 5));
  statefile_close (st);
  unlink (path);
}

int
main (void)
{
  if (mkdtemp (dir) == NULL) {
    perror ("mkdtemp");
    return 1;
  }
  snprintf (path, sizeof path, "%s/state", dir);

  test_create_and_reopen ();
  test_identity ();
  test_torn_copy ();
  test_not_a_file ();
  test_in_use ();
  test_concurrent ();
  test_large ();
  test_intent_granule ();
  test_scrub_checkpoint ();

  unlink (path);
  rmdir (dir);
  if (failures) {
    fprintf (stderr, "test-statefile: %u checks failed\n", failures);
    return 1;
  }
  printf ("test-statefile: all checks passed\n");
  return 0;
}
