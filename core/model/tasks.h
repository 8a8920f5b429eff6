/* tasks.h: where training sequences come from. A task hands out batches of
 * (tokens, targets, mask) for one of three disjoint splits: `text` (byte-level
 * LM on a file, split by byte offset), `copy` (the Reformer's 0 w 0 w
 * duplication, loss on the second copy), `recall` (associative recall, loss
 * on the looked-up values) and `random` (uniform tokens, for timing).
 * Generated tasks keep their splits disjoint by hashing each sequence's
 * content into a split and rejecting draws that land elsewhere. */
#ifndef RB_TASKS_H
#define RB_TASKS_H

#include <stddef.h>
#include <stdint.h>

#include "util/common.h"
#include "model/train.h"

enum { TASK_TRAIN = 0, TASK_VAL = 1, TASK_TEST = 2 };

typedef struct task task;

/* Vocabulary the task needs for c (no file read): 256 for text, copy_vocab,
 * 1 + recall_keys + recall_values, random_vocab. -1 + message for an unknown
 * task or bad sizes. */
int task_vocab(const train_config *c, char *err, size_t errlen);

/* Open the task of c (reads the corpus for text) for sequences of c->seq
 * tokens. NULL with a message: unknown task, missing or empty file (says to
 * run `make data`), a split too short for one sequence, bad sizes. */
task *task_open(const train_config *c, char *err, size_t errlen);
void task_free(task *t);

/* 1 when the task has positions that count for accuracy (copy, recall). */
int task_has_accuracy(const task *t);

/* Fill B sequences of split `split` drawn with rng: tokens (B,T), targets
 * (B,T) (the next token), mask (B,T): 1 where the loss counts, 0 elsewhere.
 * 0, or -1 with a message (a generated split that cannot be drawn from). */
int task_batch(task *t, int split, rb_rng *rng, int B, int T, int *tokens, int *targets, float *mask, char *err,
               size_t errlen);

/* Seed for split `split`'s random stream (stream 0: training draws; others:
 * evaluation, which restarts every time so each evaluation sees the same
 * sequences). */
uint64_t task_stream_seed(uint64_t seed, int split, int stream);

/* Which split a generated sequence of n tokens belongs to (by its hash and the
 * split fractions). Exposed for the tests. */
int task_split_of(const int *seq, int n, double train_frac, double val_frac);

#endif
