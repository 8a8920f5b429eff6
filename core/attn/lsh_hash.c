/* lsh_hash.c: angular LSH, bucket sort and chunk windows (lsh_hash.h). */
#include "attn/lsh_hash.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"

void lsh_rotations(float *R, uint64_t seed, int heads, int hashes, int d, int nb2) {
    rb_rng r;
    rb_rng_seed(&r, seed ^ 0x6c73685f726f74ull); /* "lsh_rot": not the stream the inputs come from */
    size_t total = (size_t)heads * hashes * d * nb2;
    for (size_t i = 0; i < total; i++) R[i] = rb_rng_normal(&r);
}

void lsh_hash(int *bucket, const float *x, int n, int d, const float *R, int nb2, float *proj) {
    if (nb2 == 0) {
        memset(bucket, 0, sizeof(int) * (size_t)n);
        return;
    }
    for (int i0 = 0; i0 < n; i0 += LSH_ROWS) {
        int rows = RB_MIN(LSH_ROWS, n - i0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, nb2, d, 1.0f, x + (size_t)i0 * d, d, R, nb2,
                    0.0f, proj, nb2);
        for (int r = 0; r < rows; r++) {
            const float *p = proj + (size_t)r * nb2;
            int best = 0;
            float bv = p[0];
            for (int j = 1; j < nb2; j++)
                if (p[j] > bv) bv = p[j], best = j;
            for (int j = 0; j < nb2; j++) /* the negated half: buckets nb2 .. 2 nb2 - 1 */
                if (-p[j] > bv) bv = -p[j], best = nb2 + j;
            bucket[i0 + r] = best;
        }
    }
}

void lsh_sort(int *ord, int *start, const int *bucket, int n, int nbuckets) {
    memset(start, 0, sizeof(int) * (size_t)(nbuckets + 1));
    for (int i = 0; i < n; i++) start[bucket[i] + 1]++;
    for (int b = 0; b < nbuckets; b++) start[b + 1] += start[b];
    for (int i = 0; i < n; i++) ord[start[bucket[i]]++] = i; /* ascending positions: stable */
    for (int b = nbuckets; b > 0; b--) start[b] = start[b - 1];
    start[0] = 0;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

void lsh_chunks_ascending(int *ord, int n, int w) {
    for (int c0 = 0; c0 < n; c0 += w) qsort(ord + c0, (size_t)RB_MIN(w, n - c0), sizeof(int), cmp_int);
}

void lsh_windows(int *win, int *wlen, const int *ord, int n, int w) {
    int nck = (n + w - 1) / w;
    for (int c = 0; c < nck; c++) {
        const int *a = c > 0 ? ord + (size_t)(c - 1) * w : ord, *b = ord + (size_t)c * w;
        int na = c > 0 ? w : 0, nb = RB_MIN(w, n - c * w), i = 0, j = 0, m = 0;
        int *out = win + (size_t)c * 2 * w;
        while (i < na || j < nb) out[m++] = (j >= nb || (i < na && a[i] < b[j])) ? a[i++] : b[j++];
        wlen[c] = m;
    }
}
