/* trial_ckpt.c: checkpoints of a sweep's training trials (trial_ckpt.h). */
#include "harness/trial_ckpt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/common.h"
#include "util/fsutil.h"

/* The sidecar's records, or none when it is missing or not whole. */
static void read_side(trial_ckpt *k) {
    FILE *f = fopen(k->side, "rb");
    if (!f) return;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && st.st_size > 0 && st.st_size % (off_t)sizeof(store_metric) == 0) {
        k->nprev = (int)(st.st_size / (off_t)sizeof(store_metric));
        k->prev = mallocCheck((size_t)st.st_size);
        if (fread(k->prev, sizeof(store_metric), (size_t)k->nprev, f) != (size_t)k->nprev) k->nprev = 0;
    }
    fclose(f);
}

int trial_ckpt_open(trial_ckpt *k, const char *dir, const exp_trial *t, double every_s, train_config *c, char *err,
                    size_t errlen) {
    memset(k, 0, sizeof *k);
    if (!dir || every_s <= 0) return 0;
    if (rb_mkdir_p(dir, err, errlen) != 0) return -1;
    int n = snprintf(k->path, sizeof k->path, "%s/%s-s%llu.ckpt", dir, t->key, (unsigned long long)t->seed);
    if (n < 0 || (size_t)n >= sizeof c->save)
        return rb_fail(err, errlen, "%s: checkpoint path too long", dir);
    snprintf(k->side, sizeof k->side, "%s.metrics", k->path);
    k->every_s = every_s, k->last = rb_now();
    snprintf(c->save, sizeof c->save, "%s", k->path);
    c->save_every = 0;
    if (access(k->path, R_OK) == 0) {
        snprintf(c->load, sizeof c->load, "%s", k->path);
        k->resumed = 1;
        read_side(k);
    }
    return 0;
}

void trial_ckpt_first_step(trial_ckpt *k, int step, metric_list *out) {
    if (k->started) return;
    k->started = 1;
    for (int i = 0; i < k->nprev; i++)
        if (k->prev[i].step >= 0 && k->prev[i].step < step) metric_add(out, k->prev[i].step, k->prev[i].name, k->prev[i].value);
}

void trial_ckpt_side(trial_ckpt *k, const metric_list *out) {
    if (!k->path[0]) return;
    char tmp[sizeof k->side + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", k->side, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return;
    size_t want = 0, put = 0;
    for (int i = 0; i < out->n; i++)
        if (out->m[i].step >= 0) want++, put += fwrite(&out->m[i], sizeof out->m[i], 1, f);
    int bad = fclose(f) != 0 || put != want;
    if (bad || rename(tmp, k->side) != 0) remove(tmp);
}

int trial_ckpt_due(trial_ckpt *k, const metric_list *out) {
    if (!k->path[0] || rb_now() - k->last < k->every_s) return 0;
    trial_ckpt_side(k, out);
    k->last = rb_now();
    return 1;
}

void trial_ckpt_remove(trial_ckpt *k) {
    if (!k->path[0]) return;
    remove(k->path);
    remove(k->side);
}

void trial_ckpt_free(trial_ckpt *k) {
    free(k->prev);
    k->prev = NULL, k->nprev = 0;
}
