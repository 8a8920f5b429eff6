/* expand.c: an experiment's sweep into trials (experiment.h). Every
 * combination of the axes (zip groups moving together, exclude/only
 * applied) is built into the parameters its trial runs with: attn_params
 * for bench attn, a train_config otherwise. Which parameters apply comes
 * from the backends' `uses` bits, never from their names; the combination is
 * checked by the backend's validate() or train_config_check, and a refusal
 * is reported at the place of the parameter it names (rb_err.key). The
 * trial's key hashes the canonical JSON of its parameters, so combinations
 * that become identical once unused parameters are dropped run once. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness/exp_internal.h"
#include "util/common.h"
#include "util/hash.h"
#include "util/json.h"

/* Value of key in the combination vi (axes with vi < 0 do not apply). */
static const exp_scalar *combo_get(const experiment *e, const int *vi, const char *key) {
    for (int i = 0; i < e->nfixed; i++)
        if (strcmp(e->fixed[i].key, key) == 0) return &e->fixed[i].val;
    for (int a = 0; a < e->naxes; a++)
        if (vi[a] >= 0 && strcmp(e->axes[a].key, key) == 0) return &e->axes[a].values[vi[a]];
    return NULL;
}

static int filter_match(const experiment *e, const exp_filter *f, const int *vi) {
    for (int i = 0; i < f->n; i++) {
        int a = exp_find_axis(e, f->a[i].key);
        if (a < 0 || vi[a] < 0) return 0;
        char x[EXP_VAL_LEN], y[EXP_VAL_LEN];
        exp_norm_value(e, f->a[i].key, f->a[i].val.s, x, sizeof x);
        exp_norm_value(e, f->a[i].key, e->axes[a].values[vi[a]].s, y, sizeof y);
        if (strcmp(x, y)) return 0;
    }
    return 1;
}

static const char *backend_of(const experiment *e, const int *vi) {
    const exp_scalar *b = combo_get(e, vi, "backend");
    return b ? b->s : rb_param_find("backend")->adef; /* params.def's default */
}

/* attn_params from the combination (values were checked at load). */
static void combo_attn(const experiment *e, const int *vi, attn_params *p) {
    attn_params_default(p);
    for (int i = 0; i < rb_param_count(); i++) {
        const rb_param *d = rb_param_at(i);
        const exp_scalar *v = attn_params_field(p, d) ? combo_get(e, vi, d->name) : NULL;
        if (v) attn_params_set(p, d->name, v->s, NULL, 0);
    }
}

/* train_config from the combination; parameters whose uses bits are not in
 * mask are left at their defaults. */
static int combo_config(const experiment *e, const int *vi, unsigned mask, train_config *c, rb_err *err) {
    char msg[512];
    train_config_default(c);
    for (int i = 0; i < e->nfixed + e->naxes; i++) {
        int fixed = i < e->nfixed, a = i - e->nfixed;
        if (!fixed && vi[a] < 0) continue;
        const char *key = fixed ? e->fixed[i].key : e->axes[a].key;
        const char *val = fixed ? e->fixed[i].val.s : e->axes[a].values[vi[a]].s;
        unsigned u = exp_key_uses(e, key);
        if (u && !(u & mask)) continue;
        if (train_config_set(c, key, val, msg, sizeof msg)) return rb_err_set(err, RB_EINVAL, key, "%s", msg);
    }
    return train_config_check_e(c, err);
}

/* Which parameters apply: the union of the uses bits of the combination's
 * backend(s). 0, or -1 with err (a train config that does not check even
 * without its backend-specific parameters). */
static int combo_uses(const experiment *e, const int *vi, unsigned *uses, rb_err *err) {
    *uses = 0;
    if (exp_attn_trials(e)) {
        const attn_backend *be = attn_find(backend_of(e, vi));
        if (be) *uses = be->uses;
        return 0;
    }
    train_config c;
    if (combo_config(e, vi, 0, &c, err) != 0) return -1;
    for (int l = 0; l < c.layers; l++) *uses |= train_layer_uses(&c, l);
    return 0;
}

/* Where to report a combination that was refused: the value of the
 * parameter the refusal names (err->key), in the sweep or under params, else
 * the backend's value, else the first axis. */
static void blame(const experiment *e, const int *vi, const char *key, int *line, int *col, const char **out) {
    int a = key && *key ? exp_find_axis(e, key) : -1;
    if (a < 0 || vi[a] < 0) a = exp_find_axis(e, "backend");
    if (a >= 0 && vi[a] >= 0) {
        const exp_scalar *v = &e->axes[a].values[vi[a]];
        *line = v->line, *col = v->col, *out = e->axes[a].key;
        return;
    }
    int f = key && *key ? exp_find_fixed(e, key) : -1;
    if (f < 0) f = exp_find_fixed(e, "backend");
    if (f >= 0) {
        *line = e->fixed[f].val.line, *col = e->fixed[f].val.col, *out = e->fixed[f].key;
        return;
    }
    *line = 1, *col = 1, *out = key && *key ? key : NULL;
    if (e->naxes > 0) *line = e->axes[0].key_line, *col = e->axes[0].key_col, *out = e->axes[0].key;
}

