/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* .config_complete: the parameters checked together, children[] built
 * from the child specs, a disk given twice refused.
 */

#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "config-spec.h"
#include "internal.h"

/* What identifies a child's disk, for config_refuse_duplicates:
 * "command " and the command less surrounding blanks, or uri_disk's
 * key.
 */
static char *
config_child_disk (const struct child *c)
{
  char *ret;

  if (c->command) {
    const char *s = c->command + strspn (c->command, " \t\n");
    size_t len = strlen (s);

    while (len > 0 && strchr (" \t\n", s[len - 1]))
      len--;
    if (asprintf (&ret, "command %.*s", (int) len, s) == -1)
      return NULL;
    return ret;
  }
  return uri_disk (c->uri);
}

/* A disk given twice would vote twice: with three children, one disk
 * given twice would outvote the third alone.
 */
static int
config_refuse_duplicates (void)
{
  char *disk[VOTE_MAX_CHILDREN] = { NULL };
  size_t i, j, n = quorum_nr_children;
  int r = 0;

  for (i = 0; i < n && r == 0; ++i) {
    const struct child *c = &quorum_children[i];

    if (child_is_local (c))
      continue;
    disk[i] = config_child_disk (c);
    if (disk[i] == NULL) {
      nbdkit_error ("malloc: %m");
      r = -1;
      break;
    }
    for (j = 0; j < i; ++j) {
      if (disk[j] && strcmp (disk[i], disk[j]) == 0) {
        nbdkit_error ("%s=: child %zu (%s) is the same disk as child %zu "
                      "(%s): each disk may vote only once; remove one "
                      "of them, or give another disk",
                      c->command ? "child-command" : "child", i, c->name,
                      j, quorum_children[j].name);
        r = -1;
        break;
      }
    }
  }
  for (i = 0; i < n; ++i)
    free (disk[i]);
  return r;
}

/* The number of children n (has_local: counting the plugin) and the
 * settings together, vote-threshold's default made; -1 with a message
 * naming the parameter and the fix.
 */
static int
config_check (bool has_local, size_t n)
{
  if (config_child_specs.len == 0) {
    if (has_local)
      nbdkit_error ("child=: no children besides the plugin; add at least "
                    "one child=URI or child-command=COMMAND (a quorum of "
                    "one is not a quorum)");
    else
      nbdkit_error ("child=: no children; give child=URI (or "
                    "child-command=COMMAND) once for each NBD server, at "
                    "least two");
    return -1;
  }

  if (n > VOTE_MAX_CHILDREN) {
    nbdkit_error ("child=: too many children: %zu, at most %d counting "
                  "the plugin", n, VOTE_MAX_CHILDREN);
    return -1;
  }

  if (!config_threshold_set)
    quorum_threshold = n / 2 + 1;
  if (quorum_threshold < 1 || quorum_threshold > n) {
    nbdkit_error ("vote-threshold=%u: must be between 1 and the number "
                  "of children (%zu)", quorum_threshold, n);
    return -1;
  }

  if (config_state_granule_set && quorum_state_file == NULL) {
    nbdkit_error ("state-granule=%" PRIu32 ": has no meaning without "
                  "state=FILE: give state= too, or drop state-granule=",
                  quorum_state_granule);
    return -1;
  }

  if (quorum_reconnect_max < quorum_reconnect_delay) {
    nbdkit_error ("reconnect-delay=%u, reconnect-max-delay=%u: need "
                  "1 <= reconnect-delay <= reconnect-max-delay",
                  quorum_reconnect_delay, quorum_reconnect_max);
    return -1;
  }

  if (quorum_blkverify) {
    if (n != 2 || quorum_threshold != 2) {
      nbdkit_error ("blkverify=true: needs exactly 2 children and "
                    "vote-threshold=2 (have %zu children, threshold %u)",
                    n, quorum_threshold);
      return -1;
    }
    if (quorum_rewrite_corrupted) {
      nbdkit_error ("rewrite-corrupted=true: cannot be used with "
                    "blkverify=true, which stops at the first mismatch");
      return -1;
    }
  }
  if (quorum_rewrite_corrupted &&
      quorum_read_pattern == READ_PATTERN_FIFO) {
    nbdkit_error ("rewrite-corrupted=true: needs read-pattern=quorum; "
                  "read-pattern=fifo reads one child and has nothing to "
                  "compare");
    return -1;
  }
  if (quorum_blkverify && quorum_read_pattern == READ_PATTERN_FIFO) {
    nbdkit_error ("blkverify=true: needs read-pattern=quorum");
    return -1;
  }
  return 0;
}

/* children[] from the child specs, and the spare (internal.h). */
static int
config_build_children (bool has_local, size_t n)
{
  size_t i;

  quorum_children = calloc (n + 1, sizeof *quorum_children);
  if (quorum_children == NULL) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  quorum_nr_children = n;
  for (i = 0; i < n; ++i) {
    struct child *c = &quorum_children[i];

    c->index = i;
    if (has_local && i == 0) {
      c->name = strdup ("plugin");
    }
    else {
      struct config_child_spec *spec =
        &config_child_specs.ptr[i - (has_local ? 1 : 0)];

      /* The string moves to children[]: .unload frees it there only. */
      if (spec->command) {
        c->command = spec->value;
        c->name = uri_command_name (c->command);
      }
      else {
        c->uri = spec->value;
        c->name = uri_redact (c->uri);
      }
      spec->value = NULL;
    }
    if (c->name == NULL) {
      nbdkit_error ("strdup: %m");
      return -1;
    }
  }
  /* The strings now belong to children[]. */
  config_spec_vector_free (&config_child_specs);
  return 0;
}

int
quorum_config_complete (bool has_local)
{
  size_t i, n;

  quorum_has_local = has_local;
  n = config_child_specs.len + (has_local ? 1 : 0);
  if (config_check (has_local, n) == -1 ||
      config_build_children (has_local, n) == -1)
    return -1;

  if (config_refuse_duplicates () == -1)
    return -1;

  /* A child command runs where nbdkit was started, also when it is
   * restarted after nbdkit has changed directory.
   */
  for (i = 0; i < n; ++i) {
    if (quorum_children[i].command && quorum_workdir == NULL) {
      quorum_workdir = getcwd (NULL, 0);
      if (quorum_workdir == NULL) {
        nbdkit_error ("child-command: getcwd: %m");
        return -1;
      }
    }
  }

  nbdkit_debug ("quorum: %zu children, vote-threshold=%u, "
                "read-pattern=%s, wait-for=%s%s%s",
                n, quorum_threshold,
                quorum_read_pattern == READ_PATTERN_FIFO ? "fifo" : "quorum",
                quorum_wait_threshold ? "threshold" : "all",
                quorum_blkverify ? ", blkverify" : "",
                quorum_rewrite_corrupted ? ", rewrite-corrupted" : "");
  return 0;
}
