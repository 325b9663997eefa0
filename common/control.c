/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The control socket (control=SOCKET).
 *
 * A Unix socket created mode 0600 in .get_ready (so that it is there
 * once nbdkit writes its pid file or runs its --run command), served
 * from .after_fork by one thread; only the uid nbdkit runs as may use
 * it (SO_PEERCRED, checked on every connection besides the mode).  Each request is one JSON
 * object on one line, {"command": NAME, ...}, and gets one JSON object
 * on one line back, {"ok": true, ...} or {"ok": false, "error": WHY}.
 *
 * Nothing a client does reaches the export: every socket is
 * non-blocking, a connection holds at most one request and one reply
 * (it is read from again only once its reply is sent), a request is at
 * most CONTROL_MAX_LINE bytes, at most CONTROL_MAX_CLIENTS connections
 * are served at once, and one that sits on half a request or on an
 * unread reply for CONTROL_TIMEOUT seconds, or idle for CONTROL_IDLE,
 * is dropped.  Status reads the engine's counters with atomic loads and
 * takes none of its locks.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json.h>

#include <nbdkit-filter.h>

#include "cleanup.h"
#include "control.h"
#include "dirty.h"
#include "internal.h"
#include "state.h"

/* -D quorum.control_timeout=N: CONTROL_TIMEOUT and CONTROL_IDLE become
 * N seconds (for the tests).
 */
NBDKIT_DLL_PUBLIC int quorum_debug_control_timeout;

static char *control_path;      /* control=, absolute; NULL: none */
static int listen_fd = -1;
static int wake_pipe[2] = { -1, -1 };  /* cleanup wakes the thread */
static pthread_t control_thread;
static bool control_running;
static dev_t sock_dev;          /* the socket we created, so that */
static ino_t sock_ino;          /* cleanup removes nothing else */

/* The last error of each child, written by report_bad and report_down
 * (any thread), read by status.  This lock protects last_errors.
 */
struct last_error {
  bool set;
  bool down;                    /* a lost connection, not a command */
  struct timespec when;         /* CLOCK_REALTIME */
  enum op_type type;
  uint64_t offset, length;
  int err;                      /* 0: outvoted */
  char reason[96];              /* down: why */
};
static pthread_mutex_t last_lock = PTHREAD_MUTEX_INITIALIZER;
static struct last_error last_errors[VOTE_MAX_CHILDREN];

/* The resync rate, over the last RATE_WINDOW seconds: samples of each
 * child's resync_done taken about once a second by the control thread
 * alone (status runs there too).
 */
#define RATE_WINDOW 10
struct rate_ring {
  uint64_t since;               /* the resync sampled (resync_since) */
  size_t n, head;               /* samples held, next slot */
  struct { double t; uint64_t done; } s[RATE_WINDOW + 1];
};
static struct rate_ring rates[VOTE_MAX_CHILDREN];
static double last_sample;

/* A client connection. */
struct client {
  int fd;                       /* -1: a free slot */
  char *in;                     /* CONTROL_MAX_LINE bytes */
  size_t in_len;
  double in_since;              /* the first byte of a partial request */
  char *out;                    /* the reply being sent */
  size_t out_len, out_off;
  double out_since;             /* the reply's last progress */
  double active;                /* the last request's end */
  bool eof;                     /* it sent all it will */
  bool closing;                 /* close once out is sent */
};
static struct client clients[CONTROL_MAX_CLIENTS];

static double
now_mono (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned
timeout_s (void)
{
  return quorum_debug_control_timeout > 0 ?
    (unsigned) quorum_debug_control_timeout : CONTROL_TIMEOUT;
}

static unsigned
idle_s (void)
{
  return quorum_debug_control_timeout > 0 ?
    (unsigned) quorum_debug_control_timeout : CONTROL_IDLE;
}

int
control_config (const char *value)
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
  free (control_path);
  control_path = path;
  return 1;
}

/* What is at the path now: 0 nothing, 1 a socket of ours that nobody
 * listens on (a server killed before it could remove it), or -1 with an
 * error said: a file that is not a socket, a socket of another uid, or
 * one in use.
 */
