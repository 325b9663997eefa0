/* nbdkit-quorum
 * Copyright (C) 2026 the nbdkit-quorum authors.
 * SPDX-License-Identifier: BSD-3-Clause
 */

/* A growable array of one element type, declared by a macro:
 *
 *   DEFINE_VECTOR_TYPE (int_vector, int)
 *   struct int_vector v = { 0 };       (empty: no allocation yet)
 *   if (int_vector_append (&v, 42) == -1) ... errno is ENOMEM
 *   ... v.ptr[0 .. v.len-1] ...
 *   int_vector_free (&v);
 *
 * The elements are stored by value and never freed by the vector.
 * Header only, no locks: the owner of a vector serializes its use.
 */

#ifndef QUORUM_VECTOR_H
#define QUORUM_VECTOR_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/* Make room in *ptrp, an array holding len of *cap elements of size
 * elem, for n more.  The capacity at least doubles, so that appending
 * one at a time costs amortized constant time.  0, or -1 with errno
 * ENOMEM (out of memory or a size that does not fit in a size_t), and
 * then *ptrp and *cap are as they were.
 */
static inline int
vector_grow (void **ptrp, size_t *cap, size_t len, size_t n, size_t elem)
{
  size_t want, newcap;
  void *p;

  if (n <= *cap - len)
    return 0;
  if (n > SIZE_MAX / elem - len) {
    errno = ENOMEM;
    return -1;
  }
  want = len + n;
  newcap = *cap <= SIZE_MAX / elem / 2 ? *cap * 2 : SIZE_MAX / elem;
  if (newcap < want)
    newcap = want;
  if (newcap < 8 && 8 <= SIZE_MAX / elem)
    newcap = 8;
  p = realloc (*ptrp, newcap * elem);
  if (p == NULL)
    return -1;
  *ptrp = p;
  *cap = newcap;
  return 0;
}

/* struct name: ptr[0 .. len-1] in use, room for cap; all zero is an
 * empty vector.  name_reserve makes room for n more elements and
 * name_append adds one at the end, each 0 or -1 with errno set (the
 * vector unchanged); name_free releases the array and empties the
 * vector.
 */
#define DEFINE_VECTOR_TYPE(name, type)                                  \
  struct name {                                                         \
    type *ptr;                                                          \
    size_t len;                                                         \
    size_t cap;                                                         \
  };                                                                    \
                                                                        \
  static inline int                                                     \
  name##_reserve (struct name *v, size_t n)                             \
  {                                                                     \
    void *p = v->ptr;                                                   \
                                                                        \
    if (vector_grow (&p, &v->cap, v->len, n, sizeof (type)) == -1)      \
      return -1;                                                        \
    v->ptr = p;                                                         \
    return 0;                                                           \
  }                                                                     \
                                                                        \
  static inline int                                                     \
  name##_append (struct name *v, type elem)                             \
  {                                                                     \
    if (name##_reserve (v, 1) == -1)                                    \
      return -1;                                                        \
    v->ptr[v->len++] = elem;                                            \
    return 0;                                                           \
  }                                                                     \
                                                                        \
  static inline void                                                    \
  name##_free (struct name *v)                                          \
  {                                                                     \
    free (v->ptr);                                                      \
    v->ptr = NULL;                                                      \
    v->len = v->cap = 0;                                                \
  }

#endif /* QUORUM_VECTOR_H */
