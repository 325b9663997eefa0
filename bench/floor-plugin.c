/* nbdkit-quorum benchmark helper: the least an nbdkit plugin, or
 * filter, can do to serve a quorum of NBD children, as a floor to
 * measure the quorum against (bench/quorum-floor.sh).  Not part of the
 * project's build and never installed: the benchmark compiles it into
 * its own scratch directory, once as a plugin and once, with
 * -DFLOOR_FILTER, as a filter.
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 *
 *   nbdkit ./floor-plugin.so socket=C0 socket=C1 socket=C2 [serial=true]
 *   nbdkit --filter=./floor-filter.so nbd socket=C0 \
 *          floor-socket=C1 floor-socket=C2
 *
 * Each client connection gets its own libnbd handle on every child.  A
 * read reads every child into its own buffer and fails unless they are
 * all equal; a write goes to every child; both wait for every child.
 * The commands are issued at once (nbd_aio_*) and the request's own
 * thread polls the children's sockets until every command is done: no
 * other thread, no hand-over, no bookkeeping, no vote beyond memcmp.
 * A request takes a lane, its own set of handles on the children, for
 * its whole life: the first request of a connection opens the first
 * lane, and a request that finds every lane of its connection busy
 * opens another, so at queue depth D there are up to min(D, nbdkit's
 * threads) lanes, each a connection to every child.  So requests share
 * nothing but a mutex held to take and give back a lane: no reactor,
 * no hand-over, as if libnbd could be driven from any thread at once.
 * (The children serve more connections than the quorum opens; that is
 * the price of sharing nothing.)  serial=true makes the plugin's
 * thread model serialize_requests, so that nbdkit runs each
 * connection's requests on one thread (no worker threads handing the
 * connection's read over to each other).
 *
 * The filter is the same for the quorum filter's shape: child 0 is the
 * plugin below it (called on the request's thread once the commands to
 * the floor-socket= children are sent, as the quorum filter does),
 * the others are NBD servers.
 */

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef FLOOR_FILTER
#include <nbdkit-filter.h>
#define FLOOR_KEY "floor-socket"
#else
#define NBDKIT_API_VERSION 2
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
#include <nbdkit-plugin.h>
#define FLOOR_KEY "socket"
#endif
#include <libnbd.h>

#define FLOOR_MAX 8
#define FLOOR_LANES 64

/* The NBD servers this opens: every child for the plugin, the children
 * after the first for the filter.
 */
static const char *sockets[FLOOR_MAX];
static size_t nr_sockets;
#ifndef FLOOR_FILTER
static bool serial;
#endif

/* The parameters of both: the filter passes the others down. */
static int
floor_param (const char *key, const char *value)
{
  if (strcmp (key, FLOOR_KEY) == 0) {
    if (nr_sockets == FLOOR_MAX) {
      nbdkit_error ("floor: at most %d %s=", FLOOR_MAX, FLOOR_KEY);
      return -1;
    }
    sockets[nr_sockets++] = value;
    return 0;
  }
#ifndef FLOOR_FILTER
  if (strcmp (key, "serial") == 0) {
    int r = nbdkit_parse_bool (value);

    if (r == -1)
      return -1;
    serial = r;
    return 0;
  }
#endif
  return 1;
}

static int
floor_check (void)
{
  if (nr_sockets == 0) {
    nbdkit_error ("floor: %s= is needed", FLOOR_KEY);
    return -1;
  }
  return 0;
}

/* One request's handles on the children, and its read buffers. */
struct floor_lane {
  struct nbd_handle *h[FLOOR_MAX];
  char *buf[FLOOR_MAX];         /* read buffers of the children not first */
  size_t buflen;
};

/* A client connection: its lanes, and those not in use. */
struct floor_conn {
  pthread_mutex_t lock;
  struct floor_lane *lane[FLOOR_LANES];
  size_t nr_lanes;
  struct floor_lane *idle[FLOOR_LANES];
  size_t nr_idle;
};

static void
floor_lane_free (struct floor_lane *l)
{
  size_t i;

  for (i = 0; i < nr_sockets; ++i) {
    if (l->h[i])
      nbd_close (l->h[i]);
    free (l->buf[i]);
  }
  free (l);
}

