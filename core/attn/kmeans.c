/* kmeans.c: the online k-means pieces routing attention uses (kmeans.h):
 * nearest-centroid assignment from distances the caller computed, balanced
 * top-k selection per centroid (bisection over the keys' order), and the
 * Lloyd / EMA centroid updates with sums in double. */
#include "attn/kmeans.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

void kmeans_norm2(float *out, const float *x, int n, int d) {
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < d; j++) s += xi[j] * xi[j];
        out[i] = s;
    }
}

void kmeans_nearest_fold(int *assign, float *best, const float *dots, const float *mun2, int n, int c0, int kb) {
    enum { CHUNK = 1024 };
    int nchunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < nchunks; ch++) {
        int i0 = ch * CHUNK, i1 = RB_MIN(n, i0 + CHUNK);
        if (c0 == 0)
            for (int i = i0; i < i1; i++) best[i] = INFINITY, assign[i] = 0;
        for (int c = 0; c < kb; c++) {
            const float *row = dots + (size_t)c * n;
            float mc = mun2[c];
            for (int i = i0; i < i1; i++) {
                float dd = mc - 2.0f * row[i];
                if (dd < best[i]) best[i] = dd, assign[i] = c0 + c; /* strict: lower index wins ties */
            }
        }
    }
}

/* squared distance up to the centroid's own |mu|^2; NaN sorts last, keeping the order total */
static inline float topk_key(float xn2, float dot) {
    float key = xn2 - 2.0f * dot;
    return key == key ? key : INFINITY;
}

/* Floats mapped to int32 with the same order (NaN excluded): negative
 * floats have their magnitude bits flipped; -0 first becomes +0, as the two
 * compare equal. */
static inline int32_t ord_of(float f) {
    f += 0.0f;
    int32_t b;
    memcpy(&b, &f, sizeof b);
    return b ^ ((b >> 31) & 0x7fffffff);
}

