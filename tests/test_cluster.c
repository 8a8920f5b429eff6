/* test_cluster.c: routing's small in-cluster kernels (attn/cluster.h) on
 * their own, against plain loops: cl_gemm against a double product over each
 * row's k-range and columns; cl_softmax_scores against cl_gemm followed by
 * rb_vmax and rb_vexp_shift_sum per row, bit for bit as its header says
 * (empty rows, one-key rows, the own column left out, widths 1..64);
 * cl_transpose and cl_gather against element-by-element copies, with and
 * without the per-row scale, at sizes that are and are not multiples of 16. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/cluster.h"
#include "tap.h"
#include "util/common.h"
#include "util/vexp.h"

static void fill(float *x, size_t n, rb_rng *r) {
    for (size_t i = 0; i < n; i++) x[i] = rb_rng_normal(r);
}

static void test_gemm(rb_rng *r) {
    int bad = 0, cases = 0;
    double worst = 0;
    for (int t = 0; t < 300; t++) {
        int m = 1 + (int)rb_rng_below(r, 70), n = 1 + (int)rb_rng_below(r, 150), kk = 1 + (int)rb_rng_below(r, 80);
        int trans = t % 2, acc = (t / 2) % 2, ranged = (t / 4) % 2;
        float *a = malloc(sizeof(float) * m * kk), *b = malloc(sizeof(float) * kk * n);
        float *c = malloc(sizeof(float) * m * n), *c0 = malloc(sizeof(float) * m * n);
        int *k0 = malloc(sizeof(int) * m), *k1 = malloc(sizeof(int) * m), *nc = malloc(sizeof(int) * m);
        fill(a, (size_t)m * kk, r), fill(b, (size_t)kk * n, r), fill(c, (size_t)m * n, r);
        memcpy(c0, c, sizeof(float) * m * n);
        for (int i = 0; i < m; i++) {
            k0[i] = ranged ? (int)rb_rng_below(r, kk) : 0;
            k1[i] = ranged ? k0[i] + (int)rb_rng_below(r, kk - k0[i] + 1) : kk;
            nc[i] = ranged ? 1 + (int)rb_rng_below(r, n) : n;
        }
        /* the caller's promise: A is zero outside each row's own k-range */
        for (int i = 0; i < m; i++)
            for (int k = 0; k < kk; k++)
                if (k < k0[i] || k >= k1[i]) a[trans ? (size_t)k * m + i : (size_t)i * kk + k] = 0.0f;
        cl_prod P = {.a = a, .ars = trans ? 1 : kk, .acs = trans ? m : 1, .b = b, .ldb = n, .c = c, .ldc = n,
                     .alpha = 0.75f, .acc = acc};
        cl_gemm(&P, m, n, kk, ranged ? k0 : NULL, ranged ? k1 : NULL, ranged ? nc : NULL);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < nc[i]; j++) {
                double s = 0;
                for (int k = 0; k < kk; k++)
                    s += (double)a[trans ? (size_t)k * m + i : (size_t)i * kk + k] * b[(size_t)k * n + j];
                double want = 0.75 * s + (acc ? c0[(size_t)i * n + j] : 0.0);
                double err = fabs(c[(size_t)i * n + j] - want) / (1.0 + fabs(want));
                worst = RB_MAX(worst, err);
                bad += !(err < 1e-5);
                cases++;
            }
        free(a), free(b), free(c), free(c0), free(k0), free(k1), free(nc);
    }
    diag("cl_gemm: %d entries, worst relative error %.2e", cases, worst);
    ok(bad == 0, "cl_gemm equals a double product over each row's k-range and columns (A plain and transposed, "
                 "C written and added to; %d bad)", bad);
}

/* the two-step path cl_softmax_scores replaces (routing's rt_softmax_rows) */
static void softmax_two_step(float *S, const cl_prod *P, int m, int nc, int kk, const int *L, int diag,
                             float *lse) {
    cl_prod Q = *P;
    Q.c = S;
    cl_gemm(&Q, m, nc, kk, NULL, NULL, L);
    for (int i = 0; i < m; i++) {
        float *s = S + (size_t)i * P->ldc;
        int Lr = L[i];
        if (Lr == 0) {
            memset(s, 0, sizeof(float) * nc);
            lse[i] = INFINITY;
            continue;
        }
        if (diag >= 0 && diag + i < Lr && Lr > 1) s[diag + i] = -INFINITY;
        float mx = rb_vmax(s, Lr);
        double l = rb_vexp_shift_sum(s, s, mx, Lr);
        float inv = (float)(1.0 / l);
        for (int j = 0; j < Lr; j++) s[j] *= inv;
        for (int j = Lr; j < nc; j++) s[j] = 0.0f;
        lse[i] = mx + (float)log(l);
    }
}

