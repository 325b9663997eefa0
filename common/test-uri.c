/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Unit tests of child names: no secret may survive uri_redact. */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int
main (void)
{
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

  if (failures) {
    fprintf (stderr, "test-uri: %u checks failed\n", failures);
    exit (EXIT_FAILURE);
  }
  printf ("test-uri: all checks passed\n");
  exit (EXIT_SUCCESS);
}
