/* attn_npy.h: one attention pass to and from .npy files (attn_npy.c). */
#ifndef RB_ATTN_NPY_H
#define RB_ATTN_NPY_H

#include <stddef.h>

#include "attn/attn.h"

/* One pass of `backend` with parameters p (resolved in place), flags
 * ATTN_TRAIN or ATTN_EVAL:
 *  - inputs q, k, v, dout [batch, heads, seq, head_dim]: from load_dir/q.npy
 *    etc. when load_dir is not NULL (p->seq == 0 then takes batch, heads,
 *    seq, head_dim from q.npy's shape; otherwise the files must have p's
 *    shape), else drawn from N(0,1) with p->seed exactly as `routebench attn`
 *    draws them;
 *  - centroids (backends with a centroids() method): from
 *    load_dir/centroids_before.npy [heads, clusters, head_dim] when that file
 *    exists, else initialised by the backend from the data;
 *  - writes into out_dir (created if missing; NULL = load_dir) the inputs
 *    (unless out_dir is load_dir), out, dq, dk, dv, and where the backend
 *    has them centroids_before, centroids_after and members (int32 [batch,
 *    heads, clusters, max cluster size], each cluster's query positions in
 *    ascending order, padded with -1; members_k likewise for key members when
 *    keys are not shared with queries), plus manifest.json.
 * *narrays (may be NULL) gets the number of .npy files written. 0, or -1
 * with a message naming the file or parameter at fault. */
int attn_npy_pass(const char *backend, attn_params *p, int flags, const char *load_dir, const char *out_dir,
                  int *narrays, char *err, size_t errlen);

#endif
