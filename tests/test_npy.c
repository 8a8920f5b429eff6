/* test_npy.c: the .npy reader and writer (core/util/npy.h) against the format as
 * NumPy documents it (files made byte by byte here, good and bad, so no
 * binary fixtures live in git), and `routebench attn --save/--load` round
 * trips for every registered backend. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <math.h>

#include "attn/attn.h"
#include "model/checkpoint.h"
#include "attn/attn_npy.h"
#include "model/model_npy.h"
#include "model/model.h"
#include "model/train.h"
#include "util/common.h"
#include "util/fsutil.h"
#include "util/npy.h"
#include "tap.h"
#include "testutil.h"

static char tmpdir[256];

static const char *tpath(const char *name) {
    static char buf[8][512];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static unsigned char *slurp(const char *path, size_t *n) {
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

/* A .npy file by hand: magic, version major.minor, the header length in 2
 * (v1) or 4 (v2, v3) bytes, the header text as given (no padding added),
 * then nbytes of data. */
static void write_raw(const char *path, int major, int minor, const char *header, const void *data, size_t nbytes) {
    FILE *f = fopen(path, "wb");
    size_t hl = strlen(header);
    fwrite("\x93NUMPY", 1, 6, f);
    unsigned char v[2] = {(unsigned char)major, (unsigned char)minor};
    fwrite(v, 1, 2, f);
    if (major == 1) {
        unsigned char l[2] = {(unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
        fwrite(l, 1, 2, f);
    } else {
        unsigned char l[4] = {(unsigned char)(hl & 0xff), (unsigned char)(hl >> 8), (unsigned char)(hl >> 16),
                              (unsigned char)(hl >> 24)};
        fwrite(l, 1, 4, f);
    }
    fwrite(header, 1, hl, f);
    if (nbytes) fwrite(data, 1, nbytes, f);
    fclose(f);
}

static int file_exists_(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void write_str(const char *path, const char *s);

static void write_bytes(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (n) fwrite(b, 1, n, f);
    fclose(f);
}

static void write_str(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

/* ---- writer: the layout NumPy's format.py specifies --------------------- */

static void test_write_layout(void) {
    float x[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    int shape[2] = {2, 3};
    char err[512];
    const char *p = tpath("w.npy");
    ok(npy_write(p, "<f4", shape, 2, x, err, sizeof err) == 0, "write a (2, 3) float32 array");
    size_t n;
    unsigned char *b = slurp(p, &n);
    ok(b && memcmp(b, "\x93NUMPY\x01\x00", 8) == 0, "magic and version 1.0");
    size_t hl = b[8] | (size_t)b[9] << 8;
    ok((10 + hl) % 64 == 0, "data starts at a multiple of 64 bytes (offset %zu)", 10 + hl);
    ok(b[10 + hl - 1] == '\n', "header ends in a newline");
    const char *want = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    ok(memcmp(b + 10, want, strlen(want)) == 0, "header dict is NumPy's: %.*s", (int)strlen(want), (char *)b + 10);
    int pad_ok = 1;
    for (size_t i = 10 + strlen(want); i < 10 + hl - 1; i++) pad_ok &= b[i] == ' ';
    ok(pad_ok, "header padded with spaces");
    ok(n == 10 + hl + sizeof x && memcmp(b + 10 + hl, x, sizeof x) == 0, "data: 24 little-endian bytes, as given");
    free(b);

    /* 1-d, 0-d and int32 headers */
    int s1[1] = {5}, i5[5] = {1, -2, 3, 2147483647, -2147483647 - 1};
    p = tpath("w1.npy");
    npy_write(p, "<i4", s1, 1, i5, err, sizeof err);
    b = slurp(p, &n);
    want = "{'descr': '<i4', 'fortran_order': False, 'shape': (5,), }";
    ok(b && memcmp(b + 10, want, strlen(want)) == 0 && memcmp(b + n - 20, i5, 20) == 0, "1-d int32: shape (5,)");
    free(b);
    float sc = 42.0f;
    p = tpath("w0.npy");
    npy_write(p, "<f4", NULL, 0, &sc, err, sizeof err);
    b = slurp(p, &n);
    want = "{'descr': '<f4', 'fortran_order': False, 'shape': (), }";
    hl = b ? (b[8] | (size_t)b[9] << 8) : 0;
    ok(b && memcmp(b + 10, want, strlen(want)) == 0 && (10 + hl) % 64 == 0 && n == 10 + hl + 4,
       "0-d: shape (), one element");
    free(b);

    ok(npy_write(tpath("w.npy"), "<f8", shape, 2, x, err, sizeof err) != 0 && strstr(err, "<f8"),
       "writing another dtype is refused: %s", err);
    ok(npy_write("/nonexistent-dir/x.npy", "<f4", shape, 2, x, err, sizeof err) != 0 && strstr(err, "cannot create"),
       "unwritable path refused: %s", err);
}

/* ---- round trips -------------------------------------------------------- */

static void test_round_trip(void) {
    char err[512];
    /* float bit patterns that must survive: NaN payloads, infinities, -0, denormals */
    uint32_t bits[7] = {0x7fc00001u, 0xff800000u, 0x7f800000u, 0x80000000u, 0x00000001u, 0x3f800000u, 0xc2f6e979u};
    int shapes[][4] = {{7}, {1, 7}, {7, 1, 1, 1}};
    int ndims[] = {1, 2, 4};
    for (int t = 0; t < 3; t++) {
        const char *p = tpath("rt.npy");
        npy_write(p, "<f4", shapes[t], ndims[t], bits, err, sizeof err);
        void *d = NULL;
        int sh[NPY_MAX_DIMS], nd = -1;
        int r = npy_read(p, "<f4", shapes[t], ndims[t], &d, sh, &nd, err, sizeof err);
        ok(r == 0 && nd == ndims[t] && memcmp(sh, shapes[t], (size_t)nd * sizeof(int)) == 0 && d &&
               memcmp(d, bits, sizeof bits) == 0,
           "round trip %d-d float32 bit for bit (NaN payload, inf, -0, denormal)%s%s", ndims[t], r ? ": " : "",
           r ? err : "");
        free(d);
    }
    /* a larger array, read without a wanted shape, and into a caller buffer */
    int sh3[3] = {3, 17, 65};
    size_t n = 3 * 17 * 65;
    int32_t *iv = malloc(n * sizeof *iv), *back = malloc(n * sizeof *back);
    for (size_t i = 0; i < n; i++) iv[i] = (int32_t)(i * 2654435761u);
    const char *p = tpath("big.npy");
    npy_write(p, "<i4", sh3, 3, iv, err, sizeof err);
    void *d = NULL;
    int sh[NPY_MAX_DIMS], nd;
    int r = npy_read(p, "<i4", NULL, -1, &d, sh, &nd, err, sizeof err);
    ok(r == 0 && nd == 3 && sh[0] == 3 && sh[1] == 17 && sh[2] == 65 && memcmp(d, iv, n * 4) == 0,
       "int32 (3, 17, 65) read with any shape");
    ok(((uintptr_t)d & 63) == 0, "buffer from npy_read is 64-byte aligned");
    free(d);
    r = npy_read_into(p, "<i4", sh3, 3, back, err, sizeof err);
    ok(r == 0 && memcmp(back, iv, n * 4) == 0, "npy_read_into fills the caller's buffer");
    free(iv), free(back);
    /* empty array */
    int she[2] = {0, 5};
    npy_write(tpath("e.npy"), "<f4", she, 2, NULL, err, sizeof err);
    d = (void *)1;
    r = npy_read(tpath("e.npy"), "<f4", she, 2, &d, sh, &nd, err, sizeof err);
    ok(r == 0 && d == NULL && nd == 2 && sh[0] == 0 && sh[1] == 5, "empty (0, 5) array round trips");
}

/* ---- reader: good files written by hand --------------------------------- */

static void test_good_headers(void) {
    float x[6] = {1, 2, 3, 4, 5, 6};
    int sh23[2] = {2, 3}, sh6[1] = {6};
    struct {
        int major;
        const char *hdr;
        const int *shape;
        int ndim;
        const char *what;
    } cases[] = {
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }          \n", sh23, 2, "NumPy's own"},
        {1, "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}\n", sh23, 2, "keys in another order, no trailing comma"},
        {1, "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,3)}", sh23, 2, "double quotes, no spaces, no newline"},
        {1, "  {\n 'descr' :'<f4' ,\t'fortran_order':False,\r\n'shape' : ( 2 , 3 , ) ,\n}  \n", sh23, 2,
         "odd whitespace and trailing commas in tuple and dict"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }\n", sh6, 1, "(6,)"},
        {1, "{'descr': '<f4', 'fortran_order': True, 'shape': (6,), }\n", sh6, 1, "Fortran order of a 1-d array (same bytes)"},
        {2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", sh23, 2, "version 2.0 header"},
        {3, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", sh23, 2, "version 3.0 header"},
    };
    char err[512];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *p = tpath("good.npy");
        write_raw(p, cases[c].major, 0, cases[c].hdr, x, sizeof x);
        float y[6] = {0};
        int r = npy_read_into(p, "<f4", cases[c].shape, cases[c].ndim, y, err, sizeof err);
        ok(r == 0 && memcmp(x, y, sizeof x) == 0, "good: %s%s%s", cases[c].what, r ? ": " : "", r ? err : "");
    }
    /* the scalar shape () holds one element */
    const char *p = tpath("scalar.npy");
    write_raw(p, 1, 0, "{'descr': '<i4', 'fortran_order': False, 'shape': ()}\n", "\x07\0\0\0", 4);
    void *d = NULL;
    int sh[NPY_MAX_DIMS], nd = -1;
    int r = npy_read(p, "<i4", NULL, 0, &d, sh, &nd, err, sizeof err);
    ok(r == 0 && nd == 0 && d && *(int32_t *)d == 7, "good: shape () is one element%s%s", r ? ": " : "", r ? err : "");
    free(d);
}

/* ---- reader: bad files, each refused with its own message ---------------- */

static void test_bad_files(void) {
    float x[6] = {1, 2, 3, 4, 5, 6};
    int sh23[2] = {2, 3}, sh32[2] = {3, 2}, sh6[1] = {6};
    const char *std = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
    struct {
        int kind; /* 0: write_raw, 1: raw bytes */
        int major, minor;
        const char *hdr;
        size_t nbytes;  /* data bytes written (kind 0) or file bytes (kind 1) */
        const char *want_dtype;
        const int *want_shape;
        int want_ndim;
        const char *expect; /* substring of the message */
        const char *what;
    } cases[] = {
        {1, 0, 0, "hello, world, this is text", 26, "<f4", sh23, 2, "not a .npy file", "a text file"},
        {1, 0, 0, "", 0, "<f4", sh23, 2, "not a .npy file", "an empty file"},
        {1, 0, 0, "\x93NUM", 4, "<f4", sh23, 2, "not a .npy file", "a file cut inside the magic"},
        {1, 0, 0, "\x93NUMPY\x01\x00\x40", 9, "<f4", sh23, 2, "ends inside the .npy header", "cut inside the length field"},
        {0, 4, 0, std, 24, "<f4", sh23, 2, "version 4.0 is not supported", "format version 4.0"},
        {0, 1, 1, std, 24, "<f4", sh23, 2, "version 1.1 is not supported", "format version 1.1"},
        {0, 1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }\n", 48, "<f4", sh23, 2,
         "dtype '<f8', expected '<f4' (float32)", "float64"},
        {0, 1, 0, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }\n", 24, "<f4", sh23, 2, "big-endian",
         "big-endian float32"},
        {0, 1, 0, "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }\n", 6, "<f4", sh23, 2,
         "dtype '|u1', expected '<f4'", "uint8"},
        {0, 1, 0, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }\n", 24, "<f4", sh23, 2,
         "dtype '<i4', expected '<f4'", "int32 where float32 is wanted"},
        {0, 1, 0, std, 24, "<i4", sh23, 2, "dtype '<f4', expected '<i4' (int32)", "float32 where int32 is wanted"},
        {0, 1, 0, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2, 3), }\n", 24, "<f4", sh23, 2,
         "structured dtypes are not supported", "structured dtype"},
        {0, 1, 0, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }\n", 24, "<f4", sh23, 2, "Fortran order",
         "Fortran order 2-d"},
        {0, 1, 0, std, 24, "<f4", sh32, 2, "shape (2, 3), expected (3, 2)", "shape other than the caller's"},
        {0, 1, 0, std, 24, "<f4", sh6, 1, "shape (2, 3), expected (6,)", "dimensions other than the caller's"},
        {0, 1, 0, std, 20, "<f4", sh23, 2, "truncated: shape (2, 3) of <f4 needs 24 bytes of data, the file has 20",
         "data cut short"},
        {0, 1, 0, std, 0, "<f4", sh23, 2, "needs 24 bytes of data, the file has 0", "no data at all"},
        {0, 1, 0, std, 28, "<f4", sh23, 2, "4 bytes after the data", "trailing bytes"},
        {0, 1, 0, "{'fortran_order': False, 'shape': (2, 3), }\n", 24, "<f4", sh23, 2, "header has no 'descr'",
         "missing descr"},
        {0, 1, 0, "{'descr': '<f4', 'shape': (2, 3), }\n", 24, "<f4", sh23, 2, "header has no 'fortran_order'",
         "missing fortran_order"},
        {0, 1, 0, "{'descr': '<f4', 'fortran_order': False}\n", 24, "<f4", sh23, 2, "header has no 'shape'",
         "missing shape"},
        {0, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}\n", 24, "<f4", sh23, 2,
         "unexpected key 'extra'", "an extra key"},
        {0, 1, 0, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}\n", 24, "<f4", sh23, 2,
         "header has 'descr' twice", "a repeated key"},
        {0, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (6)}\n", 24, "<f4", sh6, 1, "write (n,)",
         "shape (6) without a comma (an int in Python)"},
        {0, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3]}\n", 24, "<f4", sh23, 2,
         "'shape' must be a tuple", "shape as a list"},
        {0, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3)}\n", 24, "<f4", sh23, 2,
         "non-negative integers", "a negative dimension"},
        {0, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 3)}\n", 24, "<f4", sh23, 2,
         "too large", "an absurd dimension"},
        {0, 1, 0, "{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3)}\n", 24, "<f4", sh23, 2,
         "must be True or False", "fortran_order not a bool"},
        {0, 1, 0, "{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2, 3)}\n", 24, "<f4", sh23, 2,
         "must be True or False", "fortran_order a longer word"},
        {0, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} junk\n", 24, "<f4", sh23, 2,
         "unexpected text after the header dict", "text after the dict"},
        {0, 1, 0, "{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3)}\n", 24, "<f4", sh23, 2,
         "expected ',' or '}'", "a missing comma"},
        {0, 1, 0, "{'descr': '<f4, 'fortran_order': False, 'shape': (2, 3)}\n", 24, "<f4", sh23, 2,
         "bad .npy header", "an unbalanced quote"},
        {0, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3),\n", 24, "<f4", sh23, 2,
         "not closed with '}'", "an unclosed dict"},
        {0, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)\n", 24, "<f4", sh23, 2,
         "not closed with '}'", "an unclosed dict without a comma"},
        {0, 1, 0, "['descr', '<f4']\n", 24, "<f4", sh23, 2, "not a Python dict", "a list, not a dict"},
        {0, 1, 0, "{descr: '<f4', 'fortran_order': False, 'shape': (2, 3)}\n", 24, "<f4", sh23, 2,
         "keys must be quoted strings", "an unquoted key"},
    };
    char err[512];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *p = tpath("bad.npy");
        unsigned char data[64] = {0};
        memcpy(data, x, sizeof x);
        if (cases[c].kind == 0) write_raw(p, cases[c].major, cases[c].minor, cases[c].hdr, data, cases[c].nbytes);
        else write_bytes(p, cases[c].hdr, cases[c].nbytes);
        void *d = (void *)1;
        int sh[NPY_MAX_DIMS], nd;
        err[0] = '\0';
        int r = npy_read(p, cases[c].want_dtype, cases[c].want_shape, cases[c].want_ndim, &d, sh, &nd, err, sizeof err);
        ok(r == -1 && d == NULL && strstr(err, cases[c].expect) && strstr(err, p),
           "bad: %s is refused naming the file: %s", cases[c].what, err);
    }
    /* a header length that would make us allocate gigabytes */
    const char *p = tpath("huge.npy");
    write_bytes(p, "\x93NUMPY\x02\x00\xff\xff\xff\x7f{}", 14);
    int r = npy_read(p, "<f4", NULL, -1, NULL, NULL, NULL, err, sizeof err);
    ok(r == -1 && strstr(err, "implausible"), "bad: a 2 GB header length is refused: %s", err);
    /* a header that ends early */
    write_raw(p, 1, 0, std, NULL, 0);
    FILE *f = fopen(p, "r+b");
    ftruncate(fileno(f), 30);
    fclose(f);
    r = npy_read(p, "<f4", NULL, -1, NULL, NULL, NULL, err, sizeof err);
    ok(r == -1 && strstr(err, "ends inside the .npy header"), "bad: file cut inside the header dict: %s", err);
    r = npy_read(tpath("no-such-file.npy"), "<f4", NULL, -1, NULL, NULL, NULL, err, sizeof err);
    ok(r == -1 && strstr(err, "cannot open") && strstr(err, "no-such-file.npy"), "bad: missing file: %s", err);
    write_raw(p, 1, 0, std, x, 24);
    r = npy_read(p, "<f4", NULL, 3, NULL, NULL, NULL, err, sizeof err);
    ok(r == -1 && strstr(err, "has 2 dimensions, expected 3"), "bad: wrong number of dimensions: %s", err);
}

