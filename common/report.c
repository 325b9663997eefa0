/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Reports: one line per event, key=value fields, to nbdkit_debug and
 * (unless syslog=false) to syslog(3).  "bad" is a child that failed or
 * was outvoted, "failure" a request the quorum could not satisfy,
 * "repair" a child rewritten with the winning version.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include <nbdkit-filter.h>

#include "internal.h"

static const char *const op_names[] = {
  [OP_READ] = "read", [OP_WRITE] = "write", [OP_ZERO] = "zero",
  [OP_TRIM] = "trim", [OP_FLUSH] = "flush", [OP_CACHE] = "cache",
  [OP_EXTENTS] = "extents",
};

const char *
op_name (enum op_type type)
{
  return op_names[type];
}

void
report_open (const char *ident)
{
  /* No LOG_NDELAY: with no syslog daemon there is nothing to open yet,
   * and syslog(3) connects on first use.
   */
  if (quorum_syslog)
    openlog (ident, LOG_PID, LOG_DAEMON);
}

static const char *
errno_name (int err, char *buf, size_t len)
{
  const char *s = strerrorname_np (err);

  if (s)
    return s;
  snprintf (buf, len, "errno%d", err);
  return buf;
}

static void __attribute__ ((format (printf, 2, 3)))
emit (int priority, const char *fs, ...)
{
  char line[1024];
  va_list args;

  va_start (args, fs);
  vsnprintf (line, sizeof line, fs, args);
  va_end (args);

  nbdkit_debug ("quorum: %s", line);
  if (quorum_syslog)
    syslog (priority, "%s", line);
}

void
report_bad (enum op_type type, size_t child, uint64_t offset,
            uint64_t length, int err)
{
  char buf[32];

  emit (LOG_WARNING,
        "event=bad type=%s child=%zu name=%s offset=0x%" PRIx64
        " length=0x%" PRIx64 " error=%s",
        op_name (type), child, quorum_children[child].name,
        offset, length,
        err ? errno_name (err, buf, sizeof buf) : "mismatch");
}

void
report_failure_votes (enum op_type type, uint64_t offset, uint64_t length,
                      size_t votes)
{
  emit (LOG_ERR,
        "event=failure type=%s offset=0x%" PRIx64 " length=0x%" PRIx64
        " reason=no-quorum votes=%zu threshold=%u",
        op_name (type), offset, length, votes, quorum_threshold);
}

void
report_failure_errors (enum op_type type, uint64_t offset, uint64_t length,
                       int err, size_t successes)
{
  char buf[32];

  emit (LOG_ERR,
        "event=failure type=%s offset=0x%" PRIx64 " length=0x%" PRIx64
        " reason=errors error=%s successes=%zu threshold=%u",
        op_name (type), offset, length, errno_name (err, buf, sizeof buf),
        successes, quorum_threshold);
}

void
report_failure_blkverify (uint64_t offset, uint64_t length,
                          uint64_t first_difference)
{
  emit (LOG_ERR,
        "event=failure type=read offset=0x%" PRIx64 " length=0x%" PRIx64
        " reason=blkverify first-difference=0x%" PRIx64,
        offset, length, first_difference);
}

void
report_child (const char *event, size_t child, const char *fs, ...)
{
  char detail[512];
  va_list args;

  va_start (args, fs);
  vsnprintf (detail, sizeof detail, fs, args);
  va_end (args);
  emit (strcmp (event, "down") == 0 ? LOG_WARNING : LOG_NOTICE,
        "event=%s child=%zu name=%s%s%s", event, child,
        quorum_children[child].name, detail[0] ? " " : "", detail);
}

void
report_repair (size_t child, uint64_t offset, uint64_t length)
{
  emit (LOG_NOTICE,
        "event=repair child=%zu name=%s offset=0x%" PRIx64
        " length=0x%" PRIx64,
        child, quorum_children[child].name, offset, length);
}
