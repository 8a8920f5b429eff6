/* experiment.c: an experiment file into a validated spec (experiment.h):
 * the top-level keys, the fixed parameters and sweep axes with every value
 * checked against the parameter table (core/util/params.def) in the
 * experiment's context (one attention layer for bench attn, a model
 * otherwise), all problems collected with their line and column. The YAML
 * tree is yamltree.c's; the expansion into trials is expand.c's. */
#include "harness/experiment.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/exp_internal.h"
#include "util/common.h"
#include "util/fsutil.h"
#include "util/hash.h"
#include "util/measure.h"

const char *exp_kind_name(int kind) { return kind == EXP_KIND_ANALYZE ? "analyze" : kind == EXP_KIND_TRAIN ? "train" : "bench"; }
const char *exp_bench_name(int bench) { return bench == EXP_BENCH_MODEL ? "model" : "attn"; }

/* ------------------------------------------------------------------ */
/* problems                                                            */

void exp_add_err(exp_errors *errs, const char *path, int line, int col, const char *key, const char *fmt, ...) {
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char full[384];
    if (line < 0 && key && *key) snprintf(full, sizeof full, "%s: --set %d: %s: %s", path, -line, key, msg);
    else if (line < 0) snprintf(full, sizeof full, "%s: --set %d: %s", path, -line, msg);
    else if (line == 0) snprintf(full, sizeof full, "%s: %s", path, msg); /* about the file, not a place in it */
    else if (key && *key) snprintf(full, sizeof full, "%s:%d:%d: %s: %s", path, line, col, key, msg);
    else snprintf(full, sizeof full, "%s:%d:%d: %s", path, line, col, msg);
    for (int i = 0; i < errs->n; i++)
        if (strcmp(errs->msg[i], full) == 0) return; /* the same problem seen from another combination */
    if (errs->n >= EXP_MAX_ERRORS) {
        errs->dropped++;
        return;
    }
    errs->line[errs->n] = line, errs->col[errs->n] = col;
    memcpy(errs->msg[errs->n++], full, sizeof full);
}

/* Report in file order, whatever order the checks ran in. */
/* The order problems are listed in: the file's line, --set overrides (line
 * -(i+1)) first in the order given. */
static long order_of(int line) { return line < 0 ? -1000000L - line : line; }

static void sort_errs(exp_errors *errs) {
    for (int i = 1; i < errs->n; i++)
        for (int j = i; j > 0; j--) {
            int a = j - 1, b = j;
            long oa = order_of(errs->line[a]), ob = order_of(errs->line[b]);
            if (oa < ob || (oa == ob && errs->col[a] <= errs->col[b])) break;
            char tmp[384];
            int tl = errs->line[a], tc = errs->col[a];
            memcpy(tmp, errs->msg[a], sizeof tmp);
            memcpy(errs->msg[a], errs->msg[b], sizeof tmp);
            memcpy(errs->msg[b], tmp, sizeof tmp);
            errs->line[a] = errs->line[b], errs->col[a] = errs->col[b];
            errs->line[b] = tl, errs->col[b] = tc;
        }
}

void exp_errors_print(const exp_errors *errs, FILE *f) {
    for (int i = 0; i < errs->n; i++) fprintf(f, "%s\n", errs->msg[i]);
    if (errs->dropped) fprintf(f, "... and %d more problems\n", errs->dropped);
}

/* ------------------------------------------------------------------ */
/* parameters: core/util/params.def, in this experiment's context       */

int exp_attn_trials(const experiment *e) { return e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN; }

const rb_param *exp_param(const experiment *e, const char *key) {
    const rb_param *d = rb_param_find(key);
    if (!d) return NULL;
    if (exp_attn_trials(e)) return rb_param_in_attn(d) || d->where == W_SEL ? d : NULL;
    return rb_param_in_model(d) ? d : NULL;
}

unsigned exp_key_uses(const experiment *e, const char *key) {
    const rb_param *d = exp_param(e, key);
    return d ? d->uses : 0;
}

/* The closest of the keys valid here, or NULL when nothing is close. */
static const char *closest_param(const experiment *e, const char *key) {
    const char *cands[256];
    int n = 0;
    for (int i = 0; i < rb_param_count() && n < 256; i++) {
        const rb_param *d = rb_param_at(i);
        if (exp_param(e, d->name) && !(d->flags & PF_NOSWEEP)) cands[n++] = d->name;
    }
    return rb_closest(key, cands, n);
}

static void unknown_param(const experiment *e, exp_errors *errs, const char *key, int line, int col) {
    const rb_param *d = exp_param(e, key);
    if ((d && (d->flags & PF_NOSWEEP)) || strcmp(key, "threads") == 0) {
        exp_add_err(errs, e->path, line, col, key,
                    "cannot be set in an experiment file (seeds come from `seed` and `repeat`; checkpoints and "
                    "threads are per run)");
        return;
    }
    const char *sug = closest_param(e, key);
    const char *what = !exp_attn_trials(e) && e->kind == EXP_KIND_BENCH ? "bench: model"
                       : exp_attn_trials(e)                             ? "bench: attn"
                                                                        : exp_kind_name(e->kind);
    if (sug) exp_add_err(errs, e->path, line, col, key, "unknown parameter for %s trials (did you mean '%s'?)", what, sug);
    else exp_add_err(errs, e->path, line, col, key, "unknown parameter for %s trials", what);
}

