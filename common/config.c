/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Parameters of the quorum, shared by the filter and the plugin: the
 * settings and their defaults, and each key's parsing (.config).  What
 * .config_complete checks and builds is in config-complete.c.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "config-spec.h"
#include "internal.h"

unsigned quorum_threshold;            /* 0 until set: strict majority */
enum read_pattern quorum_read_pattern = READ_PATTERN_QUORUM;
bool quorum_blkverify;
bool quorum_rewrite_corrupted;
bool quorum_syslog = true;
unsigned quorum_child_timeout = 30;
unsigned quorum_reconnect_delay = 1;
unsigned quorum_reconnect_max = 30;
bool quorum_start_degraded;
uint32_t quorum_vote_block = 4096;
bool quorum_wait_threshold;
uint64_t quorum_max_lag = QUORUM_MAX_LAG_DEFAULT;
char *quorum_workdir;
char *quorum_state_file;
uint32_t quorum_state_granule = QUORUM_STATE_GRANULE_DEFAULT;
char *quorum_control_path;
uint64_t quorum_scrub_rate = QUORUM_SCRUB_RATE_DEFAULT;
uint64_t quorum_resync_rate = QUORUM_RESYNC_RATE_DEFAULT;

struct child *quorum_children;
size_t quorum_nr_children;
bool quorum_has_local;

NBDKIT_DLL_PUBLIC int quorum_debug_votes;

/* For .config_complete (config-spec.h). */
struct config_spec_vector config_child_specs;
bool config_threshold_set;
bool config_state_granule_set;

/* The longest child-timeout and reconnection delays, in seconds: a
 * day.  Beyond it a number stops meaning anything useful, and every
 * computation on them (milliseconds in an int, doubling) must stay
 * exact.
 */
#define MAX_SECONDS 86400

/* An unsigned key=value in [min, max]: refuse anything else, naming
 * the range (min_text says what min means).
 */
static int
config_parse_seconds (const char *key, const char *value, unsigned min,
                      const char *min_text, unsigned *ret)
{
  unsigned r;

  if (nbdkit_parse_unsigned (key, value, &r) == -1)
    return -1;
  if (r < min || r > MAX_SECONDS) {
    nbdkit_error ("%s=%s: out of range: must be between %s and %d "
                  "seconds (one day)", key, value, min_text, MAX_SECONDS);
    return -1;
  }
  *ret = r;
  return 0;
}

static int
config_parse_bool (const char *key, const char *value, bool *ret)
{
  int r = nbdkit_parse_bool (value);

  if (r == -1) {
    nbdkit_error ("%s=%s: expected a boolean (true/false, on/off, 1/0)",
                  key, value);
    return -1;
  }
  *ret = r;
  return 0;
}

/* export-name=: the one export the quorum serves.  Its children hold
 * the replicas of that export alone, so a client asking for another is
 * refused rather than given these replicas under another name.
 */
static char *config_export_name;  /* NULL: "" */

const char *
quorum_export (void)
{
  return config_export_name ? config_export_name : "";
}

static int
config_set_export_name (const char *value)
{
  size_t len = strlen (value);

  /* The longest string NBD carries. */
  if (len > 4096) {
    nbdkit_error ("export-name=: too long (%zu bytes, at most 4096)", len);
    return -1;
  }
  free (config_export_name);
  config_export_name = strdup (value);
  if (config_export_name == NULL) {
    nbdkit_error ("strdup: %m");
    return -1;
  }
  return 1;
}

/* Write at most max bytes of s into buf (of max*4+1), printable ASCII
 * as is, anything else as \xNN: the export name comes from a client.
 */
static void
config_printable (char *buf, const char *s, size_t max)
{
  size_t i;

  for (i = 0; s[i] && i < max; ++i) {
    unsigned char ch = s[i];

    if (ch >= 0x20 && ch < 0x7f && ch != '\\' && ch != '"')
      *buf++ = ch;
    else
      buf += sprintf (buf, "\\x%02x", ch);
  }
  *buf = '\0';
}

