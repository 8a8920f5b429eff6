/* lsh_hash.h: the Reformer's angular locality-sensitive hashing (Kitaev,
 * Kaiser, Levskaya 2020, section 2.1) as plain functions over caller-owned
 * buffers, for the lsh backend and for the tests that check it.
 *
 * A round hashes a vector x into one of 2 * nb2 buckets with a random
 * rotation R (d x nb2, entries N(0,1)): h(x) = argmax([xR ; -xR]), ties to
 * the lower index. One bucket (nb2 = 0) puts everything in bucket 0. Rows are
 * then sorted by bucket and, inside a bucket, by position (a stable counting
 * sort), and the sorted order is cut into chunks. */
#ifndef RB_LSH_HASH_H
#define RB_LSH_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Rows hashed per sgemm (the size of the projection scratch). */
#define LSH_ROWS 256

/* R (heads, hashes, d, nb2): N(0,1) from seed, drawn in that order. */
void lsh_rotations(float *R, uint64_t seed, int heads, int hashes, int d, int nb2);

/* bucket (n) of every row of x (n, d) under R (d, nb2); proj is
 * (LSH_ROWS, nb2) scratch. One sgemm per LSH_ROWS rows. */
void lsh_hash(int *bucket, const float *x, int n, int d, const float *R, int nb2, float *proj);

/* ord (n): positions sorted by (bucket, position); start (nbuckets + 1):
 * bucket b is ord[start[b] .. start[b+1]). */
void lsh_sort(int *ord, int *start, const int *bucket, int n, int nbuckets);

/* Chunk c of ord is ord[c w .. min(n, (c+1) w)); each is re-sorted by
 * position (what a chunk attends does not depend on its internal order). */
void lsh_chunks_ascending(int *ord, int n, int w);

/* win (nchunks, 2w): chunk c's keys, chunk c-1 and chunk c of ord merged
 * in ascending position (chunks already ascending); wlen (nchunks) their
 * counts. Chunk 0 has no previous chunk (no wrap-around). */
void lsh_windows(int *win, int *wlen, const int *ord, int n, int w);

#endif