/* Check one scalar for key (a parameter of this experiment); 0 or -1 with a message. */
static int check_value(const experiment *e, const char *key, const char *s, char *err, size_t errlen) {
    if (!*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0) return rb_fail(err, errlen, "missing value");
    const rb_param *d = exp_param(e, key);
    rb_pval v;
    if (rb_param_parse(d, s, &v, err, errlen) != 0) return -1;
    if (d->type == PT_BACKEND && !attn_find(s)) return attn_fail_unknown(s, err, errlen);
    if (d->type == PT_BACKENDS) { /* train_config_set is the authority on the list */
        train_config c;
        char msg[512];
        train_config_default(&c);
        if (train_config_set(&c, key, s, msg, sizeof msg) != 0) {
            const char *colon = strstr(msg, ": ");
            return rb_fail(err, errlen, "%s", colon ? colon + 2 : msg);
        }
    }
    return 0;
}

void exp_norm_value(const experiment *e, const char *key, const char *s, char *out, size_t len) {
    const rb_param *d = exp_param(e, key);
    rb_pval v;
    if (d && d->type == PT_BOOL && rb_param_parse(d, s, &v, NULL, 0) == 0 && v.i >= 0) {
        snprintf(out, len, "%lld", v.i);
        return;
    }
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end != s && !*end && errno == 0) {
        snprintf(out, len, "%lld", x);
        return;
    }
    double f = strtod(s, &end);
    if (end != s && !*end && isfinite(f)) {
        snprintf(out, len, "%.9g", f);
        return;
    }
    snprintf(out, len, "%s", s);
}

/* ------------------------------------------------------------------ */
/* reading the spec                                                    */

static const char *const top_keys[] = {"name",   "description", "kind",   "bench", "repeat",
                                       "seed",   "timing",      "timeout", "params", "sweep"};
static const char *const timing_keys[] = {"runs", "warmup", "min_time", "max_time"};

/* Duplicate keys in one mapping; 1 when any. */
static int check_dups(const experiment *e, const ynode *map, exp_errors *errs) {
    int bad = 0;
    for (int i = 0; i < map->n; i += 2) {
        const ynode *k = map->kids[i];
        if (k->type != Y_SCALAR) {
            exp_add_err(errs, e->path, k->line, k->col, NULL, "a mapping key must be a plain name");
            bad = 1;
            continue;
        }
        for (int j = 0; j < i; j += 2) {
            const ynode *p = map->kids[j];
            if (p->type == Y_SCALAR && strcmp(p->s, k->s) == 0) {
                exp_add_err(errs, e->path, k->line, k->col, k->s, "duplicated key (first at line %d)", p->line);
                bad = 1;
            }
        }
    }
    return bad;
}

static int get_scalar(const experiment *e, const ynode *v, const char *key, exp_scalar *out, exp_errors *errs) {
    if (v->type != Y_SCALAR) {
        exp_add_err(errs, e->path, v->line, v->col, key, "expected a single value, got %s", yt_type_name(v));
        return -1;
    }
    if (v->slen >= EXP_VAL_LEN) {
        exp_add_err(errs, e->path, v->line, v->col, key, "value longer than %d characters", EXP_VAL_LEN - 1);
        return -1;
    }
    memcpy(out->s, v->s, v->slen + 1);
    out->quoted = v->quoted;
    out->line = v->line, out->col = v->col;
    return 0;
}

static int get_int(const experiment *e, const ynode *v, const char *key, long long lo, long long hi, long long *out,
                   exp_errors *errs) {
    if (v->type != Y_SCALAR) {
        exp_add_err(errs, e->path, v->line, v->col, key, "expected an integer, got %s", yt_type_name(v));
        return -1;
    }
    char *end;
    errno = 0;
    *out = strtoll(v->s, &end, 10);
    if (end == v->s || *end) {
        exp_add_err(errs, e->path, v->line, v->col, key, "expected an integer, got '%s'", v->s);
        return -1;
    }
    if (errno == ERANGE || *out < lo || *out > hi) {
        exp_add_err(errs, e->path, v->line, v->col, key, "%s is out of range [%lld, %lld]", v->s, lo, hi);
        return -1;
    }
    return 0;
}

static int param_ok(experiment *e, const ynode *k, exp_errors *errs, char *ck) {
    if (k->slen >= EXP_KEY_LEN) {
        exp_add_err(errs, e->path, k->line, k->col, NULL, "parameter name longer than %d characters", EXP_KEY_LEN - 1);
        return -1;
    }
    const rb_param *d = exp_param(e, k->s);
    if (!d || (d->flags & PF_NOSWEEP)) {
        size_t i = 0; /* in messages, the name with underscores */
        for (; k->s[i] && i < EXP_KEY_LEN - 1; i++) ck[i] = k->s[i] == '-' ? '_' : k->s[i];
        ck[i] = 0;
        unknown_param(e, errs, ck, k->line, k->col);
        return -1;
    }
    snprintf(ck, EXP_KEY_LEN, "%s", d->name);
    char note[160];
    if (rb_param_alias_note(k->s, note, sizeof note) && e->nnotes < EXP_MAX_NOTES) {
        char path[sizeof e->path];
        memcpy(path, e->path, sizeof path);
        snprintf(e->notes[e->nnotes++], sizeof e->notes[0], "%s:%d:%d: %s: %s (the old spelling still works)", path,
                 k->line, k->col, k->s, note);
    }
    return 0;
}