static void test_softmax(rb_rng *r) {
    int differ = 0, rows = 0, unsupported = 0, bad_sum = 0;
    for (int t = 0; t < 400; t++) {
        int m = 1 + (int)rb_rng_below(r, 70), nc = 1 + (int)rb_rng_below(r, 64), kk = 1 + (int)rb_rng_below(r, 70);
        int diag = t % 3 == 0 ? -1 : (int)rb_rng_below(r, 8);
        float *a = malloc(sizeof(float) * m * kk), *b = malloc(sizeof(float) * kk * 64);
        float *c1 = malloc(sizeof(float) * m * nc), *c2 = malloc(sizeof(float) * m * nc);
        float *l1 = malloc(sizeof(float) * m), *l2 = malloc(sizeof(float) * m);
        int *L = malloc(sizeof(int) * m);
        fill(a, (size_t)m * kk, r), fill(b, (size_t)kk * 64, r);
        for (int i = 0; i < m; i++) {
            /* causal-like rows, shuffled in with empty rows, one-key rows and full rows */
            int kind = (int)rb_rng_below(r, 6);
            L[i] = kind == 0 ? 0 : kind == 1 ? 1 : kind == 2 ? nc : RB_MIN(nc, i + 1);
        }
        for (int i = 0; i < m * nc; i++) c1[i] = c2[i] = NAN; /* every column must be written */
        cl_prod P = {.a = a, .ars = kk, .acs = 1, .b = b, .ldb = 64, .c = c1, .ldc = nc, .alpha = 0.3f, .acc = 0};
        if (cl_softmax_scores(&P, m, nc, kk, L, diag, l1) != 0) {
            unsupported++;
            free(a), free(b), free(c1), free(c2), free(l1), free(l2), free(L);
            continue;
        }
        softmax_two_step(c2, &P, m, nc, kk, L, diag, l2);
        for (int i = 0; i < m; i++, rows++) {
            int same = memcmp(c1 + (size_t)i * nc, c2 + (size_t)i * nc, sizeof(float) * nc) == 0 &&
                       memcmp(l1 + i, l2 + i, sizeof(float)) == 0;
            differ += !same;
            double s = 0;
            for (int j = 0; j < nc; j++) s += c1[(size_t)i * nc + j];
            bad_sum += L[i] > 0 ? !(fabs(s - 1.0) < 1e-5) : !(s == 0.0);
        }
        free(a), free(b), free(c1), free(c2), free(l1), free(l2), free(L);
    }
#ifdef __AVX512F__
    ok(unsupported == 0, "cl_softmax_scores takes every width up to 64 with AVX-512");
#else
    ok(unsupported == 400, "cl_softmax_scores declines without AVX-512 (the caller's two steps run)");
#endif
    ok(differ == 0, "cl_softmax_scores equals scores, rb_vmax and rb_vexp_shift_sum row by row, bit for bit "
                    "(%d of %d rows differ)", differ, rows);
    ok(bad_sum == 0, "its rows sum to 1, empty rows to 0 (%d bad)", bad_sum);
    cl_prod P = {.ldc = 65};
    int L[1] = {65};
    ok(cl_softmax_scores(&P, 1, 65, 1, L, -1, NULL) == -1, "wider than 64 columns: declined");
}

static void test_transpose(rb_rng *r) {
    int bad = 0;
    int ms[] = {1, 5, 15, 16, 17, 31, 46, 64, 100}, ds[] = {8, 16, 24, 64, 70};
    for (size_t a = 0; a < sizeof ms / sizeof *ms; a++)
        for (size_t b = 0; b < sizeof ds / sizeof *ds; b++)
            for (int scaled = 0; scaled < 2; scaled++) {
                int m = ms[a], d = ds[b], n = 300, ldt = (m + 15) / 16 * 16 + 3;
                float *src = malloc(sizeof(float) * n * d), *blk = malloc(sizeof(float) * m * d);
                float *t1 = malloc(sizeof(float) * d * ldt), *t2 = malloc(sizeof(float) * d * ldt);
                float *scale = malloc(sizeof(float) * n);
                int *rows = malloc(sizeof(int) * m);
                fill(src, (size_t)n * d, r), fill(scale, n, r);
                for (int i = 0; i < m; i++) rows[i] = (int)rb_rng_below(r, n);
                for (int i = 0; i < d * ldt; i++) t1[i] = t2[i] = -7.0f; /* columns past m stay as they were */
                cl_gather(blk, t1, ldt, src, rows, m, d);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < d; j++) {
                        float want = src[(size_t)rows[i] * d + j];
                        bad += blk[(size_t)i * d + j] != want;
                        t2[(size_t)j * ldt + i] = want * (scaled ? scale[rows[i]] : 1.0f);
                    }
                if (scaled) cl_transpose(t1, ldt, blk, m, d, scale, rows);
                bad += memcmp(t1, t2, sizeof(float) * d * ldt) != 0;
                free(src), free(blk), free(t1), free(t2), free(scale), free(rows);
            }
    ok(bad == 0, "cl_gather's rows and columns and cl_transpose with a per-row scale equal element-by-element "
                 "copies, m and d multiples of 16 or not (%d bad)", bad);
}

int main(void) {
    rb_rng r;
    rb_rng_seed(&r, 2026);
    test_gemm(&r);
    test_softmax(&r);
    test_transpose(&r);
    return tap_done();
}