static int
control_probe (void)
{
  struct stat st;
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd, r;

  if (lstat (control_path, &st) == -1) {
    if (errno == ENOENT)
      return 0;
    nbdkit_error ("control=%s: %m", control_path);
    return -1;
  }
  if (!S_ISSOCK (st.st_mode)) {
    nbdkit_error ("control=%s: exists and is not a socket: refusing to "
                  "replace it; remove it or choose another path",
                  control_path);
    return -1;
  }
  if (st.st_uid != geteuid ()) {
    nbdkit_error ("control=%s: a socket owned by uid %u, not by this "
                  "server's uid %u: refusing to replace it; remove it or "
                  "choose another path", control_path,
                  (unsigned) st.st_uid, (unsigned) geteuid ());
    return -1;
  }
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1) {
    nbdkit_error ("control=: socket: %m");
    return -1;
  }
  strcpy (sun.sun_path, control_path);
  r = connect (fd, (struct sockaddr *) &sun, sizeof sun);
  close (fd);
  if (r == 0) {
    nbdkit_error ("control=%s: in use: a server listens on it (another "
                  "nbdkit with this control=?); stop it or choose "
                  "another path", control_path);
    return -1;
  }
  if (errno == ECONNREFUSED)
    return 1;
  nbdkit_error ("control=%s: %m", control_path);
  return -1;
}

/* Serving the socket. */

static void control_serve (void);

static void *
control_thread_fn (void *vp)
{
  control_serve ();
  return NULL;
}

int
control_listen (void)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct stat st;
  mode_t mask;
  size_t i;
  int r, err;

  for (i = 0; i < CONTROL_MAX_CLIENTS; ++i)
    clients[i].fd = -1;
  if (control_path == NULL)
    return 0;

  r = control_probe ();
  if (r == -1)
    return -1;
  if (r == 1 && unlink (control_path) == -1 && errno != ENOENT) {
    nbdkit_error ("control=%s: removing the stale socket: %m",
                  control_path);
    return -1;
  }

  listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                      0);
  if (listen_fd == -1) {
    nbdkit_error ("control=: socket: %m");
    return -1;
  }
  strcpy (sun.sun_path, control_path);
  /* The socket is created 0600: bind(2) applies the umask, and nbdkit
   * runs no other thread yet (nor do we, before child_connect_all) to
   * create a file or start a child command under this one.
   */
  mask = umask (0177);
  r = bind (listen_fd, (struct sockaddr *) &sun, sizeof sun);
  err = errno;
  umask (mask);
  if (r == -1) {
    errno = err;
    nbdkit_error ("control=%s: bind: %m", control_path);
    goto err_sock;
  }
  if (lstat (control_path, &st) == -1 || !S_ISSOCK (st.st_mode) ||
      (st.st_mode & 0777) != 0600) {
    nbdkit_error ("control=%s: the socket was not created mode 0600",
                  control_path);
    goto err_bound;
  }
  sock_dev = st.st_dev;
  sock_ino = st.st_ino;
  if (listen (listen_fd, CONTROL_MAX_CLIENTS) == -1) {
    nbdkit_error ("control=%s: listen: %m", control_path);
    goto err_bound;
  }
  return 0;

 err_bound:
  unlink (control_path);
 err_sock:
  close (listen_fd);
  listen_fd = -1;
  return -1;
}

int
control_start (void)
{
  sigset_t all, old;
  int err;

  if (listen_fd == -1)
    return 0;
  if (pipe2 (wake_pipe, O_CLOEXEC | O_NONBLOCK) == -1) {
    nbdkit_error ("control=: pipe2: %m");
    return -1;
  }

  /* Signals are for nbdkit's own threads. */
  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  err = pthread_create (&control_thread, NULL, control_thread_fn, NULL);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  if (err) {
    errno = err;
    nbdkit_error ("control=: pthread_create: %m");
    close (wake_pipe[0]);
    close (wake_pipe[1]);
    wake_pipe[0] = wake_pipe[1] = -1;
    return -1;
  }
  control_running = true;
  nbdkit_debug ("quorum: control socket %s", control_path);
  return 0;
}

static void
client_close (struct client *cl)
{
  if (cl->fd >= 0)
    close (cl->fd);
  free (cl->in);
  free (cl->out);
  memset (cl, 0, sizeof *cl);
  cl->fd = -1;
}