static struct floor_lane *
floor_lane_new (void)
{
  struct floor_lane *l = calloc (1, sizeof *l);
  size_t i;

  if (l == NULL) {
    nbdkit_error ("floor: calloc: %m");
    return NULL;
  }
  for (i = 0; i < nr_sockets; ++i) {
    l->h[i] = nbd_create ();
    /* Plain replies, as the quorum asks for: two reads a reply. */
    if (l->h[i] == NULL ||
        nbd_set_request_structured_replies (l->h[i], false) == -1 ||
#ifdef LIBNBD_HAVE_NBD_SET_PREAD_INITIALIZE
        /* No memset of every read buffer: the quorum spares it too. */
        nbd_set_pread_initialize (l->h[i], false) == -1 ||
#endif
        nbd_connect_unix (l->h[i], sockets[i]) == -1) {
      nbdkit_error ("floor: child %zu: %s", i, nbd_get_error ());
      floor_lane_free (l);
      return NULL;
    }
  }
  return l;
}

static void
floor_free (struct floor_conn *c)
{
  size_t i;

  for (i = 0; i < c->nr_lanes; ++i)
    floor_lane_free (c->lane[i]);
  pthread_mutex_destroy (&c->lock);
  free (c);
}

/* A connection with one lane, idle. */
static struct floor_conn *
floor_new (void)
{
  struct floor_conn *c = calloc (1, sizeof *c);

  if (c == NULL) {
    nbdkit_error ("floor: calloc: %m");
    return NULL;
  }
  pthread_mutex_init (&c->lock, NULL);
  c->lane[0] = floor_lane_new ();
  if (c->lane[0] == NULL) {
    floor_free (c);
    return NULL;
  }
  c->idle[0] = c->lane[0];
  c->nr_lanes = c->nr_idle = 1;
  return c;
}

/* An idle lane of c, opened if every lane is busy; NULL on error. */
static struct floor_lane *
floor_take (struct floor_conn *c)
{
  struct floor_lane *l = NULL;

  pthread_mutex_lock (&c->lock);
  if (c->nr_idle > 0)
    l = c->idle[--c->nr_idle];
  else if (c->nr_lanes == FLOOR_LANES)
    nbdkit_error ("floor: more than %d requests at once", FLOOR_LANES);
  else {
    l = floor_lane_new ();
    if (l)
      c->lane[c->nr_lanes++] = l;
  }
  pthread_mutex_unlock (&c->lock);
  return l;
}

static void
floor_give (struct floor_conn *c, struct floor_lane *l)
{
  pthread_mutex_lock (&c->lock);
  c->idle[c->nr_idle++] = l;
  pthread_mutex_unlock (&c->lock);
}

/* Read buffers for count bytes from every handle from first on. */
static int
floor_buffers (struct floor_lane *l, size_t first, uint32_t count)
{
  size_t i;

  if (l->buflen >= count)
    return 0;
  for (i = first; i < nr_sockets; ++i) {
    char *p = realloc (l->buf[i], count);

    if (p == NULL) {
      nbdkit_error ("floor: realloc: %m");
      return -1;
    }
    l->buf[i] = p;
  }
  l->buflen = count;
  return 0;
}

/* Wait for cookie[i] on the first nr handles, polling their sockets on
 * this thread.  0 if all of them succeeded, else -1 with errno set.
 */
static int
floor_wait (struct floor_lane *l, const int64_t *cookie, size_t nr)
{
  bool done[FLOOR_MAX] = { false };
  size_t left = nr, i, n;
  int err = 0;

  for (;;) {
    struct pollfd fds[FLOOR_MAX];
    size_t who[FLOOR_MAX];

    for (i = 0; i < nr; ++i) {
      int r;

      if (done[i])
        continue;
      r = nbd_aio_command_completed (l->h[i], cookie[i]);
      if (r == 0)
        continue;
      done[i] = true;
      left--;
      if (r == -1 && err == 0)
        err = nbd_get_errno () ? nbd_get_errno () : EIO;
    }
    if (left == 0)
      break;

    for (i = n = 0; i < nr; ++i) {
      unsigned dir;

      if (done[i])
        continue;
      dir = nbd_aio_get_direction (l->h[i]);
      fds[n].fd = nbd_aio_get_fd (l->h[i]);
      fds[n].events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
        ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
      fds[n].revents = 0;
      who[n++] = i;
    }
    if (poll (fds, n, -1) == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    for (i = 0; i < n; ++i) {
      struct nbd_handle *h = l->h[who[i]];

      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR))
        nbd_aio_notify_read (h);
      else if (fds[i].revents & POLLOUT)
        nbd_aio_notify_write (h);
    }
  }
  if (err) {
    errno = err;
    return -1;
  }
  return 0;
}

