/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* libFuzzer harness for the parameters and for child names.
 *
 * Each input is three things at once:
 *  - a URI (up to the first NUL or newline): uri_redact must never
 *    crash, must print only bytes safe in a key=value field, and must
 *    print the same whatever its secrets are (the password, the value
 *    of every query key not known to be harmless), found by a plain
 *    model of the rules below and replaced by other values;
 *  - a message about a child of that URI: child_redact's output must
 *    contain none of the secrets, as given or percent-decoded;
 *  - a list of key=value lines for quorum_config and then
 *    quorum_config_complete (a line starting with a byte below 0x10
 *    names a known key by that byte): every accepted configuration
 *    must satisfy the documented ranges and have no duplicate child,
 *    and every message printed must be the same when the secrets of
 *    every child= value are replaced.
 *
 * nbdkit's functions are stubbed here, and only here.
 *
 *   make -C common fuzz
 */

#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "internal.h"

char *quorum_report_file;       /* report-sink.c's, not linked */

/* The stubs pass nbdkit's format strings on. */
#pragma GCC diagnostic ignored "-Wformat-nonliteral"

/* Every message nbdkit_error and nbdkit_debug print, one per line. */
static char *messages;
static size_t messages_len;
static FILE *messages_fp;

static void
log_message (const char *fs, va_list args)
{
  if (messages_fp) {
    vfprintf (messages_fp, fs, args);
    fputc ('\n', messages_fp);
  }
}

void
nbdkit_error (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  log_message (fs, args);
  va_end (args);
}

void
nbdkit_debug (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  log_message (fs, args);
  va_end (args);
}

char *
nbdkit_absolute_path (const char *path)
{
  char *ret;

  if (path[0] == '/')
    return strdup (path);
  if (asprintf (&ret, "/fuzz/%s", path) == -1)
    return NULL;
  return ret;
}

int
nbdkit_parse_bool (const char *str)
{
  static const char *const yes[] = { "1", "true", "on", "yes", NULL };
  static const char *const no[] = { "0", "false", "off", "no", NULL };
  size_t i;

  for (i = 0; yes[i]; ++i)
    if (strcasecmp (str, yes[i]) == 0)
      return 1;
  for (i = 0; no[i]; ++i)
    if (strcasecmp (str, no[i]) == 0)
      return 0;
  nbdkit_error ("could not decipher boolean (%s)", str);
  return -1;
}

int
nbdkit_parse_unsigned (const char *what, const char *str, unsigned *r)
{
  unsigned long v;
  char *end;

  errno = 0;
  while (isspace ((unsigned char) *str))
    str++;
  if (*str == '-' || !isdigit ((unsigned char) *str)) {
    nbdkit_error ("%s: could not parse number: \"%s\"", what, str);
    return -1;
  }
  v = strtoul (str, &end, 10);
  if (errno || *end || v > UINT_MAX) {
    nbdkit_error ("%s: could not parse number: \"%s\"", what, str);
    return -1;
  }
  *r = v;
  return 0;
}

int64_t
nbdkit_parse_size (const char *str)
{
  static const char suffixes[] = "bkmgtpe";
  uint64_t v;
  char *end;
  const char *s;
  int shift = 0;

  errno = 0;
  if (!isdigit ((unsigned char) *str))
    goto bad;
  v = strtoull (str, &end, 10);
  if (errno)
    goto bad;
  if (*end) {
    s = strchr (suffixes, tolower ((unsigned char) *end));
    if (s == NULL || end[1])
      goto bad;
    shift = (s - suffixes) * 10;
  }
  if (shift && v > (UINT64_C (1) << (63 - shift)) - 1)
    goto bad;
  v <<= shift;
  if (v > INT64_MAX)
    goto bad;
  return v;
 bad:
  nbdkit_error ("could not parse size string (%s)", str);
  return -1;
}