static int value_ok(experiment *e, const char *key, const exp_scalar *v, exp_errors *errs) {
    char msg[300];
    if (check_value(e, key, v->s, msg, sizeof msg) != 0) {
        exp_add_err(errs, e->path, v->line, v->col, key, "%s", msg);
        return -1;
    }
    return 0;
}

int exp_find_fixed(const experiment *e, const char *key) {
    for (int i = 0; i < e->nfixed; i++)
        if (strcmp(e->fixed[i].key, key) == 0) return i;
    return -1;
}

int exp_find_axis(const experiment *e, const char *key) {
    for (int i = 0; i < e->naxes; i++)
        if (strcmp(e->axes[i].key, key) == 0) return i;
    return -1;
}

static void add_fixed(experiment *e, const ynode *k, const ynode *v, exp_errors *errs) {
    char ck[EXP_KEY_LEN];
    if (param_ok(e, k, errs, ck)) return;
    int prev = exp_find_fixed(e, ck), pa = exp_find_axis(e, ck);
    if (prev >= 0 || pa >= 0) {
        exp_add_err(errs, e->path, k->line, k->col, ck, "set twice (also at line %d)",
                prev >= 0 ? e->fixed[prev].key_line : e->axes[pa].key_line);
        return;
    }
    if (v->type == Y_SEQ) {
        exp_add_err(errs, e->path, v->line, v->col, ck, "a list here; put the values under `sweep:` to make an axis");
        return;
    }
    if (e->nfixed >= EXP_MAX_FIXED) {
        exp_add_err(errs, e->path, k->line, k->col, ck, "more than %d parameters", EXP_MAX_FIXED);
        return;
    }
    /* kept even with a bad value (reported), so a second setting is still
     * caught; nothing is expanded while there are errors */
    exp_assign *a = &e->fixed[e->nfixed];
    snprintf(a->key, sizeof a->key, "%s", ck);
    a->key_line = k->line, a->key_col = k->col;
    e->nfixed++;
    if (get_scalar(e, v, ck, &a->val, errs)) return;
    value_ok(e, ck, &a->val, errs);
}

/* 0 when the axis was added; 1 when it was added with bad values (reported,
 * kept so a second setting is still caught); -1 when it was refused and
 * e->naxes did not grow. */
static int add_axis(experiment *e, const ynode *k, const ynode *v, int group, exp_errors *errs) {
    char ck[EXP_KEY_LEN];
    if (param_ok(e, k, errs, ck)) return -1;
    int prev = exp_find_fixed(e, ck), pa = exp_find_axis(e, ck);
    if (prev >= 0 || pa >= 0) {
        exp_add_err(errs, e->path, k->line, k->col, ck, "set twice (also at line %d)",
                prev >= 0 ? e->fixed[prev].key_line : e->axes[pa].key_line);
        return -1;
    }
    if (v->type == Y_MAP) {
        exp_add_err(errs, e->path, v->line, v->col, ck, "expected a list of values, got a mapping");
        return -1;
    }
    if (v->n == 0) {
        exp_add_err(errs, e->path, v->line, v->col, ck, "empty list: an axis needs at least one value");
        return -1;
    }
    if (v->n > EXP_MAX_VALUES) {
        exp_add_err(errs, e->path, v->line, v->col, ck, "more than %d values", EXP_MAX_VALUES);
        return -1;
    }
    if (e->naxes >= EXP_MAX_AXES) {
        exp_add_err(errs, e->path, k->line, k->col, ck, "more than %d sweep axes", EXP_MAX_AXES);
        return -1;
    }
    exp_axis *ax = &e->axes[e->naxes];
    memset(ax, 0, sizeof *ax);
    ax->values = callocCheck((size_t)v->n, sizeof *ax->values);
    int bad = 0;
    for (int i = 0; i < v->n; i++) {
        if (get_scalar(e, v->kids[i], ck, &ax->values[i], errs) || value_ok(e, ck, &ax->values[i], errs)) {
            bad = 1;
            continue;
        }
        if (group >= 0) continue; /* zipped: values may repeat; whole tuples may not (checked per group) */
        char a[EXP_VAL_LEN], b[EXP_VAL_LEN];
        exp_norm_value(e, ck, ax->values[i].s, a, sizeof a);
        for (int j = 0; j < i; j++) {
            exp_norm_value(e, ck, ax->values[j].s, b, sizeof b);
            if (strcmp(a, b) == 0) {
                exp_add_err(errs, e->path, ax->values[i].line, ax->values[i].col, ck,
                        "value %s listed twice (also at line %d)", ax->values[i].s, ax->values[j].line);
                bad = 1;
            }
        }
    }
    /* kept with its errors reported, as for fixed parameters */
    snprintf(ax->key, sizeof ax->key, "%s", ck);
    ax->key_line = k->line, ax->key_col = k->col;
    ax->nvalues = v->n;
    ax->group = group;
    e->naxes++;
    return bad;
}

