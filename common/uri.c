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
 *
 * The same parse of a URI also removes its secrets from any message
 * (libnbd's errors quote the URI as given, and the key file's path as
 * decoded), and says which disk it names, to refuse duplicates.
 */

#include <config.h>

#include <ctype.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Query keys whose values are printed.  Everything else, known to
 * libnbd or not, may be a secret or a path to one (tls-psk-file,
 * tls-certificates, whatever a later libnbd adds): its value is not.
 */
static const char *const uri_public_keys[] = {
  "socket", "tls", "tls-hostname", "tls-verify-peer", "tls-username", NULL
};

static bool
uri_is_public_key (const char *key, size_t len)
{
  size_t i;

  for (i = 0; uri_public_keys[i]; ++i)
    if (strlen (uri_public_keys[i]) == len &&
        strncmp (uri_public_keys[i], key, len) == 0)
      return true;
  return false;
}

/* A URI cut into pieces, each [start, end) of the string; a piece is
 * absent if start is NULL.  Only what the name, the secrets and the
 * disk need: scheme://[user[:password]@]host[:port][/path][?query]
 * (and the fragment, ignored).  The user information ends at the last
 * '@' of the authority, which ends at the first '/' or '?': a password
 * may hold '@' or ':', never '/', '?' or '#'.
 */
struct uri_parts {
  const char *scheme, *scheme_end;
  const char *authority;        /* after "://" */
  const char *user, *user_end;  /* before ':' or '@' */
  const char *password, *password_end;
  const char *host, *host_end;  /* host[:port] */
  const char *path, *path_end;
  const char *query, *query_end; /* after '?' */
  const char *end;              /* at the fragment or the final NUL */
};

static void
uri_split (const char *uri, struct uri_parts *p)
{
  const char *qmark, *sep, *slash, *at, *colon, *before_query;

  memset (p, 0, sizeof *p);
  p->end = strchr (uri, '#');
  if (p->end == NULL)
    p->end = uri + strlen (uri);
  qmark = memchr (uri, '?', p->end - uri);
  before_query = qmark ? qmark : p->end;
  if (qmark) {
    p->query = qmark + 1;
    p->query_end = p->end;
  }

  sep = strstr (uri, "://");
  if (sep == NULL || sep >= before_query) {
    p->path = uri;              /* no authority: all of it */
    p->path_end = before_query;
    return;
  }
  p->scheme = uri;
  p->scheme_end = sep;
  p->authority = sep + 3;
  slash = memchr (p->authority, '/', before_query - p->authority);
  if (slash == NULL)
    slash = before_query;
  p->path = slash;
  p->path_end = before_query;

  at = NULL;
  for (colon = p->authority; colon < slash; ++colon)
    if (*colon == '@')
      at = colon;
  p->host = at ? at + 1 : p->authority;
  p->host_end = slash;
  if (at) {
    p->user = p->authority;
    colon = memchr (p->authority, ':', at - p->authority);
    p->user_end = colon ? colon : at;
    if (colon) {
      p->password = colon + 1;
      p->password_end = at;
    }
  }
}

/* Call fn for each key=value of the query, in order. */
static void
uri_query_each (const struct uri_parts *p,
                void (*fn) (const char *key, size_t klen, const char *value,
                            size_t vlen, void *opaque),
                void *opaque)
{
  const char *q = p->query;

  if (q == NULL)
    return;
  while (q <= p->query_end) {
    const char *amp = memchr (q, '&', p->query_end - q);
    const char *item_end = amp ? amp : p->query_end;
    const char *eq = memchr (q, '=', item_end - q);

    if (item_end > q) {
      if (eq)
        fn (q, eq - q, eq + 1, item_end - eq - 1, opaque);
      else
        fn (q, item_end - q, NULL, 0, opaque);
    }
    if (amp == NULL)
      break;
    q = amp + 1;
  }
}

static void
uri_put_byte (FILE *fp, unsigned char ch)
{
  if (ch <= 0x20 || ch >= 0x7f || ch == '"' || ch == '\\' || ch == '\'')
    fprintf (fp, "%%%02X", ch);
  else
    fputc (ch, fp);
}

