/* kmeans.c: the online k-means pieces routing attention uses (kmeans.h):
 * distances through one sgemm, nearest-centroid assignment, balanced top-k
 * selection per centroid by quickselect, and the Lloyd / EMA centroid
 * updates with sums in double. */
#include "kmeans.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void kmeans_norm2(float *out, const float *x, int n, int d) {
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < d; j++) s += xi[j] * xi[j];
        out[i] = s;
    }
}

void kmeans_dots(float *dots, const float *mu, const float *x, int n, int K, int d) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, K, n, d, 1.0f, mu, d, x, d, 0.0f, dots, n);
}

void kmeans_nearest(int *assign, float *dist2, const float *dots, const float *xn2, const float *mun2, int n,
                    int K) {
    enum { CHUNK = 256 };
    int nchunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < nchunks; ch++) {
        int i0 = ch * CHUNK, i1 = RB_MIN(n, i0 + CHUNK);
        float best[CHUNK];
        int arg[CHUNK];
        for (int i = i0; i < i1; i++) best[i - i0] = INFINITY, arg[i - i0] = 0;
        /* centroid-major so the inner loop runs along a contiguous row of dots */
        for (int c = 0; c < K; c++) {
            const float *row = dots + (size_t)c * n;
            float mc = mun2[c];
            for (int i = i0; i < i1; i++) {
                float dd = mc - 2.0f * row[i];
                if (dd < best[i - i0]) best[i - i0] = dd, arg[i - i0] = c; /* strict: lower index wins ties */
            }
        }
        for (int i = i0; i < i1; i++) {
            assign[i] = arg[i - i0];
            if (dist2) {
                float v = best[i - i0] + xn2[i];
                dist2[i] = v > 0.0f ? v : 0.0f;
            }
        }
    }
}