enum floor_op { FLOOR_READ, FLOOR_WRITE, FLOOR_FLUSH };

/* Issue op on every handle at once.  Reads go to buf for the handles
 * before first, to the lane's buf[i] for the others.  If one cannot be issued,
 * waits for those that were (they use buf) and fails.
 */
static int
floor_issue (struct floor_lane *l, enum floor_op op, void *buf,
             uint32_t count, uint64_t offset, uint32_t flags, size_t first,
             int64_t *cookie)
{
  size_t i;

  for (i = 0; i < nr_sockets; ++i) {
    struct nbd_handle *h = l->h[i];

    switch (op) {
    case FLOOR_READ:
      cookie[i] = nbd_aio_pread (h, i < first ? buf : l->buf[i], count,
                                 offset, NBD_NULL_COMPLETION, 0);
      break;
    case FLOOR_WRITE:
      cookie[i] = nbd_aio_pwrite (h, buf, count, offset, NBD_NULL_COMPLETION,
                                  flags & NBDKIT_FLAG_FUA
                                  ? LIBNBD_CMD_FLAG_FUA : 0);
      break;
    default:
      cookie[i] = nbd_aio_flush (h, NBD_NULL_COMPLETION, 0);
    }
    if (cookie[i] == -1) {
      nbdkit_error ("floor: child %zu: %s", i, nbd_get_error ());
      floor_wait (l, cookie, i);
      errno = EIO;
      return -1;
    }
  }
  return 0;
}

static int
floor_differs (struct floor_lane *l, const void *buf, uint32_t count,
               size_t first)
{
  size_t i;

  for (i = first; i < nr_sockets; ++i)
    if (memcmp (buf, l->buf[i], count) != 0) {
      nbdkit_error ("floor: child %zu differs", i);
      errno = EIO;
      return -1;
    }
  return 0;
}

#ifndef FLOOR_FILTER

static int
floor_config (const char *key, const char *value)
{
  int r = floor_param (key, value);

  if (r == 1) {
    nbdkit_error ("floor: unknown parameter %s", key);
    return -1;
  }
  return r;
}

static int
floor_thread_model (void)
{
  return serial ? NBDKIT_THREAD_MODEL_SERIALIZE_REQUESTS
    : NBDKIT_THREAD_MODEL_PARALLEL;
}

static void *
floor_open (int readonly)
{
  return floor_new ();
}

static void
floor_close (void *handle)
{
  floor_free (handle);
}

static int64_t
floor_get_size (void *handle)
{
  struct floor_conn *c = handle;
  int64_t r = nbd_get_size (c->lane[0]->h[0]);

  if (r == -1)
    nbdkit_error ("floor: %s", nbd_get_error ());
  return r;
}

/* Issue op on every child at once, then wait for all of them.  Reads
 * go to buf (child 0) and c->buf[i].
 */
static int
floor_all (void *handle, enum floor_op op, void *buf, uint32_t count,
           uint64_t offset, uint32_t flags)
{
  struct floor_conn *c = handle;
  struct floor_lane *l = floor_take (c);
  int64_t cookie[FLOOR_MAX] = { 0 };
  int r = -1;

  if (l == NULL)
    return -1;
  if (op == FLOOR_READ && floor_buffers (l, 1, count) == -1)
    goto out;
  if (floor_issue (l, op, buf, count, offset, flags, 1, cookie) == -1)
    goto out;
  if (floor_wait (l, cookie, nr_sockets) == -1) {
    nbdkit_error ("floor: %m");
    goto out;
  }
  r = op == FLOOR_READ ? floor_differs (l, buf, count, 1) : 0;
 out:
  floor_give (c, l);
  return r;
}

static int
floor_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  return floor_all (handle, FLOOR_READ, buf, count, offset, 0);
}

static int
floor_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset,
              uint32_t flags)
{
  return floor_all (handle, FLOOR_WRITE, (void *) buf, count, offset, flags);
}