static void combo_desc(const experiment *e, const int *vi, char *out, size_t len) {
    size_t off = 0;
    out[0] = 0;
    for (int a = 0; a < e->naxes && off < len; a++)
        if (vi[a] >= 0)
            off += (size_t)snprintf(out + off, len - off, "%s%s %s", off ? ", " : "", e->axes[a].key,
                                    e->axes[a].values[vi[a]].s);
}

/* Is s a JSON number as exp_norm_value prints numbers? */
static int is_number(const char *s) {
    char *end;
    strtod(s, &end);
    return end != s && !*end && strcmp(s, "nan") && strcmp(s, "inf") && strcmp(s, "-inf") && s[0] != '+' &&
           s[0] != '.' && !strchr(s, 'x') && !strchr(s, 'X');
}

/* Canonical JSON of a combination (what its key hashes): kind, bench,
 * timing, backend, then the parameters in params.def order. Bench attn:
 * every resolved attention parameter the backend uses (so writing out a
 * default gives the key of leaving it out); train and model: every
 * parameter given that applies, normalised. */
static int combo_json(const experiment *e, const int *vi, const attn_params *p, unsigned uses, char *out, size_t len) {
    rb_jw w;
    rb_jw_init_buf(&w, out, len);
    rb_jw_obj(&w);
    rb_jw_kstr(&w, "kind", exp_kind_name(e->kind));
    if (e->kind == EXP_KIND_BENCH) {
        rb_jw_kstr(&w, "bench", exp_bench_name(e->bench));
        rb_jw_kint(&w, "runs", e->timing_runs), rb_jw_kint(&w, "warmup", e->timing_warmup);
    }
    rb_jw_kstr(&w, "backend", backend_of(e, vi));
    if (exp_attn_trials(e)) attn_params_json(&w, p, uses, RB_FMT_KEY);
    for (int i = 0; !exp_attn_trials(e) && i < rb_param_count(); i++) {
        const rb_param *d = rb_param_at(i);
        const exp_scalar *v = d->where == W_SEL ? NULL : combo_get(e, vi, d->name);
        if (!v || !attn_param_applies(d, uses)) continue;
        char nv[EXP_VAL_LEN];
        exp_norm_value(e, d->name, v->s, nv, sizeof nv);
        rb_jw_key(&w, d->name);
        if (is_number(nv)) rb_jw_raw(&w, nv);
        else rb_jw_str(&w, nv);
    }
    rb_jw_obj_end(&w);
    return w.overflow ? -1 : 0;
}

/* A readable trial name: backend-n4096-k64-w64, then every other swept
 * parameter that applies, by its short name (params.def's abbr). */
static void make_name(const experiment *e, const int *vi, const attn_params *p, const train_config *c,
                      unsigned uses, char *out, size_t len) {
    size_t off = (size_t)snprintf(out, len, "%s", backend_of(e, vi));
    int seq = p ? p->seq : c->seq;
    off += (size_t)snprintf(out + off, off < len ? len - off : 0, "-%s%d", rb_param_short("seq"), seq);
    if ((uses & ATTN_USES_CLUSTERS) && off < len) {
        int k = p ? p->clusters : c->attn.clusters;
        if (k <= 0) k = (int)lround(sqrt((double)seq));
        off += (size_t)snprintf(out + off, len - off, "-%s%d", rb_param_short("clusters"), k);
    }
    int w = p ? p->window : c->attn.window;
    if ((uses & ATTN_USES_WINDOW) && w > 0 && off < len)
        off += (size_t)snprintf(out + off, len - off, "-%s%d", rb_param_short("window"), w);
    for (int a = 0; a < e->naxes && off < len; a++) {
        const char *k = e->axes[a].key;
        if (vi[a] < 0 || !strcmp(k, "backend") || !strcmp(k, "seq") || !strcmp(k, "clusters") || !strcmp(k, "window"))
            continue;
        char nv[EXP_VAL_LEN];
        exp_norm_value(e, k, e->axes[a].values[vi[a]].s, nv, sizeof nv);
        const char *ab = rb_param_short(k);
        off += (size_t)snprintf(out + off, len - off, strcmp(ab, k) ? "-%s%s" : "-%s=%s", ab, nv);
    }
}

