/* npy.c: the .npy reader and writer (npy.h). The header is a Python dict
 * literal; it is parsed here with a small recursive-descent parser that
 * accepts what Python's literal_eval would give NumPy for the three keys
 * (any key order, any whitespace, single or double quotes, a trailing comma,
 * shape tuples "(3,)" and "()"), and nothing it would not: a bare "(3)" is
 * an int in Python, not a tuple, so it is refused here too. The file's data
 * is copied as is, which is right only on a little-endian host. */
#include "util/npy.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/common.h"
#include "util/fsutil.h"
#include "util/json.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "npy.c copies little-endian data as is; a big-endian host needs byte swapping here");

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

/* Header bytes we are willing to read: NumPy's own reader refuses headers
 * over 10000 bytes by default; a shape of NPY_MAX_DIMS dimensions needs far
 * less. The limit keeps a corrupt length field from allocating gigabytes. */
#define NPY_MAX_HEADER 65536

static int dtype_known(const char *dtype) { return strcmp(dtype, "<f4") == 0 || strcmp(dtype, "<i4") == 0; }

static const char *dtype_name(const char *dtype) {
    return strcmp(dtype, "<f4") == 0 ? "float32" : strcmp(dtype, "<i4") == 0 ? "int32" : "?";
}

char *npy_shape_str(char *buf, size_t buflen, const int *shape, int ndim) {
    size_t n = 0;
    if (buflen == 0) return buf;
    buf[0] = '\0';
    n += (size_t)snprintf(buf + n, n < buflen ? buflen - n : 0, "(");
    for (int i = 0; i < ndim; i++)
        n += (size_t)snprintf(buf + n, n < buflen ? buflen - n : 0, "%s%d", i ? ", " : "", shape[i]);
    snprintf(buf + n, n < buflen ? buflen - n : 0, "%s)", ndim == 1 ? "," : "");
    return buf;
}

/* Elements of a shape, or SIZE_MAX when the byte count would overflow. */
static size_t shape_count(const int *shape, int ndim) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return SIZE_MAX;
        if (shape[i] != 0 && n > SIZE_MAX / 4 / (size_t)shape[i]) return SIZE_MAX;
        n *= (size_t)shape[i];
    }
    return n;
}

/* ---- writing ------------------------------------------------------------ */