void
control_stop (void)
{
  struct stat st;
  size_t i;

  if (control_running) {
    char c = 0;

    if (write (wake_pipe[1], &c, 1) == -1)
      nbdkit_debug ("quorum: control: waking the thread: %m");
    pthread_join (control_thread, NULL);
    control_running = false;
  }
  for (i = 0; i < CONTROL_MAX_CLIENTS; ++i)
    if (clients[i].fd >= 0)
      client_close (&clients[i]);
  if (listen_fd >= 0) {
    /* Only the socket we created: not one put there since. */
    if (lstat (control_path, &st) == 0 && st.st_dev == sock_dev &&
        st.st_ino == sock_ino)
      unlink (control_path);
    close (listen_fd);
    listen_fd = -1;
  }
  for (i = 0; i < 2; ++i) {
    if (wake_pipe[i] >= 0)
      close (wake_pipe[i]);
    wake_pipe[i] = -1;
  }
}

void
control_unload (void)
{
  free (control_path);
  control_path = NULL;
}

/* The latest error of a child, for status. */
static void
note (size_t child, bool down, enum op_type type, uint64_t offset,
      uint64_t length, int err, const char *reason)
{
  struct last_error *e;

  if (child >= VOTE_MAX_CHILDREN)
    return;
  e = &last_errors[child];
  SCOPED_LOCK (&last_lock);
  e->set = true;
  e->down = down;
  clock_gettime (CLOCK_REALTIME, &e->when);
  if (!down)
    e->type = type;
  e->offset = offset;
  e->length = length;
  e->err = err;
  snprintf (e->reason, sizeof e->reason, "%s", reason);
}

void
control_note_error (size_t child, enum op_type type, uint64_t offset,
                    uint64_t length, int err)
{
  note (child, false, type, offset, length, err, "");
}

void
control_note_down (size_t child, const char *reason)
{
  note (child, true, 0, 0, 0, 0, reason ? reason : "");
}

/* Resync rates. */

static void
rates_sample (double now)
{
  size_t i;

  if (now - last_sample < 1)
    return;
  last_sample = now;
  for (i = 0; i < quorum_nr_children && i < VOTE_MAX_CHILDREN; ++i) {
    struct child *c = &quorum_children[i];
    struct rate_ring *r = &rates[i];
    uint64_t since = __atomic_load_n (&c->resync_since, __ATOMIC_ACQUIRE);

    if (since != r->since) {
      r->since = since;
      r->n = r->head = 0;
    }
    if (since == 0)
      continue;
    r->s[r->head].t = now;
    r->s[r->head].done = __atomic_load_n (&c->resync_done,
                                          __ATOMIC_ACQUIRE);
    r->head = (r->head + 1) % (RATE_WINDOW + 1);
    if (r->n < RATE_WINDOW + 1)
      r->n++;
  }
}

/* Bytes per second copied over the last RATE_WINDOW seconds, or since
 * the resync began if it is younger.
 */
static double
rate_of (size_t i, uint64_t since, uint64_t done, double now)
{
  struct rate_ring *r = &rates[i];
  double began = since / 1e9;

  if (r->since == since && r->n > 0) {
    size_t oldest = (r->head + RATE_WINDOW + 1 - r->n) % (RATE_WINDOW + 1);
    double dt = now - r->s[oldest].t;

    if (dt >= 1 && done >= r->s[oldest].done)
      return (done - r->s[oldest].done) / dt;
  }
  if (now - began > 0)
    return done / (now - began);
  return 0;
}

/* Replies. */

static const char *
state_name (enum child_state state)
{
  switch (state) {
  case CHILD_UP: return "up";
  case CHILD_DOWN: return "down";
  case CHILD_RESYNC: return "resyncing";
  }
  return "unknown";
}

static const char *
errno_label (int err, char *buf, size_t len)
{
  const char *s = strerrorname_np (err);

  if (s)
    return s;
  snprintf (buf, len, "errno%d", err);
  return buf;
}

static void
add (json_object *o, const char *key, json_object *v)
{
  json_object_object_add (o, key, v);
}

static json_object *
json_u64 (uint64_t v)
{
  return json_object_new_int64 (v > INT64_MAX ? INT64_MAX : (int64_t) v);
}

