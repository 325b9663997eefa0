/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Reports: one line per event.  Every event goes, as key=value fields,
 * to nbdkit_debug and (unless syslog=false) to syslog(3), and as one
 * JSON object per line to the report= file if there is one.  "bad" is
 * a child that failed or was outvoted, "failure" a request the quorum
 * could not satisfy, "repair" a child rewritten with the winning
 * version; down, up, resync-start, resync-progress (every tenth) and
 * resync-end follow a child's life; scrub-start and scrub-end a scrub
 * (scrub.c); "summary" closes the run with a line per child.
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
#include <sys/stat.h>

#include <nbdkit-filter.h>

#include "cleanup.h"
#include "internal.h"

char *quorum_report_file;               /* report=, absolute */
static int report_fd = -1;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static const struct report_listener *listener;

void
report_listen (const struct report_listener *l)
{
  __atomic_store_n (&listener, l, __ATOMIC_RELEASE);
}

static const struct report_listener *
report_listener (void)
{
  return __atomic_load_n (&listener, __ATOMIC_ACQUIRE);
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

/* report= names something other than a regular file. */
static int
report_refuse (mode_t mode)
{
  const char *what =
    S_ISLNK (mode) ? "a symbolic link" :
    S_ISFIFO (mode) ? "a FIFO" :
    S_ISDIR (mode) ? "a directory" :
    S_ISCHR (mode) ? "a character device" :
    S_ISBLK (mode) ? "a block device" :
    S_ISSOCK (mode) ? "a socket" : "not a file";

  if (S_ISLNK (mode))
    nbdkit_error ("report=%s: is a symbolic link, which is never followed: "
                  "give the path of a regular file, or of a new one",
                  quorum_report_file);
  else
    nbdkit_error ("report=%s: is %s, not a regular file: give the path of "
                  "a regular file, or of a new one", quorum_report_file,
                  what);
  return -1;
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
    struct stat st;
    int flags;

    /* Only a regular file, or a new one.  nbdkit may run as root: a
     * symbolic link planted where the file will be could make it
     * append to any file, so the last component is never followed; a
     * FIFO would block start-up until someone reads it (and then
     * block the reports), and a device is no report.  Refused before
     * opening if seen, and after if it appeared in between.
     */
    if (lstat (quorum_report_file, &st) == 0 && !S_ISREG (st.st_mode))
      return report_refuse (st.st_mode);
    /* Appended to, never truncated; private, as it names children. */
    report_fd = open (quorum_report_file,
                      O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC |
                      O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, 0600);
    if (report_fd == -1) {
      int err = errno;

      if (lstat (quorum_report_file, &st) == 0 && !S_ISREG (st.st_mode))
        return report_refuse (st.st_mode);
      errno = err;
      nbdkit_error ("report=%s: %m", quorum_report_file);
      return -1;
    }
    if (fstat (report_fd, &st) == -1) {
      nbdkit_error ("report=%s: fstat: %m", quorum_report_file);
      report_close ();
      return -1;
    }
    if (!S_ISREG (st.st_mode)) {
      report_close ();
      return report_refuse (st.st_mode);
    }
    /* A regular file never blocks anyway: back to ordinary writes. */
    flags = fcntl (report_fd, F_GETFL);
    if (flags == -1 || fcntl (report_fd, F_SETFL, flags & ~O_NONBLOCK) == -1) {
      nbdkit_error ("report=%s: fcntl: %m", quorum_report_file);
      report_close ();
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
report_errno_name (int err, char *buf, size_t len)
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
  bool shorten;                 /* F_STR that may be cut in key=value */
};

#define STR(k, v) { .key = (k), .kind = F_STR, .s = (v) }
#define HEX(k, v) { .key = (k), .kind = F_HEX, .u = (v) }
#define UINT(k, v) { .key = (k), .kind = F_UINT, .u = (v) }

static void
report_json_string (FILE *fp, const char *s)
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

/* The longest key=value line: syslog daemons cut or split longer ones
 * (RFC 3164 says 1024 bytes).  A field is never dropped to fit: a long
 * child name is cut in its middle instead, marked with "...", and the
 * JSON line keeps it whole.
 */
#define KV_LINE_MAX 1024
#define CUT_MARK "..."

static void
report_put_field (FILE *fp, const struct field *f, const char *sep,
                  const char *s)
{
  switch (f->kind) {
  case F_STR: case F_LIST:
    fprintf (fp, "%s%s=%s", sep, f->key, s);
    break;
  case F_HEX:
    fprintf (fp, "%s%s=0x%" PRIx64, sep, f->key, f->u);
    break;
  case F_UINT:
    fprintf (fp, "%s%s=%" PRIu64, sep, f->key, f->u);
    break;
  case F_BOOL:
    fprintf (fp, "%s%s", sep, f->key);
    break;
  }
}

/* The first len bytes of s, and its last, around CUT_MARK, into buf of
 * len + 1 bytes, never cutting a %XX escape.
 */
static void
report_cut_middle (const char *s, size_t len, char *buf)
{
  size_t slen = strlen (s), keep = len - strlen (CUT_MARK);
  size_t head = keep / 2, tail_start = slen - (keep - head);

  /* Back off from an escape the head would cut, and skip one that the
   * tail would start inside.
   */
  if (head >= 1 && s[head - 1] == '%')
    head -= 1;
  else if (head >= 2 && s[head - 2] == '%')
    head -= 2;
  if (tail_start >= 1 && s[tail_start - 1] == '%')
    tail_start += 2;
  else if (tail_start >= 2 && s[tail_start - 2] == '%')
    tail_start += 1;
  if (tail_start > slen)
    tail_start = slen;
  snprintf (buf, len + 1, "%.*s%s%s", (int) head, s, CUT_MARK,
            s + tail_start);
}

/* The key=value line of fields, in a new string (NULL on ENOMEM). */
static char *
report_kv_line (const struct field *fields, size_t nr)
{
  char *line = NULL, *cut = NULL;
  size_t len = 0, i, j, over;
  FILE *fp;

  fp = open_memstream (&line, &len);
  if (fp == NULL)
    return NULL;
  for (i = 0; i < nr; ++i)
    report_put_field (fp, &fields[i], i ? " " : "", fields[i].s);
  if (fclose (fp) == EOF)
    return NULL;
  if (len <= KV_LINE_MAX)
    return line;

  /* Too long: cut the longest name that may be cut, to fit if it can,
   * else to 32 bytes.
   */
  over = len - KV_LINE_MAX;
  for (i = 0; i < nr; ++i) {
    const struct field *f = &fields[i];
    size_t slen, want;

    if (!f->shorten || f->kind != F_STR)
      continue;
    slen = strlen (f->s);
    want = slen > over + 32 ? slen - over : 32;
    if (want >= slen)
      continue;
    cut = malloc (want + 1);
    if (cut == NULL)
      break;
    report_cut_middle (f->s, want, cut);
    free (line);
    line = NULL;
    fp = open_memstream (&line, &len);
    if (fp == NULL) {
      free (cut);
      return NULL;
    }
    for (j = 0; j < nr; ++j)
      report_put_field (fp, &fields[j], j ? " " : "",
                        j == i ? cut : fields[j].s);
    free (cut);
    if (fclose (fp) == EOF)
      return NULL;
    break;
  }
  return line;
}

static void
report_emit (int priority, const struct field *fields, size_t nr)
{
  char *line = report_kv_line (fields, nr);
  size_t i;

  if (line == NULL) {
    nbdkit_debug ("quorum: report: out of memory");
    return;
  }
  nbdkit_debug ("quorum: %s", line);
  /* The summary is for the debug log and the report file only. */
  if (quorum_syslog && priority != LOG_INFO)
    syslog (priority, "%s", line);
  free (line);

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
      report_json_string (fp, f->json_key ? f->json_key : f->key);
      fputc (':', fp);
      switch (f->kind) {
      case F_STR: report_json_string (fp, f->s); break;
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
    .s = quorum_children[c].name, .shorten = true }

void
report_bad (enum op_type type, size_t child, uint64_t offset,
            uint64_t length, int err)
{
  char buf[32];
  struct field f[] = {
    STR ("event", "bad"), STR ("type", report_op_name (type)),
    UINT ("child", child), NAME (child),
    HEX ("offset", offset), HEX ("length", length),
    err ? (struct field) STR ("error",
                              report_errno_name (err, buf, sizeof buf))
    : (struct field) { .key = "error=mismatch", .json_key = "mismatch",
                       .kind = F_BOOL },
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
  struct field f[] = {
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
  struct field f[] = {
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
  struct field f[] = {
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
  struct field f[] = {
    STR ("event", "repair"), UINT ("child", child), NAME (child),
    HEX ("offset", offset), HEX ("length", length),
  };

  STAT_ADD (&quorum_children[child], bytes_repaired, length);
  report_emit (LOG_NOTICE, f, sizeof f / sizeof f[0]);
}

void
report_down (size_t child, const char *reason)
{
  struct field f[] = {
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
  struct field f[] = {
    STR ("event", event), UINT ("child", child), NAME (child),
  };

  report_emit (LOG_NOTICE, f, sizeof f / sizeof f[0]);
}

void
report_replace (const char *event, size_t child, const char *other)
{
  const bool start = strcmp (event, "replace-end") != 0;
  struct field f[] = {
    STR ("event", event), UINT ("child", child), NAME (child),
    STR (start ? "new" : "old", other),
  };

  report_emit (LOG_NOTICE, f, sizeof f / sizeof f[0]);
}

void
report_resync_end (size_t child, uint64_t dirty, uint64_t copied,
                   uint64_t zeroed)
{
  struct field f[] = {
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
  struct field f[] = {
    STR ("event", "up"), UINT ("child", child), NAME (child),
  };

  report_emit (LOG_NOTICE, f, sizeof f / sizeof f[0]);
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
  report_emit (LOG_NOTICE, f, strcmp (event, "resync-start") == 0 ? 4 : 5);
}

void
report_scrub_start (uint64_t offset, uint64_t length, bool repair,
                    uint64_t rate)
{
  struct field f[] = {
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
  struct field f[] = {
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
  struct field f[] = {
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

void
report_resync_progress (size_t child, unsigned percent, uint64_t dirty,
                        uint64_t copied)
{
  struct field f[] = {
    STR ("event", "resync-progress"), UINT ("child", child), NAME (child),
    UINT ("percent", percent), HEX ("dirty", dirty), HEX ("copied", copied),
  };

  report_emit (LOG_NOTICE, f, sizeof f / sizeof f[0]);
}

void
report_stale (size_t child, uint64_t offset, uint64_t length,
              const char *reason)
{
  struct field f[] = {
    STR ("event", "stale"), UINT ("child", child), NAME (child),
    HEX ("offset", offset), HEX ("length", length), STR ("reason", reason),
  };

  report_emit (LOG_WARNING, f, sizeof f / sizeof f[0]);
}

void
report_settle (uint64_t offset, uint64_t length, size_t winner,
               size_t votes, uint64_t rewritten)
{
  struct field f[] = {
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
    struct field f[] = {
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
