/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* nbdkit-quorum-ctl: ask a running quorum through its control socket
 * (control=SOCKET).  One JSON request line out, one JSON reply line
 * back; see nbdkit-quorum-ctl(1).
 *
 * Exit status: 0 the command succeeded, 1 the server refused it
 * ("ok": false), 2 a usage error or no usable reply.
 */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json.h>

#define EXIT_REFUSED 1
#define EXIT_USAGE 2

/* Longest reply read; status of the most children is far smaller. */
#define MAX_REPLY (16 * 1024 * 1024)

static const char *progname = "nbdkit-quorum-ctl";
static unsigned timeout_s = 30;

static void
usage (FILE *fp)
{
  fprintf (fp,
           "usage: %s [--timeout=SECONDS] SOCKET COMMAND [ARGS...]\n"
           "\n"
           "Commands:\n"
           "  status [--json]   the quorum, each child and the scrub\n"
           "  scrub start [--repair] [--rate=MIB/S] [--offset=O] "
           "[--length=L] [--json]\n"
           "                    read every block through the vote\n"
           "  scrub stop [--json]\n"
           "  rate [--resync=MIB/S] [--scrub=MIB/S] [--json]\n"
           "                    show or change the rate limits\n"
           "  fail N [--json]   take child N out of service\n"
           "  return N [--json] put failed child N back in service\n"
           "  replace N URI [--json]\n"
           "                    rebuild the server at URI as child N\n"
           "  replace N --cancel [--json]\n"
           "                    forget the replace of child N in progress\n"
           "  help [--json]     the commands the server knows\n"
           "Any other command is sent as {\"command\": COMMAND, \"args\": "
           "[ARGS...]}\n"
           "and its reply printed as JSON.\n"
           "\n"
           "Exit status: 0 done, 1 refused by the server, 2 usage or "
           "connection error.\n"
           "See nbdkit-quorum-ctl(1).\n", progname);
}

static void __attribute__ ((noreturn, format (printf, 1, 2)))
fail (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "%s: ", progname);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
  exit (EXIT_USAGE);
}

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Wait for events on fd until deadline; dies on timeout. */
static void
wait_fd (int fd, short events, double deadline, const char *path)
{
  for (;;) {
    struct pollfd pfd = { .fd = fd, .events = events };
    double left = deadline - now ();
    int r;

    if (left <= 0)
      fail ("%s: no reply within %u s", path, timeout_s);
    r = poll (&pfd, 1, (int) (left * 1000) + 1);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      fail ("poll: %m");
    if (r > 0)
      return;
  }
}

/* Send request as one line on path; the reply line, NUL-terminated. */
static char *
exchange (const char *path, const char *request)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  double deadline = now () + timeout_s;
  size_t len = strlen (request), off = 0, cap = 4096, got = 0;
  char *line, *buf;
  int fd;

  if (strlen (path) >= sizeof sun.sun_path)
    fail ("%s: path too long for a Unix socket", path);
  strcpy (sun.sun_path, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd == -1)
    fail ("socket: %m");
  if (connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1 &&
      errno != EINPROGRESS && errno != EAGAIN)
    fail ("%s: %m (is nbdkit running with control=%s?)", path, path);

  if (asprintf (&line, "%s\n", request) == -1)
    fail ("asprintf: %m");
  len++;
  while (off < len) {
    ssize_t n;

    wait_fd (fd, POLLOUT, deadline, path);
    n = send (fd, line + off, len - off, MSG_NOSIGNAL);
    if (n == -1 && (errno == EAGAIN || errno == EINTR))
      continue;
    if (n == -1) {
      /* The server may have refused us with a reply already. */
      if (errno == EPIPE || errno == ECONNRESET)
        break;
      fail ("%s: send: %m", path);
    }
    off += n;
  }
  free (line);

  buf = malloc (cap);
  if (buf == NULL)
    fail ("malloc: %m");
  for (;;) {
    ssize_t n;
    char *nl;

    if (got + 1 >= cap) {
      if (cap >= MAX_REPLY)
        fail ("%s: reply longer than %d bytes", path, MAX_REPLY);
      cap *= 2;
      buf = realloc (buf, cap);
      if (buf == NULL)
        fail ("realloc: %m");
    }
    wait_fd (fd, POLLIN, deadline, path);
    n = recv (fd, buf + got, cap - got - 1, 0);
    if (n == -1 && (errno == EAGAIN || errno == EINTR))
      continue;
    if (n == -1)
      fail ("%s: recv: %m", path);
    if (n == 0)
      fail ("%s: the server closed the connection without a reply", path);
    got += n;
    buf[got] = '\0';
    nl = memchr (buf, '\n', got);
    if (nl) {
      *nl = '\0';
      break;
    }
  }
  close (fd);
  return buf;
}

