/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

#include <config.h>

#include <stdint.h>
#include <stdio.h>

#include "internal.h"
#include "replace.h"

int
replace_start (size_t n, const char *uri, char *err, size_t errlen)
{
  snprintf (err, errlen, "replace: not yet");
  return -1;
}

size_t
replace_target (void)
{
  return SIZE_MAX;
}

const char *
replace_name (void)
{
  return "";
}

void
replace_rebuilt (struct child *spare)
{
}

bool
replace_swap_if_ready (struct child *c)
{
  return false;
}

void
replace_stop (void)
{
}
