/* checkpoint.h: saving and restoring a training run: the model's parameters,
 * the AdamW moments, the step reached and the training data stream's random
 * state, behind a header with a magic number, a format version and the hash
 * of the configuration (train_config_hash). Loading reads everything into
 * temporary buffers and checks size, header and checksum before touching the
 * model, so a truncated or foreign file is refused and never half-loaded.
 * Saving writes a temporary file beside the target and renames it over. */
#ifndef RB_CHECKPOINT_H
#define RB_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "model.h"

#define CHECKPOINT_MAGIC 0x54504b4348425200ull /* "\0RBCHKPT" little-endian */
#define CHECKPOINT_VERSION 1

/* 0, or -1 with a message (cannot write, disk full). */
int checkpoint_save(const char *path, const model *m, int step, const rb_rng *rng, uint64_t config_hash,
                    char *err, size_t errlen);

/* Restore into m (made from the same configuration). On success sets *step
 * and *rng and returns 0; otherwise -1 with a message and m is untouched. */
int checkpoint_load(const char *path, model *m, int *step, rb_rng *rng, uint64_t config_hash, char *err,
                    size_t errlen);

#endif