static void
uri_put_bytes (FILE *fp, const char *s, size_t len)
{
  size_t i;

  for (i = 0; i < len; ++i)
    uri_put_byte (fp, s[i]);
}

/* Close a memory stream of *ret, which it then holds: NULL on error. */
static char *
uri_close_stream (FILE *fp, char **ret)
{
  if (fclose (fp) == EOF) {
    free (*ret);
    return NULL;
  }
  return *ret;
}

struct redact_query {
  FILE *fp;
  bool first;
};

static void
uri_redact_item (const char *key, size_t klen, const char *value, size_t vlen,
                 void *opaque)
{
  struct redact_query *rq = opaque;

  if (!rq->first)
    fputc ('&', rq->fp);
  rq->first = false;
  uri_put_bytes (rq->fp, key, klen);
  if (value == NULL)
    return;
  fputc ('=', rq->fp);
  if (uri_is_public_key (key, klen))
    uri_put_bytes (rq->fp, value, vlen);
  else
    fputs ("***", rq->fp);
}

char *
uri_redact (const char *uri)
{
  char *ret = NULL;
  size_t size = 0;
  FILE *fp;
  struct uri_parts p;
  const char *from = uri;

  fp = open_memstream (&ret, &size);
  if (fp == NULL)
    return NULL;
  uri_split (uri, &p);

  if (p.password) {
    uri_put_bytes (fp, uri, p.user_end - uri);
    fputs (":***", fp);
    from = p.password_end;      /* the '@' */
  }
  uri_put_bytes (fp, from, p.path_end - from);

  if (p.query) {
    struct redact_query rq = { .fp = fp, .first = true };

    fputc ('?', fp);
    uri_query_each (&p, uri_redact_item, &rq);
  }
  /* The fragment is not used by NBD URIs; drop it with anything odd. */
  return uri_close_stream (fp, &ret);
}

char *
uri_command_name (const char *command)
{
  char *ret = NULL;
  size_t size = 0;
  FILE *fp = open_memstream (&ret, &size);

  if (fp == NULL)
    return NULL;
  fputs ("command:", fp);
  uri_put_bytes (fp, command, strlen (command));
  return uri_close_stream (fp, &ret);
}

static int
uri_hex_digit (char ch)
{
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  ch = tolower ((unsigned char) ch);
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  return -1;
}

/* [s, s+len) with %XX decoded, as libnbd does, in a new string. */
static char *
uri_percent_decode (const char *s, size_t len)
{
  char *ret = malloc (len + 1), *o = ret;
  size_t i;

  if (ret == NULL)
    return NULL;
  for (i = 0; i < len; ++i) {
    int hi, lo;

    if (s[i] == '%' && i + 2 < len &&
        (hi = uri_hex_digit (s[i + 1])) >= 0 &&
        (lo = uri_hex_digit (s[i + 2])) >= 0) {
      *o++ = hi * 16 + lo;
      i += 2;
    }
    else
      *o++ = s[i];
  }
  *o = '\0';
  return ret;
}

/* The secrets of a URI, raw and decoded, to mask in messages. */
struct secret {
  const char *raw;
  size_t len;
  char *decoded;
};
struct secrets {
  struct secret *v;
  size_t nr;
  bool enomem;
};

static void
uri_add_secret (struct secrets *s, const char *value, size_t len)
{
  struct secret *v;

  if (len == 0 || s->enomem)
    return;
  v = realloc (s->v, (s->nr + 1) * sizeof *v);
  if (v == NULL) {
    s->enomem = true;
    return;
  }
  s->v = v;
  v[s->nr].raw = value;
  v[s->nr].len = len;
  v[s->nr].decoded = uri_percent_decode (value, len);
  if (v[s->nr].decoded == NULL)
    s->enomem = true;
  s->nr++;
}

static void
uri_secret_item (const char *key, size_t klen, const char *value, size_t vlen,
                 void *opaque)
{
  if (value && !uri_is_public_key (key, klen))
    uri_add_secret (opaque, value, vlen);
}