/* ---- walking the combinations ---- */

/* Mixed-radix walk over the independent units (single axes and zip groups). */
typedef struct {
    int nunits;
    int unit_len[EXP_MAX_AXES];
    int unit_of_axis[EXP_MAX_AXES];
    int pos[EXP_MAX_AXES];
    long long total;
} combo_iter;

static int iter_init(const experiment *e, combo_iter *it, exp_errors *errs) {
    memset(it, 0, sizeof *it);
    int group_unit[EXP_MAX_AXES];
    for (int g = 0; g < EXP_MAX_AXES; g++) group_unit[g] = -1;
    it->total = 1;
    for (int a = 0; a < e->naxes; a++) {
        int g = e->axes[a].group;
        if (g >= 0 && group_unit[g] >= 0) {
            it->unit_of_axis[a] = group_unit[g];
            continue;
        }
        int u = it->nunits++;
        it->unit_len[u] = e->axes[a].nvalues;
        it->unit_of_axis[a] = u;
        if (g >= 0) group_unit[g] = u;
        it->total *= e->axes[a].nvalues;
        if (it->total > EXP_MAX_COMBOS) {
            exp_add_err(errs, e->path, e->axes[a].key_line, e->axes[a].key_col, e->axes[a].key,
                        "the sweep has more than %ld combinations", EXP_MAX_COMBOS);
            return -1;
        }
    }
    return 0;
}

/* Combination c's value index per axis; 0 when the filters drop it. The
 * first axis varies slowest. */
static int iter_at(const experiment *e, combo_iter *it, long long c, int *vi) {
    for (int u = it->nunits - 1; u >= 0; u--) {
        it->pos[u] = (int)(c % it->unit_len[u]);
        c /= it->unit_len[u];
    }
    for (int a = 0; a < e->naxes; a++) vi[a] = it->pos[it->unit_of_axis[a]];
    int keep = e->nonly == 0;
    for (int f = 0; f < e->nonly && !keep; f++) keep = filter_match(e, &e->only[f], vi);
    for (int f = 0; f < e->nexclude && keep; f++) keep = !filter_match(e, &e->exclude[f], vi);
    return keep;
}

static void report_refusal(const experiment *e, const int *vi, const rb_err *err, exp_errors *errs) {
    char d[300];
    int line, col;
    const char *key;
    combo_desc(e, vi, d, sizeof d);
    blame(e, vi, err->key, &line, &col, &key);
    if (d[0]) exp_add_err(errs, e->path, line, col, key, "%s (%s): %s", backend_of(e, vi), d, err->msg);
    else exp_add_err(errs, e->path, line, col, key, "%s: %s", backend_of(e, vi), err->msg);
}

/* A trial that trains on text needs its corpus now, not when it runs (bench
 * model trials time random tokens). */
static int corpus_ok(const experiment *e, const train_config *c, rb_err *err) {
    if (e->kind == EXP_KIND_BENCH || strcmp(c->task, "text") != 0 || access(c->data, R_OK) == 0) return 0;
    return rb_err_set(err, RB_EINVAL, "data", "the corpus %s cannot be read (%s)%s", c->data, strerror(errno),
                      strcmp(c->data, rb_param_find("data")->tdef) == 0 ? "; run `make data` to make it" : "");
}

/* The combination as its backend(s) will see it: drops the axes that do not
 * apply (vi[a] = -1), builds p (bench attn) or c, validates. 0, or -1
 * (reported). */
static int build_combo(const experiment *e, int *vi, unsigned *uses, attn_params *p, train_config *c,
                       exp_errors *errs) {
    rb_err err;
    memset(p, 0, sizeof *p);
    if (combo_uses(e, vi, uses, &err) != 0) return report_refusal(e, vi, &err, errs), -1;
    if (exp_attn_trials(e) && !attn_find(backend_of(e, vi))) return -1; /* reported at load */
    for (int a = 0; a < e->naxes; a++) {
        unsigned u = exp_key_uses(e, e->axes[a].key);
        if (u && !(u & *uses)) vi[a] = -1;
    }
    if (!exp_attn_trials(e)) {
        if (combo_config(e, vi, *uses, c, &err) == 0 && corpus_ok(e, c, &err) == 0) return 0;
        return report_refusal(e, vi, &err, errs), -1;
    }
    combo_attn(e, vi, p);
    if (p->seq == 0) {
        exp_add_err(errs, e->path, 1, 1, "seq", "missing: bench attn trials need seq (under params or sweep)");
        return -1;
    }
    if (attn_validate(attn_find(backend_of(e, vi)), p, &err) == 0) return 0;
    return report_refusal(e, vi, &err, errs), -1;
}

typedef struct {
    uint64_t *keys;
    size_t cap;
} keyset;

