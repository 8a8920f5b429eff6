/* test_util.c: the small text helpers users see the output of (issue 15,
 * item 18): rb_path_join never writes "dir//name" however the directory is
 * spelled, and real numbers are printed with the shortest text that reads
 * back as the same value ("decay":0.999, not 0.999000013), checked by reading
 * every printed text back with strtod/strtof and by showing that one digit
 * fewer would not read back. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "util/fsutil.h"
#include "util/json.h"

/* significant digits in a %g text: the mantissa's digits without leading
 * zeros and without trailing ones ("389330" has 5, as "3.8933e+05") */
static int sig_digits(const char *s) {
    int n = 0, started = 0, zeros = 0;
    for (; *s && *s != 'e' && *s != 'E'; s++) {
        if (*s < '0' || *s > '9') continue;
        if (*s != '0') started = 1, n += zeros + 1, zeros = 0;
        else if (started) zeros++;
    }
    return n;
}

static void test_path_join(void) {
    static const struct { const char *dir, *name, *want; } c[] = {
        {"mine", "q.npy", "mine/q.npy"},   {"mine/", "q.npy", "mine/q.npy"},
        {"mine//", "q.npy", "mine/q.npy"}, {"/", "q.npy", "/q.npy"},
        {"a/b/", "c.db", "a/b/c.db"},      {".", "x", "./x"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char buf[64];
        rb_path_join(buf, sizeof buf, c[i].dir, c[i].name);
        if (strcmp(buf, c[i].want) != 0) bad++, diag("join(%s, %s) = %s, want %s", c[i].dir, c[i].name, buf, c[i].want);
    }
    ok(!bad, "rb_path_join: one slash between directory and name however the directory ends (%d wrong)", bad);
    char small[8];
    rb_path_join(small, sizeof small, "longdirectory", "name");
    ok(strlen(small) < sizeof small, "rb_path_join: a too-small buffer stays NUL-terminated");
}

static void test_fmt_real(void) {
    char t[64];
    rb_fmt_real(t, sizeof t, 0.999f, 1);
    ok(strcmp(t, "0.999") == 0, "the float 0.999 prints as 0.999 (got %s)", t);
    rb_fmt_real(t, sizeof t, 1e-4f, 1);
    ok(strtof(t, NULL) == 1e-4f && sig_digits(t) == 1, "the float 1e-4 prints with one digit (got %s)", t);
    rb_fmt_real(t, sizeof t, 0.1, 0);
    ok(strcmp(t, "0.1") == 0, "the double 0.1 prints as 0.1 (got %s)", t);

    /* random floats and doubles: read back exactly, and one digit fewer would not */
    uint64_t s = 88172645463325252ull;
    int bad_f = 0, long_f = 0, bad_d = 0, long_d = 0;
    for (int i = 0; i < 20000; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        double mant = (double)(s >> 11) / 9007199254740992.0;
        int ex = (int)(s % 40) - 20;
        double x = ldexp(mant + 0.5, ex) * ((s >> 5) & 1 ? -1 : 1);
        float xf = (float)x;
        rb_fmt_real(t, sizeof t, xf, 1);
        if (strtof(t, NULL) != xf) bad_f++;
        int n = sig_digits(t);
        char shorter[400];
        if (n > 1) {
            snprintf(shorter, sizeof shorter, "%.*g", n - 1, (double)xf);
            if (strtof(shorter, NULL) == xf) long_f++;
        }
        rb_fmt_real(t, sizeof t, x, 0);
        if (strtod(t, NULL) != x) bad_d++;
        n = sig_digits(t);
        if (n > 1) {
            snprintf(shorter, sizeof shorter, "%.*g", n - 1, x);
            if (strtod(shorter, NULL) == x) long_d++;
        }
    }
    ok(!bad_f && !long_f, "20000 random floats: every text reads back (%d did not) and none is longer than needed (%d)",
       bad_f, long_f);
    ok(!bad_d && !long_d, "20000 random doubles: every text reads back (%d did not) and none is longer than needed (%d)",
       bad_d, long_d);

    char buf[256];
    rb_jw w;
    rb_jw_init_buf(&w, buf, sizeof buf);
    rb_jw_obj(&w);
    rb_jw_key(&w, "decay");
    rb_jw_float(&w, 0.999f);
    rb_jw_kreal(&w, "lr", 1e-3);
    rb_jw_key(&w, "nan");
    rb_jw_float(&w, NAN);
    rb_jw_obj_end(&w);
    ok(!w.overflow && strcmp(buf, "{\"decay\":0.999,\"lr\":0.001,\"nan\":null}") == 0,
       "JSON: a float parameter as given, a non-finite one as null (%s)", buf);
}

int main(void) {
    test_path_join();
    test_fmt_real();
    return tap_done();
}