/* exclude / only: a list of partial assignments over sweep axes. */
static void read_filters(experiment *e, const ynode *v, const char *what, exp_filter **out, int *nout,
                         exp_errors *errs) {
    if (v->type != Y_SEQ) {
        exp_add_err(errs, e->path, v->line, v->col, what, "expected a list of mappings like {backend: dense, seq: 4096}, got %s",
                yt_type_name(v));
        return;
    }
    if (v->n == 0) {
        exp_add_err(errs, e->path, v->line, v->col, what, "empty list");
        return;
    }
    *out = callocCheck((size_t)v->n, sizeof **out);
    for (int i = 0; i < v->n; i++) {
        const ynode *m = v->kids[i];
        if (m->type != Y_MAP || m->n == 0) {
            exp_add_err(errs, e->path, m->line, m->col, what, "expected a mapping like {backend: dense, seq: 4096}, got %s",
                    m->type == Y_MAP ? "an empty mapping" : yt_type_name(m));
            continue;
        }
        if (check_dups(e, m, errs)) continue;
        exp_filter *f = &(*out)[*nout];
        f->a = callocCheck((size_t)m->n / 2, sizeof *f->a);
        f->line = m->line, f->col = m->col;
        int bad = 0;
        for (int j = 0; j < m->n; j += 2) {
            const ynode *k = m->kids[j], *val = m->kids[j + 1];
            char ck[EXP_KEY_LEN];
            if (param_ok(e, k, errs, ck)) {
                bad = 1;
                continue;
            }
            int ax = exp_find_axis(e, ck);
            if (ax < 0) {
                exp_add_err(errs, e->path, k->line, k->col, ck, "%s: not a sweep axis (filters match axis values)", what);
                bad = 1;
                continue;
            }
            exp_assign *a = &f->a[f->n];
            if (get_scalar(e, val, ck, &a->val, errs)) {
                bad = 1;
                continue;
            }
            char nv[EXP_VAL_LEN], na[EXP_VAL_LEN];
            exp_norm_value(e, ck, a->val.s, nv, sizeof nv);
            int found = 0;
            for (int t = 0; t < e->axes[ax].nvalues && !found; t++) {
                exp_norm_value(e, ck, e->axes[ax].values[t].s, na, sizeof na);
                found = strcmp(na, nv) == 0;
            }
            if (!found) {
                char where[32];
                int kl = e->axes[ax].key_line;
                snprintf(where, sizeof where, kl < 0 ? "--set %d" : "line %d", kl < 0 ? -kl : kl);
                exp_add_err(errs, e->path, val->line, val->col, ck, "%s: %s is not one of the axis's values (%s)", what,
                            a->val.s, where);
                bad = 1;
                continue;
            }
            snprintf(a->key, sizeof a->key, "%s", ck);
            a->key_line = k->line, a->key_col = k->col;
            f->n++;
        }
        if (bad) free(f->a), f->a = NULL, f->n = 0;
        else (*nout)++;
    }
}

static void read_sweep(experiment *e, const ynode *sw, exp_errors *errs) {
    if (sw->type != Y_MAP) {
        exp_add_err(errs, e->path, sw->line, sw->col, "sweep", "expected a mapping of parameter: [values], got %s", yt_type_name(sw));
        return;
    }
    check_dups(e, sw, errs);
    const ynode *zip = NULL, *exc = NULL, *only = NULL;
    int ngroups = 0;
    for (int i = 0; i < sw->n; i += 2) {
        const ynode *k = sw->kids[i], *v = sw->kids[i + 1];
        if (k->type != Y_SCALAR) continue;
        if (strcmp(k->s, "zip") == 0) zip = v;
        else if (strcmp(k->s, "exclude") == 0) exc = v;
        else if (strcmp(k->s, "only") == 0) only = v;
        else if (v->type == Y_SCALAR) add_fixed(e, k, v, errs); /* a single value under sweep: fixed */
        else add_axis(e, k, v, -1, errs);
    }
    if (zip) {
        /* one group as a mapping, or a list of groups */
        int ng = zip->type == Y_SEQ ? zip->n : 1;
        if (zip->type == Y_SCALAR || (zip->type == Y_SEQ && zip->n == 0))
            exp_add_err(errs, e->path, zip->line, zip->col, "zip",
                    "expected a mapping of equal-length lists (or a list of such mappings)");
        else
            for (int g = 0; g < ng; g++) {
                const ynode *m = zip->type == Y_SEQ ? zip->kids[g] : zip;
                if (m->type != Y_MAP || m->n == 0) {
                    exp_add_err(errs, e->path, m->line, m->col, "zip", "expected a mapping of equal-length lists, got %s",
                            m->type == Y_MAP ? "an empty mapping" : yt_type_name(m));
                    continue;
                }
                if (check_dups(e, m, errs)) continue;
                int first = e->naxes, len = -1, bad = 0;
                for (int j = 0; j < m->n; j += 2) {
                    const ynode *k = m->kids[j], *v = m->kids[j + 1];
                    if (v->type != Y_SEQ) {
                        exp_add_err(errs, e->path, v->line, v->col, k->s, "zip: expected a list of values, got %s",
                                yt_type_name(v));
                        bad = 1;
                        continue;
                    }
                    if (len >= 0 && v->n != len) {
                        exp_add_err(errs, e->path, v->line, v->col, k->s,
                                "zip: %d values, but the group's first list has %d (zipped lists move together and "
                                "must have the same length)",
                                v->n, len);
                        bad = 1;
                        continue;
                    }
                    if (len < 0) len = v->n;
                    if (add_axis(e, k, v, ngroups, errs) != 0) bad = 1; /* reported */
                }
                if (e->naxes == first) bad = 1; /* no axis of this group was added */
                /* a zipped combination listed twice would run the same trials twice */
                for (int x = 1; !bad && len > 0 && x < len; x++)
                    for (int y = 0; y < x; y++) {
                        int same = 1;
                        for (int a = first; a < e->naxes && same; a++) {
                            char va[EXP_VAL_LEN], vb[EXP_VAL_LEN];
                            exp_norm_value(e, e->axes[a].key, e->axes[a].values[x].s, va, sizeof va);
                            exp_norm_value(e, e->axes[a].key, e->axes[a].values[y].s, vb, sizeof vb);
                            same = strcmp(va, vb) == 0;
                        }
                        if (same) {
                            const exp_axis *ax = &e->axes[first];
                            exp_add_err(errs, e->path, ax->values[x].line, ax->values[x].col, ax->key,
                                    "zip: combination %d repeats combination %d (line %d)", x + 1, y + 1,
                                    ax->values[y].line);
                            bad = 1;
                            break;
                        }
                    }
                if (bad) /* keep the group out of the expansion; errors are already reported */
                    for (int a = first; a < e->naxes; a++) e->axes[a].group = ngroups;
                ngroups++;
            }
    }
    if (exc) read_filters(e, exc, "exclude", &e->exclude, &e->nexclude, errs);
    if (only) read_filters(e, only, "only", &e->only, &e->nonly, errs);
}

