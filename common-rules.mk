# nbdkit-quorum: rules shared by every Makefile.am.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

NULL =

# Every target gets the sanitizer flags (empty unless
# --enable-sanitizers), so the engine and both modules are instrumented.
AM_CFLAGS = $(SANITIZER_CFLAGS)
AM_LDFLAGS = $(SANITIZER_CFLAGS)
