/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* What .config (config.c) leaves for .config_complete
 * (config-complete.c); included by those two files only.
 */

#ifndef QUORUM_CONFIG_SPEC_H
#define QUORUM_CONFIG_SPEC_H

#include <stdbool.h>

#include "vector.h"

/* A child= or child-command= value, as given. */
struct config_child_spec {
  char *value;
  bool command;                 /* child-command= */
};
DEFINE_VECTOR_TYPE (config_spec_vector, struct config_child_spec)

/* The children in parameter order, until .config_complete builds
 * children[] from them (and empties this) or .unload frees them.
 */
extern struct config_spec_vector config_child_specs;
/* vote-threshold= was given: else a strict majority. */
extern bool config_threshold_set;
/* state-granule= was given, which needs state=. */
extern bool config_state_granule_set;

#endif /* QUORUM_CONFIG_SPEC_H */