/* kind and bench first: they decide which parameters exist. */
static void read_kind(experiment *e, const ynode *root, exp_errors *errs) {
    for (int i = 0; i < root->n; i += 2) {
        const ynode *k = root->kids[i], *v = root->kids[i + 1];
        if (k->type != Y_SCALAR || strcmp(k->s, "kind") != 0) continue;
        if (v->type == Y_SCALAR && strcmp(v->s, "bench") == 0) e->kind = EXP_KIND_BENCH;
        else if (v->type == Y_SCALAR && strcmp(v->s, "train") == 0) e->kind = EXP_KIND_TRAIN;
        else if (v->type == Y_SCALAR && strcmp(v->s, "analyze") == 0) e->kind = EXP_KIND_ANALYZE;
        else
            exp_add_err(errs, e->path, v->line, v->col, "kind", "expected bench, train or analyze, got %s",
                        v->type == Y_SCALAR ? v->s : yt_type_name(v));
    }
    for (int i = 0; i < root->n; i += 2) {
        const ynode *k = root->kids[i], *v = root->kids[i + 1];
        if (k->type != Y_SCALAR || strcmp(k->s, "bench") != 0) continue;
        if (e->kind != EXP_KIND_BENCH)
            exp_add_err(errs, e->path, k->line, k->col, "bench", "only for kind: bench (this experiment is kind: %s)",
                        exp_kind_name(e->kind));
        else if (v->type == Y_SCALAR && strcmp(v->s, "attn") == 0) e->bench = EXP_BENCH_ATTN;
        else if (v->type == Y_SCALAR && strcmp(v->s, "model") == 0) e->bench = EXP_BENCH_MODEL;
        else
            exp_add_err(errs, e->path, v->line, v->col, "bench", "expected attn or model, got %s",
                        v->type == Y_SCALAR ? v->s : yt_type_name(v));
    }
}

static void read_name(experiment *e, const ynode *v, exp_errors *errs) {
    exp_scalar s;
    if (get_scalar(e, v, "name", &s, errs)) return;
    int okname = s.s[0] != 0 && s.s[0] != '.' && strlen(s.s) < sizeof e->name;
    for (const char *c = s.s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
              *c == '-' || *c == '.'))
            okname = 0;
    if (!okname)
        exp_add_err(errs, e->path, v->line, v->col, "name",
                    "'%s': use 1-63 letters, digits, '_', '-' or '.' (it names results/NAME.db)", s.s);
    else snprintf(e->name, sizeof e->name, "%.*s", (int)sizeof e->name - 1, s.s);
}

static void read_timing(experiment *e, const ynode *k, const ynode *v, exp_errors *errs) {
    long long x;
    if (v->type != Y_MAP) {
        exp_add_err(errs, e->path, v->line, v->col, "timing", "expected a mapping {runs: N, warmup: N}, got %s",
                    yt_type_name(v));
        return;
    }
    if (e->kind != EXP_KIND_BENCH)
        exp_add_err(errs, e->path, k->line, k->col, "timing", "only for kind: bench (train trials time every step)");
    check_dups(e, v, errs);
    for (int j = 0; j < v->n; j += 2) {
        const ynode *tk = v->kids[j], *tv = v->kids[j + 1];
        if (tk->type != Y_SCALAR) continue;
        if (strcmp(tk->s, "runs") == 0) {
            if (get_int(e, tv, "timing.runs", 1, 100000, &x, errs) == 0) e->timing_runs = (int)x;
        } else if (strcmp(tk->s, "warmup") == 0) {
            if (get_int(e, tv, "timing.warmup", 0, 100000, &x, errs) == 0) e->timing_warmup = (int)x;
        } else if (strcmp(tk->s, "min_time") == 0 || strcmp(tk->s, "max_time") == 0) {
            char *end;
            double sec = tv->type == Y_SCALAR ? strtod(tv->s, &end) : -1;
            if (tv->type != Y_SCALAR || end == tv->s || *end || !(sec >= 0 && sec <= 1e6))
                exp_add_err(errs, e->path, tv->line, tv->col, tk->s, "expected seconds in [0, 1e6]");
            else if (tk->s[1] == 'i') e->timing_min_time = sec;
            else e->timing_max_time = sec;
        } else {
            const char *sug = rb_closest(tk->s, timing_keys, 4);
            exp_add_err(errs, e->path, tk->line, tk->col, tk->s, "unknown key under timing%s%s%s",
                        sug ? " (did you mean '" : " (known: runs, warmup, min_time, max_time)", sug ? sug : "",
                        sug ? "'?)" : "");
        }
    }
}