/* ---- attn --save / --load --------------------------------------------- */

static const char *pass_files[] = {"q", "k", "v", "dout", "out", "dq", "dk", "dv",
                                   "centroids_before", "centroids_after", "members", "members_k"};
#define NPASS_FILES (int)(sizeof pass_files / sizeof pass_files[0])

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    unsigned char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x), free(y);
    return same;
}

static int copy_file(const char *from, const char *to) {
    size_t n;
    unsigned char *b = slurp(from, &n);
    if (!b) return -1;
    write_bytes(to, b, n);
    free(b);
    return 0;
}

static float *load_f4(const char *dir, const char *name, const int *shape, int ndim) {
    char path[600], err[512];
    snprintf(path, sizeof path, "%s/%s.npy", dir, name);
    void *d = NULL;
    int sh[NPY_MAX_DIMS], nd;
    if (npy_read(path, "<f4", shape, ndim, &d, sh, &nd, err, sizeof err) != 0) {
        diag("%s", err);
        return NULL;
    }
    return d;
}

/* Dense attention and its gradients in double, straight from the definition,
 * to check the saved files hold what their names say. Returns the worst
 * |saved - reference| relative to the largest reference entry. */
static double dense_reference_err(const char *dir, int B, int H, int T, int D, int causal) {
    int sh[4] = {B, H, T, D};
    float *q = load_f4(dir, "q", sh, 4), *k = load_f4(dir, "k", sh, 4), *v = load_f4(dir, "v", sh, 4);
    float *dout = load_f4(dir, "dout", sh, 4), *out = load_f4(dir, "out", sh, 4);
    float *dq = load_f4(dir, "dq", sh, 4), *dk = load_f4(dir, "dk", sh, 4), *dv = load_f4(dir, "dv", sh, 4);
    double worst = INFINITY;
    if (q && k && v && dout && out && dq && dk && dv) {
        double *P = malloc((size_t)T * T * sizeof(double)), *dP = malloc((size_t)T * T * sizeof(double));
        double *ref = malloc((size_t)4 * T * D * sizeof(double));
        double err = 0, scale = 0, sc = 1.0 / sqrt((double)D);
        for (int bh = 0; bh < B * H; bh++) {
            const float *Q = q + (size_t)bh * T * D, *K = k + (size_t)bh * T * D, *V = v + (size_t)bh * T * D;
            const float *dO = dout + (size_t)bh * T * D;
            double *o = ref, *gq = ref + T * D, *gk = ref + 2 * T * D, *gv = ref + 3 * T * D;
            memset(ref, 0, (size_t)4 * T * D * sizeof(double));
            for (int i = 0; i < T; i++) {
                double m = -INFINITY, z = 0;
                for (int j = 0; j < T; j++) {
                    double s = 0;
                    for (int c = 0; c < D; c++) s += (double)Q[i * D + c] * K[j * D + c];
                    P[i * T + j] = (causal && j > i) ? -INFINITY : s * sc;
                    m = fmax(m, P[i * T + j]);
                }
                for (int j = 0; j < T; j++) z += P[i * T + j] = exp(P[i * T + j] - m);
                for (int j = 0; j < T; j++) {
                    P[i * T + j] /= z;
                    for (int c = 0; c < D; c++) o[i * D + c] += P[i * T + j] * V[j * D + c];
                }
            }
            for (int i = 0; i < T; i++) {
                double dot = 0;
                for (int j = 0; j < T; j++) {
                    double s = 0;
                    for (int c = 0; c < D; c++) s += (double)dO[i * D + c] * V[j * D + c];
                    dP[i * T + j] = s;
                    dot += s * P[i * T + j];
                }
                for (int j = 0; j < T; j++) {
                    double ds = P[i * T + j] * (dP[i * T + j] - dot) * sc;
                    for (int c = 0; c < D; c++) {
                        gq[i * D + c] += ds * K[j * D + c];
                        gk[j * D + c] += ds * Q[i * D + c];
                        gv[j * D + c] += P[i * T + j] * dO[i * D + c];
                    }
                }
            }
            const float *mine[4] = {out + (size_t)bh * T * D, dq + (size_t)bh * T * D, dk + (size_t)bh * T * D,
                                    dv + (size_t)bh * T * D};
            for (int t = 0; t < 4; t++)
                for (int i = 0; i < T * D; i++) {
                    err = fmax(err, fabs(mine[t][i] - ref[t * T * D + i]));
                    scale = fmax(scale, fabs(ref[t * T * D + i]));
                }
        }
        worst = err / fmax(scale, 1e-30);
        free(P), free(dP), free(ref);
    }
    free(q), free(k), free(v), free(dout), free(out), free(dq), free(dk), free(dv);
    return worst;
}

