/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Reports: one line per event.  Every event goes, as key=value fields,
 * to nbdkit_debug and (unless syslog=false) to syslog(3), and as one
 * JSON object per line to the report= file if there is one.  "bad" is
 * a child that failed or was outvoted, "failure" a request the quorum
 * could not satisfy, "repair" a child rewritten with the winning
 * version; down, up, resync-start and resync-end follow a child's
 * life; "summary" closes the run with a line per child.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "cleanup.h"
#include "control.h"
#include "internal.h"

char *quorum_report_file;               /* report=, absolute */
static int report_fd = -1;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;

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

int
report_open (const char *ident)
{
  /* No LOG_NDELAY: with no syslog daemon there is nothing to open yet,
   * and syslog(3) connects on first use.
   */
  if (quorum_syslog)
    openlog (ident, LOG_PID, LOG_DAEMON);

  if (quorum_report_file) {
    /* Appended to, never truncated; private, as it names children. */
    report_fd = open (quorum_report_file,
                      O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (report_fd == -1) {
      nbdkit_error ("report=%s: %m", quorum_report_file);
      return -1;
    }
  }
  return 0;
}

void
report_close (void)
{
  if (report_fd >= 0)
    close (report_fd);
  report_fd = -1;
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

/* One field of an event. */
enum field_kind { F_STR, F_HEX, F_UINT, F_BOOL, F_LIST };
struct field {
  const char *key;              /* key=value name */
  const char *json_key;         /* JSON name, if different */
  enum field_kind kind;
  const char *s;                /* F_STR; F_LIST as key=value */
  const char *json;             /* F_LIST as JSON */
  uint64_t u;
};

#define STR(k, v) { .key = (k), .kind = F_STR, .s = (v) }
#define HEX(k, v) { .key = (k), .kind = F_HEX, .u = (v) }
#define UINT(k, v) { .key = (k), .kind = F_UINT, .u = (v) }

static void
json_string (FILE *fp, const char *s)
{
  const unsigned char *p;

  fputc ('"', fp);
  for (p = (const unsigned char *) s; *p; ++p) {
    switch (*p) {
    case '"': fputs ("\\\"", fp); break;
    case '\\': fputs ("\\\\", fp); break;
    case '\n': fputs ("\\n", fp); break;
    case '\r': fputs ("\\r", fp); break;
    case '\t': fputs ("\\t", fp); break;
    default:
      /* Control characters, and bytes that may not be UTF-8, escaped. */
      if (*p < 0x20 || *p >= 0x7f)
        fprintf (fp, "\\u%04x", *p);
      else
        fputc (*p, fp);
    }
  }
  fputc ('"', fp);
}

static void
emit (int priority, const struct field *fields, size_t nr)
{
  char line[1024];
  size_t i, len = 0;

  for (i = 0; i < nr && len < sizeof line; ++i) {
    const struct field *f = &fields[i];
    const char *sep = i ? " " : "";
    int n = 0;

    switch (f->kind) {
    case F_STR: case F_LIST:
      n = snprintf (line + len, sizeof line - len, "%s%s=%s", sep, f->key,
                    f->s);
      break;
    case F_HEX:
      n = snprintf (line + len, sizeof line - len, "%s%s=0x%" PRIx64, sep,
                    f->key, f->u);
      break;
    case F_UINT:
      n = snprintf (line + len, sizeof line - len, "%s%s=%" PRIu64, sep,
                    f->key, f->u);
      break;
    case F_BOOL:
      n = snprintf (line + len, sizeof line - len, "%s%s", sep, f->key);
      break;
    }
    if (n > 0)
      len += n;
  }

  nbdkit_debug ("quorum: %s", line);
  /* The summary is for the debug log and the report file only. */
  if (quorum_syslog && priority != LOG_INFO)
    syslog (priority, "%s", line);

  if (report_fd >= 0) {
    char *json = NULL;
    size_t jlen = 0;
    FILE *fp = open_memstream (&json, &jlen);
    struct timespec ts;
    struct tm tm;
    char when[64];

    if (fp == NULL)
      return;
    clock_gettime (CLOCK_REALTIME, &ts);
    gmtime_r (&ts.tv_sec, &tm);
    strftime (when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf (fp, "{\"time\":\"%s.%03ldZ\"", when, ts.tv_nsec / 1000000);
    for (i = 0; i < nr; ++i) {
      const struct field *f = &fields[i];

      fputs (",", fp);
      json_string (fp, f->json_key ? f->json_key : f->key);
      fputc (':', fp);
      switch (f->kind) {
      case F_STR: json_string (fp, f->s); break;
      case F_HEX: case F_UINT: fprintf (fp, "%" PRIu64, f->u); break;
      case F_BOOL: fputs ("true", fp); break;
      case F_LIST: fputs (f->json, fp); break;
      }
    }
    fputs ("}\n", fp);
    if (fclose (fp) == 0) {
      SCOPED_LOCK (&report_lock);
      /* One write(2) per line on an O_APPEND descriptor: lines from
       * many threads never interleave.
       */
      if (write (report_fd, json, jlen) != (ssize_t) jlen)
        nbdkit_debug ("quorum: report=%s: short write: %m",
                      quorum_report_file);
    }
    free (json);
  }
}

#define NAME(c) \
  { .key = "name", .json_key = "child_name", .kind = F_STR, \
    .s = quorum_children[c].name }

void
report_bad (enum op_type type, size_t child, uint64_t offset,
            uint64_t length, int err)
{
  char buf[32];
  struct field f[] = {
    STR ("event", "bad"), STR ("type", op_name (type)), UINT ("child", child),
    NAME (child), HEX ("offset", offset), HEX ("length", length),
    err ? (struct field) STR ("error", errno_name (err, buf, sizeof buf))
    : (struct field) { .key = "error=mismatch", .json_key = "mismatch",
                       .kind = F_BOOL },
  };

  if (err == 0)
    STAT_ADD (&quorum_children[child], bad_reads, 1);
  else if (err == ETIMEDOUT)
    STAT_ADD (&quorum_children[child], timeouts, 1);
  else
    STAT_ADD (&quorum_children[child], errors, 1);
  control_note_error (child, type, offset, length, err);

  emit (LOG_WARNING, f, sizeof f / sizeof f[0]);
}

/* The children on each side: "0,2/1" and [[0,2],[1]]. */
static void
format_versions (const size_t *version, size_t nr, char *kv, size_t klen,
                 char *json, size_t jlen)
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
  struct field f[] = {
    STR ("event", "failure"), STR ("type", op_name (type)),
    HEX ("offset", offset), HEX ("length", length),
    STR ("reason", "no-quorum"), UINT ("votes", votes),
    UINT ("threshold", quorum_threshold),
    { .key = "versions", .kind = F_LIST, .s = kv, .json = json },
  };

  format_versions (version, nr, kv, sizeof kv, json, sizeof json);
  emit (LOG_ERR, f, sizeof f / sizeof f[0]);
}

void
report_failure_errors (enum op_type type, uint64_t offset, uint64_t length,
                       int err, size_t successes)
{
  char buf[32];
  struct field f[] = {
    STR ("event", "failure"), STR ("type", op_name (type)),
    HEX ("offset", offset), HEX ("length", length),
    STR ("reason", "errors"), STR ("error", errno_name (err, buf, sizeof buf)),
    UINT ("successes", successes), UINT ("threshold", quorum_threshold),
  };

  emit (LOG_ERR, f, sizeof f / sizeof f[0]);
}

void
report_failure_blkverify (uint64_t offset, uint64_t length,
                          uint64_t first_difference)
{
  struct field f[] = {
    STR ("event", "failure"), STR ("type", "read"),
    HEX ("offset", offset), HEX ("length", length),
    STR ("reason", "blkverify"),
    { .key = "first-difference", .json_key = "first_difference",
      .kind = F_HEX, .u = first_difference },
  };

  emit (LOG_ERR, f, sizeof f / sizeof f[0]);
}

void
report_repair (size_t child, uint64_t offset, uint64_t length)
{
  struct field f[] = {
    STR ("event", "repair"), UINT ("child", child), NAME (child),
    HEX ("offset", offset), HEX ("length", length),
  };

  STAT_ADD (&quorum_children[child], bytes_repaired, length);
  emit (LOG_NOTICE, f, sizeof f / sizeof f[0]);
}

void
report_down (size_t child, const char *reason)
{
  struct field f[] = {
    STR ("event", "down"), UINT ("child", child), NAME (child),
    STR ("reason", reason),
  };

  control_note_down (child, reason);
  emit (LOG_WARNING, f, sizeof f / sizeof f[0]);
}

void
report_up (size_t child)
{
  struct field f[] = {
    STR ("event", "up"), UINT ("child", child), NAME (child),
  };

  emit (LOG_NOTICE, f, sizeof f / sizeof f[0]);
}

void
report_resync (const char *event, size_t child, uint64_t dirty,
               uint64_t copied)
{
  struct field f[] = {
    STR ("event", event), UINT ("child", child), NAME (child),
    HEX ("dirty", dirty), HEX ("copied", copied),
  };

  /* resync-start says how much is dirty; resync-end adds what moved. */
  emit (LOG_NOTICE, f, strcmp (event, "resync-start") == 0 ? 4 : 5);
}

void
report_summary (void)
{
  size_t i;

  for (i = 0; i < quorum_nr_children; ++i) {
    const struct child_stats *s = &quorum_children[i].stats;
    struct field f[] = {
      STR ("event", "summary"), UINT ("child", i), NAME (i),
      UINT ("reads", s->reads), UINT ("writes", s->writes),
      { .key = "bad-reads", .json_key = "bad_reads", .kind = F_UINT,
        .u = s->bad_reads },
      UINT ("errors", s->errors), UINT ("timeouts", s->timeouts),
      { .key = "bytes-repaired", .json_key = "bytes_repaired",
        .kind = F_UINT, .u = s->bytes_repaired },
    };

    emit (LOG_INFO, f, sizeof f / sizeof f[0]);
  }
}