int npy_write(const char *path, const char *dtype, const int *shape, int ndim, const void *data, char *err,
              size_t errlen) {
    if (!dtype_known(dtype)) return rb_fail(err, errlen, "%s: cannot write dtype '%s' (only <f4, <i4)", path, dtype);
    if (ndim < 0 || ndim > NPY_MAX_DIMS)
        return rb_fail(err, errlen, "%s: cannot write %d dimensions (at most %d)", path, ndim, NPY_MAX_DIMS);
    size_t count = shape_count(shape, ndim);
    if (count == SIZE_MAX) return rb_fail(err, errlen, "%s: invalid or too large shape", path);

    /* NumPy's own layout: magic, version 1.0, 2-byte length, the dict, spaces
     * up to 64-byte alignment of the data, '\n'. */
    char dict[64 + NPY_MAX_DIMS * 16], shp[NPY_MAX_DIMS * 16];
    int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", dtype,
                      npy_shape_str(shp, sizeof shp, shape, ndim));
    size_t total = 10 + (size_t)dl + 1;
    total = (total + 63) / 64 * 64;
    size_t hlen = total - 10;
    char *hdr = mallocCheck(total);
    memcpy(hdr, npy_magic, 6);
    hdr[6] = 1, hdr[7] = 0;
    hdr[8] = (char)(hlen & 0xff), hdr[9] = (char)(hlen >> 8);
    memcpy(hdr + 10, dict, (size_t)dl);
    memset(hdr + 10 + dl, ' ', total - 10 - (size_t)dl - 1);
    hdr[total - 1] = '\n';

    FILE *f = fopen(path, "wb");
    if (!f) {
        free(hdr);
        return rb_fail(err, errlen, "cannot create %s: %s", path, strerror(errno));
    }
    int bad = fwrite(hdr, 1, total, f) != total;
    if (!bad && count) bad = fwrite(data, 4, count, f) != count;
    int e = errno;
    if (fclose(f) != 0 && !bad) bad = 1, e = errno;
    free(hdr);
    if (bad) {
        unlink(path); /* a half-written file would later be refused as truncated; better none */
        return rb_fail(err, errlen, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

/* ---- header parsing ----------------------------------------------------- */

typedef struct {
    const char *s, *end;
    char descr[32];
    int fortran;
    int shape[NPY_MAX_DIMS];
    int ndim;
    char msg[160];
} hparse;

static int __attribute__((format(printf, 2, 3))) hp_fail(hparse *h, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->msg, sizeof h->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static void hp_ws(hparse *h) {
    while (h->s < h->end && (*h->s == ' ' || *h->s == '\t' || *h->s == '\n' || *h->s == '\r' || *h->s == '\f' ||
                             *h->s == '\v'))
        h->s++;
}

static int hp_peek(hparse *h) {
    hp_ws(h);
    return h->s < h->end ? (unsigned char)*h->s : -1;
}

/* A quoted string (no escapes: none of the valid values needs one). */
static int hp_string(hparse *h, char *out, size_t outlen) {
    int q = hp_peek(h);
    if (q != '\'' && q != '"') return -1;
    const char *p = ++h->s;
    while (h->s < h->end && *h->s != q) {
        if (*h->s == '\\') return hp_fail(h, "escapes in header strings are not supported");
        if (*h->s == '\0' || (unsigned char)*h->s < 0x20) return hp_fail(h, "a control character in a header string");
        h->s++;
    }
    if (h->s >= h->end) return hp_fail(h, "unterminated string in header");
    size_t n = (size_t)(h->s - p);
    h->s++;
    if (n >= outlen) return hp_fail(h, "string too long in header");
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

static int hp_word(hparse *h, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(h->end - h->s) >= n && memcmp(h->s, w, n) == 0) {
        const char *after = h->s + n;
        if (after < h->end && (after[0] == '_' || (after[0] >= 'a' && after[0] <= 'z') ||
                               (after[0] >= 'A' && after[0] <= 'Z') || (after[0] >= '0' && after[0] <= '9')))
            return 0;
        h->s = after;
        return 1;
    }
    return 0;
}

static int hp_bool(hparse *h, int *out) {
    hp_ws(h);
    if (hp_word(h, "True")) *out = 1;
    else if (hp_word(h, "False")) *out = 0;
    else return hp_fail(h, "'fortran_order' must be True or False");
    return 0;
}

/* "(d0, d1, ...)": Python needs a comma in a one-element tuple. */
static int hp_shape(hparse *h) {
    if (hp_peek(h) != '(') return hp_fail(h, "'shape' must be a tuple such as (2, 3), (5,) or ()");
    h->s++;
    h->ndim = 0;
    int commas = 0;
    for (;;) {
        int c = hp_peek(h);
        if (c == ')') {
            h->s++;
            break;
        }
        if (c < '0' || c > '9') return hp_fail(h, "'shape' must hold non-negative integers");
        long long v = 0;
        while (h->s < h->end && *h->s >= '0' && *h->s <= '9') {
            v = v * 10 + (*h->s - '0');
            if (v > INT_MAX) return hp_fail(h, "a dimension in 'shape' is too large");
            h->s++;
        }
        if (h->ndim == NPY_MAX_DIMS) return hp_fail(h, "'shape' has too many dimensions");
        h->shape[h->ndim++] = (int)v;
        c = hp_peek(h);
        if (c == ',') {
            h->s++, commas++;
        } else if (c == ')') {
            h->s++;
            break;
        } else return hp_fail(h, "'shape' must be a tuple of integers");
    }
    if (h->ndim == 1 && commas == 0) return hp_fail(h, "'shape' (n) is not a tuple in Python; write (n,)");
    return 0;
}

static int hp_dict(hparse *h) {
    int seen_descr = 0, seen_fortran = 0, seen_shape = 0;
    if (hp_peek(h) != '{') return hp_fail(h, "header is not a Python dict");
    h->s++;
    for (;;) {
        int c = hp_peek(h);
        if (c == '}') {
            h->s++;
            break;
        }
        if (c < 0) return hp_fail(h, "header dict is not closed with '}'");
        char key[32];
        if (hp_string(h, key, sizeof key) != 0)
            return h->msg[0] ? -1 : hp_fail(h, "header dict keys must be quoted strings");
        if (hp_peek(h) != ':') return hp_fail(h, "missing ':' after '%s' in header", key);
        h->s++;
        if (strcmp(key, "descr") == 0) {
            if (seen_descr++) return hp_fail(h, "header has '%s' twice", key);
            if (hp_peek(h) == '[')
                return hp_fail(h, "structured dtypes are not supported (only <f4, <i4)");
            if (hp_string(h, h->descr, sizeof h->descr) != 0)
                return h->msg[0] ? -1 : hp_fail(h, "'descr' must be a string such as '<f4'");
        } else if (strcmp(key, "fortran_order") == 0) {
            if (seen_fortran++) return hp_fail(h, "header has '%s' twice", key);
            if (hp_bool(h, &h->fortran) != 0) return -1;
        } else if (strcmp(key, "shape") == 0) {
            if (seen_shape++) return hp_fail(h, "header has '%s' twice", key);
            if (hp_shape(h) != 0) return -1;
        } else return hp_fail(h, "unexpected key '%s' in header", key);
        c = hp_peek(h);
        if (c == ',') h->s++;
        else if (c < 0) return hp_fail(h, "header dict is not closed with '}'");
        else if (c != '}') return hp_fail(h, "expected ',' or '}' in header dict");
    }
    if (!seen_descr) return hp_fail(h, "header has no '%s'", "descr");
    if (!seen_fortran) return hp_fail(h, "header has no '%s'", "fortran_order");
    if (!seen_shape) return hp_fail(h, "header has no '%s'", "shape");
    hp_ws(h);
    /* NumPy pads with spaces; some writers pad with NULs. */
    while (h->s < h->end && *h->s == '\0') h->s++;
    if (h->s != h->end) return hp_fail(h, "unexpected text after the header dict");
    return 0;
}

/* A message that says what the file is and how to make it what we want. */
static int dtype_refusal(const char *path, const char *have, const char *want, char *err, size_t errlen) {
    char kind_have = have[0] ? have[1] : 0, kind_want = want[1];
    if ((have[0] == '>') && kind_have == kind_want && strcmp(have + 1, want + 1) == 0)
        return rb_fail(err, errlen, "%s: dtype '%s' is big-endian; expected '%s' (%s): save arr.astype('%s')", path,
                       have, want, dtype_name(want), want);
    return rb_fail(err, errlen, "%s: dtype '%s', expected '%s' (%s): save arr.astype('%s')", path, have, want,
                   dtype_name(want), want);
}

/* The preamble and header of the open file f: *h parsed, *data_off where
 * the data starts. 0, or -1 with a message. */
static int read_header(FILE *f, const char *path, hparse *h, size_t *data_off, char *err, size_t errlen) {
    unsigned char pre[12];
    size_t got = fread(pre, 1, 10, f), hlen, pre_len;
    if (got < 8 || memcmp(pre, npy_magic, 6) != 0)
        return rb_fail(err, errlen, "%s: not a .npy file (it does not start with \\x93NUMPY)", path);
    int major = pre[6], minor = pre[7];
    if (got < 10) return rb_fail(err, errlen, "%s: truncated: the file ends inside the .npy header", path);
    if (major == 1 && minor == 0) {
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
        pre_len = 10;
    } else if ((major == 2 || major == 3) && minor == 0) {
        if (fread(pre + 10, 1, 2, f) != 2)
            return rb_fail(err, errlen, "%s: truncated: the file ends inside the .npy header", path);
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
        pre_len = 12;
    } else {
        return rb_fail(err, errlen, "%s: .npy format version %d.%d is not supported (1.0, 2.0, 3.0 are)", path, major,
                       minor);
    }
    if (hlen > NPY_MAX_HEADER)
        return rb_fail(err, errlen, "%s: header length %zu is implausible (corrupt file?)", path, hlen);
    char *hbuf = mallocCheck(hlen + 1);
    if (fread(hbuf, 1, hlen, f) != hlen) {
        free(hbuf);
        return rb_fail(err, errlen, "%s: truncated: the file ends inside the .npy header", path);
    }
    hbuf[hlen] = '\0';
    memset(h, 0, sizeof *h);
    h->s = hbuf, h->end = hbuf + hlen;
    int pr = hp_dict(h);
    h->s = h->end = NULL;
    free(hbuf);
    if (pr != 0) return rb_fail(err, errlen, "%s: bad .npy header: %s", path, h->msg);
    *data_off = pre_len + hlen;
    return 0;
}

/* The header against what the caller wants: dtype, C order, shape. */
static int check_header(const char *path, const hparse *h, const char *want_dtype, const int *want_shape,
                        int want_ndim, char *err, size_t errlen) {
    char s1[NPY_MAX_DIMS * 16], s2[NPY_MAX_DIMS * 16];
    if (strcmp(h->descr, want_dtype) != 0) return dtype_refusal(path, h->descr, want_dtype, err, errlen);
    if (h->fortran) {
        /* Fortran and C order are the same bytes when at most one dimension
         * is longer than 1, so only refuse when they differ. */
        int long_dims = 0;
        for (int i = 0; i < h->ndim; i++) long_dims += h->shape[i] > 1;
        if (long_dims > 1)
            return rb_fail(err, errlen,
                           "%s: array of shape %s is in Fortran order; save np.ascontiguousarray(arr) (C order)", path,
                           npy_shape_str(s1, sizeof s1, h->shape, h->ndim));
    }
    if (!want_shape && want_ndim < 0) return 0;
    int match = want_ndim < 0 || h->ndim == want_ndim;
    if (match && want_shape)
        for (int i = 0; i < h->ndim; i++) match &= h->shape[i] == want_shape[i];
    if (match) return 0;
    if (want_shape)
        return rb_fail(err, errlen, "%s: shape %s, expected %s", path, npy_shape_str(s1, sizeof s1, h->shape, h->ndim),
                       npy_shape_str(s2, sizeof s2, want_shape, want_ndim));
    return rb_fail(err, errlen, "%s: shape %s has %d dimensions, expected %d", path,
                   npy_shape_str(s1, sizeof s1, h->shape, h->ndim), h->ndim, want_ndim);
}

/* The data after the header: exactly the bytes the shape promises (checked
 * against the file's size before anything is allocated), into dst or a new
 * buffer *out. */
static int read_data(FILE *f, const char *path, const hparse *h, size_t data_off, void *dst, void **out, char *err,
                     size_t errlen) {
    char s1[NPY_MAX_DIMS * 16];
    size_t count = shape_count(h->shape, h->ndim);
    if (count == SIZE_MAX)
        return rb_fail(err, errlen, "%s: shape %s is too large", path, npy_shape_str(s1, sizeof s1, h->shape, h->ndim));
    size_t bytes = count * 4;
    if (fseeko(f, 0, SEEK_END) != 0) return rb_fail(err, errlen, "%s: cannot seek: %s", path, strerror(errno));
    off_t fsize = ftello(f);
    size_t have = fsize > (off_t)data_off ? (size_t)fsize - data_off : 0;
    if (have < bytes)
        return rb_fail(err, errlen, "%s: truncated: shape %s of %s needs %zu bytes of data, the file has %zu", path,
                       npy_shape_str(s1, sizeof s1, h->shape, h->ndim), h->descr, bytes, have);
    if (have > bytes)
        return rb_fail(err, errlen, "%s: %zu bytes after the data of shape %s (corrupt or not one array?)", path,
                       have - bytes, npy_shape_str(s1, sizeof s1, h->shape, h->ndim));
    void *buf = dst;
    if (!dst && bytes && !(buf = rb_aligned_alloc(bytes)))
        return rb_fail(err, errlen, "%s: out of memory for %zu bytes", path, bytes);
    if (fseeko(f, (off_t)data_off, SEEK_SET) != 0 || (bytes && fread(buf, 1, bytes, f) != bytes)) {
        if (!dst) free(buf);
        return rb_fail(err, errlen, "%s: read error", path);
    }
    if (out) *out = dst ? NULL : buf;
    return 0;
}

static int read_impl(const char *path, const char *want_dtype, const int *want_shape, int want_ndim, void **data,
                     int *shape, int *ndim, void *dst, char *err, size_t errlen) {
    if (data) *data = NULL;
    if (!dtype_known(want_dtype))
        return rb_fail(err, errlen, "%s: cannot read as dtype '%s' (only <f4, <i4)", path, want_dtype);
    if (rb_is_dir(path)) return rb_fail(err, errlen, "%s: is a directory, not a .npy file", path);
    FILE *f = fopen(path, "rb");
    if (!f) return rb_fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
    hparse h;
    size_t data_off = 0;
    int rc = read_header(f, path, &h, &data_off, err, errlen);
    if (rc == 0) rc = check_header(path, &h, want_dtype, want_shape, want_ndim, err, errlen);
    if (rc == 0) rc = read_data(f, path, &h, data_off, dst, data, err, errlen);
    fclose(f);
    if (rc != 0) return -1;
    if (shape) memcpy(shape, h.shape, (size_t)h.ndim * sizeof(int));
    if (ndim) *ndim = h.ndim;
    return 0;
}

int npy_read(const char *path, const char *want_dtype, const int *want_shape, int want_ndim, void **data,
             int *shape, int *ndim, char *err, size_t errlen) {
    return read_impl(path, want_dtype, want_shape, want_ndim, data, shape, ndim, NULL, err, errlen);
}

int npy_read_into(const char *path, const char *dtype, const int *shape, int ndim, void *dst, char *err,
                  size_t errlen) {
    return read_impl(path, dtype, shape, ndim, NULL, NULL, NULL, dst, err, errlen);
}

int npy_list_put(npy_list *l, const char *dir, const char *name, const char *dtype, const int *shape, int ndim,
                 const void *data, char *err, size_t errlen) {
    char path[4096], file[128];
    snprintf(file, sizeof file, "%s.npy", name);
    if (npy_write(rb_path_join(path, sizeof path, dir, file), dtype, shape, ndim, data, err, errlen) != 0) return -1;
    if (l->n < NPY_LIST_MAX) {
        snprintf(l->a[l->n].name, sizeof l->a[l->n].name, "%s", name);
        memcpy(l->a[l->n].dtype, dtype, 4);
        l->a[l->n].ndim = ndim;
        memcpy(l->a[l->n].shape, shape, (size_t)ndim * sizeof(int));
        l->n++;
    }
    return 0;
}

void npy_list_json(struct rb_jw *w, const npy_list *l) {
    rb_jw_key(w, "arrays");
    rb_jw_obj(w);
    for (int i = 0; i < l->n; i++) {
        char file[128];
        snprintf(file, sizeof file, "%s.npy", l->a[i].name);
        rb_jw_key(w, l->a[i].name);
        rb_jw_obj(w);
        rb_jw_kstr(w, "file", file), rb_jw_kstr(w, "dtype", l->a[i].dtype);
        rb_jw_key(w, "shape");
        rb_jw_arr(w);
        for (int d = 0; d < l->a[i].ndim; d++) rb_jw_int(w, l->a[i].shape[d]);
        rb_jw_arr_end(w);
        rb_jw_obj_end(w);
    }
    rb_jw_obj_end(w);
}