static json_object *
last_error_json (size_t i)
{
  struct last_error e;
  json_object *o;
  struct tm tm;
  char when[64], frac[96], buf[32];

  {
    SCOPED_LOCK (&last_lock);
    e = last_errors[i];
  }
  if (!e.set)
    return NULL;
  o = json_object_new_object ();
  gmtime_r (&e.when.tv_sec, &tm);
  strftime (when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf (frac, sizeof frac, "%s.%03dZ", when,
            (int) (e.when.tv_nsec / 1000000));
  add (o, "time", json_object_new_string (frac));
  add (o, "unix_time", json_object_new_int64 (e.when.tv_sec));
  if (e.down) {
    add (o, "type", json_object_new_string ("down"));
    add (o, "error", json_object_new_string (e.reason));
  }
  else {
    add (o, "type", json_object_new_string (report_op_name (e.type)));
    add (o, "offset", json_u64 (e.offset));
    add (o, "length", json_u64 (e.length));
    add (o, "error", json_object_new_string (e.err ? errno_label (e.err, buf,
                                                                  sizeof buf)
                                             : "mismatch"));
  }
  return o;
}

static json_object *
child_json (size_t i, double now, bool *healthy)
{
  struct child *c = &quorum_children[i];
  bool local = child_is_local (c);
  enum child_state state = local ? CHILD_UP : state_get (c);
  uint64_t stale = dirty_bytes (&c->dirty);
  json_object *o = json_object_new_object (), *e;

  add (o, "index", json_object_new_int64 (i));
  add (o, "name", json_object_new_string (c->name));
  add (o, "local", json_object_new_boolean (local));
  add (o, "state", json_object_new_string (state_name (state)));
  add (o, "stale_bytes", json_u64 (stale));
  if (state != CHILD_UP || stale)
    *healthy = false;

  if (state == CHILD_RESYNC) {
    uint64_t since = __atomic_load_n (&c->resync_since, __ATOMIC_ACQUIRE);
    uint64_t done = __atomic_load_n (&c->resync_done, __ATOMIC_ACQUIRE);
    uint64_t total = __atomic_load_n (&c->resync_total, __ATOMIC_ACQUIRE);
    double rate = 0;
    json_object *r = json_object_new_object ();

    if (since == 0)             /* about to begin */
      done = 0, total = stale;
    else
      rate = rate_of (i, since, done, now);
    add (r, "bytes_done", json_u64 (done));
    add (r, "bytes_total", json_u64 (total));
    add (r, "rate", json_u64 ((uint64_t) rate));
    add (r, "elapsed_seconds",
         json_u64 (since ? (uint64_t) (now - since / 1e9) : 0));
    add (r, "eta_seconds", rate >= 1 ?
         json_u64 ((uint64_t) (stale / rate + 0.999)) : NULL);
    add (o, "resync", r);
  }
  else
    add (o, "resync", NULL);

  add (o, "reads", json_u64 (__atomic_load_n (&c->stats.reads,
                                              __ATOMIC_RELAXED)));
  add (o, "writes", json_u64 (__atomic_load_n (&c->stats.writes,
                                               __ATOMIC_RELAXED)));
  add (o, "bad_reads", json_u64 (__atomic_load_n (&c->stats.bad_reads,
                                                  __ATOMIC_RELAXED)));
  add (o, "errors", json_u64 (__atomic_load_n (&c->stats.errors,
                                               __ATOMIC_RELAXED)));
  add (o, "timeouts", json_u64 (__atomic_load_n (&c->stats.timeouts,
                                                 __ATOMIC_RELAXED)));
  add (o, "bytes_repaired",
       json_u64 (__atomic_load_n (&c->stats.bytes_repaired,
                                  __ATOMIC_RELAXED)));
  e = last_error_json (i);
  add (o, "last_error", e);
  return o;
}

static int
cmd_status (json_object *reply, char *err, size_t errlen)
{
  json_object *q = json_object_new_object ();
  json_object *list = json_object_new_array ();
  double now = now_mono ();
  bool healthy = true;
  size_t i, up = 0;

  rates_sample (now);
  for (i = 0; i < quorum_nr_children; ++i) {
    json_object *c = child_json (i, now, &healthy);
    json_object *st;

    if (json_object_object_get_ex (c, "state", &st) &&
        strcmp (json_object_get_string (st), "up") == 0)
      up++;
    json_object_array_add (list, c);
  }

  add (q, "version", json_object_new_string (PACKAGE_VERSION));
  add (q, "form", json_object_new_string (quorum_has_local ?
                                          "filter" : "plugin"));
  add (q, "state", json_object_new_string (healthy ? "healthy" :
                                           "degraded"));
  add (q, "size", quorum_promise.size >= 0 ?
       json_object_new_int64 (quorum_promise.size) : NULL);
  add (q, "children", json_object_new_int64 (quorum_nr_children));
  add (q, "children_up", json_object_new_int64 (up));
  add (q, "vote_threshold", json_object_new_int64 (quorum_threshold));
  add (q, "read_pattern", json_object_new_string (
         quorum_read_pattern == READ_PATTERN_FIFO ? "fifo" : "quorum"));
  add (q, "vote_block_size", json_object_new_int64 (quorum_vote_block));
  add (q, "granule_size", json_object_new_int64 (1 << DIRTY_SHIFT));
  add (q, "export_name", json_object_new_string (quorum_export ()));
  add (reply, "quorum", q);
  add (reply, "children", list);
  return 0;
}

static int cmd_help (json_object *reply, char *err, size_t errlen);

static const struct command {
  const char *name;
  const char *summary;
  int (*run) (json_object *reply, char *err, size_t errlen);
} commands[] = {
  { "help", "list the commands", cmd_help },
  { "status", "the quorum and each child: state, stale bytes, resync "
    "progress, counters, last error", cmd_status },
};
#define NR_COMMANDS (sizeof commands / sizeof commands[0])

static int
cmd_help (json_object *reply, char *err, size_t errlen)
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

/* s as printable ASCII, at most 64 bytes: it came from a client. */
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

/* Handle one request line (without its newline): the reply object. */
static json_object *
control_request (const char *line, size_t len)
{
  json_object *reply = json_object_new_object ();
  json_object *req = NULL, *cmd = NULL;
  json_tokener *tok;
  char err[256] = "", name[80] = "";
  const struct command *command = NULL;
  size_t i, end;

  /* "ok" first, for people reading the line. */
  add (reply, "ok", json_object_new_boolean (true));
  /* XXX json_tokener_parse_ex calls newlocale(3) on every parse; with
   * the ASan or TSan runtime preloaded into Debian's nbdkit (the
   * sanitizer stage of scripts/test) glibc's locale lock is already
   * broken when nbdkit starts, and this thread hangs there (the export
   * is not affected).
   */
  tok = json_tokener_new_ex (8);
  if (tok == NULL) {
    snprintf (err, sizeof err, "out of memory");
    goto out;
  }
  json_tokener_set_flags (tok, JSON_TOKENER_STRICT
#ifdef JSON_TOKENER_VALIDATE_UTF8
                          | JSON_TOKENER_VALIDATE_UTF8
#endif
                          );
  req = json_tokener_parse_ex (tok, line, len);
  if (req == NULL) {
    enum json_tokener_error jerr = json_tokener_get_error (tok);

    snprintf (err, sizeof err, "malformed request: %s: send one JSON "
              "object per line, such as {\"command\": \"help\"}",
              jerr == json_tokener_continue ? "incomplete JSON" :
              json_tokener_error_desc (jerr));
    goto out;
  }
  for (end = json_tokener_get_parse_end (tok); end < len; ++end)
    if (!strchr (" \t\r", line[end])) {
      snprintf (err, sizeof err, "malformed request: more after the JSON "
                "object: send one object per line");
      goto out;
    }
  if (!json_object_is_type (req, json_type_object)) {
    snprintf (err, sizeof err, "malformed request: not a JSON object: "
              "send one such as {\"command\": \"status\"}");
    goto out;
  }
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
  /* Neither command takes arguments: refuse what they would ignore. */
  json_object_object_foreach (req, key, val) {
    char k[80];

    if (strcmp (key, "command") == 0)
      continue;
    if (strcmp (key, "args") == 0 &&
        json_object_is_type (val, json_type_array) &&
        json_object_array_length (val) == 0)
      continue;
    printable (k, sizeof k, key);
    if (strcmp (key, "args") == 0)
      snprintf (err, sizeof err, "%s: takes no arguments", command->name);
    else
      snprintf (err, sizeof err, "%s: unknown key \"%s\"", command->name, k);
    goto out;
  }
  command->run (reply, err, sizeof err);

 out:
  if (tok)
    json_tokener_free (tok);
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

/* Queue reply as a line on cl; drops the client if out of memory. */
static void
client_reply (struct client *cl, json_object *reply, double now)
{
  const char *s = json_object_to_json_string_ext (
    reply, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  size_t len = strlen (s);

  free (cl->out);
  cl->out = malloc (len + 1);
  if (cl->out == NULL) {
    cl->closing = true;
    cl->out_len = cl->out_off = 0;
  }
  else {
    memcpy (cl->out, s, len);
    cl->out[len] = '\n';
    cl->out_len = len + 1;
    cl->out_off = 0;
    cl->out_since = now;
  }
  json_object_put (reply);
}

static json_object *
error_reply (const char *msg)
{
  json_object *reply = json_object_new_object ();

  add (reply, "ok", json_object_new_boolean (false));
  add (reply, "error", json_object_new_string (msg));
  return reply;
}

/* A refused connection: say why if it can be said at once, and close. */
static void
refuse (int fd, const char *msg)
{
  json_object *reply = error_reply (msg);
  const char *s = json_object_to_json_string_ext (reply,
                                                  JSON_C_TO_STRING_PLAIN);
  char line[512];
  int n = snprintf (line, sizeof line, "%s\n", s);

  if (n > 0 && (size_t) n < sizeof line &&
      send (fd, line, n, MSG_NOSIGNAL | MSG_DONTWAIT) == -1)
    nbdkit_debug ("quorum: control: %m");
  json_object_put (reply);
  close (fd);
}

static void
control_accept (double now)
{
  for (;;) {
    struct ucred cred = { .uid = (uid_t) -1 };
    socklen_t len = sizeof cred;
    char msg[160];
    size_t i;
    int fd = accept4 (listen_fd, NULL, NULL,
                      SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd == -1) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
          errno != ECONNABORTED)
        nbdkit_debug ("quorum: control: accept: %m");
      return;
    }
    if (getsockopt (fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1 ||
        cred.uid != geteuid ()) {
      snprintf (msg, sizeof msg, "permission denied: only uid %u may use "
                "this control socket", (unsigned) geteuid ());
      nbdkit_debug ("quorum: control: refused a connection from uid %u "
                    "(pid %d)", (unsigned) cred.uid, (int) cred.pid);
      refuse (fd, msg);
      continue;
    }
    for (i = 0; i < CONTROL_MAX_CLIENTS; ++i)
      if (clients[i].fd == -1)
        break;
    if (i == CONTROL_MAX_CLIENTS) {
      snprintf (msg, sizeof msg, "too many control connections (at most "
                "%d at once): try again later", CONTROL_MAX_CLIENTS);
      refuse (fd, msg);
      continue;
    }
    clients[i].in = malloc (CONTROL_MAX_LINE);
    if (clients[i].in == NULL) {
      refuse (fd, "out of memory");
      continue;
    }
    clients[i].fd = fd;
    clients[i].active = now;
  }
}

/* Answer the first complete request in cl->in, if there is one and no
 * reply is being sent.  Discards blank lines.
 */
static void
client_process (struct client *cl, double now)
{
  while (cl->out_len == 0 && !cl->closing) {
    char *nl = memchr (cl->in, '\n', cl->in_len);
    size_t len, blank = 0;

    if (nl == NULL) {
      if (cl->in_len == CONTROL_MAX_LINE) {
        char msg[128];

        snprintf (msg, sizeof msg, "request too long: no newline within "
                  "%d bytes", CONTROL_MAX_LINE);
        client_reply (cl, error_reply (msg), now);
        cl->closing = true;
        cl->in_len = 0;
      }
      else if (cl->eof)
        cl->closing = true;     /* half a request, then gone */
      return;
    }
    len = nl - cl->in;
    while (blank < len && strchr (" \t\r", cl->in[blank]) &&
           cl->in[blank] != '\0')
      blank++;
    if (blank < len)
      client_reply (cl, control_request (cl->in, len), now);
    memmove (cl->in, nl + 1, cl->in_len - len - 1);
    cl->in_len -= len + 1;
    cl->in_since = now;
    cl->active = now;
  }
}

static void
client_read (struct client *cl, double now)
{
  ssize_t n = recv (cl->fd, cl->in + cl->in_len,
                    CONTROL_MAX_LINE - cl->in_len, MSG_DONTWAIT);

  if (n == 0)
    cl->eof = true;
  else if (n == -1) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      cl->eof = cl->closing = true;
    return;
  }
  else {
    if (cl->in_len == 0)
      cl->in_since = now;
    cl->in_len += n;
  }
  client_process (cl, now);
}

static void
client_write (struct client *cl, double now)
{
  ssize_t n = send (cl->fd, cl->out + cl->out_off,
                    cl->out_len - cl->out_off, MSG_DONTWAIT | MSG_NOSIGNAL);

  if (n == -1) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      client_close (cl);
    }
    return;
  }
  cl->out_off += n;
  cl->out_since = now;
  if (cl->out_off == cl->out_len) {
    free (cl->out);
    cl->out = NULL;
    cl->out_len = cl->out_off = 0;
    cl->active = now;
    client_process (cl, now);
  }
}

