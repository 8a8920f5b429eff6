/* columns.h: a trial's parameter columns in the results database (the
 * PF_COLUMN rows of core/util/params.def, store_col order) from the
 * parameters it ran with: resolved values (clusters auto -> 8), NULL where no
 * backend of the trial reads the parameter. Used by the runner and by
 * `routebench analyze --db`. */
#ifndef RB_COLUMNS_H
#define RB_COLUMNS_H

#include "attn/attn.h"
#include "model/train.h"
#include "store/store.h"

typedef struct {
    char text[STORE_MAX_COLS][48];
} trial_colbuf;

/* One attention layer (bench attn) whose backend reads `uses`. */
void columns_from_attn(const attn_params *p, unsigned uses, trial_colbuf *b, const char **colv);
/* A model (train, analyze, bench model): checked c. */
void columns_from_model(const train_config *c, trial_colbuf *b, const char **colv);

#endif
