/* fsutil.c: see fsutil.h. */
#include "util/fsutil.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/common.h"

int rb_mkdir_p(const char *dir, char *err, size_t errlen) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) return rb_fail(err, errlen, "path too long: %s", dir);
    for (char *s = buf + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return rb_fail(err, errlen, "cannot create directory %s: %s", buf, strerror(errno));
            *s = c;
            if (!c) break;
        }
    }
    if (!rb_is_dir(dir)) return rb_fail(err, errlen, "%s is not a directory", dir);
    return 0;
}

const char *rb_path_join(char *buf, size_t len, const char *dir, const char *name) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    if (n == 1 && dir[0] == '/') n = 0; /* the root: "/name", not "//name" */
    snprintf(buf, len, "%.*s/%s", (int)n, dir, name);
    return buf;
}

int rb_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int rb_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

const char *rb_dirname(char *buf, size_t len, const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(buf, len, ".");
    else if (slash == path) snprintf(buf, len, "/");
    else snprintf(buf, len, "%.*s", (int)(slash - path), path);
    return buf;
}

int rb_check_writable(const char *path, char *err, size_t errlen) {
    char dir[4096];
    rb_dirname(dir, sizeof dir, path);
    if (rb_is_dir(path)) return rb_fail(err, errlen, "%s is a directory, not a file", path);
    if (!rb_is_dir(dir)) return rb_fail(err, errlen, "%s: the directory %s does not exist", path, dir);
    if (access(dir, W_OK | X_OK) != 0) return rb_fail(err, errlen, "%s: the directory %s is not writable", path, dir);
    return 0;
}

char *rb_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen) {
    if (rb_is_dir(path)) return rb_fail(err, errlen, "%s: is a directory, not a file", path), NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return rb_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno)), NULL;
    size_t cap = 4096, n = 0, got;
    char *buf = malloc(cap + 1);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n > max) break;
        if (n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) free(buf);
            buf = nb, cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) return rb_fail(err, errlen, "%s: out of memory reading it", path), NULL;
    if (bad || n > max) {
        free(buf);
        if (bad) return rb_fail(err, errlen, "%s: cannot read it", path), NULL;
        return rb_fail(err, errlen, "%s: larger than %zu bytes", path, max), NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}
