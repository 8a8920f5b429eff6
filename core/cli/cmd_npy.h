/* cmd_npy.h: routebench's .npy exchange with other implementations: one
 * forward and backward pass of an attention layer written to (or its inputs
 * read from) a directory of .npy files with a JSON manifest, which is what
 * `routebench attn --save DIR / --load DIR` do; `routebench export/import`
 * (model parameters) are subcommands in commands.h. */
#ifndef RB_CMD_NPY_H
#define RB_CMD_NPY_H

#include <stddef.h>

#include "attn/attn.h"
#include "model/train.h"

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

/* Write every parameter of the model in checkpoint ckpt, made with
 * configuration c, as DIR/<name>.npy (wte.weight, wpe.weight,
 * h.<layer>.ln_1.weight, h.<layer>.attn.qkv.weight, ..., ln_f.bias, and
 * h.<layer>.attn.centroids for layers whose backend has centroids) plus
 * manifest.json with the configuration. A checkpoint of another configuration
 * is refused (its hash). *narrays may be NULL. 0 or -1 with a message. */
int npy_export_model(const char *ckpt, const char *dir, const train_config *c, int *narrays, char *err,
                     size_t errlen);

/* The reverse: the configuration from DIR/manifest.json's "config" object,
 * the arrays from DIR/<name>.npy, written as a checkpoint at step 0 with zero
 * optimiser moments (a fresh start from these weights). Missing, unexpected
 * and mis-shaped arrays are refused, all named in one message, and nothing
 * is written. 0 or -1. */
int npy_import_model(const char *dir, const char *ckpt, int *narrays, char *err, size_t errlen);

/* mkdir -p; 0 or -1 with a message. */
int npy_mkdirs(const char *dir, char *err, size_t errlen);

#endif