/* Set mask[i] for every byte of msg inside an occurrence of
 * [s, s+len).
 */
static void
uri_mask_all (const char *msg, size_t msg_len, bool *mask, const char *s,
              size_t len)
{
  const char *p = msg;

  if (len == 0)
    return;
  while ((p = memmem (p, msg_len - (p - msg), s, len)) != NULL) {
    memset (mask + (p - msg), true, len);
    p++;
  }
}

char *
child_redact (const struct child *c, const char *msg)
{
  struct uri_parts p;
  struct secrets s = { .v = NULL };
  char *named = NULL, *ret = NULL;
  size_t named_len = 0, size = 0, i, ulen;
  bool *mask = NULL;
  FILE *fp;
  const char *m;
  const char *uri = child_uri (c), *name = child_name (c);

  if (uri == NULL || uri[0] == '\0')
    return strdup (msg);

  /* The raw URI, wherever it appears, becomes the child's name. */
  fp = open_memstream (&named, &named_len);
  if (fp == NULL)
    return NULL;
  ulen = strlen (uri);
  for (m = msg; *m; ) {
    if (strncmp (m, uri, ulen) == 0) {
      fputs (name ? name : "***", fp);
      m += ulen;
    }
    else
      fputc (*m++, fp);
  }
  named = uri_close_stream (fp, &named);
  if (named == NULL)
    return NULL;

  /* Then every secret, as given and as decoded, becomes "***": mark
   * the bytes of every occurrence first, so that overlapping secrets
   * are removed whole, then write each run of marked bytes as one
   * "***".
   */
  uri_split (uri, &p);
  if (p.password)
    uri_add_secret (&s, p.password, p.password_end - p.password);
  uri_query_each (&p, uri_secret_item, &s);
  if (s.enomem)
    goto out;                   /* ret NULL: nothing is printed */
  mask = calloc (named_len + 1, sizeof *mask);
  if (mask == NULL)
    goto out;
  for (i = 0; i < s.nr; ++i) {
    uri_mask_all (named, named_len, mask, s.v[i].raw, s.v[i].len);
    uri_mask_all (named, named_len, mask, s.v[i].decoded,
                  strlen (s.v[i].decoded));
  }
  fp = open_memstream (&ret, &size);
  if (fp == NULL)
    goto out;
  for (i = 0; i < named_len; ++i) {
    if (!mask[i])
      fputc (named[i], fp);
    else if (i == 0 || !mask[i - 1])
      fputs ("***", fp);
  }
  ret = uri_close_stream (fp, &ret);

 out:
  for (i = 0; i < s.nr; ++i)
    free (s.v[i].decoded);
  free (s.v);
  free (mask);
  free (named);
  return ret;
}

/* The disk a URI names.  TLS settings and the user do not change the
 * disk, nor do the order of the query or spelling the default port:
 * only the transport (TCP, Unix or vsock socket), the host and port (or
 * the socket's path, resolved if it exists) and the export name count.
 */
struct disk_query {
  const char *socket;
  size_t socket_len;
};

static void
uri_disk_item (const char *key, size_t klen, const char *value, size_t vlen,
               void *opaque)
{
  struct disk_query *dq = opaque;

  if (value && klen == 6 && strncmp (key, "socket", 6) == 0 &&
      dq->socket == NULL) {
    dq->socket = value;
    dq->socket_len = vlen;
  }
}

/* Each piece written as LENGTH:BYTES, so that no two differ only in
 * where one ends.
 */
static void
uri_put_piece (FILE *fp, const char *s, size_t len)
{
  fprintf (fp, "%zu:", len);
  fwrite (s, 1, len, fp);
  fputc (' ', fp);
}

/* The transport a URI's scheme names (any case), or NULL if none of
 * libnbd's.
 */
