/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Child names for messages and reports: the URI as given, less any
 * secret.  A URI may carry a password in its user information and
 * secrets (or paths to them) in its query; only query keys known to be
 * harmless keep their values.  Bytes that would break a one-line
 * key=value report (spaces, quotes, control characters, non-ASCII) are
 * percent-encoded.
 */

#include <config.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *const public_keys[] = {
  "socket", "tls", "tls-hostname", "tls-verify-peer", "tls-username",
  "tls-certificates", NULL
};

static bool
is_public_key (const char *key, size_t len)
{
  size_t i;

  for (i = 0; public_keys[i]; ++i)
    if (strlen (public_keys[i]) == len &&
        strncmp (public_keys[i], key, len) == 0)
      return true;
  return false;
}

static void
put_byte (FILE *fp, unsigned char ch)
{
  if (ch <= 0x20 || ch >= 0x7f || ch == '"' || ch == '\\' || ch == '\'')
    fprintf (fp, "%%%02X", ch);
  else
    fputc (ch, fp);
}

static void
put_bytes (FILE *fp, const char *s, size_t len)
{
  size_t i;

  for (i = 0; i < len; ++i)
    put_byte (fp, s[i]);
}

char *
uri_redact (const char *uri)
{
  char *ret = NULL;
  size_t size = 0;
  FILE *fp;
  const char *p, *authority, *at, *query, *fragment, *end;

  fp = open_memstream (&ret, &size);
  if (fp == NULL)
    return NULL;

  end = uri + strlen (uri);
  fragment = strchr (uri, '#');
  if (fragment)
    end = fragment;
  query = memchr (uri, '?', end - uri);
  p = uri;

  /* scheme://[user[:password]@]host... : drop the password. */
  authority = strstr (uri, "://");
  if (authority && (query == NULL || authority < query)) {
    const char *slash;

    authority += 3;
    put_bytes (fp, p, authority - p);
    p = authority;
    slash = strchr (authority, '/');
    if (slash == NULL || (query && query < slash))
      slash = query ? query : end;
    at = memchr (authority, '@', slash - authority);
    if (at) {
      const char *colon = memchr (authority, ':', at - authority);

      if (colon) {
        put_bytes (fp, authority, colon - authority);
        fputs (":***", fp);
        p = at;
      }
    }
  }
  put_bytes (fp, p, (query ? query : end) - p);

  if (query) {
    const char *q = query + 1;

    fputc ('?', fp);
    while (q < end) {
      const char *amp = memchr (q, '&', end - q);
      const char *item_end = amp ? amp : end;
      const char *eq = memchr (q, '=', item_end - q);

      if (eq == NULL || is_public_key (q, eq - q))
        put_bytes (fp, q, item_end - q);
      else {
        put_bytes (fp, q, eq - q);
        fputs ("=***", fp);
      }
      if (amp)
        fputc ('&', fp);
      q = amp ? amp + 1 : end;
    }
  }
  /* The fragment is not used by NBD URIs; drop it with anything odd. */

  if (fclose (fp) == EOF) {
    free (ret);
    return NULL;
  }
  return ret;
}

char *
command_name (const char *command)
{
  char *ret = NULL;
  size_t size = 0;
  FILE *fp = open_memstream (&ret, &size);

  if (fp == NULL)
    return NULL;
  fputs ("command:", fp);
  put_bytes (fp, command, strlen (command));
  if (fclose (fp) == EOF) {
    free (ret);
    return NULL;
  }
  return ret;
}
