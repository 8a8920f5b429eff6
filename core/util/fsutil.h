/* fsutil.h: the file-system helpers every layer needs, once: mkdir -p,
 * joining a directory and a name (without "dir//name"), existence tests,
 * and writing a file through a temporary so it appears whole or not at all. */
#ifndef RB_FSUTIL_H
#define RB_FSUTIL_H

#include <stddef.h>

/* mkdir -p dir; 0, or -1 with "cannot create directory X: reason". */
int rb_mkdir_p(const char *dir, char *err, size_t errlen);
/* dir + "/" + name into buf (one slash however dir ends); returns buf. */
const char *rb_path_join(char *buf, size_t len, const char *dir, const char *name);
int rb_exists(const char *path);
int rb_is_dir(const char *path);
/* The directory part of path ("." when there is none) into buf; returns buf. */
const char *rb_dirname(char *buf, size_t len, const char *path);
/* 0 when a file can be created in path's directory (it exists, is a
 * directory, and is writable) and path itself is not a directory; else -1
 * with the reason. Checks only: nothing is created. */
int rb_check_writable(const char *path, char *err, size_t errlen);

/* The whole file at path (at most max bytes) as a new NUL-terminated buffer,
 * its length in *len; NULL with "path: reason" (missing, a directory, too
 * large, unreadable). */
char *rb_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen);

#endif