int
quorum_check_export (const char *exportname)
{
  char asked[64 * 4 + 1], served[64 * 4 + 1];

  if (exportname == NULL)       /* nbdkit_export_name failed: said why */
    return -1;
  if (strcmp (exportname, quorum_export ()) == 0)
    return 0;
  config_printable (asked, exportname, 64);
  config_printable (served, quorum_export (), 64);
  nbdkit_error ("quorum: export \"%s%s\" refused: this quorum serves only "
                "the export \"%s%s\" (export-name=), whose replicas its "
                "children hold; connect to that one, or run another "
                "nbdkit with export-name= and children for this one",
                asked, strlen (exportname) > 64 ? "..." : "",
                served, strlen (quorum_export ()) > 64 ? "..." : "");
  return -1;
}

/* control=: the socket's path, made absolute.  1, or -1. */
static int
config_control (const char *value)
{
  struct sockaddr_un sun;
  char *path;

  if (*value == '\0') {
    nbdkit_error ("control=: empty path; give the path of the control "
                  "socket to create, such as control=/run/quorum.ctl");
    return -1;
  }
  path = nbdkit_absolute_path (value);
  if (path == NULL)
    return -1;
  if (strlen (path) >= sizeof sun.sun_path) {
    nbdkit_error ("control=%s: path too long for a Unix socket (%zu "
                  "bytes, at most %zu); choose a shorter one", path,
                  strlen (path), sizeof sun.sun_path - 1);
    free (path);
    return -1;
  }
  free (quorum_control_path);
  quorum_control_path = path;
  return 1;
}

int
config_parse_rate (const char *value, uint64_t *bytes_per_second)
{
  const char *p = value;
  uint64_t whole = 0, frac = 0, scale = 1;

  /* Digits, then a point and digits, by hand: strtod would take signs,
   * exponents, hex, inf and nan, and the locale's decimal point.
   */
  if (*p < '0' || *p > '9')
    return -1;
  for (; *p >= '0' && *p <= '9'; ++p) {
    whole = whole * 10 + (*p - '0');
    if (whole > QUORUM_RATE_MAX)
      return -1;
  }
  if (*p == '.') {
    if (p[1] < '0' || p[1] > '9')
      return -1;
    for (++p; *p >= '0' && *p <= '9'; ++p)
      if (scale < 1000000) {    /* a millionth of a MiB/s is enough */
        frac = frac * 10 + (*p - '0');
        scale *= 10;
      }
  }
  if (*p != '\0' || (whole == QUORUM_RATE_MAX && frac > 0))
    return -1;
  *bytes_per_second = whole * 1048576 + frac * 1048576 / scale;
  return 0;
}

/* child= and child-command=: one more child, in order. */
static int
config_child (const char *key, const char *value)
{
  bool command = strcmp (key, "child-command") == 0;
  struct config_child_spec spec = { .command = command };

  if (value[strspn (value, " \t\n")] == '\0') {
    if (command)
      nbdkit_error ("child-command=: empty command; give the command "
                    "of an NBD server that supports systemd socket "
                    "activation, such as 'qemu-nbd -f qcow2 disk.qcow2'");
    else
      nbdkit_error ("child=: empty URI; give an NBD URI such as "
                    "nbd+unix:///?socket=/path/to/socket");
    return -1;
  }
  if (config_child_specs.len >= VOTE_MAX_CHILDREN) {
    /* Not the value: it may hold a password. */
    nbdkit_error ("%s=: too many children (at most %d)",
                  key, VOTE_MAX_CHILDREN);
    return -1;
  }
  spec.value = strdup (value);
  if (spec.value == NULL) {
    nbdkit_error ("strdup: %m");
    return -1;
  }
  if (config_spec_vector_append (&config_child_specs, spec) == -1) {
    nbdkit_error ("realloc: %m");
    free (spec.value);
    return -1;
  }
  return 1;
}

/* Over 80 lines: one branch per key, as nbdkit's .config callbacks
 * are; the keys read best as one list.
 */
