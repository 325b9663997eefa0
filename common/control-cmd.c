/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The control socket's requests: one JSON object, {"command": NAME,
 * "args": [STRING...]}, parsed with json-c, checked, and run by one of
 * the commands below (help, rate, scrub, status).  Arguments are
 * strings as on the command line of nbdkit-quorum-ctl(1), which passes
 * them on as they were given.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json.h>

#include <nbdkit-filter.h>

#include "control.h"
#include "internal.h"
#include "reactor.h"
#include "replace.h"
#include "resync.h"
#include "scrub.h"
#include "state.h"

static void
add (json_object *o, const char *key, json_object *v)
{
  json_object_object_add (o, key, v);
}

json_object *
control_error_reply (const char *msg)
{
  json_object *reply = json_object_new_object ();

  add (reply, "ok", json_object_new_boolean (false));
  add (reply, "error", json_object_new_string (msg));
  return reply;
}

void
control_cmd_stop (void)
{
  scrub_shutdown ();
}

/* s as printable ASCII, at most 64 bytes: it came from a client. */
static void printable (char *buf, size_t len, const char *s);

/* A size: decimal digits and an optional K, M, G, T, P or E (powers of
 * 1024).  -1 if s is not one, or too large.
 */
static int
parse_size (const char *s, uint64_t *v)
{
  static const char units[] = "KMGTPE";
  const char *u;
  char *end;
  unsigned shift = 0;

  if (*s < '0' || *s > '9')
    return -1;
  errno = 0;
  *v = strtoull (s, &end, 10);
  if (errno)
    return -1;
  if (*end) {
    u = strchr (units, *end >= 'a' ? *end - 'a' + 'A' : *end);
    if (u == NULL || *u == '\0' || end[1])
      return -1;
    shift = 10 * (u - units + 1);
    if (*v > (UINT64_MAX >> shift))
      return -1;
    *v <<= shift;
  }
  return 0;
}

/* The value of arg if it is "--NAME=VALUE", else NULL. */
static const char *
option (const char *arg, const char *name)
{
  size_t len = strlen (name);

  if (strncmp (arg, "--", 2) == 0 && strncmp (arg + 2, name, len) == 0 &&
      arg[2 + len] == '=')
    return arg + 3 + len;
  return NULL;
}

static const char *
arg_at (json_object *args, size_t i)
{
  return json_object_get_string (json_object_array_get_idx (args, i));
}

static size_t
nr_args (json_object *args)
{
  return args ? json_object_array_length (args) : 0;
}

/* The commands.  Each returns 0, or -1 with why in err. */

static int
cmd_status (json_object *reply, json_object *args, char *err, size_t errlen)
{
  return control_status (reply);
}

static int
bad_arg (const char *cmd, const char *arg, const char *why, char *err,
         size_t errlen)
{
  char a[80];

  printable (a, sizeof a, arg);
  snprintf (err, errlen, "%s: '%s': %s", cmd, a, why);
  return -1;
}

#define RATE_WHY "expected MiB/s, a number from 0 (no limit) to 1048576"

/* scrub start [--repair] [--rate=MIB/S] [--offset=O] [--length=L] |
 * scrub stop
 */
static int
cmd_scrub (json_object *reply, json_object *args, char *err, size_t errlen)
{
  const char *sub = nr_args (args) ? arg_at (args, 0) : "";
  uint64_t offset = 0, length = 0, rate = 0, size = quorum_export_size;
  bool repair = false, set_rate = false, has_length = false;
  struct scrub_status st;
  size_t i;

  if (strcmp (sub, "stop") == 0) {
    if (nr_args (args) > 1)
      return bad_arg ("scrub stop", arg_at (args, 1), "takes no arguments",
                      err, errlen);
    return scrub_stop (err, errlen);
  }
  if (strcmp (sub, "start") != 0) {
    snprintf (err, errlen, "scrub: expected \"start\" [--repair] "
              "[--rate=MIB/S] [--offset=O] [--length=L], or \"stop\"");
    return -1;
  }
  for (i = 1; i < nr_args (args); ++i) {
    const char *a = arg_at (args, i), *v;

    if (strcmp (a, "--repair") == 0)
      repair = true;
    else if ((v = option (a, "rate")) != NULL) {
      if (config_parse_rate (v, &rate) == -1)
        return bad_arg ("scrub start", a, RATE_WHY, err, errlen);
      set_rate = true;
    }
    else if ((v = option (a, "offset")) != NULL) {
      if (parse_size (v, &offset) == -1 || offset >= (uint64_t) size)
        return bad_arg ("scrub start", a, "expected a size below the "
                        "export's (such as 1G)", err, errlen);
    }
    else if ((v = option (a, "length")) != NULL) {
      if (parse_size (v, &length) == -1 || length == 0)
        return bad_arg ("scrub start", a, "expected a size above 0 (such "
                        "as 512M)", err, errlen);
      has_length = true;
    }
    else
      return bad_arg ("scrub start", a, "unknown argument: expected "
                      "--repair, --rate=MIB/S, --offset=O or --length=L",
                      err, errlen);
  }
  if (!has_length)
    length = size - offset;
  if (length > (uint64_t) size - offset) {
    snprintf (err, errlen, "scrub start: --offset=%" PRIu64 " "
              "--length=%" PRIu64 " goes past the end of the export "
              "(%" PRIu64 " bytes)", offset, length, size);
    return -1;
  }
  if (scrub_start (repair, offset, length, err, errlen) == -1)
    return -1;
  if (set_rate)
    scrub_set_rate (rate);
  scrub_get (&st);
  add (reply, "offset", json_object_new_int64 (st.offset));
  add (reply, "length", json_object_new_int64 (st.length));
  add (reply, "repair", json_object_new_boolean (st.repair));
  add (reply, "rate_limit", json_object_new_int64 (scrub_rate ()));
  return 0;
}