/* Helpers to read the reply: a missing key reads as 0, "" or null. */
static json_object *
get (json_object *o, const char *key)
{
  json_object *v = NULL;

  if (o && json_object_object_get_ex (o, key, &v))
    return v;
  return NULL;
}

static int64_t
get_int (json_object *o, const char *key)
{
  return json_object_get_int64 (get (o, key));
}

static const char *
get_str (json_object *o, const char *key)
{
  json_object *v = get (o, key);

  return v && json_object_is_type (v, json_type_string) ?
    json_object_get_string (v) : "";
}

/* Bytes for people: exact in the largest unit that divides them, else
 * with one decimal.
 */
static const char *
human (uint64_t bytes, char *buf, size_t len)
{
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB",
                                       "PiB" };
  size_t u = 0;
  double v = bytes;

  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  if (u == 0 || (bytes & ((UINT64_C (1) << (10 * u)) - 1)) == 0)
    snprintf (buf, len, "%" PRIu64 " %s", (uint64_t) v, units[u]);
  else
    snprintf (buf, len, "%.1f %s", v, units[u]);
  return buf;
}

/* A rate limit for people: "50 MiB/s" or "none". */
static const char *
human_rate (uint64_t rate, char *buf, size_t len)
{
  char b[32];

  if (rate == 0)
    return "none";
  snprintf (buf, len, "%s/s", human (rate, b, sizeof b));
  return buf;
}

static void
print_scrub (json_object *s)
{
  const char *state = get_str (s, "state");
  int64_t done = get_int (s, "bytes_done"), total = get_int (s, "bytes_total");
  char b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];

  if (s == NULL)
    return;
  if (strcmp (state, "idle") == 0) {
    printf ("            Scrub : none since start-up (rate limit %s)\n",
            human_rate (get_int (s, "rate_limit"), b1, sizeof b1));
    return;
  }
  printf ("            Scrub : %s%s%s, %s of %s", state,
          strcmp (state, "done") == 0 && json_object_get_boolean (
            get (s, "stopped")) ? " (stopped)" : "",
          json_object_get_boolean (get (s, "repair")) ? ", repairing" : "",
          human (done, b1, sizeof b1), human (total, b2, sizeof b2));
  if (total > 0)
    printf (" (%d%%)", (int) (done * 100 / total));
  printf (" from offset %" PRIi64, get_int (s, "offset"));
  if (get (s, "resumed_from"))
    printf (", resumed at offset %" PRIi64 " after a restart",
            get_int (s, "resumed_from"));
  if (strcmp (state, "running") == 0) {
    printf (", %s/s, limit %s", human (get_int (s, "rate"), b1, sizeof b1),
            human_rate (get_int (s, "rate_limit"), b2, sizeof b2));
    if (get (s, "eta_seconds")) {
      int64_t eta = get_int (s, "eta_seconds");

      printf (", %" PRIi64 ":%02d:%02d to go", eta / 3600,
              (int) (eta / 60 % 60), (int) (eta % 60));
    }
    if (json_object_get_boolean (get (s, "stopping")))
      printf (", stopping");
  }
  else
    printf (" in %" PRIi64 " s", get_int (s, "elapsed_seconds"));
  printf ("\n");
  printf ("                    %s mismatched, %s repaired, %s unreadable, "
          "%s without quorum\n",
          human (get_int (s, "mismatched_bytes"), b1, sizeof b1),
          human (get_int (s, "repaired_bytes"), b2, sizeof b2),
          human (get_int (s, "unreadable_bytes"), b3, sizeof b3),
          human (get_int (s, "no_quorum_bytes"), b4, sizeof b4));
  printf ("                    %s skipped as zeroes, %s checked without "
          "every child\n",
          human (get_int (s, "skipped_bytes"), b5, sizeof b5),
          human (get_int (s, "unchecked_bytes"), b6, sizeof b6));
}