/* Drop a client past its deadline; true if it was. */
static bool
client_expired (struct client *cl, double now)
{
  if (cl->out_len) {
    if (now - cl->out_since < timeout_s ())
      return false;
    nbdkit_debug ("quorum: control: dropped a client that did not read "
                  "its reply within %u s", timeout_s ());
  }
  else if (cl->in_len) {
    char msg[128];

    if (now - cl->in_since < timeout_s ())
      return false;
    snprintf (msg, sizeof msg, "request timed out: no newline within %u s",
              timeout_s ());
    client_reply (cl, error_reply (msg), now);
    cl->closing = true;
    cl->in_len = 0;
    /* One try at saying why; it is dropped whatever happens. */
    if (send (cl->fd, cl->out, cl->out_len, MSG_DONTWAIT | MSG_NOSIGNAL)
        == -1)
      nbdkit_debug ("quorum: control: %m");
  }
  else if (now - cl->active < idle_s ())
    return false;
  client_close (cl);
  return true;
}

static void
control_serve (void)
{
  struct pollfd fds[CONTROL_MAX_CLIENTS + 2];
  struct client *owner[CONTROL_MAX_CLIENTS + 2];

  for (;;) {
    size_t i, n = 0;
    double now;
    int r;

    fds[n++] = (struct pollfd) { .fd = wake_pipe[0], .events = POLLIN };
    fds[n++] = (struct pollfd) { .fd = listen_fd, .events = POLLIN };
    for (i = 0; i < CONTROL_MAX_CLIENTS; ++i) {
      struct client *cl = &clients[i];
      short events = 0;

      if (cl->fd == -1)
        continue;
      if (cl->out_len)
        events = POLLOUT;
      else if (!cl->closing && !cl->eof)
        events = POLLIN;
      owner[n] = cl;
      fds[n++] = (struct pollfd) { .fd = cl->fd, .events = events };
    }

    /* Once a second: deadlines and resync rate samples. */
    r = poll (fds, n, 1000);
    if (r == -1 && errno != EINTR) {
      nbdkit_error ("quorum: control: poll: %m: the control socket is no "
                    "longer served");
      return;
    }
    if (r > 0 && fds[0].revents)
      return;
    now = now_mono ();
    rates_sample (now);
    if (r > 0 && (fds[1].revents & POLLIN))
      control_accept (now);

    for (i = 2; i < n; ++i) {
      struct client *cl = owner[i];

      if (r > 0 && fds[i].revents) {
        if (fds[i].revents & POLLOUT)
          client_write (cl, now);
        else if (fds[i].revents & POLLIN)
          client_read (cl, now);
        else if (fds[i].revents & (POLLERR | POLLHUP | POLLNVAL)) {
          client_close (cl);
          continue;
        }
      }
      if (cl->fd == -1)
        continue;
      if (cl->closing && cl->out_len == 0) {
        client_close (cl);
        continue;
      }
      if (cl->eof && cl->out_len == 0 && cl->in_len == 0) {
        client_close (cl);
        continue;
      }
      client_expired (cl, now);
    }
  }
}