/* rate [--scrub=MIB/S] [--resync=MIB/S]: with none, the limits now. */
static int
cmd_rate (json_object *reply, json_object *args, char *err, size_t errlen)
{
  uint64_t scrub = 0, resync = 0;
  bool set_scrub = false, set_resync = false;
  size_t i;

  for (i = 0; i < nr_args (args); ++i) {
    const char *a = arg_at (args, i), *v;

    if ((v = option (a, "scrub")) != NULL) {
      if (config_parse_rate (v, &scrub) == -1)
        return bad_arg ("rate", a, RATE_WHY, err, errlen);
      set_scrub = true;
    }
    else if ((v = option (a, "resync")) != NULL) {
      if (config_parse_rate (v, &resync) == -1)
        return bad_arg ("rate", a, RATE_WHY, err, errlen);
      set_resync = true;
    }
    else
      return bad_arg ("rate", a, "unknown argument: expected "
                      "--resync=MIB/S or --scrub=MIB/S", err, errlen);
  }
  /* All checked before any is applied. */
  if (set_scrub)
    scrub_set_rate (scrub);
  if (set_resync)
    resync_set_rate (resync);
  add (reply, "scrub", json_object_new_int64 (scrub_rate ()));
  add (reply, "resync", json_object_new_int64 (resync_rate ()));
  return 0;
}

/* The child an argument names: its index, decimal. */
static int
child_arg (const char *cmd, json_object *args, size_t want, size_t *i,
           char *err, size_t errlen)
{
  const char *a = nr_args (args) ? arg_at (args, 0) : "";
  char why[96];
  uint64_t v;
  char *end;

  if (nr_args (args) != want) {
    snprintf (err, errlen, "%s: expected %s", cmd,
              want == 1 ? "the index of a child, such as \"fail 2\"" :
              "the index of a child and the URI of the new server "
              "(or --cancel)");
    return -1;
  }
  errno = 0;
  v = *a >= '0' && *a <= '9' ? strtoull (a, &end, 10) : UINT64_MAX;
  if (errno || v == UINT64_MAX || *end || v >= quorum_nr_children) {
    snprintf (why, sizeof why, "expected the index of a child, from 0 to "
              "%zu", quorum_nr_children - 1);
    return bad_arg (cmd, a, why, err, errlen);
  }
  *i = v;
  return 0;
}

/* Children in service: up or resyncing, the filter's plugin too. */
static size_t
in_service (void)
{
  size_t i, n = 0;

  for (i = 0; i < quorum_nr_children; ++i)
    if (child_is_local (&quorum_children[i]) ||
        state_get (&quorum_children[i]) != CHILD_DOWN)
      n++;
  return n;
}

