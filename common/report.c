/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Reports: one line per event.  "bad" is a child that failed or was
 * outvoted, "failure" a request the quorum could not satisfy, "repair"
 * a child rewritten with the winning version; down, up, resync-start,
 * resync-progress (every tenth) and resync-end follow a child's life;
 * scrub-start and scrub-end a scrub (scrub.c); "summary" closes the
 * run with a line per child.  This file says what each event holds;
 * report-sink.c writes it where it goes.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <nbdkit-filter.h>

#include "internal.h"
#include "report.h"

static const struct report_listener *report_current_listener;

void
report_listen (const struct report_listener *l)
{
  __atomic_store_n (&report_current_listener, l, __ATOMIC_RELEASE);
}

static const struct report_listener *
report_listener (void)
{
  return __atomic_load_n (&report_current_listener, __ATOMIC_ACQUIRE);
}

static const char *const report_op_names[] = {
  [OP_READ] = "read", [OP_WRITE] = "write", [OP_ZERO] = "zero",
  [OP_TRIM] = "trim", [OP_FLUSH] = "flush", [OP_CACHE] = "cache",
  [OP_EXTENTS] = "extents",
};

const char *
report_op_name (enum op_type type)
{
  return report_op_names[type];
}

static const char *
report_errno_name (int err, char *buf, size_t len)
{
  const char *s = strerrorname_np (err);

  if (s)
    return s;
  snprintf (buf, len, "errno%d", err);
  return buf;
}

/* The fields events are made of. */
#define STR(k, v) { .key = (k), .kind = F_STR, .s = (v) }
#define HEX(k, v) { .key = (k), .kind = F_HEX, .u = (v) }
#define UINT(k, v) { .key = (k), .kind = F_UINT, .u = (v) }
#define NAME(c) \
  { .key = "name", .json_key = "child_name", .kind = F_STR, \
    .s = quorum_children[c].name, .shorten = true }

void
report_bad (enum op_type type, size_t child, uint64_t offset,
            uint64_t length, int err)
{
  char buf[32];
  struct report_field f[] = {
    STR ("event", "bad"), STR ("type", report_op_name (type)),
    UINT ("child", child), NAME (child),
    HEX ("offset", offset), HEX ("length", length),
    err ? (struct report_field) STR ("error",
                                     report_errno_name (err, buf, sizeof buf))
    : (struct report_field) { .key = "error=mismatch",
                              .json_key = "mismatch", .kind = F_BOOL },
  };

  if (err == 0)
    STAT_ADD (&quorum_children[child], bad_reads, 1);
  else if (err == ETIMEDOUT)
    STAT_ADD (&quorum_children[child], timeouts, 1);
  else
    STAT_ADD (&quorum_children[child], errors, 1);
  if (report_listener ())
    report_listener ()->bad (child, type, offset, length, err);

  report_emit (LOG_WARNING, f, sizeof f / sizeof f[0]);
}

/* The children on each side: "0,2/1" and [[0,2],[1]]. */
static void
report_format_versions (const size_t *version, size_t nr, char *kv,
                        size_t klen, char *json, size_t jlen)
{
  size_t i, j, k = 0, js = 0;

  js += snprintf (json + js, jlen - js, "[");
  kv[0] = '\0';
  for (i = 0; i < nr; ++i) {
    if (version[i] != i)
      continue;
    k += snprintf (kv + k, klen - k, "%s", k ? "/" : "");
    js += snprintf (json + js, jlen - js, "%s[", js > 1 ? "," : "");
    for (j = i; j < nr; ++j) {
      if (version[j] != i)
        continue;
      k += snprintf (kv + k, klen - k, "%s%zu", j > i ? "," : "", j);
      js += snprintf (json + js, jlen - js, "%s%zu", j > i ? "," : "", j);
    }
    js += snprintf (json + js, jlen - js, "]");
  }
  snprintf (json + js, jlen - js, "]");
}

void
report_failure_votes (enum op_type type, uint64_t offset, uint64_t length,
                      size_t votes, const size_t *version, size_t nr)
{
  /* Each child index takes at most 3 bytes with its separator. */
  char kv[VOTE_MAX_CHILDREN * 3 + 8], json[VOTE_MAX_CHILDREN * 6 + 8];
  struct report_field f[] = {
    STR ("event", "failure"), STR ("type", report_op_name (type)),
    HEX ("offset", offset), HEX ("length", length),
    STR ("reason", "no-quorum"), UINT ("votes", votes),
    UINT ("threshold", quorum_threshold),
    { .key = "versions", .kind = F_LIST, .s = kv, .json = json },
  };

  report_format_versions (version, nr, kv, sizeof kv, json, sizeof json);
  report_emit (LOG_ERR, f, sizeof f / sizeof f[0]);
}

