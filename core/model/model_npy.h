/* model_npy.h: a model's parameters to and from a directory of .npy files
 * with a manifest (`routebench export/import`; model_npy.c). */
#ifndef RB_MODEL_NPY_H
#define RB_MODEL_NPY_H

#include <stddef.h>

#include "model/train.h"

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

/* The manifest's part of import: len bytes of manifest.json text parsed,
 * and every member of its "config" object applied to c with
 * train_config_set (numbers by their text, booleans as true/false). 0 or -1
 * with a message naming path (only used in messages). */
int npy_model_config_json(train_config *c, const char *text, size_t len, const char *path, char *err,
                          size_t errlen);

#endif