/* The rules, stated plainly: the secrets of a URI, as [start, end)
 * offsets.  The fragment starts at the first '#', the query at the
 * first '?' before it; an authority follows the first "://" if that
 * is before the query; it ends at its first '/'; its user information
 * ends at its last '@', and the password is what follows the first ':'
 * in it.  In the query, split at '&', the value of every key but the
 * harmless ones is a secret.
 */
struct span { size_t start, end; };

static size_t
model_secrets (const char *uri, struct span *out, size_t max)
{
  static const char *const harmless[] = {
    "socket", "tls", "tls-hostname", "tls-verify-peer", "tls-username",
    NULL
  };
  size_t len = strlen (uri), end = len, qmark = SIZE_MAX, i, n = 0;
  size_t before_query;
  const char *sep;

  for (i = 0; i < len; ++i)
    if (uri[i] == '#') {
      end = i;
      break;
    }
  for (i = 0; i < end; ++i)
    if (uri[i] == '?') {
      qmark = i;
      break;
    }
  before_query = qmark != SIZE_MAX ? qmark : end;

  sep = strstr (uri, "://");
  if (sep && (size_t) (sep - uri) < before_query) {
    size_t auth = sep - uri + 3, aend = before_query, at = SIZE_MAX;

    for (i = auth; i < before_query; ++i)
      if (uri[i] == '/') {
        aend = i;
        break;
      }
    for (i = auth; i < aend; ++i)
      if (uri[i] == '@')
        at = i;
    if (at != SIZE_MAX) {
      for (i = auth; i < at; ++i)
        if (uri[i] == ':') {
          if (n < max)
            out[n++] = (struct span) { i + 1, at };
          break;
        }
    }
  }

  if (qmark != SIZE_MAX) {
    size_t item = qmark + 1;

    while (item <= end) {
      size_t item_end = item, eq = SIZE_MAX, k;
      bool public = false;

      while (item_end < end && uri[item_end] != '&')
        item_end++;
      for (i = item; i < item_end; ++i)
        if (uri[i] == '=') {
          eq = i;
          break;
        }
      if (eq != SIZE_MAX) {
        for (k = 0; harmless[k]; ++k)
          if (strlen (harmless[k]) == eq - item &&
              memcmp (uri + item, harmless[k], eq - item) == 0)
            public = true;
        if (!public && n < max)
          out[n++] = (struct span) { eq + 1, item_end };
      }
      if (item_end >= end)
        break;
      item = item_end + 1;
    }
  }
  return n;
}

#define MAX_SPANS 256

/* uri with every secret replaced by with. */
static char *
replace_secrets (const char *uri, const char *with)
{
  struct span sp[MAX_SPANS];
  size_t n = model_secrets (uri, sp, MAX_SPANS), i, pos = 0;
  char *ret = NULL;
  size_t size = 0;
  FILE *fp = open_memstream (&ret, &size);

  if (fp == NULL)
    abort ();
  for (i = 0; i < n; ++i) {
    fwrite (uri + pos, 1, sp[i].start - pos, fp);
    fputs (with, fp);
    pos = sp[i].end;
  }
  fputs (uri + pos, fp);
  if (fclose (fp) == EOF)
    abort ();
  return ret;
}