void
report_failure_errors (enum op_type type, uint64_t offset, uint64_t length,
                       int err, size_t successes)
{
  char buf[32];
  struct report_field f[] = {
    STR ("event", "failure"), STR ("type", report_op_name (type)),
    HEX ("offset", offset), HEX ("length", length),
    STR ("reason", "errors"),
    STR ("error", report_errno_name (err, buf, sizeof buf)),
    UINT ("successes", successes), UINT ("threshold", quorum_threshold),
  };

  report_emit (LOG_ERR, f, sizeof f / sizeof f[0]);
}

void
report_failure_blkverify (uint64_t offset, uint64_t length,
                          uint64_t first_difference)
{
  struct report_field f[] = {
    STR ("event", "failure"), STR ("type", "read"),
    HEX ("offset", offset), HEX ("length", length),
    STR ("reason", "blkverify"),
    { .key = "first-difference", .json_key = "first_difference",
      .kind = F_HEX, .u = first_difference },
  };

  report_emit (LOG_ERR, f, sizeof f / sizeof f[0]);
}

void
report_repair (size_t child, uint64_t offset, uint64_t length)
{
  struct report_field f[] = {
    STR ("event", "repair"), UINT ("child", child), NAME (child),
    HEX ("offset", offset), HEX ("length", length),
  };

  STAT_ADD (&quorum_children[child], bytes_repaired, length);
  report_emit (LOG_NOTICE, f, sizeof f / sizeof f[0]);
}

void
report_down (size_t child, const char *reason)
{
  struct report_field f[] = {
    STR ("event", "down"), UINT ("child", child), NAME (child),
    STR ("reason", reason),
  };

  if (report_listener ())
    report_listener ()->down (child, reason);
  report_emit (LOG_WARNING, f, sizeof f / sizeof f[0]);
}

void
report_admin (const char *event, size_t child)
{
  struct report_field f[] = {
    STR ("event", event), UINT ("child", child), NAME (child),
  };

  report_emit (LOG_NOTICE, f, sizeof f / sizeof f[0]);
}

void
report_replace (const char *event, size_t child, const char *other)
{
  const bool start = strcmp (event, "replace-end") != 0;
  struct report_field f[] = {
    STR ("event", event), UINT ("child", child), NAME (child),
    STR (start ? "new" : "old", other),
  };

  report_emit (LOG_NOTICE, f, sizeof f / sizeof f[0]);
}

void
report_resync_end (size_t child, uint64_t dirty, uint64_t copied,
                   uint64_t zeroed)
{
  struct report_field f[] = {
    STR ("event", "resync-end"), UINT ("child", child), NAME (child),
    HEX ("zeroed", zeroed), HEX ("dirty", dirty), HEX ("copied", copied),
  };

  /* zeroed only if some was: dirty and copied stay last. */
  if (zeroed == 0) {
    f[3] = f[4];
    f[4] = f[5];
  }
  report_emit (LOG_NOTICE, f, zeroed ? 6 : 5);
}

void
report_up (size_t child)
{
  struct report_field f[] = {
    STR ("event", "up"), UINT ("child", child), NAME (child),
  };

  report_emit (LOG_NOTICE, f, sizeof f / sizeof f[0]);
}

void
report_resync (const char *event, size_t child, uint64_t dirty,
               uint64_t copied)
{
  struct report_field f[] = {
    STR ("event", event), UINT ("child", child), NAME (child),
    HEX ("dirty", dirty), HEX ("copied", copied),
  };

  /* resync-start says how much is dirty; resync-end adds what moved. */
  report_emit (LOG_NOTICE, f, strcmp (event, "resync-start") == 0 ? 4 : 5);
}

void
report_scrub_start (uint64_t offset, uint64_t length, bool repair,
                    uint64_t rate)
{
  struct report_field f[] = {
    STR ("event", "scrub-start"), HEX ("offset", offset),
    HEX ("length", length), STR ("mode", repair ? "repair" : "check"),
    UINT ("rate", rate),
  };

  report_emit (LOG_NOTICE, f, sizeof f / sizeof f[0]);
}

