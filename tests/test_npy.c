/* test_npy.c: the .npy reader and writer (core/npy.h) against the format as
 * NumPy documents it (files made byte by byte here, good and bad, so no
 * binary fixtures live in git), and `routebench attn --save/--load` round
 * trips for every registered backend. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "npy.h"
#include "tap.h"

static char tmpdir[256];

static const char *tpath(const char *name) {
    static char buf[8][512];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static unsigned char *slurp(const char *path, size_t *n) {
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

static void write_bytes(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (n) fwrite(b, 1, n, f);
    fclose(f);
}

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

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_npy.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! cannot make a temporary directory\n");
        return 1;
    }
    test_write_layout();
    test_round_trip();
    test_good_headers();
    test_bad_files();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) diag("could not remove %s", tmpdir);
    return tap_done();
}