/* The persistent state (state=): the file, or that there is none. */
static void
print_state (json_object *s)
{
  char b1[32], b2[32];

  if (s == NULL)
    return;
  if (get (s, "file") == NULL)
    printf ("       State file : none (in memory only)\n");
  else
    printf ("       State file : %s (write-intent granule %s, %" PRIi64
            " syncs)\n", get_str (s, "file"),
            human (get_int (s, "granule"), b1, sizeof b1),
            get_int (s, "syncs"));
  printf ("        Unsettled : %s\n",
          human (get_int (s, "unsettled_bytes"), b2, sizeof b2));
}

static void
print_status (const char *path, json_object *reply)
{
  json_object *q = get (reply, "quorum");
  json_object *children = get (reply, "children");
  size_t i, n = children && json_object_is_type (children, json_type_array)
    ? json_object_array_length (children) : 0;
  char b1[32], b2[32], b3[32];

  printf ("%s:\n", path);
  printf ("          Version : nbdkit-quorum %s (%s)\n",
          get_str (q, "version"), get_str (q, "form"));
  if (get (q, "size"))
    printf ("             Size : %" PRIi64 " (%s)\n", get_int (q, "size"),
            human (get_int (q, "size"), b1, sizeof b1));
  else
    printf ("             Size : unknown\n");
  printf ("            State : %s\n", get_str (q, "state"));
  printf ("         Children : %" PRIi64 " (%" PRIi64 " up)\n",
          get_int (q, "children"), get_int (q, "children_up"));
  printf ("   Vote threshold : %" PRIi64 "\n", get_int (q, "vote_threshold"));
  printf ("     Read pattern : %s\n", get_str (q, "read_pattern"));
  printf ("  Vote block size : %s\n",
          human (get_int (q, "vote_block_size"), b1, sizeof b1));
  printf ("      Export name : \"%s\"\n", get_str (q, "export_name"));
  print_state (get (reply, "state"));
  print_scrub (get (reply, "scrub"));
  printf ("\n");
  printf ("%5s  %-9s  %10s  %10s  %10s  %5s  %6s  %8s  %10s  %s\n",
          "INDEX", "STATE", "STALE", "READS", "WRITES", "BAD", "ERRORS",
          "TIMEOUTS", "REPAIRED", "NAME");
  for (i = 0; i < n; ++i) {
    json_object *c = json_object_array_get_idx (children, i);
    json_object *r = get (c, "resync"), *e = get (c, "last_error");

    printf ("%5" PRIi64 "  %-9s  %10s  %10" PRIi64 "  %10" PRIi64
            "  %5" PRIi64 "  %6" PRIi64 "  %8" PRIi64 "  %10s  %s\n",
            get_int (c, "index"), get_str (c, "state"),
            human (get_int (c, "stale_bytes"), b1, sizeof b1),
            get_int (c, "reads"), get_int (c, "writes"),
            get_int (c, "bad_reads"), get_int (c, "errors"),
            get_int (c, "timeouts"),
            human (get_int (c, "bytes_repaired"), b2, sizeof b2),
            get_str (c, "name"));
    if (r) {
      int64_t done = get_int (r, "bytes_done");
      int64_t total = get_int (r, "bytes_total");

      printf ("%5s  resync: %s of %s copied",
              "", human (done, b1, sizeof b1), human (total, b2, sizeof b2));
      if (total > 0)
        printf (" (%d%%)", (int) (done * 100 / total));
      printf (", %s/s", human (get_int (r, "rate"), b3, sizeof b3));
      if (get (r, "eta_seconds")) {
        int64_t eta = get_int (r, "eta_seconds");

        printf (", %" PRIi64 ":%02d:%02d to go", eta / 3600,
                (int) (eta / 60 % 60), (int) (eta % 60));
      }
      printf ("\n");
    }
    if (get (c, "replacement")) {
      json_object *p = get (c, "replacement"), *pr = get (p, "resync");

      printf ("%5s  replacement: %s, %s, %s stale", "", get_str (p, "name"),
              get_str (p, "state"),
              human (get_int (p, "stale_bytes"), b1, sizeof b1));
      if (pr) {
        int64_t done = get_int (pr, "bytes_done");
        int64_t total = get_int (pr, "bytes_total");

        printf (", rebuilt %s of %s", human (done, b2, sizeof b2),
                human (total, b3, sizeof b3));
        if (total > 0)
          printf (" (%d%%)", (int) (done * 100 / total));
        printf (", %s/s", human (get_int (pr, "rate"), b1, sizeof b1));
        if (get (pr, "eta_seconds")) {
          int64_t eta = get_int (pr, "eta_seconds");

          printf (", %" PRIi64 ":%02d:%02d to go", eta / 3600,
                  (int) (eta / 60 % 60), (int) (eta % 60));
        }
      }
      printf ("\n");
    }
    if (e) {
      printf ("%5s  last error: %s %s", "", get_str (e, "time"),
              get_str (e, "type"));
      if (get (e, "offset"))
        printf (" %" PRIi64 "+%" PRIi64, get_int (e, "offset"),
                get_int (e, "length"));
      printf (": %s\n", get_str (e, "error"));
    }
  }
}