/* the inverse of ord_of (the same bit flip undoes itself) */
static inline float float_of_ord(int32_t o) {
    int32_t b = o ^ ((o >> 31) & 0x7fffffff);
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* The r-th smallest (0-based) of u[0..m): the least v with at least r+1
 * values <= v, by bisection over the int32 range with a vectorised count per
 * step. 32 passes and no data-dependent branches: selection by comparison
 * (quickselect) mispredicts a branch for about every other element, which
 * cost more than everything else in routing. */
static int32_t select_ord(const int32_t *u, int m, int r) {
    int64_t lo = INT32_MIN, hi = INT32_MAX; /* count(u <= hi) >= r + 1 throughout */
    while (lo < hi) {
        int32_t mid = (int32_t)(lo + ((hi - lo) >> 1));
        int c = 0;
#pragma omp simd reduction(+ : c)
        for (int j = 0; j < m; j++) c += u[j] <= mid;
        if (c > r)
            hi = mid;
        else
            lo = (int64_t)mid + 1;
    }
    return (int32_t)lo;
}

/* keys[0..m), pos[0..m) = the keys <= th (NaN never) and their positions,
 * in position order; returns m. keys and pos need room for n. */
static int topk_filter(int32_t *keys, int *pos, const float *dots_row, const float *xn2, int n, float th,
                       int portable) {
    int m = 0, i = 0;
#ifdef __AVX512F__
    if (!portable) {
        /* compress in registers, then a full-width store: m <= i, so the 16
         * lanes written at m stay below i + 16 <= n */
        const __m512 two = _mm512_set1_ps(2.0f), thv = _mm512_set1_ps(th);
        const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        const __m512i flip = _mm512_set1_epi32(0x7fffffff);
        for (; i + 16 <= n; i += 16) {
            __m512 k = _mm512_sub_ps(_mm512_loadu_ps(xn2 + i), _mm512_mul_ps(two, _mm512_loadu_ps(dots_row + i)));
            __mmask16 mk = _mm512_cmp_ps_mask(k, thv, _CMP_LE_OQ);
            __m512i b = _mm512_castps_si512(_mm512_add_ps(k, _mm512_setzero_ps()));
            __m512i o = _mm512_xor_si512(b, _mm512_and_si512(_mm512_srai_epi32(b, 31), flip));
            _mm512_storeu_si512((void *)(keys + m), _mm512_maskz_compress_epi32(mk, o));
            __m512i p = _mm512_add_epi32(_mm512_set1_epi32(i), iota);
            _mm512_storeu_si512((void *)(pos + m), _mm512_maskz_compress_epi32(mk, p));
            m += __builtin_popcount((unsigned)mk);
        }
    }
#else
    (void)portable;
#endif
    /* branch-free: always store, advance only on a keeper (m <= i < n) */
    for (; i < n; i++) {
        float key = xn2[i] - 2.0f * dots_row[i];
        keys[m] = ord_of(key), pos[m] = i;
        m += key <= th;
    }
    return m;
}

static void topk(int *members, const float *dots_row, const float *xn2, int n, int w, kmeans_pair *work,
                 int portable) {
    if (w >= n) {
        for (int i = 0; i < n; i++) members[i] = i;
        return;
    }
    /* work as two arrays: candidate keys (in ord_of form) and positions */
    int32_t *keys = (int32_t *)(void *)work;
    int *pos = (int *)(void *)work + n;
    /* When w is small against n, first keep only the keys <= a threshold
     * taken from a strided sample (about 2w + a margin of them). If at least
     * w survive, the w smallest are among them, ties at the threshold
     * included, so the result is exact; otherwise select from everything. */
    int m = 0;
    /* 256 samples below 8192 tokens (the selection in them costs as much as
     * the filter after it), 512 above */
    int S = n >= 8192 ? 512 : 256;
    if (n >= 4 * S && (int64_t)w * 8 <= n) {
        int32_t smp[512];
        for (int t = 0; t < S; t++) {
            int64_t i = (int64_t)t * n / S;
            smp[t] = ord_of(topk_key(xn2[i], dots_row[i]));
        }
        int r = RB_MIN(S - 1, (int)(2.0 * w * S / n) + 8);
        float th = float_of_ord(select_ord(smp, S, r));
        m = topk_filter(keys, pos, dots_row, xn2, n, th, portable);
    }
    if (m < w) {
        for (int i = 0; i < n; i++) keys[i] = ord_of(topk_key(xn2[i], dots_row[i])), pos[i] = i;
        m = n;
    }
    /* kth = the w-th smallest key; the members are the keys below it and,
     * in position order, as many equal to it as still fit. Candidates are in
     * position order, so the members come out sorted and the set depends on
     * the data alone. */
    int32_t kth = select_ord(keys, m, w - 1);
    int below = 0;
#pragma omp simd reduction(+ : below)
    for (int j = 0; j < m; j++) below += keys[j] < kth;
    int ties = w - below, o = 0, j = 0;
#ifdef __AVX512F__
    if (!portable) {
        /* sixteen at a time: the keys below kth and the first `ties` equal
         * to it, compressed in registers and stored as a run of o's lanes
         * (exactly w are taken in all, so the stores stay inside members) */
        const __m512i vk = _mm512_set1_epi32(kth);
        for (; j < m && o < w; j += 16) {
            __mmask16 mk = (__mmask16)(m - j >= 16 ? 0xffffu : (1u << (m - j)) - 1u);
            __m512i kv = _mm512_maskz_loadu_epi32(mk, keys + j);
            unsigned eq = _mm512_mask_cmpeq_epi32_mask(mk, kv, vk);
            while (__builtin_popcount(eq) > ties) eq &= ~(1u << (31 - __builtin_clz(eq))); /* keep the lowest */
            ties -= __builtin_popcount(eq);
            __mmask16 take = (__mmask16)(_mm512_mask_cmplt_epi32_mask(mk, kv, vk) | eq);
            int c = __builtin_popcount(take);
            __m512i pv = _mm512_maskz_compress_epi32(take, _mm512_maskz_loadu_epi32(mk, pos + j));
            _mm512_mask_storeu_epi32(members + o, (__mmask16)((1u << c) - 1u), pv);
            o += c;
        }
        return;
    }
#endif
    for (; j < m; j++) { /* branch-free, as the filter */
        int take = (keys[j] < kth) | ((keys[j] == kth) & (ties > 0));
        ties -= take & (keys[j] == kth);
        members[o] = pos[j];
        o += take;
        if (o == w) break; /* members has room for w only */
    }
}

void kmeans_topk(int *members, const float *dots_row, const float *xn2, int n, int w, kmeans_pair *work) {
    topk(members, dots_row, xn2, n, w, work, 0);
}

void kmeans_topk_portable(int *members, const float *dots_row, const float *xn2, int n, int w, kmeans_pair *work) {
    topk(members, dots_row, xn2, n, w, work, 1);
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