static void test_attn_round_trip(void) {
    char err[1024], a[512], b[512], c[512], pa[600], pb[600];
    for (int bi = 0; bi < attn_count(); bi++) {
        const attn_backend *be = attn_get(bi);
        /* 0: training pass, 1: evaluation pass, 2: training, bidirectional
         * (routing: separate keys) with nearest-centroid assignment (ragged
         * clusters) where the backend has that choice */
        for (int cfg = 0; cfg < 3; cfg++) {
            int mode = cfg == 1;
            int flags = mode ? ATTN_EVAL : ATTN_TRAIN;
            const char *mname = cfg == 0 ? "train" : cfg == 1 ? "eval" : "train-bidir";
            attn_params p;
            attn_params_default(&p);
            p.batch = 2, p.heads = 2, p.seq = 64, p.head_dim = 16, p.seed = 11 + (uint64_t)bi;
            if (cfg == 2) {
                p.causal = 0;
                if (be->uses & ATTN_USES_ASSIGN) p.assign = ATTN_ASSIGN_ARGMAX;
            }
            snprintf(a, sizeof a, "%s/%s-%s-a", tmpdir, be->name, mname);
            snprintf(b, sizeof b, "%s/%s-%s-b", tmpdir, be->name, mname);
            snprintf(c, sizeof c, "%s/%s-%s-c", tmpdir, be->name, mname);
            int na = 0, nb = 0, nc = 0;
            int r = attn_npy_pass(be->name, &p, flags, NULL, a, &na, err, sizeof err);
            if (!ok(r == 0 && na >= 8, "%s %s: --save writes %d arrays%s%s", be->name, mname, na, r ? ": " : "",
                    r ? err : ""))
                continue;
            /* load A, write to B */
            attn_params p2 = p; /* the same flags as the save, but the sizes from q.npy */
            p2.batch = 1, p2.heads = 1, p2.seq = 0, p2.head_dim = 64;
            r = attn_npy_pass(be->name, &p2, flags, a, b, &nb, err, sizeof err);
            ok(r == 0 && nb == na && p2.batch == 2 && p2.heads == 2 && p2.seq == 64 && p2.head_dim == 16,
               "%s %s: --load takes the sizes from q.npy and writes as many arrays%s%s", be->name, mname,
               r ? ": " : "", r ? err : "");
            /* load in place: only the inputs (and starting centroids) copied to C */
            rb_mkdir_p(c, err, sizeof err);
            for (int f = 0; f < NPASS_FILES; f++) {
                int is_input = f < 4 || strcmp(pass_files[f], "centroids_before") == 0;
                snprintf(pa, sizeof pa, "%s/%s.npy", a, pass_files[f]);
                snprintf(pb, sizeof pb, "%s/%s.npy", c, pass_files[f]);
                if (is_input) copy_file(pa, pb);
            }
            attn_params p3 = p;
            r = attn_npy_pass(be->name, &p3, flags, c, NULL, &nc, err, sizeof err);
            ok(r == 0, "%s %s: --load without --save writes beside the inputs%s%s", be->name, mname, r ? ": " : "",
               r ? err : "");
            int all_b = 1, all_c = 1, nfiles = 0;
            char which[256] = "";
            for (int f = 0; f < NPASS_FILES; f++) {
                snprintf(pa, sizeof pa, "%s/%s.npy", a, pass_files[f]);
                if (!file_exists_(pa)) continue;
                nfiles++;
                snprintf(pb, sizeof pb, "%s/%s.npy", b, pass_files[f]);
                if (!same_file(pa, pb)) all_b = 0, snprintf(which, sizeof which, "%s", pass_files[f]);
                snprintf(pb, sizeof pb, "%s/%s.npy", c, pass_files[f]);
                if (!same_file(pa, pb)) all_c = 0, snprintf(which, sizeof which, "%s", pass_files[f]);
            }
            ok(all_b && all_c, "%s %s: save, load and rerun are bit-identical in all %d files%s%s", be->name, mname,
               nfiles, which[0] ? "; differs: " : "", which);

            /* the inputs are the draws `routebench attn` makes from the seed */
            int sh[4] = {2, 2, 64, 16};
            size_t n = 2 * 2 * 64 * 16;
            rb_rng rng;
            rb_rng_seed(&rng, p.seed);
            int same = 1;
            const char *in[4] = {"q", "k", "v", "dout"};
            for (int t = 0; t < 4; t++) {
                float *x = load_f4(a, in[t], sh, 4);
                for (size_t i = 0; i < n; i++) {
                    float y = rb_rng_normal(&rng);
                    if (!x || memcmp(&x[i], &y, 4) != 0) {
                        same = 0;
                        break;
                    }
                }
                free(x);
            }
            ok(same, "%s %s: saved inputs are N(0,1) draws from the seed in the order q, k, v, dout", be->name, mname);

            int eqd = be->equals_dense && be->equals_dense(&p);
            if (strcmp(be->name, "dense") == 0 || eqd) {
                double e = dense_reference_err(a, 2, 2, 64, 16, p.causal);
                diag("%s %s: saved out/dq/dk/dv vs double-precision dense reference: worst error %.3g relative", be->name,
                     mname, e);
                ok(e < 1e-5, "%s %s: saved out, dq, dk, dv match dense attention computed from the saved q, k, v, dout",
                   be->name, mname);
            }
            if (be->centroids && p.clusters > 0) {
                int cs[3] = {p.heads, p.clusters, p.head_dim};
                float *c0 = load_f4(a, "centroids_before", cs, 3), *c1 = load_f4(a, "centroids_after", cs, 3);
                int moved = c0 && c1 && memcmp(c0, c1, (size_t)p.heads * p.clusters * p.head_dim * 4) != 0;
                ok(c0 && c1 && moved == !mode, "%s %s: centroids %s in the pass", be->name, mname,
                   mode ? "stay put" : "move");
                free(c0), free(c1);
            }
            for (int mk = 0; mk < 2 && be->routes && p.clusters > 0; mk++) {
                if (mk == 1 && p.share_qk) break;
                snprintf(pa, sizeof pa, "%s/%s.npy", a, mk ? "members_k" : "members");
                void *d = NULL;
                int ms[NPY_MAX_DIMS], nd;
                r = npy_read(pa, "<i4", NULL, 4, &d, ms, &nd, err, sizeof err);
                int good = r == 0 && ms[0] == 2 && ms[1] == p.heads && ms[2] == p.clusters && ms[3] > 0;
                const int32_t *m = d;
                for (int row = 0; good && row < ms[0] * ms[1] * ms[2]; row++) {
                    int prev = -1;
                    for (int i = 0; i < ms[3]; i++) {
                        int x = m[row * ms[3] + i];
                        if (x == -1) prev = INT32_MAX;
                        else if (x <= prev || x >= p.seq) good = 0;
                        else prev = x;
                    }
                }
                ok(good, "%s %s: %s [2, %d, %d, %d] hold ascending positions padded with -1", be->name, mname,
                   mk ? "members_k" : "members", p.heads, p.clusters, r == 0 ? ms[3] : -1);
                free(d);
            }
        }
    }

    /* refusals name the file at fault */
    attn_params p;
    attn_params_default(&p);
    p.seq = 32, p.heads = 2, p.head_dim = 8;
    snprintf(a, sizeof a, "%s/dense-train-a", tmpdir); /* [2, 2, 64, 16] inputs */
    int r = attn_npy_pass("dense", &p, ATTN_TRAIN, a, c, NULL, err, sizeof err);
    ok(r == -1 && strstr(err, "q.npy: shape (2, 2, 64, 16), expected (1, 2, 32, 8)"),
       "--load with sizes other than q.npy's is refused: %s", err);
    snprintf(b, sizeof b, "%s/empty", tmpdir);
    rb_mkdir_p(b, err, sizeof err);
    attn_params_default(&p);
    r = attn_npy_pass("dense", &p, ATTN_TRAIN, b, NULL, NULL, err, sizeof err);
    ok(r == -1 && strstr(err, "q.npy") && strstr(err, "cannot open"), "--load from a directory without q.npy: %s",
       err);
    /* a dout of the wrong dtype */
    snprintf(c, sizeof c, "%s/badin", tmpdir);
    rb_mkdir_p(c, err, sizeof err);
    const char *in[3] = {"q", "k", "v"};
    for (int t = 0; t < 3; t++) {
        snprintf(pa, sizeof pa, "%s/%s.npy", a, in[t]);
        snprintf(pb, sizeof pb, "%s/%s.npy", c, in[t]);
        copy_file(pa, pb);
    }
    int sh[4] = {2, 2, 64, 16};
    int32_t *zeros = calloc(2 * 2 * 64 * 16, 4);
    snprintf(pb, sizeof pb, "%s/dout.npy", c);
    npy_write(pb, "<i4", sh, 4, zeros, err, sizeof err);
    free(zeros);
    attn_params_default(&p);
    r = attn_npy_pass("dense", &p, ATTN_TRAIN, c, NULL, NULL, err, sizeof err);
    ok(r == -1 && strstr(err, "dout.npy: dtype '<i4', expected '<f4'"), "--load with an int32 dout: %s", err);
    attn_params_default(&p);
    p.seq = 64;
    r = attn_npy_pass("nosuch", &p, ATTN_TRAIN, NULL, c, NULL, err, sizeof err);
    ok(r == -1 && strstr(err, "unknown backend 'nosuch'"), "unknown backend: %s", err);
}