int
quorum_config (const char *key, const char *value)
{
  if (strcmp (key, "export-name") == 0)
    return config_set_export_name (value);
  if (strcmp (key, "child") == 0 || strcmp (key, "child-command") == 0)
    return config_child (key, value);
  if (strcmp (key, "vote-threshold") == 0) {
    if (nbdkit_parse_unsigned ("vote-threshold", value,
                               &quorum_threshold) == -1)
      return -1;
    config_threshold_set = true;
    return 1;
  }
  if (strcmp (key, "child-timeout") == 0)
    return config_parse_seconds (key, value, 0, "0 (no timeout)",
                                 &quorum_child_timeout) == -1 ? -1 : 1;
  if (strcmp (key, "reconnect-delay") == 0)
    return config_parse_seconds (key, value, 1, "1",
                                 &quorum_reconnect_delay) == -1 ? -1 : 1;
  if (strcmp (key, "reconnect-max-delay") == 0)
    return config_parse_seconds (key, value, 1, "1",
                                 &quorum_reconnect_max) == -1 ? -1 : 1;
  if (strcmp (key, "vote-block-size") == 0) {
    int64_t r = nbdkit_parse_size (value);

    if (r == -1)
      return -1;
    if (r < 512 || r > 32 * 1024 * 1024 || (r & (r - 1)) != 0) {
      nbdkit_error ("vote-block-size=%s: must be a power of 2 between 512 "
                    "and 32M", value);
      return -1;
    }
    quorum_vote_block = r;
    return 1;
  }
  if (strcmp (key, "wait-for") == 0) {
    if (strcmp (value, "all") == 0)
      quorum_wait_threshold = false;
    else if (strcmp (value, "threshold") == 0)
      quorum_wait_threshold = true;
    else {
      nbdkit_error ("wait-for=%s: expected all or threshold", value);
      return -1;
    }
    return 1;
  }
  if (strcmp (key, "max-lag") == 0) {
    int64_t r = nbdkit_parse_size (value);

    if (r == -1)
      return -1;
    if (r < 4096 || r > (INT64_C (1) << 40)) {
      nbdkit_error ("max-lag=%s: must be between 4K and 1T", value);
      return -1;
    }
    quorum_max_lag = r;
    return 1;
  }
  if (strcmp (key, "read-pattern") == 0) {
    if (strcmp (value, "quorum") == 0)
      quorum_read_pattern = READ_PATTERN_QUORUM;
    else if (strcmp (value, "fifo") == 0)
      quorum_read_pattern = READ_PATTERN_FIFO;
    else {
      nbdkit_error ("read-pattern=%s: expected quorum or fifo", value);
      return -1;
    }
    return 1;
  }
  if (strcmp (key, "blkverify") == 0)
    return config_parse_bool (key, value, &quorum_blkverify) == -1 ? -1 : 1;
  if (strcmp (key, "rewrite-corrupted") == 0)
    return config_parse_bool (key, value,
                              &quorum_rewrite_corrupted) == -1 ? -1 : 1;
  if (strcmp (key, "report") == 0) {
    free (quorum_report_file);
    /* nbdkit changes directory later. */
    quorum_report_file = nbdkit_absolute_path (value);
    return quorum_report_file ? 1 : -1;
  }
  if (strcmp (key, "start-degraded") == 0)
    return config_parse_bool (key, value,
                              &quorum_start_degraded) == -1 ? -1 : 1;
  if (strcmp (key, "syslog") == 0)
    return config_parse_bool (key, value, &quorum_syslog) == -1 ? -1 : 1;
  if (strcmp (key, "state") == 0) {
    free (quorum_state_file);
    /* nbdkit changes directory later. */
    quorum_state_file = nbdkit_absolute_path (value);
    return quorum_state_file ? 1 : -1;
  }
  if (strcmp (key, "state-granule") == 0) {
    int64_t r = nbdkit_parse_size (value);

    if (r == -1)
      return -1;
    if (r < (int64_t) DIRTY_GRANULE || r > INT64_C (1) << 30 ||
        (r & (r - 1)) != 0) {
      nbdkit_error ("state-granule=%s: must be a power of 2 between 64K "
                    "and 1G (default: 4M)", value);
      return -1;
    }
    quorum_state_granule = r;
    config_state_granule_set = true;
    return 1;
  }
  if (strcmp (key, "control") == 0)
    return config_control (value);
  if (strcmp (key, "scrub-rate") == 0) {
    if (config_parse_rate (value, &quorum_scrub_rate) == -1) {
      nbdkit_error ("scrub-rate=%s: expected MiB/s, a number from 0 (no "
                    "limit) to 1048576, such as scrub-rate=50", value);
      return -1;
    }
    return 1;
  }
  if (strcmp (key, "resync-rate") == 0) {
    if (config_parse_rate (value, &quorum_resync_rate) == -1) {
      nbdkit_error ("resync-rate=%s: expected MiB/s, a number from 0 (no "
                    "limit) to 1048576, such as resync-rate=100", value);
      return -1;
    }
    return 1;
  }

  return 0;
}

