/* checkpoint.h: saving and restoring a training run: the model's parameters,
 * the AdamW moments, the step reached and the training data stream's random
 * state, behind a header with a magic number, a format version and the hash
 * of the configuration (train_config_hash), followed (since version 2) by the
 * configuration itself as text, so `analyze` and `export` need no flags.
 * Loading reads everything into temporary buffers and checks size, header and
 * checksum before touching the model, so a truncated or foreign file is
 * refused and never half-loaded. Saving writes a temporary file beside the
 * target and renames it over. Version-1 files (hash only) still load. */
#ifndef RB_CHECKPOINT_H
#define RB_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "util/common.h"
#include "model/model.h"
#include "model/train.h"

#define CHECKPOINT_MAGIC 0x54504b4348425200ull /* "\0RBCHKPT" little-endian */
#define CHECKPOINT_VERSION 2
#define CHECKPOINT_NO_CONFIG (-2) /* checkpoint_read_config: a version-1 file */

/* Write m, step, rng and the configuration c (its hash and its text,
 * train_config_to_text, with the run's own load, save, save_every and
 * stop_after cleared) to path. 0, or -1 with a message (cannot write, disk
 * full, a configuration that cannot be written as text). */
int checkpoint_save(const char *path, const model *m, int step, const rb_rng *rng, const train_config *c,
                    char *err, size_t errlen);

/* Restore into m (made from the same configuration). On success sets *step
 * and *rng and returns 0; otherwise -1 with a message and m is untouched.
 * Reads format versions 1 and 2. */
int checkpoint_load(const char *path, model *m, int *step, rb_rng *rng, uint64_t config_hash, char *err,
                    size_t errlen);

/* The configuration a checkpoint was written with: c is reset to the
 * defaults and the stored `key=value` lines applied (train_config_set), so
 * train_config_hash(c) is the hash in the header (checked). Reads only the
 * header and the configuration; the file's size must match what the header
 * announces (a truncated file is refused) but the arrays' checksum is left to
 * checkpoint_load. 0 on success; CHECKPOINT_NO_CONFIG with a message for a
 * version-1 file, which holds only the hash (the options must be given
 * again); -1 with a message otherwise (missing, foreign, truncated, corrupt). */
int checkpoint_read_config(const char *path, train_config *c, char *err, size_t errlen);

/* The configuration of a command that reads the checkpoint at path (analyze,
 * export) given n `--KEY VALUE` options kv[2i] = KEY (dashes stripped),
 * kv[2i+1] = VALUE: the stored configuration with the options applied on top
 * (checkpoint_load's hash check then refuses a mismatch); for a version-1
 * file the defaults with the options, which then must not be none. 0, or -1
 * with a message. */
int checkpoint_config_with(const char *path, train_config *c, const char *const *kv, int n, char *err,
                           size_t errlen);

/* The model of configuration *c (checked here, defaults resolved) with the
 * weights of checkpoint path; the checkpoint's step in *step (may be NULL).
 * NULL with a message (a bad configuration, a checkpoint of another
 * configuration: hint says what to check). */
model *checkpoint_model(train_config *c, const char *path, int *step, const char *hint, char *err, size_t errlen);

#endif
