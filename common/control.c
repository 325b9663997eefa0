/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* The control socket (control=SOCKET).
 *
 * A Unix socket created mode 0600 in .get_ready (so that it is there
 * once nbdkit writes its pid file or runs its --run command), served
 * from .after_fork by one thread; only the uid nbdkit runs as may use
 * it (SO_PEERCRED, checked on every connection besides the mode).
 * Each request is one JSON object on one line, {"command": NAME, ...},
 * and gets one JSON object on one line back, {"ok": true, ...} or
 * {"ok": false, "error": WHY}.  This file is the server: the socket,
 * the peer check, the bounds below and the line framing; the requests
 * and the commands are control-cmd.c's.
 *
 * Nothing a client does reaches the export: every socket is
 * non-blocking, a connection holds at most one request and one reply
 * (it is read from again only once its reply is sent), a request is at
 * most CONTROL_MAX_LINE bytes, at most CONTROL_MAX_CLIENTS connections
 * are served at once, and one that sits on half a request or on an
 * unread reply for CONTROL_TIMEOUT seconds, or idle for CONTROL_IDLE,
 * is dropped.
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

#include "control.h"
#include "internal.h"

/* -D quorum.control_timeout=N: CONTROL_TIMEOUT and CONTROL_IDLE become
 * N seconds (for the tests).
 */
NBDKIT_DLL_PUBLIC int quorum_debug_control_timeout;

static int listen_fd = -1;
static int wake_pipe[2] = { -1, -1 };  /* cleanup wakes the thread */
static pthread_t control_thread;
static bool control_running;
static dev_t sock_dev;          /* the socket we created, so that */
static ino_t sock_ino;          /* cleanup removes nothing else */

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

  if (lstat (quorum_control_path, &st) == -1) {
    if (errno == ENOENT)
      return 0;
    nbdkit_error ("control=%s: %m", quorum_control_path);
    return -1;
  }
  if (!S_ISSOCK (st.st_mode)) {
    nbdkit_error ("control=%s: exists and is not a socket: refusing to "
                  "replace it; remove it or choose another path",
                  quorum_control_path);
    return -1;
  }
  if (st.st_uid != geteuid ()) {
    nbdkit_error ("control=%s: a socket owned by uid %u, not by this "
                  "server's uid %u: refusing to replace it; remove it or "
                  "choose another path", quorum_control_path,
                  (unsigned) st.st_uid, (unsigned) geteuid ());
    return -1;
  }
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1) {
    nbdkit_error ("control=: socket: %m");
    return -1;
  }
  strcpy (sun.sun_path, quorum_control_path);
  r = connect (fd, (struct sockaddr *) &sun, sizeof sun);
  close (fd);
  if (r == 0) {
    nbdkit_error ("control=%s: in use: a server listens on it (another "
                  "nbdkit with this control=?); stop it or choose "
                  "another path", quorum_control_path);
    return -1;
  }
  if (errno == ECONNREFUSED)
    return 1;
  nbdkit_error ("control=%s: %m", quorum_control_path);
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
  if (quorum_control_path == NULL)
    return 0;
  control_status_init ();

  r = control_probe ();
  if (r == -1)
    return -1;
  if (r == 1 && unlink (quorum_control_path) == -1 && errno != ENOENT) {
    nbdkit_error ("control=%s: removing the stale socket: %m",
                  quorum_control_path);
    return -1;
  }

  listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                      0);
  if (listen_fd == -1) {
    nbdkit_error ("control=: socket: %m");
    return -1;
  }
  strcpy (sun.sun_path, quorum_control_path);
  /* The socket is created 0600: bind(2) applies the umask, and nbdkit
   * runs no other thread yet (nor do we, before lifecycle_connect_all) to
   * create a file or start a child command under this one.
   */
  mask = umask (0177);
  r = bind (listen_fd, (struct sockaddr *) &sun, sizeof sun);
  err = errno;
  umask (mask);
  if (r == -1) {
    errno = err;
    nbdkit_error ("control=%s: bind: %m", quorum_control_path);
    goto err_sock;
  }
  if (lstat (quorum_control_path, &st) == -1 || !S_ISSOCK (st.st_mode) ||
      (st.st_mode & 0777) != 0600) {
    nbdkit_error ("control=%s: the socket was not created mode 0600",
                  quorum_control_path);
    goto err_bound;
  }
  sock_dev = st.st_dev;
  sock_ino = st.st_ino;
  if (listen (listen_fd, CONTROL_MAX_CLIENTS) == -1) {
    nbdkit_error ("control=%s: listen: %m", quorum_control_path);
    goto err_bound;
  }
  return 0;

 err_bound:
  unlink (quorum_control_path);
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
  nbdkit_debug ("quorum: control socket %s", quorum_control_path);
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
  /* A scrub is the control socket's: it stops with it (once no
   * request can start another), before the children are disconnected.
   */
  control_cmd_stop ();
  for (i = 0; i < CONTROL_MAX_CLIENTS; ++i)
    if (clients[i].fd >= 0)
      client_close (&clients[i]);
  if (listen_fd >= 0) {
    /* Only the socket we created: not one put there since. */
    if (lstat (quorum_control_path, &st) == 0 && st.st_dev == sock_dev &&
        st.st_ino == sock_ino)
      unlink (quorum_control_path);
    close (listen_fd);
    listen_fd = -1;
  }
  for (i = 0; i < 2; ++i) {
    if (wake_pipe[i] >= 0)
      close (wake_pipe[i]);
    wake_pipe[i] = -1;
  }
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


/* A refused connection: say why if it can be said at once, and close. */
static void
refuse (int fd, const char *msg)
{
  json_object *reply = control_error_reply (msg);
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
        client_reply (cl, control_error_reply (msg), now);
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
    client_reply (cl, control_error_reply (msg), now);
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
    control_status_tick (now);
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