void
quorum_dump (void)
{
  struct nbd_handle *nbd;

  printf ("quorum_version=%s\n", PACKAGE_VERSION);
  printf ("quorum_hash=sha256\n");
  printf ("quorum_max_children=%d\n", VOTE_MAX_CHILDREN);
  printf ("quorum_vote_block_size=%" PRIu32 "\n", quorum_vote_block);
  printf ("quorum_dirty_granule=%d\n", 1 << DIRTY_SHIFT);
  printf ("quorum_child_timeout=%u\n", quorum_child_timeout);
  printf ("quorum_features=vote-block-size read-pattern=fifo blkverify "
          "rewrite-corrupted child-command child-timeout reconnect resync "
          "start-degraded report-json syslog control export-name state "
          "state-granule heal settle wait-for max-lag\n");
  printf ("quorum_state_granule_default=%" PRIu32 "\n",
          QUORUM_STATE_GRANULE_DEFAULT);
  nbd = nbd_create ();
  if (nbd) {
    printf ("quorum_libnbd_version=%s\n", nbd_get_version (nbd));
    nbd_close (nbd);
  }
}

void
quorum_unload (void)
{
  size_t i;

  for (i = 0; i < config_child_specs.len; ++i)
    free (config_child_specs.ptr[i].value);
  config_spec_vector_free (&config_child_specs);
  /* Every slot: after a replace the spare's holds the strings of the
   * child it took over from, and its dirty map is the spare's own.
   */
  for (i = 0; quorum_children && i < quorum_nr_slots (); ++i) {
    free (quorum_children[i].uri);
    free (quorum_children[i].command);
    free (quorum_children[i].name);
    dirty_free (&quorum_children[i].dirty);
  }
  free (quorum_children);
  quorum_children = NULL;
  free (quorum_report_file);
  quorum_report_file = NULL;
  free (quorum_state_file);
  quorum_state_file = NULL;
  quorum_state_granule = QUORUM_STATE_GRANULE_DEFAULT;
  config_state_granule_set = false;
  free (quorum_workdir);
  quorum_workdir = NULL;
  quorum_nr_children = 0;
  free (config_export_name);
  config_export_name = NULL;

  /* The defaults again, as if never loaded. */
  quorum_threshold = 0;
  config_threshold_set = false;
  quorum_read_pattern = READ_PATTERN_QUORUM;
  quorum_blkverify = false;
  quorum_rewrite_corrupted = false;
  quorum_syslog = true;
  quorum_child_timeout = 30;
  quorum_reconnect_delay = 1;
  quorum_reconnect_max = 30;
  quorum_start_degraded = false;
  quorum_vote_block = 4096;
  quorum_wait_threshold = false;
  quorum_max_lag = QUORUM_MAX_LAG_DEFAULT;
  quorum_has_local = false;
  free (quorum_control_path);
  quorum_control_path = NULL;
  quorum_scrub_rate = QUORUM_SCRUB_RATE_DEFAULT;
  quorum_resync_rate = QUORUM_RESYNC_RATE_DEFAULT;
}