static int keyset_add(keyset *s, uint64_t k) { /* 1 when new */
    if (k == 0) k = 1;
    size_t i = (size_t)(k % s->cap);
    while (s->keys[i]) {
        if (s->keys[i] == k) return 0;
        i = (i + 1) % s->cap;
    }
    s->keys[i] = k;
    return 1;
}

/* One trial per seed of a checked combination. -1 when the trial cap is hit. */
static int add_trials(experiment *e, const int *vi, const char *key, const attn_params *p, const train_config *c,
                      unsigned uses, size_t *vis_cap, exp_errors *errs) {
    int naxes = e->naxes ? e->naxes : 1;
    for (int r = 0; r < e->repeat; r++) {
        if (e->ntrials >= EXP_MAX_TRIALS) {
            exp_add_err(errs, e->path, 1, 1, NULL, "the sweep expands to more than %d trials", EXP_MAX_TRIALS);
            return -1;
        }
        if (e->ntrials == 0 || (e->ntrials >= 64 && (e->ntrials & (e->ntrials - 1)) == 0)) /* doubling */
            e->trials = reallocCheck(e->trials, (size_t)(e->ntrials ? 2 * e->ntrials : 64) * sizeof *e->trials);
        size_t need = (size_t)(e->ntrials + 1) * (size_t)naxes;
        if (need > *vis_cap) {
            *vis_cap = need * 2;
            e->vi_pool = reallocCheck(e->vi_pool, *vis_cap * sizeof(int));
        }
        exp_trial *t = &e->trials[e->ntrials];
        memset(t, 0, sizeof *t);
        t->index = e->ntrials;
        memcpy(e->vi_pool + (size_t)e->ntrials * (size_t)naxes, vi, sizeof(int) * (size_t)e->naxes);
        t->seed = e->seed + (uint64_t)r;
        snprintf(t->key, sizeof t->key, "%s", key);
        snprintf(t->backend, sizeof t->backend, "%.*s", (int)sizeof t->backend - 1, backend_of(e, vi));
        if (exp_attn_trials(e)) {
            t->attn = *p;
            t->attn.seed = t->seed;
        }
        make_name(e, vi, exp_attn_trials(e) ? p : NULL, c, uses, t->name, sizeof t->name);
        e->ntrials++;
    }
    return 0;
}

void exp_expand(experiment *e, exp_errors *errs) {
    combo_iter it;
    if (iter_init(e, &it, errs) != 0) return;
    keyset ks = {callocCheck(1 << 18, sizeof(uint64_t)), 1 << 18};
    size_t vis_cap = 0;
    int vi[EXP_MAX_AXES + 1];
    train_config *cfg = mallocCheck(sizeof *cfg);
    for (long long c = 0; c < it.total; c++) {
        if (!iter_at(e, &it, c, vi)) continue;
        unsigned uses;
        attn_params p;
        char json[4096], key[17];
        if (build_combo(e, vi, &uses, &p, cfg, errs) != 0 || errs->n) continue; /* keep checking, build nothing */
        if (combo_json(e, vi, &p, uses, json, sizeof json) != 0) {
            exp_add_err(errs, e->path, 1, 1, NULL, "parameters too long to record");
            continue;
        }
        rb_key_hex(key, json);
        if (!keyset_add(&ks, rb_fnv1a(RB_KEY_BASIS, json, strlen(json)))) continue; /* identical to an earlier one */
        if (add_trials(e, vi, key, &p, cfg, uses, &vis_cap, errs) != 0) break;
    }
    free(ks.keys);
    free(cfg);
    int naxes = e->naxes ? e->naxes : 1;
    for (int i = 0; i < e->ntrials; i++) e->trials[i].vi = e->vi_pool + (size_t)i * (size_t)naxes;
    if (e->ntrials == 0 && errs->n == 0)
        exp_add_err(errs, e->path, 1, 1, NULL, "no trials: every combination is excluded (check `only` and `exclude`)");
}

/* ---- a trial's parameters ---- */

int exp_trial_config(const experiment *e, const exp_trial *t, train_config *c, char *err, size_t errlen) {
    unsigned uses;
    rb_err re;
    if (combo_uses(e, t->vi, &uses, &re) != 0 || combo_config(e, t->vi, uses, c, &re) != 0)
        return rb_fail(err, errlen, "%s", re.msg);
    c->seed = t->seed;
    return 0;
}

int exp_trial_json(const experiment *e, const exp_trial *t, char *out, size_t len) {
    unsigned uses;
    rb_err re;
    if (combo_uses(e, t->vi, &uses, &re) != 0) uses = 0;
    return combo_json(e, t->vi, &t->attn, uses, out, len);
}
