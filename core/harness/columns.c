/* columns.c: see columns.h. */
#include "harness/columns.h"

#include <string.h>

void columns_from_attn(const attn_params *p, unsigned uses, trial_colbuf *b, const char **colv) {
    for (int i = 0; i < store_ncols(); i++) {
        const rb_param *d = store_col(i);
        const void *f = attn_params_cfield(p, d);
        colv[i] = NULL;
        if (!f || !attn_param_applies(d, uses)) continue;
        rb_param_format(d, f, RB_FMT_KEY, b->text[i], sizeof b->text[i]);
        colv[i] = b->text[i];
    }
}

/* The first layer whose backend reads d (its validated parameters in *p), or -1. */
static int layer_reading(const train_config *c, const rb_param *d, attn_params *p) {
    for (int l = 0; l < c->layers; l++) {
        unsigned u = train_layer_uses(c, l);
        if (u && attn_param_applies(d, u) && train_layer_params(c, l, p) == 0) return l;
    }
    return -1;
}

void columns_from_model(const train_config *c, trial_colbuf *b, const char **colv) {
    for (int i = 0; i < store_ncols(); i++) {
        const rb_param *d = store_col(i);
        attn_params p;
        const void *f = NULL;
        colv[i] = NULL;
        if (d->where == W_T || d->where == W_SEL) f = train_config_field((train_config *)c, d, NULL);
        else if (layer_reading(c, d, &p) >= 0) /* model-level value where there is one (seq, commit_weight) */
            f = d->where == W_AT ? train_config_field((train_config *)c, d, NULL) : attn_params_cfield(&p, d);
        if (!f) continue;
        rb_param_format(d, f, RB_FMT_KEY, b->text[i], sizeof b->text[i]);
        colv[i] = b->text[i];
    }
}