void
report_scrub_resume (uint64_t offset, uint64_t length, uint64_t from,
                     bool repair, uint64_t rate)
{
  struct report_field f[] = {
    STR ("event", "scrub-resume"), HEX ("offset", offset),
    HEX ("length", length), HEX ("from", from),
    STR ("mode", repair ? "repair" : "check"), UINT ("rate", rate),
  };

  report_emit (LOG_NOTICE, f, sizeof f / sizeof f[0]);
}

void
report_scrub_end (uint64_t offset, uint64_t length, bool stopped,
                  uint64_t done, uint64_t mismatched, uint64_t repaired,
                  uint64_t unreadable, uint64_t no_quorum, uint64_t skipped,
                  uint64_t unchecked)
{
  struct report_field f[] = {
    STR ("event", "scrub-end"), HEX ("offset", offset),
    HEX ("length", length), STR ("result", stopped ? "stopped" : "done"),
    HEX ("done", done), HEX ("mismatched", mismatched),
    HEX ("repaired", repaired), HEX ("unreadable", unreadable),
    { .key = "no-quorum", .json_key = "no_quorum", .kind = F_HEX,
      .u = no_quorum },
    HEX ("skipped", skipped), HEX ("unchecked", unchecked),
  };
  /* Findings are a warning; a clean scrub is a notice. */
  int priority = mismatched || unreadable || no_quorum ?
    LOG_WARNING : LOG_NOTICE;

  report_emit (priority, f, sizeof f / sizeof f[0]);
}

/* A resync that did not get to the end: its child went down, a write
 * to it failed, or nbdkit is quitting.  What it copied stays copied.
 */
void
report_resync_stopped (size_t child, uint64_t dirty, uint64_t copied,
                       const char *reason)
{
  struct report_field f[] = {
    STR ("event", "resync-stopped"), UINT ("child", child), NAME (child),
    HEX ("dirty", dirty), HEX ("copied", copied), STR ("reason", reason),
  };

  report_emit (LOG_WARNING, f, sizeof f / sizeof f[0]);
}

void
report_resync_progress (size_t child, unsigned percent, uint64_t dirty,
                        uint64_t copied)
{
  struct report_field f[] = {
    STR ("event", "resync-progress"), UINT ("child", child), NAME (child),
    UINT ("percent", percent), HEX ("dirty", dirty), HEX ("copied", copied),
  };

  report_emit (LOG_NOTICE, f, sizeof f / sizeof f[0]);
}

void
report_stale (size_t child, uint64_t offset, uint64_t length,
              const char *reason)
{
  struct report_field f[] = {
    STR ("event", "stale"), UINT ("child", child), NAME (child),
    HEX ("offset", offset), HEX ("length", length), STR ("reason", reason),
  };

  report_emit (LOG_WARNING, f, sizeof f / sizeof f[0]);
}

void
report_settle (uint64_t offset, uint64_t length, size_t winner,
               size_t votes, uint64_t rewritten)
{
  struct report_field f[] = {
    STR ("event", "settle"), HEX ("offset", offset), HEX ("length", length),
    UINT ("winner", winner), UINT ("votes", votes),
    HEX ("rewritten", rewritten),
  };

  report_emit (votes < quorum_threshold ? LOG_WARNING : LOG_NOTICE,
               f, sizeof f / sizeof f[0]);
}

void
report_summary (void)
{
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    const struct child_stats *s = &quorum_children[i].stats;
    struct report_field f[] = {
      STR ("event", "summary"), UINT ("child", i), NAME (i),
      UINT ("reads", s->reads), UINT ("writes", s->writes),
      { .key = "bad-reads", .json_key = "bad_reads", .kind = F_UINT,
        .u = s->bad_reads },
      UINT ("errors", s->errors), UINT ("timeouts", s->timeouts),
      { .key = "bytes-repaired", .json_key = "bytes_repaired",
        .kind = F_UINT, .u = s->bytes_repaired },
      { .key = "stale-bytes", .json_key = "stale_bytes",
        .kind = F_UINT, .u = dirty_bytes (&quorum_children[i].dirty) },
    };

    report_emit (LOG_INFO, f, sizeof f / sizeof f[0]);
  }
}
