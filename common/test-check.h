/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* CHECK for the unit tests: a failed check is printed and counted, and
 * the test goes on, so one run lists every failure.
 */

#ifndef QUORUM_TEST_CHECK_H
#define QUORUM_TEST_CHECK_H

#include <stdio.h>

static unsigned failures;

#define CHECK(expr)                                                     \
  do {                                                                  \
    if (!(expr)) {                                                      \
      fprintf (stderr, "%s:%d: check failed: %s\n",                     \
               __FILE__, __LINE__, #expr);                              \
      failures++;                                                       \
    }                                                                   \
  } while (0)

#endif /* QUORUM_TEST_CHECK_H */