static void unknown_top(experiment *e, const ynode *k, exp_errors *errs) {
    const char *key = k->s, *sug = rb_closest(key, top_keys, (int)(sizeof top_keys / sizeof top_keys[0]));
    if (exp_param(e, key))
        exp_add_err(errs, e->path, k->line, k->col, key,
                    "a parameter at the top level; put it under `params:` (or a list under `sweep:`)");
    else if (sug) exp_add_err(errs, e->path, k->line, k->col, key, "unknown key (did you mean '%s'?)", sug);
    else
        exp_add_err(errs, e->path, k->line, k->col, key,
                    "unknown key (known: name, description, kind, bench, repeat, seed, timing, params, sweep)");
}

static void read_params(experiment *e, const ynode *params, exp_errors *errs) {
    if (params->type != Y_MAP) {
        exp_add_err(errs, e->path, params->line, params->col, "params",
                    "expected a mapping of parameter: value, got %s", yt_type_name(params));
        return;
    }
    check_dups(e, params, errs);
    for (int j = 0; j < params->n; j += 2)
        if (params->kids[j]->type == Y_SCALAR) add_fixed(e, params->kids[j], params->kids[j + 1], errs);
}

static void read_top(experiment *e, const ynode *root, exp_errors *errs) {
    if (root->type != Y_MAP) {
        exp_add_err(errs, e->path, root->line, root->col, NULL,
                    "expected a mapping of keys (name:, sweep:, ...), got %s", yt_type_name(root));
        return;
    }
    check_dups(e, root, errs);
    read_kind(e, root, errs);
    const ynode *params = NULL, *sweep = NULL, *name = NULL;
    for (int i = 0; i < root->n; i += 2) {
        const ynode *k = root->kids[i], *v = root->kids[i + 1];
        long long x;
        if (k->type != Y_SCALAR || strcmp(k->s, "kind") == 0 || strcmp(k->s, "bench") == 0) continue;
        if (strcmp(k->s, "name") == 0) read_name(e, name = v, errs);
        else if (strcmp(k->s, "description") == 0) {
            if (v->type != Y_SCALAR)
                exp_add_err(errs, e->path, v->line, v->col, k->s, "expected text, got %s", yt_type_name(v));
            else snprintf(e->description, sizeof e->description, "%s", v->s);
        } else if (strcmp(k->s, "repeat") == 0) {
            if (get_int(e, v, k->s, 1, EXP_MAX_REPEAT, &x, errs) == 0) e->repeat = (int)x;
        } else if (strcmp(k->s, "seed") == 0) {
            if (get_int(e, v, k->s, 0, LLONG_MAX / 2, &x, errs) == 0) e->seed = (uint64_t)x;
        } else if (strcmp(k->s, "timing") == 0) read_timing(e, k, v, errs);
        else if (strcmp(k->s, "timeout") == 0) {
            if (v->type != Y_SCALAR || rb_parse_seconds(v->s, &e->timeout_s) != 0)
                exp_add_err(errs, e->path, v->line, v->col, k->s,
                            "expected a time limit per trial: seconds, or a number with s, m or h (90, 5m, 2h)");
        }
        else if (strcmp(k->s, "params") == 0) params = v;
        else if (strcmp(k->s, "sweep") == 0) sweep = v;
        else unknown_top(e, k, errs);
    }
    if (!name) exp_add_err(errs, e->path, root->line, root->col, "name", "missing (every experiment needs a name)");
    if (params) read_params(e, params, errs);
    if (sweep) read_sweep(e, sweep, errs);
}

/* ------------------------------------------------------------------ */

void exp_free(experiment *e) {
    free(e->yaml);
    for (int a = 0; a < e->naxes; a++) free(e->axes[a].values);
    for (int i = 0; i < e->nexclude; i++) free(e->exclude[i].a);
    for (int i = 0; i < e->nonly; i++) free(e->only[i].a);
    free(e->exclude);
    free(e->only);
    free(e->trials);
    free(e->vi_pool);
    memset(e, 0, sizeof *e);
}

/* The --set overrides as one line, in the order given: "seq=64; sweep.window=[8, 16]". */
static void overrides_text(experiment *e, const char *const *sets, int n) {
    size_t off = 0;
    e->overrides[0] = 0;
    for (int i = 0; i < n && off < sizeof e->overrides; i++)
        off += (size_t)snprintf(e->overrides + off, sizeof e->overrides - off, "%s%s", i ? "; " : "", sets[i]);
}