static int
floor_flush (void *handle, uint32_t flags)
{
  return floor_all (handle, FLOOR_FLUSH, NULL, 0, 0, 0);
}

static int
floor_can_multi_conn (void *handle)
{
  return 1;
}

static int
floor_can_flush (void *handle)
{
  return 1;
}

static struct nbdkit_plugin plugin = {
  .name = "floor",
  .config = floor_config,
  .config_complete = floor_check,
  .thread_model = floor_thread_model,
  .open = floor_open,
  .close = floor_close,
  .get_size = floor_get_size,
  .pread = floor_pread,
  .pwrite = floor_pwrite,
  .flush = floor_flush,
  .can_flush = floor_can_flush,
  .can_multi_conn = floor_can_multi_conn,
};

NBDKIT_REGISTER_PLUGIN (plugin)

#else /* FLOOR_FILTER */

static int
floor_filter_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
                     const char *key, const char *value)
{
  int r = floor_param (key, value);

  return r == 1 ? next (nxdata, key, value) : r;
}

static int
floor_filter_config_complete (nbdkit_next_config_complete *next,
                              nbdkit_backend *nxdata)
{
  return floor_check () == -1 ? -1 : next (nxdata);
}

static void *
floor_filter_open (nbdkit_next_open *next, nbdkit_context *context,
                   int readonly, const char *exportname, int is_tls)
{
  if (next (context, readonly, exportname) == -1)
    return NULL;
  return floor_new ();
}

static void
floor_filter_close (void *handle)
{
  floor_free (handle);
}

/* Issue op on the floor-socket= children, run it on the plugin on this
 * thread meanwhile, then wait for them.
 */
static int
floor_filter_all (nbdkit_next *next, void *handle, enum floor_op op,
                  void *buf, uint32_t count, uint64_t offset,
                  uint32_t flags, int *err)
{
  struct floor_conn *c = handle;
  struct floor_lane *l = floor_take (c);
  int64_t cookie[FLOOR_MAX] = { 0 };
  int r = -1, lr;

  if (l == NULL) {
    *err = EIO;
    return -1;
  }
  if (op == FLOOR_READ && floor_buffers (l, 0, count) == -1)
    goto fail;
  if (floor_issue (l, op, buf, count, offset, flags, 0, cookie) == -1)
    goto fail;
  /* The plugin's part, while theirs are on their way. */
  switch (op) {
  case FLOOR_READ:
    lr = next->pread (next, buf, count, offset, 0, err);
    break;
  case FLOOR_WRITE:
    lr = next->pwrite (next, buf, count, offset, flags, err);
    break;
  default:
    lr = next->flush (next, 0, err);
  }
  if (floor_wait (l, cookie, nr_sockets) == -1) {
    nbdkit_error ("floor: %m");
    goto fail;
  }
  if (lr == -1)
    goto out;
  if (op == FLOOR_READ && floor_differs (l, buf, count, 0) == -1)
    goto fail;
  r = 0;
  goto out;
 fail:
  *err = errno ? errno : EIO;
 out:
  floor_give (c, l);
  return r;
}

static int
floor_filter_pread (nbdkit_next *next, void *handle, void *buf,
                    uint32_t count, uint64_t offset, uint32_t flags,
                    int *err)
{
  return floor_filter_all (next, handle, FLOOR_READ, buf, count, offset, 0,
                           err);
}

static int
floor_filter_pwrite (nbdkit_next *next, void *handle, const void *buf,
                     uint32_t count, uint64_t offset, uint32_t flags,
                     int *err)
{
  return floor_filter_all (next, handle, FLOOR_WRITE, (void *) buf, count,
                           offset, flags, err);
}

static int
floor_filter_flush (nbdkit_next *next, void *handle, uint32_t flags,
                    int *err)
{
  return floor_filter_all (next, handle, FLOOR_FLUSH, NULL, 0, 0, 0, err);
}

static struct nbdkit_filter filter = {
  .name = "floor",
  .config = floor_filter_config,
  .config_complete = floor_filter_config_complete,
  .open = floor_filter_open,
  .close = floor_filter_close,
  .pread = floor_filter_pread,
  .pwrite = floor_filter_pwrite,
  .flush = floor_filter_flush,
};

NBDKIT_REGISTER_FILTER (filter)

#endif /* FLOOR_FILTER */