static int
hex (char ch)
{
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

/* A secret must not be in s, unless it holds a '*' (then it may be
 * made of the "***" that replaced it and what surrounds that).
 */
static void
assert_absent (const char *s, const char *secret, size_t len)
{
  char *needle;

  if (len == 0 || memchr (secret, '*', len) || memchr (secret, '\0', len))
    return;
  needle = strndup (secret, len);
  if (needle == NULL)
    abort ();
  if (strstr (s, needle)) {
    fprintf (stderr, "secret \"%s\" found in \"%s\"\n", needle, s);
    abort ();
  }
  free (needle);
}

static void
fuzz_names (const char *uri, const char *msg_tail)
{
  struct span sp[MAX_SPANS];
  size_t n, i;
  char *r, *r2, *r3, *msg = NULL;
  size_t msg_size = 0;
  const unsigned char *p;
  struct child c = { .uri = (char *) uri };
  FILE *fp;

  r = uri_redact (uri);
  if (r == NULL)
    abort ();
  for (p = (const unsigned char *) r; *p; ++p)
    if (*p <= 0x20 || *p >= 0x7f || *p == '"' || *p == '\\' || *p == '\'')
      abort ();
  /* Whatever the secrets are, the name is the same. */
  r2 = replace_secrets (uri, "S");
  r3 = uri_redact (r2);
  if (r3 == NULL || strcmp (r, r3) != 0) {
    fprintf (stderr, "uri_redact depends on a secret:\n  %s\n  %s\n", r, r3);
    abort ();
  }
  free (r2);
  free (r3);

  /* A message quoting the URI and each secret, raw and decoded. */
  n = model_secrets (uri, sp, MAX_SPANS);
  fp = open_memstream (&msg, &msg_size);
  if (fp == NULL)
    abort ();
  fprintf (fp, "%s: %s", msg_tail, uri);
  for (i = 0; i < n; ++i) {
    size_t j;

    fputc (' ', fp);
    fwrite (uri + sp[i].start, 1, sp[i].end - sp[i].start, fp);
    fputc (' ', fp);
    for (j = sp[i].start; j < sp[i].end; ++j) {
      if (uri[j] == '%' && j + 2 < sp[i].end &&
          hex (uri[j + 1]) >= 0 && hex (uri[j + 2]) >= 0) {
        fputc (hex (uri[j + 1]) * 16 + hex (uri[j + 2]), fp);
        j += 2;
      }
      else
        fputc (uri[j], fp);
    }
  }
  if (fclose (fp) == EOF)
    abort ();

  c.name = r;
  r2 = child_redact (&c, msg);
  if (r2 == NULL)
    abort ();
  for (i = 0; i < n; ++i) {
    char dec[4096];
    size_t j, k = 0;

    assert_absent (r2, uri + sp[i].start, sp[i].end - sp[i].start);
    for (j = sp[i].start; j < sp[i].end && k < sizeof dec; ++j) {
      if (uri[j] == '%' && j + 2 < sp[i].end &&
          hex (uri[j + 1]) >= 0 && hex (uri[j + 2]) >= 0) {
        dec[k++] = hex (uri[j + 1]) * 16 + hex (uri[j + 2]);
        j += 2;
      }
      else
        dec[k++] = uri[j];
    }
    if (j == sp[i].end)
      assert_absent (r2, dec, k);
  }
  free (r2);
  free (msg);
  free (r);

  /* uri_disk never fails but on ENOMEM, and ignores the secrets. */
  r = uri_disk (uri);
  r2 = replace_secrets (uri, "T");
  r3 = uri_disk (r2);
  if (r == NULL || r3 == NULL || strcmp (r, r3) != 0)
    abort ();
  free (r);
  free (r2);
  free (r3);
}

static const char *const keys[] = {
  "child", "child-command", "vote-threshold", "child-timeout",
  "reconnect-delay", "reconnect-max-delay", "vote-block-size",
  "read-pattern", "blkverify", "rewrite-corrupted", "report",
  "start-degraded", "syslog", "export-name", "state", "state-granule",
  "scrub-rate",
};
#define NR_KEYS (sizeof keys / sizeof keys[0])

#define MAX_LINES 48

struct kv { const char *key; char *value; };

/* Run the parser over kv[]; the messages in a new string. */
static char *
run_config (bool has_local, const struct kv *kv, size_t nr)
{
  size_t i, j, n;
  int r = 0;

  messages = NULL;
  messages_len = 0;
  messages_fp = open_memstream (&messages, &messages_len);
  if (messages_fp == NULL)
    abort ();
  for (i = 0; i < nr && r != -1; ++i)
    r = quorum_config (kv[i].key, kv[i].value);
  if (r != -1 && quorum_config_complete (has_local) == 0) {
    /* What the man pages promise of an accepted configuration. */
    n = quorum_nr_children;
    if (n < 1 || n > VOTE_MAX_CHILDREN ||
        quorum_threshold < 1 || quorum_threshold > n ||
        quorum_child_timeout > 86400 ||
        quorum_reconnect_delay < 1 ||
        quorum_reconnect_delay > quorum_reconnect_max ||
        quorum_reconnect_max > 86400 ||
        quorum_vote_block < 512 || quorum_vote_block > 32 * 1024 * 1024 ||
        (quorum_vote_block & (quorum_vote_block - 1)) ||
        (quorum_blkverify && (n != 2 || quorum_threshold != 2)) ||
        (quorum_rewrite_corrupted &&
         (quorum_blkverify || quorum_read_pattern == READ_PATTERN_FIFO)) ||
        quorum_has_local != has_local)
      abort ();
    for (i = 0; i < n; ++i) {
      const struct child *c = &quorum_children[i];

      if (c->name == NULL || (has_local && i == 0) != child_is_local (c))
        abort ();
      for (j = 0; j < i; ++j) {
        const struct child *d = &quorum_children[j];

        if (c->uri && d->uri) {
          char *a = uri_disk (c->uri), *b = uri_disk (d->uri);

          if (a == NULL || b == NULL || strcmp (a, b) == 0)
            abort ();
          free (a);
          free (b);
        }
      }
    }
  }
  quorum_unload ();
  if (fclose (messages_fp) == EOF)
    abort ();
  messages_fp = NULL;
  return messages;
}

static void
fuzz_config (const char *s, size_t size)
{
  struct kv kv[MAX_LINES], kv2[MAX_LINES];
  size_t nr = 0, i;
  bool has_local;
  char *m1, *m2;

  if (size == 0)
    return;
  has_local = s[0] & 1;
  s++;
  size--;
  while (size > 0 && nr < MAX_LINES) {
    const char *nl = memchr (s, '\n', size);
    size_t len = nl ? (size_t) (nl - s) : size;
    const char *eq;

    if (len > 0 && (unsigned char) s[0] < 0x10) {
      kv[nr].key = keys[s[0] % NR_KEYS];
      kv[nr].value = strndup (s + 1, len - 1);
      nr++;
    }
    else if ((eq = memchr (s, '=', len)) != NULL) {
      /* Unknown keys are the next layer's; keep only ours. */
      for (i = 0; i < NR_KEYS; ++i)
        if (strlen (keys[i]) == (size_t) (eq - s) &&
            memcmp (keys[i], s, eq - s) == 0) {
          kv[nr].key = keys[i];
          kv[nr].value = strndup (eq + 1, len - (eq - s) - 1);
          nr++;
          break;
        }
    }
    s += len + (nl ? 1 : 0);
    size -= len + (nl ? 1 : 0);
  }
  for (i = 0; i < nr; ++i)
    if (kv[i].value == NULL)
      abort ();

  /* The same configuration with other secrets prints the same. */
  for (i = 0; i < nr; ++i) {
    kv2[i].key = kv[i].key;
    kv2[i].value = strcmp (kv[i].key, "child") == 0 ?
      replace_secrets (kv[i].value, "S") : strdup (kv[i].value);
  }
  m1 = run_config (has_local, kv, nr);
  m2 = run_config (has_local, kv2, nr);
  if (strcmp (m1, m2) != 0) {
    fprintf (stderr, "messages depend on a secret:\n%s---\n%s", m1, m2);
    abort ();
  }
  free (m1);
  free (m2);
  for (i = 0; i < nr; ++i) {
    free (kv[i].value);
    free (kv2[i].value);
  }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *s = malloc (size + 1), *nl;
  size_t uri_len;

  if (s == NULL)
    return 0;
  memcpy (s, data, size);
  s[size] = '\0';
  /* The URI: the first line; the message: what follows it. */
  nl = strchr (s, '\n');
  uri_len = nl ? (size_t) (nl - s) : strlen (s);
  {
    char *uri = strndup (s, uri_len);

    if (uri == NULL)
      abort ();
    fuzz_names (uri, uri_len < size ? s + uri_len + 1 : "");
    free (uri);
  }
  fuzz_config ((const char *) data, size);
  free (s);
  return 0;
}