static void
print_help (json_object *reply)
{
  json_object *list = get (reply, "commands");
  size_t i, n = list && json_object_is_type (list, json_type_array) ?
    json_object_array_length (list) : 0;

  for (i = 0; i < n; ++i) {
    json_object *c = json_object_array_get_idx (list, i);

    printf ("%-12s %s\n", get_str (c, "name"), get_str (c, "summary"));
  }
}

int
main (int argc, char *argv[])
{
  enum { OPT_TIMEOUT = CHAR_MAX + 1, OPT_VERSION };
  static const struct option long_options[] = {
    { "help", no_argument, NULL, 'h' },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    { "version", no_argument, NULL, OPT_VERSION },
    { NULL, 0, NULL, 0 },
  };
  const char *path, *command;
  bool json = false, known;
  json_object *req, *reply, *ok;
  json_tokener *tok;
  char *line, b1[32];
  int c, i;

  /* "+": options end at SOCKET, the rest belongs to the command. */
  while ((c = getopt_long (argc, argv, "+h", long_options, NULL)) != -1) {
    switch (c) {
    case 'h':
      usage (stdout);
      exit (EXIT_SUCCESS);
    case OPT_VERSION:
      printf ("%s %s\n", progname, PACKAGE_VERSION);
      exit (EXIT_SUCCESS);
    case OPT_TIMEOUT: {
      char *end;
      unsigned long v;

      errno = 0;
      v = strtoul (optarg, &end, 10);
      if (errno || end == optarg || *end || v == 0 || v > 86400)
        fail ("--timeout=%s: expected seconds between 1 and 86400", optarg);
      timeout_s = v;
      break;
    }
    default:
      usage (stderr);
      exit (EXIT_USAGE);
    }
  }
  if (argc - optind < 2) {
    usage (stderr);
    exit (EXIT_USAGE);
  }
  path = argv[optind];
  command = argv[optind + 1];
  argv += optind + 2;
  argc -= optind + 2;

  req = json_object_new_object ();
  json_object_object_add (req, "command", json_object_new_string (command));
  known = strcmp (command, "status") == 0 || strcmp (command, "help") == 0;
  if (strcmp (command, "scrub") == 0 || strcmp (command, "rate") == 0 ||
      strcmp (command, "fail") == 0 || strcmp (command, "return") == 0 ||
      strcmp (command, "replace") == 0) {
    /* Checked by the server: passed on, less --json. */
    json_object *args = json_object_new_array ();

    known = true;
    for (i = 0; i < argc; ++i) {
      if (strcmp (argv[i], "--json") == 0)
        json = true;
      else
        json_object_array_add (args, json_object_new_string (argv[i]));
    }
    json_object_object_add (req, "args", args);
  }
  else if (known) {
    for (i = 0; i < argc; ++i) {
      if (strcmp (argv[i], "--json") == 0)
        json = true;
      else {
        fprintf (stderr, "%s: %s: unknown argument '%s'\n", progname,
                 command, argv[i]);
        usage (stderr);
        exit (EXIT_USAGE);
      }
    }
  }
  else if (argc > 0) {
    /* A command this tool does not know: passed on as it was given,
     * for a newer server to parse.
     */
    json_object *args = json_object_new_array ();

    for (i = 0; i < argc; ++i)
      json_object_array_add (args, json_object_new_string (argv[i]));
    json_object_object_add (req, "args", args);
  }

  line = exchange (path, json_object_to_json_string_ext (
                     req, JSON_C_TO_STRING_PLAIN |
                     JSON_C_TO_STRING_NOSLASHESCAPE));
  json_object_put (req);

  tok = json_tokener_new ();
  if (tok == NULL)
    fail ("json_tokener_new: %m");
  reply = json_tokener_parse_ex (tok, line, strlen (line));
  if (reply == NULL || !json_object_is_type (reply, json_type_object) ||
      !json_object_object_get_ex (reply, "ok", &ok) ||
      !json_object_is_type (ok, json_type_boolean))
    fail ("%s: malformed reply: %s", path, line);
  json_tokener_free (tok);

  if (!json_object_get_boolean (ok)) {
    if (json || !known)
      printf ("%s\n", line);
    fprintf (stderr, "%s: %s: %s\n", progname, command,
             get_str (reply, "error"));
    exit (EXIT_REFUSED);
  }
  if (json)
    printf ("%s\n", line);
  else if (strcmp (command, "status") == 0)
    print_status (path, reply);
  else if (strcmp (command, "help") == 0)
    print_help (reply);
  else if (strcmp (command, "rate") == 0) {
    printf ("resync rate limit: %s per child\n",
            human_rate (get_int (reply, "resync"), b1, sizeof b1));
    printf ("scrub rate limit: %s\n",
            human_rate (get_int (reply, "scrub"), b1, sizeof b1));
  }
  else if (strcmp (command, "fail") == 0)
    printf ("child %" PRIi64 " failed: out of service until \"return %"
            PRIi64 "\" (%" PRIi64 " in service)\n",
            get_int (reply, "child"), get_int (reply, "child"),
            get_int (reply, "in_service"));
  else if (strcmp (command, "return") == 0)
    printf ("child %" PRIi64 " returning: reconnected and resynchronised "
            "in the background: see status\n", get_int (reply, "child"));
  else if (strcmp (command, "replace") == 0 && get (reply, "cancelled"))
    printf ("child %" PRIi64 ": replace cancelled: %s disconnected, child %"
            PRIi64 " serves as before\n", get_int (reply, "child"),
            get_str (reply, "name"), get_int (reply, "child"));
  else if (strcmp (command, "replace") == 0)
    printf ("child %" PRIi64 " being replaced by %s: rebuilt in the "
            "background, then swapped in: see status\n",
            get_int (reply, "child"), get_str (reply, "name"));
  else if (strcmp (command, "scrub") == 0 && get (reply, "rate_limit"))
    printf ("scrub started (rate limit %s): see status\n",
            human_rate (get_int (reply, "rate_limit"), b1, sizeof b1));
  else if (strcmp (command, "scrub") == 0)
    printf ("scrub stopping: see status\n");
  else
    printf ("%s\n", json_object_to_json_string_ext (
              reply, JSON_C_TO_STRING_PRETTY |
              JSON_C_TO_STRING_NOSLASHESCAPE));
  json_object_put (reply);
  free (line);
  if (fflush (stdout) == EOF)
    fail ("stdout: %m");
  exit (EXIT_SUCCESS);
}
