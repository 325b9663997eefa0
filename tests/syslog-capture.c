/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* Test only: preloaded into the quorum nbdkit, it captures syslog(3)
 * calls into the file named by $QUORUM_SYSLOG_FILE, one line each:
 *   IDENT PRIORITY MESSAGE
 * so that tests can check reports without touching the system's
 * logging (there may be no syslog daemon at all).
 *
 * With $QUORUM_KEEP_DSOS set (the sanitizer run), dlclose(3) does
 * nothing: nbdkit unloads the quorum at exit, before LeakSanitizer's
 * check, which could not name a frame of the unmapped module, so a
 * leak of ours would pass for nbdkit's.
 *
 * It also wraps newlocale(3), so that a sanitizer runtime preloaded
 * into nbdkit starts outside glibc's locale lock (see there).
 */

#include <config.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <locale.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

int
dlclose (void *handle)
{
  static int (*next) (void *);
  int (*fn) (void *) = __atomic_load_n (&next, __ATOMIC_ACQUIRE);

  if (getenv ("QUORUM_KEEP_DSOS"))
    return 0;
  if (fn == NULL) {
    fn = (int (*) (void *)) dlsym (RTLD_NEXT, "dlclose");
    __atomic_store_n (&next, fn, __ATOMIC_RELEASE);
  }
  return fn (handle);
}

/* nbdkit is not built with the sanitizers: their runtime, preloaded,
 * starts at the first allocation it intercepts.  That is in p11-kit's
 * constructor (nbdkit links GnuTLS, which links p11-kit), inside
 * glibc's newlocale while it holds the locale lock for writing; the
 * runtime's start-up calls dlerror, whose message lookup takes that
 * lock for reading, fails (we are its writer), and releases it all
 * the same; newlocale's own release then takes the lock for a
 * reader's and leaves its count below zero.  From then on every
 * newlocale, setlocale or freelocale waits for ever: json-c's parser
 * calls newlocale on every parse (the control socket), p11-kit's
 * destructor freelocale.  So the first call allocates before it goes
 * on: the runtime, if there is one, then starts outside the lock.
 * Not instrumented itself: it runs before the runtime has started, when
 * an instrumented access would find no shadow memory.
 */
#if defined (__has_attribute) && __has_attribute (no_sanitize)
__attribute__ ((no_sanitize ("address", "thread", "undefined")))
#endif
locale_t
newlocale (int mask, const char *name, locale_t base)
{
  static locale_t (*next) (int, const char *, locale_t);
  locale_t (*fn) (int, const char *, locale_t) =
    __atomic_load_n (&next, __ATOMIC_ACQUIRE);

  if (fn == NULL) {
    void *volatile p = malloc (1);      /* not optimised away */

    free (p);
    fn = (locale_t (*) (int, const char *, locale_t))
      dlsym (RTLD_NEXT, "newlocale");
    __atomic_store_n (&next, fn, __ATOMIC_RELEASE);
  }
  return fn (mask, name, base);
}

static char ident[64] = "-";

static const char *
priority_name (int priority)
{
  switch (LOG_PRI (priority)) {
  case LOG_EMERG: return "emerg";
  case LOG_ALERT: return "alert";
  case LOG_CRIT: return "crit";
  case LOG_ERR: return "err";
  case LOG_WARNING: return "warning";
  case LOG_NOTICE: return "notice";
  case LOG_INFO: return "info";
  default: return "debug";
  }
}

void
openlog (const char *id, int option, int facility)
{
  pthread_mutex_lock (&lock);
  snprintf (ident, sizeof ident, "%s", id ? id : "-");
  pthread_mutex_unlock (&lock);
}

void
closelog (void)
{
}

void
vsyslog (int priority, const char *fs, va_list args)
{
  const char *file = getenv ("QUORUM_SYSLOG_FILE");
  char msg[2048], line[2200];
  int fd, n;

  if (file == NULL)
    return;
  vsnprintf (msg, sizeof msg, fs, args);
  pthread_mutex_lock (&lock);
  n = snprintf (line, sizeof line, "%s %s %s\n", ident,
                priority_name (priority), msg);
  pthread_mutex_unlock (&lock);
  if (n < 0)
    return;
  if ((size_t) n >= sizeof line)
    n = sizeof line - 1;
  fd = open (file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd == -1)
    return;
  if (write (fd, line, n) != n) { /* nothing to do */ }
  close (fd);
}

void
syslog (int priority, const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  vsyslog (priority, fs, args);
  va_end (args);
}

/* What glibc's fortified headers turn the two above into. */
void
__vsyslog_chk (int priority, int flag, const char *fs, va_list args)
{
  vsyslog (priority, fs, args);
}

void
__syslog_chk (int priority, int flag, const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  vsyslog (priority, fs, args);
  va_end (args);
}
