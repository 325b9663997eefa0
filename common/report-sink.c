/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Where reports go: every event as key=value fields to nbdkit_debug
 * and (unless syslog=false) to syslog(3), and as one JSON object per
 * line to the report= file, which is opened here, safely.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
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
#include "report.h"

char *quorum_report_file;               /* report=, absolute */
static int report_fd = -1;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;

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
report_put_field (FILE *fp, const struct report_field *f, const char *sep,
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
report_kv_line (const struct report_field *fields, size_t nr)
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
    const struct report_field *f = &fields[i];
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

void
report_emit (int priority, const struct report_field *fields, size_t nr)
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
      const struct report_field *f = &fields[i];

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