static inline int pair_less(kmeans_pair a, kmeans_pair b) {
    return a.key < b.key || (a.key == b.key && a.pos < b.pos);
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* the r-th smallest (0-based) of x[0..n), reordering x */
static float select_float(float *x, int n, int r) {
    int lo = 0, hi = n - 1;
    while (hi > lo) {
        float pivot = x[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (x[i] < pivot) i++;
            while (pivot < x[j]) j--;
            if (i <= j) {
                float t = x[i];
                x[i] = x[j], x[j] = t;
                i++, j--;
            }
        }
        if (r <= j)
            hi = j;
        else if (r >= i)
            lo = i;
        else
            break;
    }
    return x[r];
}

void kmeans_topk(int *members, const float *dots_row, const float *xn2, int n, int w, kmeans_pair *a) {
    if (w >= n) {
        for (int i = 0; i < n; i++) members[i] = i;
        return;
    }
    for (int i = 0; i < n; i++) {
        float key = xn2[i] - 2.0f * dots_row[i];
        a[i].key = (key == key) ? key : INFINITY; /* NaN sorts last, keeping the order total */
        a[i].pos = i;
    }
    /* When w is small against n, first keep only the keys <= a threshold
     * taken from a strided sample (about 2w + a margin of them). If at least
     * w survive, the w smallest are among them, ties at the threshold
     * included, so the result is exact; otherwise select from everything. */
    int m = n;
    enum { SAMPLE = 512 };
    if (n >= 4 * SAMPLE && (int64_t)w * 8 <= n) {
        float smp[SAMPLE];
        for (int t = 0; t < SAMPLE; t++) smp[t] = a[(int64_t)t * n / SAMPLE].key;
        int r = RB_MIN(SAMPLE - 1, (int)(2.0 * w * SAMPLE / n) + 8);
        float th = select_float(smp, SAMPLE, r);
        int kept = 0;
        for (int i = 0; i < n; i++) { /* in place, order kept, no branch on the data */
            a[kept] = a[i];
            kept += a[i].key <= th;
        }
        if (kept >= w) {
            m = kept;
        } else {
            for (int i = 0; i < n; i++) {
                float key = xn2[i] - 2.0f * dots_row[i];
                a[i].key = (key == key) ? key : INFINITY;
                a[i].pos = i;
            }
        }
    }
    /* Quickselect (Hoare partition, median-of-three pivot): afterwards
     * a[0..w) are the w smallest pairs. Keys are made unique by the position,
     * so the selected set does not depend on the selection's path. */
    int lo = 0, hi = m - 1, k = w - 1;
    while (hi > lo) {
        int mid = lo + (hi - lo) / 2;
        kmeans_pair t;
        if (pair_less(a[mid], a[lo])) t = a[mid], a[mid] = a[lo], a[lo] = t;
        if (pair_less(a[hi], a[lo])) t = a[hi], a[hi] = a[lo], a[lo] = t;
        if (pair_less(a[hi], a[mid])) t = a[hi], a[hi] = a[mid], a[mid] = t;
        kmeans_pair pivot = a[mid];
        int i = lo, j = hi;
        while (i <= j) {
            while (pair_less(a[i], pivot)) i++;
            while (pair_less(pivot, a[j])) j--;
            if (i <= j) {
                t = a[i], a[i] = a[j], a[j] = t;
                i++, j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break; /* a[k] is the pivot itself */
    }
    for (int i = 0; i < w; i++) members[i] = a[i].pos;
    qsort(members, (size_t)w, sizeof *members, cmp_int);
}

void kmeans_accumulate(double *sums, int64_t *counts, const float *x, const int *assign, int n, int d) {
    for (int i = 0; i < n; i++) {
        int c = assign[i];
        double *s = sums + (size_t)c * d;
        const float *xi = x + (size_t)i * d;
        for (int j = 0; j < d; j++) s[j] += xi[j];
        counts[c]++;
    }
}

void kmeans_ema(float *mu, const double *sums, const int64_t *counts, int K, int d, float decay) {
    for (int c = 0; c < K; c++) {
        if (counts[c] <= 0) continue;
        double inv = 1.0 / (double)counts[c];
        float *m = mu + (size_t)c * d;
        for (int j = 0; j < d; j++)
            m[j] = (float)((double)decay * m[j] + (1.0 - (double)decay) * sums[(size_t)c * d + j] * inv);
    }
}

void kmeans_lloyd(float *mu, const double *sums, const int64_t *counts, int K, int d) {
    for (int c = 0; c < K; c++) {
        if (counts[c] <= 0) continue;
        double inv = 1.0 / (double)counts[c];
        for (int j = 0; j < d; j++) mu[(size_t)c * d + j] = (float)(sums[(size_t)c * d + j] * inv);
    }
}

static const float *pp_row(const float *const *blocks, int n, int d, int64_t e) {
    return blocks[e / n] + (size_t)(e % n) * d;
}

void kmeans_plusplus(float *mu, const float *const *blocks, int nb, int n, int64_t S, int K, int d, rb_rng *r,
                     float *mind) {
    int64_t N = (int64_t)nb * n;
    if (S > N) S = N;
    /* candidate t is row t*N/S: evenly spread over the batch and positions */
#define CAND(t) pp_row(blocks, n, d, (int64_t)((t) * (N / (double)S)))
    for (int64_t t = 0; t < S; t++) mind[t] = INFINITY;
    int64_t pick = (int64_t)(rb_rng_u64(r) % (uint64_t)S);
    for (int c = 0; c < K; c++) {
        float *m = mu + (size_t)c * d;
        memcpy(m, CAND(pick), (size_t)d * sizeof(float));
        if (c == K - 1) break;
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < S; t++) {
            const float *x = CAND(t);
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int j = 0; j < d; j++) s += (x[j] - m[j]) * (x[j] - m[j]);
            if (s < mind[t]) mind[t] = s;
        }
        /* serial sums in candidate order: the draw does not depend on threads */
        double total = 0.0;
        for (int64_t t = 0; t < S; t++) total += mind[t];
        if (!(total > 0.0)) {
            pick = (int64_t)(rb_rng_u64(r) % (uint64_t)S);
            continue;
        }
        double u = (double)rb_rng_uniform(r) * total, acc = 0.0;
        pick = -1;
        for (int64_t t = 0; t < S; t++) {
            acc += mind[t];
            if (mind[t] > 0.0f) pick = t; /* the last positive one if rounding runs past the end */
            if (acc > u && mind[t] > 0.0f) break;
        }
    }
#undef CAND
}