int exp_load_string_sets(experiment *e, const char *text, size_t len, const char *path, const char *const *sets,
                         int nsets, exp_errors *errs) {
    memset(e, 0, sizeof *e);
    memset(errs, 0, sizeof *errs);
    snprintf(e->path, sizeof e->path, "%s", path);
    e->repeat = 1;
    e->seed = 1;
    e->timing_runs = 5;
    e->timing_warmup = 1;
    e->timing_min_time = RB_LOAD_MIN_S;
    e->timing_max_time = 3.0;
    if (len > EXP_MAX_FILE) {
        exp_add_err(errs, path, 1, 1, NULL, "file larger than %d bytes; an experiment file is a page or two", EXP_MAX_FILE);
        return -1;
    }
    if (memchr(text, 0, len)) {
        size_t off = (size_t)((const char *)memchr(text, 0, len) - text);
        int line, col;
        yt_offset_mark(text, len, off, &line, &col);
        exp_add_err(errs, path, line, col, NULL, "invalid input: a NUL byte (is this a text file?)");
        return -1;
    }
    e->yaml = mallocCheck(len + 1);
    memcpy(e->yaml, text, len);
    e->yaml[len] = 0;
    e->yaml_len = len;
    snprintf(e->hash, sizeof e->hash, "%016llx", (unsigned long long)rb_fnv1a(RB_KEY_BASIS, text, len));
    int empty = 0;
    ynode *root = yt_read(text, len, path, errs, &empty);
    if (!root) {
        if (empty && errs->n == 0)
            exp_add_err(errs, path, 1, 1, NULL, "empty experiment file (expected at least name: and params:/sweep:)");
        exp_free(e);
        return -1;
    }
    if (root->type == Y_SCALAR && root->slen == 0) {
        exp_add_err(errs, path, root->line, root->col, NULL, "empty experiment file (expected at least name: and params:/sweep:)");
        yt_free(root);
        exp_free(e);
        return -1;
    }
    overrides_text(e, sets, nsets);
    exp_apply_sets(root, sets, nsets, path, errs); /* one that cannot apply is reported; the rest still read */
    read_top(e, root, errs);
    yt_free(root);
    if (errs->n == 0) exp_expand(e, errs);
    sort_errs(errs);
    if (errs->n) {
        exp_free(e);
        return -1;
    }
    return 0;
}

int exp_load_string(experiment *e, const char *text, size_t len, const char *path, exp_errors *errs) {
    return exp_load_string_sets(e, text, len, path, NULL, 0, errs);
}

int exp_load(experiment *e, const char *path, exp_errors *errs) { return exp_load_sets(e, path, NULL, 0, errs); }

int exp_load_sets(experiment *e, const char *path, const char *const *sets, int nsets, exp_errors *errs) {
    memset(errs, 0, sizeof *errs);
    memset(e, 0, sizeof *e);
    FILE *f = fopen(path, "rb");
    if (!f) {
        exp_add_err(errs, path, 0, 0, NULL, "cannot open: %s", strerror(errno));
        return -1;
    }
    size_t cap = 4096, len = 0;
    char *buf = mallocCheck(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            if (cap > EXP_MAX_FILE) break;
            cap *= 2;
            buf = reallocCheck(buf, cap);
        }
    }
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        free(buf);
        exp_add_err(errs, path, 0, 0, NULL, "cannot read (is it a directory?)");
        return -1;
    }
    int r = exp_load_string_sets(e, buf, len, path, sets, nsets, errs);
    free(buf);
    return r;
}

/* One parameter: value of a --config file into c. */
static void config_pair(const char *path, const ynode *k, const ynode *v, train_config *c, exp_errors *errs) {
    const rb_param *d = rb_param_find(k->s);
    if (!d || !rb_param_in_model(d)) {
        const char *cands[128];
        int n = 0;
        for (int i = 0; i < rb_param_count() && n < 128; i++)
            if (rb_param_in_model(rb_param_at(i))) cands[n++] = rb_param_at(i)->name;
        const char *sug = rb_closest(k->s, cands, n);
        if (sug) exp_add_err(errs, path, k->line, k->col, k->s, "unknown parameter (did you mean '%s'?)", sug);
        else exp_add_err(errs, path, k->line, k->col, k->s, "unknown parameter (`routebench train --help` lists them)");
        return;
    }
    if (v->type != Y_SCALAR) {
        exp_add_err(errs, path, v->line, v->col, d->name, "expected a single value, got %s", yt_type_name(v));
        return;
    }
    char msg[512];
    if (train_config_set(c, d->name, v->s, msg, sizeof msg) != 0) {
        size_t skip = strlen(d->name) + 2; /* train_config_set's messages start with "name: " */
        exp_add_err(errs, path, v->line, v->col, d->name, "%s", strncmp(msg, d->name, skip - 2) == 0 ? msg + skip : msg);
    }
}

int exp_train_config_file(const char *path, train_config *c, exp_errors *errs) {
    memset(errs, 0, sizeof *errs);
    size_t len;
    char msg[600], *text = rb_read_file(path, EXP_MAX_FILE, &len, msg, sizeof msg);
    if (!text) return exp_add_err(errs, path, 0, 0, NULL, "%s", msg + strlen(path) + 2), -1;
    int rc = exp_train_config_string(text, len, path, c, errs);
    free(text);
    return rc;
}

