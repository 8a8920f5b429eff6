/* trial_ckpt.h: a training trial of a sweep that survives its process. The
 * trial saves a checkpoint (model/checkpoint.h: weights, AdamW moments, step
 * and data stream) every few minutes into DB.ckpt/KEY-sSEED.ckpt beside the
 * database, and beside it a sidecar KEY-sSEED.ckpt.metrics with the per-step
 * metrics recorded so far (rb_metric records). After a Ctrl-C, a kill or a
 * crash, the next run of the sweep loads the checkpoint and continues from
 * its step with the same data order, and the sidecar's metrics up to that
 * step join the ones of the new steps, so the stored loss curve is the one
 * an uninterrupted trial records. The sidecar is written before the
 * checkpoint it belongs to: records past the checkpoint's step (a kill
 * between the two writes) are dropped on resume. Both files are removed
 * when the trial is done. Nothing here runs outside core/harness. */
#ifndef RB_TRIAL_CKPT_H
#define RB_TRIAL_CKPT_H

#include "harness/runner.h"
#include "model/train.h"

typedef struct {
    char path[TRAIN_PATH_LEN];  /* the checkpoint; "" = checkpoints off */
    char side[TRAIN_PATH_LEN + 16];
    double every_s, last;       /* seconds between checkpoints; time of the last */
    store_metric *prev;         /* the sidecar of an earlier attempt */
    int nprev;
    int resumed;                /* a checkpoint was there to load */
    int started;                /* the first step of this attempt was seen */
} trial_ckpt;

/* Checkpoints of trial t under dir every every_s seconds (dir NULL or
 * every_s <= 0: off). Sets c->save, and c->load when an earlier attempt left
 * a checkpoint; reads its sidecar. 0, or -1 with a message. */
int trial_ckpt_open(trial_ckpt *k, const char *dir, const exp_trial *t, double every_s, train_config *c, char *err,
                    size_t errlen);

/* The first step this attempt trains is `step`: the earlier attempt's
 * metrics of steps before it go into out. */
void trial_ckpt_first_step(trial_ckpt *k, int step, metric_list *out);

/* 1 when a checkpoint is due (every_s since the last); then the sidecar with
 * out's per-step metrics has been written, and train_run saves the
 * checkpoint after this step. */
int trial_ckpt_due(trial_ckpt *k, const metric_list *out);

/* Write the sidecar now (before the checkpoint train_run saves when it
 * stops early). */
void trial_ckpt_side(trial_ckpt *k, const metric_list *out);

/* The trial is done: remove both files. */
void trial_ckpt_remove(trial_ckpt *k);

void trial_ckpt_free(trial_ckpt *k);

#endif