/* ---- export / import of a model ------------------------------------------ */

static int centroid_bytes_equal(model *a, model *b, int *layers_with) {
    int same = 1;
    *layers_with = 0;
    for (int l = 0; l < a->L; l++) {
        const attn_backend *be = attn_find(train_layer_backend(&a->c, l));
        if (!be->centroids || a->att[l]->p.clusters <= 0) continue;
        size_t n = (size_t)a->att[l]->p.heads * a->att[l]->p.clusters * a->att[l]->p.head_dim;
        same &= memcmp(be->centroids(a->att[l]), be->centroids(b->att[l]), n * sizeof(float)) == 0;
        (*layers_with)++;
    }
    return same;
}

static void test_export_import(void) {
    char err[8192], dir[512], dir2[512], ck1[512], ck2[512], path[600], path2[600];
    train_config c;
    train_config_default(&c);
    /* one layer per registered backend that accepts this shape */
    char lb[TRAIN_NAME_LEN * 8] = "";
    int layers = 0;
    for (int i = 0; i < attn_count() && layers < 8; i++) {
        attn_params p;
        attn_params_default(&p);
        p.heads = 2, p.seq = 32, p.head_dim = 16, p.batch = 2;
        char e2[256];
        if (attn_validate_msg(attn_get(i), &p, e2, sizeof e2) != 0) continue;
        size_t o = strlen(lb);
        snprintf(lb + o, sizeof lb - o, "%s%s", layers++ ? "," : "", attn_get(i)->name);
    }
    const char *kv[][2] = {{"task", "random"}, {"random_vocab", "50"}, {"d_model", "32"}, {"heads", "2"},
                           {"seq", "32"},     {"batch", "2"},         {"mlp_mult", "2"},  {"seed", "9"}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) train_config_set(&c, kv[i][0], kv[i][1], err, sizeof err);
    char nl[16];
    snprintf(nl, sizeof nl, "%d", layers);
    train_config_set(&c, "layers", nl, err, sizeof err);
    train_config_set(&c, "layer_backends", lb, err, sizeof err);
    if (!ok(train_config_check(&c, err, sizeof err) == 0, "model with one layer per backend: %s", lb)) {
        diag("%s", err);
        return;
    }
    model *m = model_create(&c, err, sizeof err);
    if (!ok(m != NULL, "model_create")) return;
    /* centroids as if trained: random, so a copy that lost them shows */
    rb_rng r;
    rb_rng_seed(&r, 77);
    for (int l = 0; l < m->L; l++) {
        const attn_backend *be = attn_find(train_layer_backend(&c, l));
        if (!be->centroids || m->att[l]->p.clusters <= 0) continue;
        float *cen = be->centroids(m->att[l]);
        size_t n = (size_t)m->att[l]->p.heads * m->att[l]->p.clusters * m->att[l]->p.head_dim;
        for (size_t i = 0; i < n; i++) cen[i] = rb_rng_normal(&r);
    }
    snprintf(ck1, sizeof ck1, "%s/model1.ckpt", tmpdir);
    snprintf(ck2, sizeof ck2, "%s/model2.ckpt", tmpdir);
    snprintf(dir, sizeof dir, "%s/export1", tmpdir);
    snprintf(dir2, sizeof dir2, "%s/export2", tmpdir);
    rb_rng_seed(&r, 5);
    checkpoint_save(ck1, m, 42, &r, &c, err, sizeof err);

    int ne = 0, ni = 0;
    int rc = npy_export_model(ck1, dir, &c, &ne, err, sizeof err);
    ok(rc == 0 && ne > 16, "export writes %d arrays%s%s", ne, rc ? ": " : "", rc ? err : "");
    rc = npy_import_model(dir, ck2, &ni, err, sizeof err);
    ok(rc == 0 && ni == ne, "import reads them back into a checkpoint%s%s", rc ? ": " : "", rc ? err : "");
    model *m2 = model_create(&c, err, sizeof err);
    int step = -1;
    rc = m2 ? checkpoint_load(ck2, m2, &step, &r, train_config_hash(&c), err, sizeof err) : -1;
    int nl_c = 0;
    ok(rc == 0 && m2->nparams == m->nparams && memcmp(m2->params_mem, m->params_mem, m->nparams * 4) == 0,
       "export then import: all %zu parameters bit-identical%s%s", m->nparams, rc ? ": " : "", rc ? err : "");
    int cen_same = rc == 0 && centroid_bytes_equal(m, m2, &nl_c);
    ok(cen_same && nl_c > 0, "export then import: centroids bit-identical (%d layers have them)", nl_c);
    ok(rc == 0 && step == 0, "imported checkpoint starts at step 0 (got %d)", step);
    /* export of the imported checkpoint gives the same files */
    rc = npy_export_model(ck2, dir2, &c, NULL, err, sizeof err);
    int same = rc == 0;
    const char *probe[] = {"wte.weight", "wpe.weight", "h.0.attn.qkv.weight", "ln_f.bias"};
    for (size_t i = 0; i < sizeof probe / sizeof probe[0]; i++) {
        snprintf(path, sizeof path, "%s/%s.npy", dir, probe[i]);
        snprintf(path2, sizeof path2, "%s/%s.npy", dir2, probe[i]);
        same &= same_file(path, path2);
    }
    ok(same, "re-exporting the imported checkpoint gives byte-identical files");
    /* the arrays hold what their names say */
    {
        int sh[2] = {m->V, m->C};
        float *w = load_f4(dir, "wte.weight", sh, 2);
        int sq[2] = {3 * m->C, m->C};
        char nm[64];
        snprintf(nm, sizeof nm, "h.%d.attn.qkv.weight", m->L - 1);
        float *q = load_f4(dir, nm, sq, 2);
        int sb[1] = {m->C};
        float *b = load_f4(dir, "ln_f.bias", sb, 1);
        ok(w && q && b && memcmp(w, m->params.wte, (size_t)m->V * m->C * 4) == 0 &&
               memcmp(q, m->params.qkvw + (size_t)(m->L - 1) * 3 * m->C * m->C, (size_t)3 * m->C * m->C * 4) == 0 &&
               memcmp(b, m->params.lnfb, (size_t)m->C * 4) == 0,
           "wte.weight, h.%d.attn.qkv.weight and ln_f.bias hold the model's tensors", m->L - 1);
        free(w), free(q), free(b);
    }

    /* a checkpoint of another configuration is refused by its hash */
    train_config c2 = c;
    train_config_set(&c2, "mlp_mult", "3", err, sizeof err);
    snprintf(path, sizeof path, "%s/export-wrong", tmpdir);
    rc = npy_export_model(ck1, path, &c2, NULL, err, sizeof err);
    ok(rc == -1 && strstr(err, "another configuration"), "export with other configuration flags is refused: %s", err);

    /* missing, extra and mis-shaped arrays, all named, nothing written */
    snprintf(path, sizeof path, "%s/h.0.ln_1.bias.npy", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/h.99.mlp.fc.weight.npy", dir);
    float z[4] = {0};
    int s4[1] = {4};
    npy_write(path, "<f4", s4, 1, z, err, sizeof err);
    snprintf(path, sizeof path, "%s/ln_f.weight.npy", dir);
    npy_write(path, "<f4", s4, 1, z, err, sizeof err);
    unlink(ck2);
    rc = npy_import_model(dir, ck2, NULL, err, sizeof err);
    ok(rc == -1 && strstr(err, "missing: h.0.ln_1.bias.npy") && strstr(err, "unexpected: h.99.mlp.fc.weight.npy") &&
           strstr(err, "ln_f.weight.npy (shape (4,), expected (32,))") && !file_exists_(ck2),
       "import refuses missing, extra and mis-shaped arrays, naming each, writing nothing: %s", err);
    /* a manifest without the configuration */
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    write_str(path, "{\"arrays\": {}, \"what\": [1, 2, {\"x\": \"y\"}]}");
    rc = npy_import_model(dir, ck2, NULL, err, sizeof err);
    ok(rc == -1 && strstr(err, "no \"config\" object"), "import without a config in the manifest: %s", err);
    write_str(path, "{\"config\": {\"d_model\": 32, \"layers\": }}");
    rc = npy_import_model(dir, ck2, NULL, err, sizeof err);
    ok(rc == -1 && strstr(err, "bad JSON"), "import with a broken manifest: %s", err);
    write_str(path, "{\"config\": {\"d_modle\": 32}}");
    rc = npy_import_model(dir, ck2, NULL, err, sizeof err);
    ok(rc == -1 && strstr(err, "d_modle"), "import with an unknown config key: %s", err);
    model_free(m);
    if (m2) model_free(m2);
}

/* A directory named like a .npy file, and a dtype string with a NUL inside
 * (which a C-string comparison would read as '<f4'): both refused by name. */
static void test_dir_and_nul(void) {
    char err[512];
    const char *d = tpath("dir.npy");
    mkdir(d, 0777);
    int sh[2] = {2, 3};
    float buf[6];
    ok(npy_read_into(d, "<f4", sh, 2, buf, err, sizeof err) != 0 && strstr(err, "is a directory"),
       "a directory is refused as a directory: %s", err);
    static const char hdr[] = "{'descr': '<f4\0x', 'fortran_order': False, 'shape': (2, 3), }\n";
    const char *p = tpath("nul.npy");
    FILE *f = fopen(p, "wb");
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(sizeof hdr - 1), 0};
    fwrite(pre, 1, 10, f), fwrite(hdr, 1, sizeof hdr - 1, f), fwrite(buf, 1, sizeof buf, f), fclose(f);
    ok(npy_read_into(p, "<f4", sh, 2, buf, err, sizeof err) != 0 && strstr(err, "control character"),
       "a NUL inside the dtype string is refused: %s", err);
}

int main(void) {
    if (tu_tmpdir(tmpdir, sizeof tmpdir, "npy")) return 1;
    test_write_layout();
    test_round_trip();
    test_good_headers();
    test_bad_files();
    test_dir_and_nul();
    test_attn_round_trip();
    test_export_import();
    tu_rmtree(tmpdir);
    return tap_done();
}