static const char *
uri_transport (const char *scheme, size_t slen)
{
  if ((slen == 3 && strncasecmp (scheme, "nbd", 3) == 0) ||
      (slen == 4 && strncasecmp (scheme, "nbds", 4) == 0))
    return "tcp";
  if ((slen == 8 && strncasecmp (scheme, "nbd+unix", 8) == 0) ||
      (slen == 9 && strncasecmp (scheme, "nbds+unix", 9) == 0))
    return "unix";
  if ((slen == 9 && strncasecmp (scheme, "nbd+vsock", 9) == 0) ||
      (slen == 10 && strncasecmp (scheme, "nbds+vsock", 10) == 0))
    return "vsock";
  return NULL;
}

/* The host in lower case and the port as pieces: host[:port], or
 * [v6]:port; the port defaults to 10809.  -1 on ENOMEM.
 */
static int
uri_put_host_port (FILE *fp, const struct uri_parts *p)
{
  const char *h = p->host, *h_end = p->host_end;
  const char *port = NULL, *port_end = NULL;
  char *host;
  size_t i;

  if (h < h_end && *h == '[') {
    const char *close = memchr (h, ']', h_end - h);

    if (close && close + 1 < h_end && close[1] == ':') {
      port = close + 2;
      port_end = h_end;
      h_end = close + 1;
    }
  }
  else {
    const char *colon = memchr (h, ':', h_end - h);

    if (colon) {
      port = colon + 1;
      port_end = h_end;
      h_end = colon;
    }
  }
  host = uri_percent_decode (h, h_end - h);
  if (host == NULL)
    return -1;
  for (i = 0; host[i]; ++i)
    host[i] = tolower ((unsigned char) host[i]);
  uri_put_piece (fp, host, strlen (host));
  free (host);
  if (port == NULL || port == port_end)
    uri_put_piece (fp, "10809", 5);
  else {
    /* Leading zeroes do not make another port. */
    while (port + 1 < port_end && *port == '0')
      port++;
    uri_put_piece (fp, port, port_end - port);
  }
  return 0;
}

char *
uri_disk (const char *uri)
{
  struct uri_parts p;
  struct disk_query dq = { NULL, 0 };
  char *ret = NULL, *exp = NULL, *sock = NULL, *real = NULL;
  size_t size = 0, slen, i;
  const char *transport;
  FILE *fp;

  fp = open_memstream (&ret, &size);
  if (fp == NULL)
    return NULL;
  uri_split (uri, &p);
  if (p.scheme == NULL) {
    /* Not a URI we can read (libnbd will say): as written, less its
     * secrets, which must decide nothing.
     */
    char *name = uri_redact (uri);

    if (name == NULL)
      goto err;
    fputs ("raw ", fp);
    uri_put_piece (fp, name, strlen (name));
    free (name);
    return uri_close_stream (fp, &ret);
  }

  slen = p.scheme_end - p.scheme;
  transport = uri_transport (p.scheme, slen);
  if (transport == NULL) {
    fputs ("scheme ", fp);
    for (i = 0; i < slen; ++i)
      fputc (tolower ((unsigned char) p.scheme[i]), fp);
    fputc (' ', fp);
  }
  else
    fprintf (fp, "%s ", transport);

  /* The export name: the path less its first '/'. */
  if (p.path < p.path_end && *p.path == '/')
    exp = uri_percent_decode (p.path + 1, p.path_end - p.path - 1);
  else
    exp = uri_percent_decode (p.path, p.path_end - p.path);
  if (exp == NULL)
    goto err;
  uri_put_piece (fp, exp, strlen (exp));

  if (transport && strcmp (transport, "unix") == 0) {
    uri_query_each (&p, uri_disk_item, &dq);
    sock = uri_percent_decode (dq.socket ? dq.socket : "", dq.socket_len);
    if (sock == NULL)
      goto err;
    real = sock[0] ? realpath (sock, NULL) : NULL;
    uri_put_piece (fp, real ? real : sock, strlen (real ? real : sock));
  }
  else if (uri_put_host_port (fp, &p) == -1)
    goto err;
  free (exp);
  free (sock);
  free (real);
  return uri_close_stream (fp, &ret);

 err:
  fclose (fp);
  free (ret);
  free (exp);
  free (sock);
  free (real);
  return NULL;
}
