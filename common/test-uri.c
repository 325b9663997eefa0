/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Unit tests of child names: no secret may survive uri_redact or
 * child_redact, and uri_disk tells the same disk however its URI is
 * spelled.
 */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static unsigned failures;

static void
check (const char *uri, const char *expected)
{
  char *r = uri_redact (uri);

  if (r == NULL || strcmp (r, expected) != 0) {
    fprintf (stderr, "uri_redact (\"%s\"):\n  expected \"%s\"\n  got      \"%s\"\n",
             uri, expected, r ? r : "(null)");
    failures++;
  }
  free (r);
}

/* child_redact (a child of uri, msg) must give expected. */
static void
check_msg (const char *uri, const char *msg, const char *expected)
{
  struct child c = { .uri = (char *) uri };
  char *r;

  c.name = uri_redact (uri);
  r = child_redact (&c, msg);
  if (r == NULL || strcmp (r, expected) != 0) {
    fprintf (stderr, "child_redact (\"%s\", \"%s\"):\n  expected \"%s\"\n"
             "  got      \"%s\"\n", uri, msg, expected, r ? r : "(null)");
    failures++;
  }
  free (r);
  free (c.name);
}

/* Whether uri_disk says a and b are the same disk. */
static void
check_disk (const char *a, const char *b, bool same)
{
  char *da = uri_disk (a), *db = uri_disk (b);

  if (da == NULL || db == NULL || (strcmp (da, db) == 0) != same) {
    fprintf (stderr, "uri_disk: \"%s\" and \"%s\" should be %s:\n"
             "  \"%s\"\n  \"%s\"\n", a, b, same ? "the same" : "different",
             da ? da : "(null)", db ? db : "(null)");
    failures++;
  }
  free (da);
  free (db);
}

int
main (void)
{
  char cwd[4096], a[5000], b[5000];

  check ("nbd+unix:///?socket=/tmp/a.sock", "nbd+unix:///?socket=/tmp/a.sock");
  check ("nbd://example.com:10809/disk", "nbd://example.com:10809/disk");
  check ("nbds://alice:hunter2@host/exp?tls-psk-file=/etc/keys.psk",
         "nbds://alice:***@host/exp?tls-psk-file=***");
  check ("nbds+unix://alice@/?socket=/s&tls-psk-file=/k.psk&tls-verify-peer=false",
         "nbds+unix://alice@/?socket=/s&tls-psk-file=***&tls-verify-peer=false");
  check ("nbd://host/?secret-token=abc", "nbd://host/?secret-token=***");
  check ("nbd+unix:///?socket=/tmp/a b\"c", "nbd+unix:///?socket=/tmp/a%20b%22c");
  check ("nbd+vsock://2:10809/", "nbd+vsock://2:10809/");
  check ("nbd://h/x#frag", "nbd://h/x");
  /* The user information ends at the last '@' of the authority. */
  check ("nbd://alice:pa@ss@host/", "nbd://alice:***@host/");
  check ("nbd://alice:p@a:s@s@host:10809/e", "nbd://alice:***@host:10809/e");
  check ("nbd://:secret@host/", "nbd://:***@host/");
  check ("nbd://alice:pw@host/x@y", "nbd://alice:***@host/x@y");
  check ("nbd://alice:pw@host?x=a@b", "nbd://alice:***@host?x=***");
  /* Key paths are secrets, certificates directory included. */
  check ("nbds://h/?tls-certificates=/etc/pki/mine",
         "nbds://h/?tls-certificates=***");
  check ("nbds://h/?tls-psk-file=", "nbds://h/?tls-psk-file=***");

  /* Messages: the raw URI becomes the name, every secret ***, also as
   * libnbd decodes it.
   */
  check_msg ("nbd://alice:hunter2@127.0.0.1:notaport/",
             "nbd_aio_connect_uri: unable to parse URI: "
             "nbd://alice:hunter2@127.0.0.1:notaport/: Invalid argument",
             "nbd_aio_connect_uri: unable to parse URI: "
             "nbd://alice:***@127.0.0.1:notaport/: Invalid argument");
  check_msg ("nbds://alice:hunter2@h/?tls-psk-file=/k/my%20keys.psk",
             "/k/my keys.psk: username alice:hunter2 was not found in PSK "
             "file", "***: username alice:*** was not found in PSK file");
  check_msg ("nbds://alice:pa@ss@h/", "user alice:pa@ss, pa@ss again",
             "user alice:***, *** again");
  check_msg ("nbd+unix:///?socket=/tmp/a.sock", "connect: /tmp/a.sock: "
             "No such file", "connect: /tmp/a.sock: No such file");
  check_msg ("nbd://h/?x=abc&y=abcdef", "abcdefabc!", "***!");
  {
    struct child c = { .command = (char *) "qemu-nbd x", .name = (char *) "command:qemu-nbd%20x" };
    char *r = child_redact (&c, "qemu-nbd x: failed");

    if (r == NULL || strcmp (r, "qemu-nbd x: failed") != 0) {
      fprintf (stderr, "child_redact of a command: got \"%s\"\n", r);
      failures++;
    }
    free (r);
  }

  /* The same disk, however spelled. */
  check_disk ("nbd://h/x", "nbd://H:10809/x", true);
  check_disk ("nbd://h/x", "nbds://alice:pw@h/x?tls-psk-file=/k", true);
  check_disk ("nbd://h/x", "nbd://h/y", false);
  check_disk ("nbd://h", "nbd://h/", true);
  check_disk ("nbd://h/a%20b", "nbd://h/a b", true);
  check_disk ("nbd://h:1/x", "nbd://h:2/x", false);
  check_disk ("nbd://h/x", "nbd+unix:///x?socket=h", false);
  check_disk ("nbd+unix:///?socket=/tmp/s&tls-verify-peer=false",
              "nbds+unix://bob@/?tls-verify-peer=false&socket=/tmp/s", true);
  check_disk ("nbd+unix:///a?socket=/tmp/s", "nbd+unix:///b?socket=/tmp/s",
              false);
  check_disk ("nbd+unix:///?socket=/tmp/s", "nbd+unix:///?socket=/tmp/t",
              false);
  check_disk ("nbd+vsock://2/", "nbd+vsock://2:10809", true);
  check_disk ("not-a-uri", "not-a-uri", true);
  check_disk ("not-a-uri", "not-another", false);
  /* An existing socket's path is resolved: here, "." and a directory. */
  if (getcwd (cwd, sizeof cwd) == NULL) {
    perror ("getcwd");
    exit (EXIT_FAILURE);
  }
  snprintf (a, sizeof a, "nbd+unix:///?socket=%s", cwd);
  snprintf (b, sizeof b, "nbd+unix:///?socket=%s/./", cwd);
  check_disk (a, b, true);
  check_disk (a, "nbd+unix:///?socket=.", true);

  if (failures) {
    fprintf (stderr, "test-uri: %u checks failed\n", failures);
    exit (EXIT_FAILURE);
  }
  printf ("test-uri: all checks passed\n");
  exit (EXIT_SUCCESS);
}
