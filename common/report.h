/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* What the events (report.c) hand to the sinks (report-sink.c);
 * included by those two files only.
 */

#ifndef QUORUM_REPORT_H
#define QUORUM_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One field of an event. */
enum report_field_kind { F_STR, F_HEX, F_UINT, F_BOOL, F_LIST };
struct report_field {
  const char *key;              /* key=value name */
  const char *json_key;         /* JSON name, if different */
  enum report_field_kind kind;
  const char *s;                /* F_STR; F_LIST as key=value */
  const char *json;             /* F_LIST as JSON */
  uint64_t u;
  bool shorten;                 /* F_STR that may be cut in key=value */
};

/* Write one event: as a key=value line to nbdkit_debug and, unless
 * syslog=false or priority is LOG_INFO (the summary), to syslog(3) at
 * priority; as a JSON object to the report= file if there is one.
 * Takes report_lock only around the file's write(2).
 */
extern void report_emit (int priority, const struct report_field *fields,
                         size_t nr);

#endif /* QUORUM_REPORT_H */