/* fail N: take remote child N out of service (maintenance). */
static int
cmd_fail (json_object *reply, json_object *args, char *err, size_t errlen)
{
  struct child *c;
  size_t i, n;
  bool serving;

  if (child_arg ("fail", args, 1, &i, err, errlen) == -1)
    return -1;
  c = &quorum_children[i];
  if (child_is_local (c)) {
    snprintf (err, errlen, "fail %zu: child %zu is the filter's plugin, "
              "which cannot be taken out of service", i, i);
    return -1;
  }
  if (state_failed (c)) {
    snprintf (err, errlen, "fail %zu: child %zu is failed already; "
              "\"return %zu\" brings it back", i, i, i);
    return -1;
  }
  if (replace_target () == i) {
    snprintf (err, errlen, "fail %zu: child %zu is being replaced", i, i);
    return -1;
  }
  serving = state_get (c) != CHILD_DOWN;
  n = in_service ();
  if (serving && n - 1 < quorum_threshold) {
    snprintf (err, errlen, "fail %zu: would leave %zu %s in service (up "
              "or resyncing), fewer than vote-threshold=%u: refused",
              i, n - 1, n - 1 == 1 ? "child" : "children", quorum_threshold);
    return -1;
  }
  state_fail (c);
  report_admin ("fail", i);
  /* Down at once, for reason "failed": it misses every write from now
   * on, and its supervisor waits for return.
   */
  if (serving)
    reactor_cut_reason (c, "failed by the operator", "failed");
  add (reply, "child", json_object_new_int64 (i));
  add (reply, "in_service", json_object_new_int64 (in_service ()));
  return 0;
}

/* return N: put a failed child back; it is reconnected at once and
 * resynchronised like any child that comes back.
 */
static int
cmd_return (json_object *reply, json_object *args, char *err, size_t errlen)
{
  size_t i;

  if (child_arg ("return", args, 1, &i, err, errlen) == -1)
    return -1;
  if (!state_return (&quorum_children[i])) {
    snprintf (err, errlen, "return %zu: child %zu is not failed (\"fail "
              "%zu\" takes it out of service)", i, i, i);
    return -1;
  }
  report_admin ("return", i);
  add (reply, "child", json_object_new_int64 (i));
  return 0;
}

/* replace N URI | replace N --cancel */
static int
cmd_replace (json_object *reply, json_object *args, char *err,
             size_t errlen)
{
  const char *a;
  size_t i;

  if (child_arg ("replace", args, 2, &i, err, errlen) == -1)
    return -1;
  a = arg_at (args, 1);
  if (strcmp (a, "--cancel") == 0) {
    if (replace_cancel (i, err, errlen) == -1)
      return -1;
    add (reply, "child", json_object_new_int64 (i));
    add (reply, "cancelled", json_object_new_boolean (true));
    add (reply, "name", json_object_new_string (replace_name ()));
    return 0;
  }
  /* No URI begins so. */
  if (strncmp (a, "--", 2) == 0)
    return bad_arg ("replace", a, "unknown option: expected the URI of "
                    "the new server, or --cancel", err, errlen);
  if (replace_start (i, a, err, errlen) == -1)
    return -1;
  add (reply, "child", json_object_new_int64 (i));
  add (reply, "name", json_object_new_string (replace_name ()));
  return 0;
}

static int cmd_help (json_object *reply, json_object *args, char *err,
                     size_t errlen);

static const struct command {
  const char *name;
  const char *summary;
  bool takes_args;
  int (*run) (json_object *reply, json_object *args, char *err,
              size_t errlen);
} commands[] = {
  { "fail", "N: take remote child N out of service", true, cmd_fail },
  { "help", "list the commands", false, cmd_help },
  { "rate", "[--resync=MIB/S] [--scrub=MIB/S]: show or change the rate "
    "limits", true, cmd_rate },
  { "replace", "N URI: rebuild the server at URI as child N, which keeps "
    "voting until it is complete; N --cancel: forget that replace",
    true, cmd_replace },
  { "return", "N: put failed child N back in service", true, cmd_return },
  { "scrub", "start [--repair] [--rate=MIB/S] [--offset=O --length=L] | "
    "stop: read every block through the vote", true, cmd_scrub },
  { "status", "the quorum, each child (state, stale bytes, resync "
    "progress, counters, last error) and the scrub", false, cmd_status },
};
#define NR_COMMANDS (sizeof commands / sizeof commands[0])

static int
cmd_help (json_object *reply, json_object *args, char *err, size_t errlen)
{
  json_object *list = json_object_new_array ();
  size_t i;

  for (i = 0; i < NR_COMMANDS; ++i) {
    json_object *o = json_object_new_object ();

    add (o, "name", json_object_new_string (commands[i].name));
    add (o, "summary", json_object_new_string (commands[i].summary));
    json_object_array_add (list, o);
  }
  add (reply, "commands", list);
  return 0;
}

static void
printable (char *buf, size_t len, const char *s)
{
  size_t i;

  for (i = 0; s[i] && i < 64 && i + 4 < len; ++i)
    buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
  if (s[i] && i + 4 < len) {
    strcpy (buf + i, "...");
    return;
  }
  buf[i] = '\0';
}

