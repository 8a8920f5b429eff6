/* kmeans.h: the online k-means that routing attention clusters with, as plain
 * functions over caller-owned buffers (no allocation, no hidden state), so
 * the routing backend and its tests share one implementation.
 *
 * Distances are squared Euclidean, |x|^2 - 2 x.mu + |mu|^2, with the dot
 * products from one sgemm; ties between centroids go to the lower centroid
 * index, ties between tokens to the lower position, so every choice is a
 * function of the data alone (not of thread count or selection order). */
#ifndef RB_KMEANS_H
#define RB_KMEANS_H

#include <stddef.h>
#include <stdint.h>

#include "util/common.h"

/* a (distance key, position) pair for top-k selection */
typedef struct {
    float key;
    int pos;
} kmeans_pair;

/* out (n) = |x_i|^2; x is (n,d) */
void kmeans_norm2(float *out, const float *x, int n, int d);

/* The nearest centroid of each token, in blocks of centroids (the (K,n)
 * distance matrix need not exist at once): folds dots (kb,n) = mu x^T of
 * centroids c0..c0+kb-1 (mun2 (kb) their |mu|^2) into assign (n) and best
 * (n), the smallest |mu|^2 - 2 x.mu so far (c0 == 0 starts afresh). Ties go
 * to the lower centroid index. Parallel over tokens. */
void kmeans_nearest_fold(int *assign, float *best, const float *dots, const float *mun2, int n, int c0, int kb);

/* Balanced top-k for one centroid: members (w) = the w tokens nearest the
 * centroid (smallest |x_i|^2 - 2 dots_row[i], ties by position), written in
 * position order. O(n), work (n) scratch. 1 <= w <= n. */
void kmeans_topk(int *members, const float *dots_row, const float *xn2, int n, int w, kmeans_pair *work);

/* The same without the AVX-512 filter (the path other CPUs take), so tests
 * on an AVX-512 machine check both. */
void kmeans_topk_portable(int *members, const float *dots_row, const float *xn2, int n, int w, kmeans_pair *work);

/* sums (K,d) += x_i and counts (K) += 1 for each i with centroid assign[i];
 * x is (n,d). Serial, in position order (deterministic). */
void kmeans_accumulate(double *sums, int64_t *counts, const float *x, const int *assign, int n, int d);

/* Online k-means step: mu_c = decay * mu_c + (1 - decay) * sums_c / counts_c
 * for every centroid with counts_c > 0 (others stay). mu is (K,d). */
void kmeans_ema(float *mu, const double *sums, const int64_t *counts, int K, int d, float decay);

/* Lloyd step: mu_c = sums_c / counts_c where counts_c > 0 (others stay). */
void kmeans_lloyd(float *mu, const double *sums, const int64_t *counts, int K, int d);

/* k-means++ seeding: mu (K,d) = K rows of x, the first uniformly, each next
 * with probability proportional to its squared distance to the nearest row
 * already chosen (uniformly again if all distances are 0). The candidates
 * are S evenly strided rows (S <= nb*n, S >= K; all rows when S = nb*n) out
 * of nb blocks of n rows each: blocks[i] is (n,d). mind (S) is scratch.
 * Deterministic given r's state. Cost S*K*d. */
void kmeans_plusplus(float *mu, const float *const *blocks, int nb, int n, int64_t S, int K, int d, rb_rng *r,
                     float *mind);

#endif
