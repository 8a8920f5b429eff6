/* fuzz_config.h: an invariant of every configuration that passed
 * train_config_check, for the targets that make one (train_config, flags,
 * manifest, checkpoint): each numeric parameter holds a value its row of
 * core/util/params.def allows (its range, or its auto value), as stored (a
 * float field holds what the text became after rounding to float). */
#ifndef RB_FUZZ_CONFIG_H
#define RB_FUZZ_CONFIG_H

#include "fuzz.h"
#include "model/train.h"
#include "util/params.h"

static inline void fuzz_check_config_ranges(train_config *c) {
    for (int i = 0; i < rb_param_count(); i++) {
        const rb_param *d = rb_param_at(i);
        const void *f = train_config_field(c, d, NULL);
        if (!f || (d->type != PT_INT && d->type != PT_FLOAT && d->type != PT_DOUBLE)) continue;
        double x = d->type == PT_INT ? *(const int *)f : d->type == PT_FLOAT ? *(const float *)f : *(const double *)f;
        if ((d->flags & PF_AUTO) && x == (double)d->autoval) continue;
        int lo_ok = (d->flags & PF_OPEN_LO) ? x > d->lo : x >= d->lo;
        int hi_ok = (d->flags & PF_OPEN_HI) ? x < d->hi : x <= d->hi;
        if (!lo_ok || !hi_ok) {
            fprintf(stderr, "fuzz: %s = %.17g is outside its range [%g, %g] after train_config_check\n", d->name, x,
                    d->lo, d->hi);
            FUZZ_CHECK(lo_ok && hi_ok);
        }
    }
}

#endif