/* line, one JSON object and nothing after it but blanks: the object,
 * or NULL with why in err (of errlen bytes).
 */
static json_object *
control_parse_request (const char *line, size_t len, char *err,
                       size_t errlen)
{
  json_object *req;
  json_tokener *tok;
  size_t end;

  /* json_tokener_parse_ex calls newlocale(3) on every parse: under the
   * sanitizer stages' preloaded runtime see tests/syslog-capture.c.
   */
  tok = json_tokener_new_ex (8);
  if (tok == NULL) {
    snprintf (err, errlen, "out of memory");
    return NULL;
  }
  json_tokener_set_flags (tok, JSON_TOKENER_STRICT
#ifdef JSON_TOKENER_VALIDATE_UTF8
                          | JSON_TOKENER_VALIDATE_UTF8
#endif
                          );
  req = json_tokener_parse_ex (tok, line, len);
  if (req == NULL) {
    enum json_tokener_error jerr = json_tokener_get_error (tok);

    snprintf (err, errlen, "malformed request: %s: send one JSON "
              "object per line, such as {\"command\": \"help\"}",
              jerr == json_tokener_continue ? "incomplete JSON" :
              json_tokener_error_desc (jerr));
    goto err;
  }
  for (end = json_tokener_get_parse_end (tok); end < len; ++end)
    if (!strchr (" \t\r", line[end])) {
      snprintf (err, errlen, "malformed request: more after the JSON "
                "object: send one object per line");
      goto err;
    }
  if (!json_object_is_type (req, json_type_object)) {
    snprintf (err, errlen, "malformed request: not a JSON object: "
              "send one such as {\"command\": \"status\"}");
    goto err;
  }
  json_tokener_free (tok);
  return req;

 err:
  json_tokener_free (tok);
  json_object_put (req);
  return NULL;
}

/* Handle one request line (without its newline): the reply object. */
json_object *
control_request (const char *line, size_t len)
{
  json_object *reply = json_object_new_object ();
  json_object *req, *cmd = NULL, *args = NULL;
  char err[256] = "", name[80] = "";
  const struct command *command = NULL;
  size_t i;

  /* "ok" first, for people reading the line. */
  add (reply, "ok", json_object_new_boolean (true));
  req = control_parse_request (line, len, err, sizeof err);
  if (req == NULL)
    goto out;
  if (!json_object_object_get_ex (req, "command", &cmd) ||
      !json_object_is_type (cmd, json_type_string)) {
    snprintf (err, sizeof err, "malformed request: no \"command\" string, "
              "as in {\"command\": \"status\"}");
    goto out;
  }
  printable (name, sizeof name, json_object_get_string (cmd));
  for (i = 0; i < NR_COMMANDS; ++i)
    if (strcmp (commands[i].name, json_object_get_string (cmd)) == 0)
      command = &commands[i];
  if (command == NULL) {
    snprintf (err, sizeof err, "unknown command \"%s\": \"help\" lists "
              "the commands", name);
    goto out;
  }
  add (reply, "command", json_object_new_string (command->name));
  /* Refuse what a command would ignore. */
  json_object_object_foreach (req, key, val) {
    char k[80];

    if (strcmp (key, "command") == 0)
      continue;
    if (strcmp (key, "args") == 0 &&
        json_object_is_type (val, json_type_array) &&
        (json_object_array_length (val) == 0 || command->takes_args)) {
      args = val;
      continue;
    }
    printable (k, sizeof k, key);
    if (strcmp (key, "args") == 0 && command->takes_args)
      snprintf (err, sizeof err, "%s: \"args\" must be an array of "
                "strings", command->name);
    else if (strcmp (key, "args") == 0)
      snprintf (err, sizeof err, "%s: takes no arguments", command->name);
    else
      snprintf (err, sizeof err, "%s: unknown key \"%s\"", command->name, k);
    goto out;
  }
  for (i = 0; args && i < json_object_array_length (args); ++i)
    if (!json_object_is_type (json_object_array_get_idx (args, i),
                              json_type_string)) {
      snprintf (err, sizeof err, "%s: \"args\" must be an array of "
                "strings", command->name);
      goto out;
    }
  command->run (reply, args, err, sizeof err);

 out:
  json_object_put (req);
  if (err[0]) {
    json_object_put (reply);
    reply = json_object_new_object ();
    add (reply, "ok", json_object_new_boolean (false));
    if (command)
      add (reply, "command", json_object_new_string (command->name));
    add (reply, "error", json_object_new_string (err));
  }
  return reply;
}