int exp_train_config_string(const char *text, size_t len, const char *path, train_config *c, exp_errors *errs) {
    memset(errs, 0, sizeof *errs);
    if (len > EXP_MAX_FILE)
        return exp_add_err(errs, path, 1, 1, NULL, "larger than %d bytes", EXP_MAX_FILE), -1;
    int empty = 0;
    ynode *root = yt_read(text, len, path, errs, &empty);
    if (!root && empty) exp_add_err(errs, path, 1, 1, NULL, "empty file (expected parameter: value lines)");
    const ynode *m = root;
    if (m && m->type == Y_MAP && m->n == 2 && m->kids[0]->type == Y_SCALAR && strcmp(m->kids[0]->s, "params") == 0)
        m = m->kids[1];
    if (m && m->type != Y_MAP)
        exp_add_err(errs, path, m->line, m->col, NULL, "expected a mapping of parameter: value, got %s", yt_type_name(m));
    for (int i = 0; m && m->type == Y_MAP && i < m->n; i += 2) {
        const ynode *k = m->kids[i];
        int dup = -1;
        for (int j = 0; j < i && k->type == Y_SCALAR; j += 2)
            if (m->kids[j]->type == Y_SCALAR && strcmp(m->kids[j]->s, k->s) == 0) dup = m->kids[j]->line;
        if (k->type != Y_SCALAR) exp_add_err(errs, path, k->line, k->col, NULL, "a mapping key must be a plain name");
        else if (dup >= 0) exp_add_err(errs, path, k->line, k->col, k->s, "set twice (also at line %d)", dup);
        else config_pair(path, k, m->kids[i + 1], c, errs);
    }
    yt_free(root);
    sort_errs(errs);
    return errs->n ? -1 : 0;
}

static const char help_top[] =
    "Experiment file (YAML). Keys:\n"
    "  name: NAME          required; letters, digits, _ - . (default database results/NAME.db)\n"
    "  description: TEXT   optional, stored with the results\n"
    "  kind: bench|train   bench (default): time, no learning; train: train and evaluate\n"
    "  kind: analyze       train and evaluate, then `routebench analyze` the trained model on held-out\n"
    "                      data (eval_batches batches; analyze.* metrics: entropy, kept dense mass,\n"
    "                      JSD between heads; O(seq^2) per head, meant for evaluation-sized seq)\n"
    "  bench: attn|model   kind bench: one attention layer (attn, default) or one whole model\n"
    "                      training step (model), timed\n"
    "  repeat: N           seeds per combination (default 1): seeds are seed, seed+1, ...\n"
    "  seed: S             first seed (default 1)\n"
    "  timeout: T          a time limit per trial (90, 90s, 5m, 2h; default none): a trial that runs\n"
    "                      longer is killed and recorded failed, and the sweep goes on; the same\n"
    "                      configuration's longer lengths are then recorded over the limit unrun\n"
    "  timing:             kind bench: {runs: timed runs at least (default 5), warmup: untimed runs\n"
    "                      (default 1), min_time / max_time: seconds of timed runs at least (0.25) / at\n"
    "                      most (3): runs are added until their IQR is within 5% of the median;\n"
    "                      bench: model adds steps only until min_time}\n"
    "  params:             fixed parameters, one value each: {backend: routing, heads: 4, ...}\n"
    "  sweep:              axes: a parameter with a list of values, e.g. seq: [1024, 2048];\n"
    "                      axes combine as a Cartesian product; a single value is a fixed parameter\n"
    "    zip:              a mapping of equal-length lists (or a list of such mappings) whose\n"
    "                      axes move together: zip: {seq: [1024, 4096], window: [32, 64]}\n"
    "    exclude:          list of partial assignments to drop: [{backend: dense, seq: 65536}]\n"
    "    only:             list of partial assignments to keep (a combination matching any)\n";

static const char help_bottom[] =
    "A parameter only some backends read (marked *) is dropped from the trials of backends that do\n"
    "not read it, so it does not multiply their trials. Every problem is reported as\n"
    "FILE:LINE:COL: KEY: message and nothing runs (exit status 2) until the file is clean.\n";

/* The parameters of one kind of trial, several to a line. */
static void help_params(FILE *f, int attn) {
    int col = 2;
    fprintf(f, " ");
    for (int i = 0; i < rb_param_count(); i++) {
        const rb_param *d = rb_param_at(i);
        if ((d->flags & PF_NOSWEEP) || !(attn ? rb_param_in_attn(d) || d->where == W_SEL : rb_param_in_model(d)))
            continue;
        char item[96];
        const char *def = attn ? d->adef : d->tdef;
        int n = snprintf(item, sizeof item, " %s%s (%s),", d->name, d->uses ? "*" : "", *def ? def : "none");
        if (col + n > 100) fprintf(f, "\n "), col = 2;
        fprintf(f, "%s", item);
        col += n;
    }
    fprintf(f, "\n");
}

void exp_help(FILE *f) {
    fprintf(f, "%s", help_top);
    fprintf(f, "Parameters of bench attn trials (as `routebench attn --help` describes them; default):\n");
    help_params(f, 1);
    fprintf(f, "Parameters of bench model, train and analyze trials (as `routebench train --help`):\n");
    help_params(f, 0);
    fprintf(f, "%s", help_bottom);
}
