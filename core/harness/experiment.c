/* experiment.c: reading an experiment file (libyaml events into a small tree
 * that keeps every scalar's line and column), validating it with all problems
 * collected, and expanding the sweep into trials (experiment.h). Nothing here
 * knows a backend by name: which parameters apply to a trial comes from
 * attn_backend.uses, and combinations are checked by the backend's validate()
 * (bench attn) or train_config_check() (model bench and train). */
#include "harness/experiment.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "util/common.h"

#define EXP_MAX_FILE (1 << 20) /* an experiment file is a page or two */
#define EXP_MAX_DEPTH 16
#define EXP_MAX_NODES 100000
#define EXP_MAX_COMBOS 10000000L /* before filtering; the trial cap applies after */

/* ------------------------------------------------------------------ */
/* hashing, edit distance                                              */

uint64_t exp_hash64(const void *data, size_t len, uint64_t h) {
    const unsigned char *p = data;
    if (h == 0) h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

void exp_hex(char out[17], uint64_t h) { snprintf(out, 17, "%016llx", (unsigned long long)h); }

int exp_levenshtein(const char *a, const char *b) {
    int n = (int)strlen(a), m = (int)strlen(b);
    if (n > 64 || m > 64) return 1000;
    int prev[65], cur[65];
    for (int j = 0; j <= m; j++) prev[j] = j;
    for (int i = 1; i <= n; i++) {
        cur[0] = i;
        for (int j = 1; j <= m; j++) {
            int c = prev[j - 1] + (a[i - 1] != b[j - 1]);
            c = RB_MIN(c, prev[j] + 1);
            c = RB_MIN(c, cur[j - 1] + 1);
            cur[j] = c;
        }
        memcpy(prev, cur, sizeof(int) * (size_t)(m + 1));
    }
    return prev[m];
}

const char *exp_kind_name(int kind) { return kind == EXP_KIND_ANALYZE ? "analyze" : kind == EXP_KIND_TRAIN ? "train" : "bench"; }
const char *exp_bench_name(int bench) { return bench == EXP_BENCH_MODEL ? "model" : "attn"; }

/* ------------------------------------------------------------------ */
/* errors                                                              */

static void add_err(exp_errors *errs, const char *path, int line, int col, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void add_err(exp_errors *errs, const char *path, int line, int col, const char *key, const char *fmt, ...) {
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char full[384];
    if (line <= 0) snprintf(full, sizeof full, "%s: %s", path, msg); /* about the file, not a place in it */
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
static void sort_errs(exp_errors *errs) {
    for (int i = 1; i < errs->n; i++)
        for (int j = i; j > 0; j--) {
            int a = j - 1, b = j;
            if (errs->line[a] < errs->line[b] || (errs->line[a] == errs->line[b] && errs->col[a] <= errs->col[b])) break;
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
/* the YAML tree                                                       */

enum { Y_SCALAR, Y_SEQ, Y_MAP };

typedef struct ynode {
    int type;
    char *s;     /* scalar text */
    size_t slen;
    int quoted;
    int line, col;
    int n, cap;  /* children; a map alternates key, value */
    struct ynode **kids;
} ynode;

static void ynode_free(ynode *n) {
    if (!n) return;
    for (int i = 0; i < n->n; i++) ynode_free(n->kids[i]);
    free(n->kids);
    free(n->s);
    free(n);
}

static ynode *ynode_new(int type, yaml_mark_t m) {
    ynode *n = callocCheck(1, sizeof *n);
    n->type = type;
    n->line = (int)m.line + 1;
    n->col = (int)m.column + 1;
    return n;
}

static void ynode_add(ynode *p, ynode *c) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 8;
        ynode **k = realloc(p->kids, (size_t)p->cap * sizeof *k);
        if (!k) {
            fprintf(stderr, "error: out of memory reading YAML\n");
            exit(1);
        }
        p->kids = k;
    }
    p->kids[p->n++] = c;
}

/* Line and column of a byte offset (reader errors carry only the offset). */
static void offset_mark(const char *text, size_t len, size_t off, int *line, int *col) {
    *line = 1, *col = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n') (*line)++, *col = 1;
        else (*col)++;
    }
}

/* Parse text into a tree. Aliases and anchors are refused outright: they are
 * never needed in an experiment file and an alias bomb (billion laughs) is
 * then impossible. NULL on error (reported). *empty = 1 for a file with no
 * document. */
static ynode *yaml_read(const char *text, size_t len, const char *path, exp_errors *errs, int *empty) {
    yaml_parser_t parser;
    yaml_event_t ev;
    *empty = 0;
    if (!yaml_parser_initialize(&parser)) {
        add_err(errs, path, 1, 1, NULL, "cannot initialise the YAML parser");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    ynode *stack[EXP_MAX_DEPTH + 1];
    int depth = 0, ndocs = 0, nodes = 0, done = 0, failed = 0;
    ynode *root = NULL;
    while (!done && !failed) {
        if (!yaml_parser_parse(&parser, &ev)) {
            int line, col;
            if (parser.error == YAML_READER_ERROR) offset_mark(text, len, parser.problem_offset, &line, &col);
            else line = (int)parser.problem_mark.line + 1, col = (int)parser.problem_mark.column + 1;
            const char *what = parser.error == YAML_READER_ERROR ? "invalid input" : "YAML syntax error";
            if (parser.context)
                add_err(errs, path, line, col, NULL, "%s: %s %s", what, parser.problem ? parser.problem : "?",
                        parser.context);
            else add_err(errs, path, line, col, NULL, "%s: %s", what, parser.problem ? parser.problem : "?");
            failed = 1;
            break;
        }
        yaml_mark_t m = ev.start_mark;
        ynode *node = NULL;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT: done = 1; break;
        case YAML_DOCUMENT_START_EVENT:
            if (++ndocs > 1) {
                add_err(errs, path, (int)m.line + 1, (int)m.column + 1, NULL,
                        "more than one YAML document; an experiment file holds one");
                failed = 1;
            }
            break;
        case YAML_ALIAS_EVENT:
            add_err(errs, path, (int)m.line + 1, (int)m.column + 1, NULL,
                    "YAML aliases (*%s) are not supported in experiment files", (char *)ev.data.alias.anchor);
            failed = 1;
            break;
        case YAML_SCALAR_EVENT:
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
            const yaml_char_t *anchor = ev.type == YAML_SCALAR_EVENT ? ev.data.scalar.anchor
                                        : ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor
                                                                              : ev.data.mapping_start.anchor;
            if (anchor) {
                add_err(errs, path, (int)m.line + 1, (int)m.column + 1, NULL,
                        "YAML anchors (&%s) are not supported in experiment files", (const char *)anchor);
                failed = 1;
                break;
            }
            if (++nodes > EXP_MAX_NODES) {
                add_err(errs, path, (int)m.line + 1, (int)m.column + 1, NULL, "more than %d YAML nodes",
                        EXP_MAX_NODES);
                failed = 1;
                break;
            }
            node = ynode_new(ev.type == YAML_SCALAR_EVENT ? Y_SCALAR
                             : ev.type == YAML_SEQUENCE_START_EVENT ? Y_SEQ
                                                                    : Y_MAP,
                             m);
            if (ev.type == YAML_SCALAR_EVENT) {
                node->slen = ev.data.scalar.length;
                node->s = mallocCheck(node->slen + 1);
                memcpy(node->s, ev.data.scalar.value, node->slen);
                node->s[node->slen] = 0;
                node->quoted = ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
            }
            if (depth > 0) ynode_add(stack[depth - 1], node);
            else if (!root) root = node;
            if (ev.type != YAML_SCALAR_EVENT) {
                if (depth >= EXP_MAX_DEPTH) {
                    add_err(errs, path, node->line, node->col, NULL, "nested deeper than %d levels",
                            EXP_MAX_DEPTH);
                    failed = 1;
                    break;
                }
                stack[depth++] = node;
            }
            break;
        }
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (depth > 0) depth--;
            break;
        default: break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    if (failed) {
        ynode_free(root);
        return NULL;
    }
    if (!root) *empty = 1;
    return root;
}

/* ------------------------------------------------------------------ */
/* parameters                                                          */

enum { P_INT, P_INT_AUTO, P_BOOL, P_FLOAT, P_BACKEND, P_ENUM };

typedef struct {
    const char *key;
    int type;
    double lo, hi;
    unsigned uses; /* ATTN_USES_* bit: applies only to backends that use it */
    const char *e0, *e1; /* P_ENUM: the names of 0 and 1 */
    const char *help;
} param_def;

/* Bench attn trials: one attention layer (attn_params). */
static const param_def attn_defs[] = {
    {"backend", P_BACKEND, 0, 0, 0, NULL, NULL, "attention backend (routebench backends), default dense"},
    {"seq", P_INT, 1, 1 << 24, 0, NULL, NULL, "tokens per sequence (required)"},
    {"heads", P_INT, 1, 4096, 0, NULL, NULL, "attention heads, default 1"},
    {"head_dim", P_INT, 1, 65536, 0, NULL, NULL, "dimension per head, default 64"},
    {"batch", P_INT, 1, 1 << 20, 0, NULL, NULL, "sequences per batch, default 1"},
    {"causal", P_BOOL, 0, 1, 0, NULL, NULL, "true (default) or false"},
    {"window", P_INT, 1, 1 << 24, ATTN_USES_WINDOW, NULL, NULL, "local block / routing cluster size, default: backend's"},
    {"clusters", P_INT_AUTO, 1, 1 << 24, ATTN_USES_CLUSTERS, NULL, NULL, "routing centroids per head or auto (round(sqrt(seq))), default auto"},
    {"local_heads", P_INT, 0, 4096, ATTN_USES_LOCAL_HEADS, NULL, NULL, "hybrid: heads that are local, default heads/2"},
    {"share_qk", P_BOOL, 0, 1, ATTN_USES_SHARE_QK, NULL, NULL, "routing: keys = queries, default true when causal"},
    {"assign", P_ENUM, 0, 1, ATTN_USES_ASSIGN, "topk", "argmax", "routing: topk (default) or argmax"},
    {"norm", P_ENUM, 0, 1, ATTN_USES_NORM, "l2", "layernorm", "routing vectors: l2 (default) or layernorm"},
    {"decay", P_FLOAT, 0, 1, ATTN_USES_KMEANS, NULL, NULL, "k-means EMA decay in (0,1), default 0.999"},
    {"commit_weight", P_FLOAT, 0, 1e6, ATTN_USES_KMEANS, NULL, NULL, "commitment-loss weight in backward, default 0"},
    {"kmeans_iters", P_INT, 0, 1000, ATTN_USES_KMEANS, NULL, NULL, "Lloyd iterations initialising centroids, default 3"},
};
#define N_ATTN_DEFS ((int)(sizeof attn_defs / sizeof attn_defs[0]))

/* Model and train trials use train_config_set's keys; these are the ones that
 * only some backends read (the rest apply to every trial). */
static const struct {
    const char *key;
    unsigned uses;
} train_uses[] = {
    {"window", ATTN_USES_WINDOW},       {"clusters", ATTN_USES_CLUSTERS}, {"local_heads", ATTN_USES_LOCAL_HEADS},
    {"share_qk", ATTN_USES_SHARE_QK},   {"assign", ATTN_USES_ASSIGN},     {"norm", ATTN_USES_NORM},
    {"decay", ATTN_USES_KMEANS},        {"kmeans_iters", ATTN_USES_KMEANS}, {"kmeans_iters", ATTN_USES_KMEANS},
    {"commit_beta", ATTN_USES_KMEANS},  {"commit_weight", ATTN_USES_KMEANS},
};

/* Keys train_config_set knows that do not belong in a sweep: the seed comes
 * from `seed`/`repeat`, checkpoints are per run. */
static const char *const train_forbidden[] = {"seed", "load", "save", "save_every", "stop_after", "threads"};

/* Short forms used in readable trial names. */
static const struct {
    const char *key, *abbr;
} abbrs[] = {
    {"seq", "s"},      {"clusters", "k"}, {"window", "w"},       {"heads", "h"},       {"head_dim", "d"},
    {"batch", "b"},    {"d_model", "dm"}, {"layers", "L"},       {"local_heads", "lh"}, {"causal", "c"},
    {"steps", "n"},    {"lr", "lr"},      {"local_layers", "ll"}, {"task", ""},
};

static void canon_key(char *out, const char *in) {
    size_t i = 0;
    for (; in[i] && i < EXP_KEY_LEN - 1; i++) out[i] = in[i] == '-' ? '_' : in[i];
    out[i] = 0;
}

static const param_def *attn_def(const char *key) {
    for (int i = 0; i < N_ATTN_DEFS; i++)
        if (strcmp(attn_defs[i].key, key) == 0) return &attn_defs[i];
    return NULL;
}

static int train_key_known(const char *key) {
    int n = 0;
    const train_config_key *k = train_config_keys(&n);
    char c[EXP_KEY_LEN];
    for (int i = 0; i < n; i++) {
        canon_key(c, k[i].key);
        if (strcmp(c, key) == 0) return 1;
    }
    return 0;
}

static int train_key_forbidden(const char *key) {
    for (size_t i = 0; i < sizeof train_forbidden / sizeof train_forbidden[0]; i++)
        if (strcmp(train_forbidden[i], key) == 0) return 1;
    return 0;
}

static int key_known(const experiment *e, const char *key) {
    if (e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN) return attn_def(key) != NULL;
    return train_key_known(key) && !train_key_forbidden(key);
}

static unsigned key_uses(const experiment *e, const char *key) {
    if (e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN) {
        const param_def *d = attn_def(key);
        return d ? d->uses : 0;
    }
    for (size_t i = 0; i < sizeof train_uses / sizeof train_uses[0]; i++)
        if (strcmp(train_uses[i].key, key) == 0) return train_uses[i].uses;
    return 0;
}

/* The closest of the keys valid here, or NULL when nothing is close. */
static const char *closest(const char *key, const char *const *cands, int n) {
    const char *best = NULL;
    int bd = 1000;
    for (int i = 0; i < n; i++) {
        int d = exp_levenshtein(key, cands[i]);
        if (d < bd) bd = d, best = cands[i];
    }
    int lim = (int)strlen(key) / 3 + 1;
    return bd <= RB_MAX(lim, 2) ? best : NULL;
}

static const char *closest_param(const experiment *e, const char *key) {
    const char *cands[256];
    int n = 0;
    if (e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN) {
        for (int i = 0; i < N_ATTN_DEFS; i++) cands[n++] = attn_defs[i].key;
    } else {
        int nk = 0;
        const train_config_key *k = train_config_keys(&nk);
        for (int i = 0; i < nk && n < 256; i++)
            if (!train_key_forbidden(k[i].key)) cands[n++] = k[i].key;
    }
    return closest(key, cands, n);
}

static void unknown_param(const experiment *e, exp_errors *errs, const char *key, int line, int col) {
    const char *sug = closest_param(e, key);
    const char *what = e->kind != EXP_KIND_BENCH ? exp_kind_name(e->kind) : e->bench == EXP_BENCH_MODEL ? "bench: model" : "bench: attn";
    if (e->kind != EXP_KIND_BENCH || e->bench != EXP_BENCH_ATTN) {
        if (train_key_forbidden(key)) {
            add_err(errs, e->path, line, col, key,
                    "cannot be set in an experiment file (seeds come from `seed` and `repeat`; checkpoints and "
                    "threads are per run)");
            return;
        }
    } else if (strcmp(key, "seed") == 0) {
        add_err(errs, e->path, line, col, key, "seeds come from the top-level `seed` and `repeat` keys");
        return;
    }
    if (sug) add_err(errs, e->path, line, col, key, "unknown parameter for %s trials (did you mean '%s'?)", what, sug);
    else add_err(errs, e->path, line, col, key, "unknown parameter for %s trials", what);
}

static int parse_ll(const char *s, long long *out) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s || *end) return -1;
    if (errno == ERANGE) return -2;
    *out = x;
    return 0;
}

static int parse_bool(const char *s, int *out) {
    static const char *t[] = {"true", "yes", "on", "1", "True", "TRUE", "Yes", "On"};
    static const char *f[] = {"false", "no", "off", "0", "False", "FALSE", "No", "Off"};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (strcmp(s, t[i]) == 0) return *out = 1, 0;
        if (strcmp(s, f[i]) == 0) return *out = 0, 0;
    }
    return -1;
}

/* Check one scalar for key; 0 ok or -1 with a message. */
static int check_value(const experiment *e, const char *key, const char *s, char *err, size_t errlen) {
    if (!*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0) return rb_fail(err, errlen, "missing value");
    if (e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN) {
        const param_def *d = attn_def(key);
        long long x;
        switch (d->type) {
        case P_INT_AUTO:
            if (strcmp(s, "auto") == 0) return 0;
            /* fall through */
        case P_INT: {
            int r = parse_ll(s, &x);
            if (r == -2 || (r == 0 && (x > (long long)d->hi || x < (long long)d->lo)))
                return rb_fail(err, errlen, "%s is out of range [%.0f, %.0f]", s, d->lo, d->hi);
            if (r) return rb_fail(err, errlen, "expected an integer%s, got '%s'", d->type == P_INT_AUTO ? " or auto" : "", s);
            return 0;
        }
        case P_BOOL: {
            int b;
            if (parse_bool(s, &b)) return rb_fail(err, errlen, "expected true or false, got '%s'", s);
            return 0;
        }
        case P_FLOAT: {
            char *end;
            errno = 0;
            double v = strtod(s, &end);
            if (end == s || *end) return rb_fail(err, errlen, "expected a number, got '%s'", s);
            if (errno == ERANGE || !isfinite(v) || v < d->lo || v > d->hi)
                return rb_fail(err, errlen, "%s is out of range [%g, %g]", s, d->lo, d->hi);
            if (strcmp(key, "decay") == 0 && !(v > 0 && v < 1))
                return rb_fail(err, errlen, "must be in (0, 1), got %s", s);
            return 0;
        }
        case P_ENUM:
            if (strcmp(s, d->e0) && strcmp(s, d->e1)) return rb_fail(err, errlen, "expected %s or %s, got '%s'", d->e0, d->e1, s);
            return 0;
        case P_BACKEND:
            if (!attn_find(s)) {
                const char *cands[64];
                int n = 0;
                for (int i = 0; i < attn_count() && n < 64; i++) cands[n++] = attn_get(i)->name;
                const char *sug = closest(s, cands, n);
                if (sug) return rb_fail(err, errlen, "unknown backend '%s' (did you mean '%s'? known: %s)", s, sug, attn_names());
                return rb_fail(err, errlen, "unknown backend '%s' (known: %s)", s, attn_names());
            }
            return 0;
        }
        return 0;
    }
    /* model/train: train_config_set is the authority on its own fields */
    train_config c;
    train_config_default(&c);
    if (strcmp(key, "backend") == 0 && !attn_find(s))
        return rb_fail(err, errlen, "unknown backend '%s' (known: %s)", s, attn_names());
    char msg[300];
    if (train_config_set(&c, key, s, msg, sizeof msg) != 0) return rb_fail(err, errlen, "%s", msg);
    return 0;
}

/* Normal form of a value for keys, names and filter matching: integers as
 * integers, other numbers with %.9g, booleans of boolean keys as 0/1. */
static void norm_value(const experiment *e, const char *key, const char *s, char *out, size_t len) {
    long long x;
    char *end;
    if (e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN) {
        const param_def *d = attn_def(key);
        int b;
        if (d && d->type == P_BOOL && parse_bool(s, &b) == 0) {
            snprintf(out, len, "%d", b);
            return;
        }
    }
    if (parse_ll(s, &x) == 0) {
        snprintf(out, len, "%lld", x);
        return;
    }
    double v = strtod(s, &end);
    if (end != s && !*end && isfinite(v)) {
        snprintf(out, len, "%.9g", v);
        return;
    }
    snprintf(out, len, "%s", s);
}

/* ------------------------------------------------------------------ */
/* reading the spec                                                    */

static const char *const top_keys[] = {"name", "description", "kind", "bench", "repeat", "seed", "timing", "params", "sweep"};
static const char *const timing_keys[] = {"runs", "warmup"};
static const char *const sweep_special[] = {"zip", "exclude", "only"};

static const char *ntype(const ynode *n) {
    return n->type == Y_SCALAR ? "a scalar" : n->type == Y_SEQ ? "a list" : "a mapping";
}

/* Duplicate keys in one mapping; 1 when any. */
static int check_dups(const experiment *e, const ynode *map, exp_errors *errs) {
    int bad = 0;
    for (int i = 0; i < map->n; i += 2) {
        const ynode *k = map->kids[i];
        if (k->type != Y_SCALAR) {
            add_err(errs, e->path, k->line, k->col, NULL, "a mapping key must be a plain name");
            bad = 1;
            continue;
        }
        for (int j = 0; j < i; j += 2) {
            const ynode *p = map->kids[j];
            if (p->type == Y_SCALAR && strcmp(p->s, k->s) == 0) {
                add_err(errs, e->path, k->line, k->col, k->s, "duplicated key (first at line %d)", p->line);
                bad = 1;
            }
        }
    }
    return bad;
}

static int get_scalar(const experiment *e, const ynode *v, const char *key, exp_scalar *out, exp_errors *errs) {
    if (v->type != Y_SCALAR) {
        add_err(errs, e->path, v->line, v->col, key, "expected a single value, got %s", ntype(v));
        return -1;
    }
    if (v->slen >= EXP_VAL_LEN) {
        add_err(errs, e->path, v->line, v->col, key, "value longer than %d characters", EXP_VAL_LEN - 1);
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
        add_err(errs, e->path, v->line, v->col, key, "expected an integer, got %s", ntype(v));
        return -1;
    }
    int r = parse_ll(v->s, out);
    if (r == -1) {
        add_err(errs, e->path, v->line, v->col, key, "expected an integer, got '%s'", v->s);
        return -1;
    }
    if (r == -2 || *out < lo || *out > hi) {
        add_err(errs, e->path, v->line, v->col, key, "%s is out of range [%lld, %lld]", v->s, lo, hi);
        return -1;
    }
    return 0;
}

static int param_ok(experiment *e, const ynode *k, exp_errors *errs, char *ck) {
    if (k->slen >= EXP_KEY_LEN) {
        add_err(errs, e->path, k->line, k->col, NULL, "parameter name longer than %d characters", EXP_KEY_LEN - 1);
        return -1;
    }
    canon_key(ck, k->s);
    if (!key_known(e, ck)) {
        unknown_param(e, errs, ck, k->line, k->col);
        return -1;
    }
    return 0;
}

static int value_ok(experiment *e, const char *key, const exp_scalar *v, exp_errors *errs) {
    char msg[300];
    if (check_value(e, key, v->s, msg, sizeof msg) != 0) {
        add_err(errs, e->path, v->line, v->col, key, "%s", msg);
        return -1;
    }
    return 0;
}

static int find_fixed(const experiment *e, const char *key) {
    for (int i = 0; i < e->nfixed; i++)
        if (strcmp(e->fixed[i].key, key) == 0) return i;
    return -1;
}

static int find_axis(const experiment *e, const char *key) {
    for (int i = 0; i < e->naxes; i++)
        if (strcmp(e->axes[i].key, key) == 0) return i;
    return -1;
}

static void add_fixed(experiment *e, const ynode *k, const ynode *v, exp_errors *errs) {
    char ck[EXP_KEY_LEN];
    if (param_ok(e, k, errs, ck)) return;
    int prev = find_fixed(e, ck), pa = find_axis(e, ck);
    if (prev >= 0 || pa >= 0) {
        add_err(errs, e->path, k->line, k->col, ck, "set twice (also at line %d)",
                prev >= 0 ? e->fixed[prev].key_line : e->axes[pa].key_line);
        return;
    }
    if (v->type == Y_SEQ) {
        add_err(errs, e->path, v->line, v->col, ck, "a list here; put the values under `sweep:` to make an axis");
        return;
    }
    if (e->nfixed >= EXP_MAX_FIXED) {
        add_err(errs, e->path, k->line, k->col, ck, "more than %d parameters", EXP_MAX_FIXED);
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
    int prev = find_fixed(e, ck), pa = find_axis(e, ck);
    if (prev >= 0 || pa >= 0) {
        add_err(errs, e->path, k->line, k->col, ck, "set twice (also at line %d)",
                prev >= 0 ? e->fixed[prev].key_line : e->axes[pa].key_line);
        return -1;
    }
    if (v->type == Y_MAP) {
        add_err(errs, e->path, v->line, v->col, ck, "expected a list of values, got a mapping");
        return -1;
    }
    if (v->n == 0) {
        add_err(errs, e->path, v->line, v->col, ck, "empty list: an axis needs at least one value");
        return -1;
    }
    if (v->n > EXP_MAX_VALUES) {
        add_err(errs, e->path, v->line, v->col, ck, "more than %d values", EXP_MAX_VALUES);
        return -1;
    }
    if (e->naxes >= EXP_MAX_AXES) {
        add_err(errs, e->path, k->line, k->col, ck, "more than %d sweep axes", EXP_MAX_AXES);
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
        norm_value(e, ck, ax->values[i].s, a, sizeof a);
        for (int j = 0; j < i; j++) {
            norm_value(e, ck, ax->values[j].s, b, sizeof b);
            if (strcmp(a, b) == 0) {
                add_err(errs, e->path, ax->values[i].line, ax->values[i].col, ck,
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
        add_err(errs, e->path, v->line, v->col, what, "expected a list of mappings like {backend: dense, seq: 4096}, got %s",
                ntype(v));
        return;
    }
    if (v->n == 0) {
        add_err(errs, e->path, v->line, v->col, what, "empty list");
        return;
    }
    *out = callocCheck((size_t)v->n, sizeof **out);
    for (int i = 0; i < v->n; i++) {
        const ynode *m = v->kids[i];
        if (m->type != Y_MAP || m->n == 0) {
            add_err(errs, e->path, m->line, m->col, what, "expected a mapping like {backend: dense, seq: 4096}, got %s",
                    m->type == Y_MAP ? "an empty mapping" : ntype(m));
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
            int ax = find_axis(e, ck);
            if (ax < 0) {
                add_err(errs, e->path, k->line, k->col, ck, "%s: not a sweep axis (filters match axis values)", what);
                bad = 1;
                continue;
            }
            exp_assign *a = &f->a[f->n];
            if (get_scalar(e, val, ck, &a->val, errs)) {
                bad = 1;
                continue;
            }
            char nv[EXP_VAL_LEN], na[EXP_VAL_LEN];
            norm_value(e, ck, a->val.s, nv, sizeof nv);
            int found = 0;
            for (int t = 0; t < e->axes[ax].nvalues && !found; t++) {
                norm_value(e, ck, e->axes[ax].values[t].s, na, sizeof na);
                found = strcmp(na, nv) == 0;
            }
            if (!found) {
                add_err(errs, e->path, val->line, val->col, ck, "%s: %s is not one of the axis's values (line %d)", what,
                        a->val.s, e->axes[ax].key_line);
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
        add_err(errs, e->path, sw->line, sw->col, "sweep", "expected a mapping of parameter: [values], got %s", ntype(sw));
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
            add_err(errs, e->path, zip->line, zip->col, "zip",
                    "expected a mapping of equal-length lists (or a list of such mappings)");
        else
            for (int g = 0; g < ng; g++) {
                const ynode *m = zip->type == Y_SEQ ? zip->kids[g] : zip;
                if (m->type != Y_MAP || m->n == 0) {
                    add_err(errs, e->path, m->line, m->col, "zip", "expected a mapping of equal-length lists, got %s",
                            m->type == Y_MAP ? "an empty mapping" : ntype(m));
                    continue;
                }
                if (check_dups(e, m, errs)) continue;
                int first = e->naxes, len = -1, bad = 0;
                for (int j = 0; j < m->n; j += 2) {
                    const ynode *k = m->kids[j], *v = m->kids[j + 1];
                    if (v->type != Y_SEQ) {
                        add_err(errs, e->path, v->line, v->col, k->s, "zip: expected a list of values, got %s",
                                ntype(v));
                        bad = 1;
                        continue;
                    }
                    if (len >= 0 && v->n != len) {
                        add_err(errs, e->path, v->line, v->col, k->s,
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
                            norm_value(e, e->axes[a].key, e->axes[a].values[x].s, va, sizeof va);
                            norm_value(e, e->axes[a].key, e->axes[a].values[y].s, vb, sizeof vb);
                            same = strcmp(va, vb) == 0;
                        }
                        if (same) {
                            const exp_axis *ax = &e->axes[first];
                            add_err(errs, e->path, ax->values[x].line, ax->values[x].col, ax->key,
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

static void read_top(experiment *e, const ynode *root, exp_errors *errs) {
    if (root->type != Y_MAP) {
        add_err(errs, e->path, root->line, root->col, NULL, "expected a mapping of keys (name:, sweep:, ...), got %s",
                ntype(root));
        return;
    }
    check_dups(e, root, errs);
    const ynode *params = NULL, *sweep = NULL, *name = NULL;
    /* kind and bench first: they decide which parameters exist */
    for (int i = 0; i < root->n; i += 2) {
        const ynode *k = root->kids[i], *v = root->kids[i + 1];
        if (k->type != Y_SCALAR) continue;
        if (strcmp(k->s, "kind") == 0) {
            if (v->type == Y_SCALAR && strcmp(v->s, "bench") == 0) e->kind = EXP_KIND_BENCH;
            else if (v->type == Y_SCALAR && strcmp(v->s, "train") == 0) e->kind = EXP_KIND_TRAIN;
            else if (v->type == Y_SCALAR && strcmp(v->s, "analyze") == 0) e->kind = EXP_KIND_ANALYZE;
            else add_err(errs, e->path, v->line, v->col, "kind", "expected bench, train or analyze, got %s", v->type == Y_SCALAR ? v->s : ntype(v));
        }
    }
    for (int i = 0; i < root->n; i += 2) {
        const ynode *k = root->kids[i], *v = root->kids[i + 1];
        if (k->type != Y_SCALAR) continue;
        if (strcmp(k->s, "bench") == 0) {
            if (e->kind != EXP_KIND_BENCH)
                add_err(errs, e->path, k->line, k->col, "bench", "only for kind: bench (this experiment is kind: %s)",
                        exp_kind_name(e->kind));
            else if (v->type == Y_SCALAR && strcmp(v->s, "attn") == 0) e->bench = EXP_BENCH_ATTN;
            else if (v->type == Y_SCALAR && strcmp(v->s, "model") == 0) e->bench = EXP_BENCH_MODEL;
            else add_err(errs, e->path, v->line, v->col, "bench", "expected attn or model, got %s", v->type == Y_SCALAR ? v->s : ntype(v));
        }
    }
    for (int i = 0; i < root->n; i += 2) {
        const ynode *k = root->kids[i], *v = root->kids[i + 1];
        if (k->type != Y_SCALAR) continue;
        const char *key = k->s;
        long long x;
        if (strcmp(key, "kind") == 0 || strcmp(key, "bench") == 0) continue;
        if (strcmp(key, "name") == 0) {
            name = v;
            exp_scalar s;
            if (get_scalar(e, v, key, &s, errs)) continue;
            int okname = s.s[0] != 0 && strlen(s.s) < sizeof e->name;
            for (const char *c = s.s; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
                      *c == '-' || *c == '.'))
                    okname = 0;
            if (!okname || s.s[0] == '.')
                add_err(errs, e->path, v->line, v->col, key,
                        "'%s': use 1-63 letters, digits, '_', '-' or '.' (it names results/NAME.db)", s.s);
            else snprintf(e->name, sizeof e->name, "%.*s", (int)sizeof e->name - 1, s.s);
        } else if (strcmp(key, "description") == 0) {
            if (v->type != Y_SCALAR) add_err(errs, e->path, v->line, v->col, key, "expected text, got %s", ntype(v));
            else snprintf(e->description, sizeof e->description, "%s", v->s);
        } else if (strcmp(key, "repeat") == 0) {
            if (get_int(e, v, key, 1, EXP_MAX_REPEAT, &x, errs) == 0) e->repeat = (int)x;
        } else if (strcmp(key, "seed") == 0) {
            if (get_int(e, v, key, 0, LLONG_MAX / 2, &x, errs) == 0) e->seed = (uint64_t)x;
        } else if (strcmp(key, "timing") == 0) {
            if (v->type != Y_MAP) {
                add_err(errs, e->path, v->line, v->col, key, "expected a mapping {runs: N, warmup: N}, got %s", ntype(v));
                continue;
            }
            if (e->kind != EXP_KIND_BENCH)
                add_err(errs, e->path, k->line, k->col, key, "only for kind: bench (train trials time every step)");
            check_dups(e, v, errs);
            for (int j = 0; j < v->n; j += 2) {
                const ynode *tk = v->kids[j], *tv = v->kids[j + 1];
                if (tk->type != Y_SCALAR) continue;
                if (strcmp(tk->s, "runs") == 0) {
                    if (get_int(e, tv, "timing.runs", 1, 100000, &x, errs) == 0) e->timing_runs = (int)x;
                } else if (strcmp(tk->s, "warmup") == 0) {
                    if (get_int(e, tv, "timing.warmup", 0, 100000, &x, errs) == 0) e->timing_warmup = (int)x;
                } else {
                    const char *sug = closest(tk->s, timing_keys, 2);
                    add_err(errs, e->path, tk->line, tk->col, tk->s, "unknown key under timing%s%s%s",
                            sug ? " (did you mean '" : " (known: runs, warmup)", sug ? sug : "", sug ? "'?)" : "");
                }
            }
        } else if (strcmp(key, "params") == 0) params = v;
        else if (strcmp(key, "sweep") == 0) sweep = v;
        else {
            const char *sug = closest(key, top_keys, (int)(sizeof top_keys / sizeof top_keys[0]));
            char ck[EXP_KEY_LEN];
            canon_key(ck, key);
            if (strlen(key) < EXP_KEY_LEN && key_known(e, ck))
                add_err(errs, e->path, k->line, k->col, key, "a parameter at the top level; put it under `params:` (or a list under `sweep:`)");
            else if (sug)
                add_err(errs, e->path, k->line, k->col, key, "unknown key (did you mean '%s'?)", sug);
            else
                add_err(errs, e->path, k->line, k->col, key,
                        "unknown key (known: name, description, kind, bench, repeat, seed, timing, params, sweep)");
        }
    }
    if (!name) add_err(errs, e->path, root->line, root->col, "name", "missing (every experiment needs a name)");
    if (params) {
        if (params->type != Y_MAP)
            add_err(errs, e->path, params->line, params->col, "params", "expected a mapping of parameter: value, got %s",
                    ntype(params));
        else {
            check_dups(e, params, errs);
            for (int j = 0; j < params->n; j += 2)
                if (params->kids[j]->type == Y_SCALAR) add_fixed(e, params->kids[j], params->kids[j + 1], errs);
        }
    }
    if (sweep) read_sweep(e, sweep, errs);
    (void)sweep_special;
}

/* ------------------------------------------------------------------ */
/* expansion                                                           */

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
        int a = find_axis(e, f->a[i].key);
        if (a < 0 || vi[a] < 0) return 0;
        char x[EXP_VAL_LEN], y[EXP_VAL_LEN];
        norm_value(e, f->a[i].key, f->a[i].val.s, x, sizeof x);
        norm_value(e, f->a[i].key, e->axes[a].values[vi[a]].s, y, sizeof y);
        if (strcmp(x, y)) return 0;
    }
    return 1;
}

static const char *backend_of(const experiment *e, const int *vi) {
    const exp_scalar *b = combo_get(e, vi, "backend");
    return b ? b->s : "dense";
}

/* attn_params from the combination (values were checked at load). */
static void combo_attn(const experiment *e, const int *vi, attn_params *p) {
    attn_params_default(p);
    for (int d = 0; d < N_ATTN_DEFS; d++) {
        const exp_scalar *v = combo_get(e, vi, attn_defs[d].key);
        if (!v || attn_defs[d].type == P_BACKEND) continue;
        const char *k = attn_defs[d].key, *s = v->s;
        long long x = 0;
        int b = 0;
        if (attn_defs[d].type == P_BOOL) parse_bool(s, &b);
        else if (attn_defs[d].type == P_INT || attn_defs[d].type == P_INT_AUTO) {
            if (strcmp(s, "auto") == 0) x = 0;
            else parse_ll(s, &x);
        }
        if (!strcmp(k, "seq")) p->seq = (int)x;
        else if (!strcmp(k, "heads")) p->heads = (int)x;
        else if (!strcmp(k, "head_dim")) p->head_dim = (int)x;
        else if (!strcmp(k, "batch")) p->batch = (int)x;
        else if (!strcmp(k, "causal")) p->causal = b;
        else if (!strcmp(k, "window")) p->window = (int)x;
        else if (!strcmp(k, "clusters")) p->clusters = (int)x;
        else if (!strcmp(k, "local_heads")) p->local_heads = (int)x;
        else if (!strcmp(k, "share_qk")) p->share_qk = b;
        else if (!strcmp(k, "assign")) p->assign = strcmp(s, attn_defs[d].e1) == 0;
        else if (!strcmp(k, "norm")) p->norm = strcmp(s, attn_defs[d].e1) == 0;
        else if (!strcmp(k, "decay")) p->decay = strtof(s, NULL);
        else if (!strcmp(k, "commit_weight")) p->commit_weight = strtof(s, NULL);
        else if (!strcmp(k, "kmeans_iters")) p->kmeans_iters = (int)x;
    }
}

/* train_config from the combination; keys whose uses bit is not in mask are
 * left at their defaults. */
static int combo_config(const experiment *e, const int *vi, unsigned mask, train_config *c, char *err, size_t errlen) {
    train_config_default(c);
    for (int i = 0; i < e->nfixed; i++) {
        unsigned u = key_uses(e, e->fixed[i].key);
        if (u && !(u & mask)) continue;
        if (train_config_set(c, e->fixed[i].key, e->fixed[i].val.s, err, errlen)) return -1;
    }
    for (int a = 0; a < e->naxes; a++) {
        if (vi[a] < 0) continue;
        unsigned u = key_uses(e, e->axes[a].key);
        if (u && !(u & mask)) continue;
        if (train_config_set(c, e->axes[a].key, e->axes[a].values[vi[a]].s, err, errlen)) return -1;
    }
    return train_config_check(c, err, errlen);
}

/* Where to report a combination the backend refused: the swept value whose
 * key the message names (a backend-specific one before a generic size), else
 * the backend's value, else the first axis. */
static void blame(const experiment *e, const int *vi, const char *msg, int *line, int *col, const char **key) {
    int best = -1, bestscore = -1;
    for (int a = 0; a < e->naxes; a++) {
        if (vi[a] < 0) continue;
        const char *k = e->axes[a].key;
        char spaced[EXP_KEY_LEN];
        snprintf(spaced, sizeof spaced, "%s", k);
        for (char *c = spaced; *c; c++)
            if (*c == '_') *c = ' ';
        const char *hit = strstr(msg, k);
        if (!hit) hit = strstr(msg, spaced);
        if (!hit && strcmp(k, "clusters") == 0) hit = strstr(msg, "cluster");
        if (!hit) continue;
        int score = 1 + (key_uses(e, k) != 0) * 2 + (strcmp(k, "backend") != 0);
        if (score >= bestscore) bestscore = score, best = a;
    }
    if (best < 0)
        for (int a = 0; a < e->naxes; a++)
            if (vi[a] >= 0 && strcmp(e->axes[a].key, "backend") == 0) best = a;
    if (best >= 0) {
        const exp_scalar *v = &e->axes[best].values[vi[best]];
        *line = v->line, *col = v->col, *key = e->axes[best].key;
        return;
    }
    int f = find_fixed(e, "backend");
    if (f >= 0) {
        *line = e->fixed[f].val.line, *col = e->fixed[f].val.col, *key = "backend";
        return;
    }
    *line = 1, *col = 1, *key = NULL;
    if (e->naxes > 0) *line = e->axes[0].key_line, *col = e->axes[0].key_col, *key = e->axes[0].key;
}

static void combo_desc(const experiment *e, const int *vi, char *out, size_t len) {
    size_t off = 0;
    out[0] = 0;
    for (int a = 0; a < e->naxes && off < len; a++)
        if (vi[a] >= 0)
            off += (size_t)snprintf(out + off, len - off, "%s%s %s", off ? ", " : "", e->axes[a].key,
                                    e->axes[a].values[vi[a]].s);
}

static int jappend(char *out, size_t len, size_t *off, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int jappend(char *out, size_t len, size_t *off, const char *fmt, ...) {
    if (*off >= len) return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + *off, len - *off, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= len - *off) {
        *off = len;
        return -1;
    }
    *off += (size_t)n;
    return 0;
}

static void json_str(char *out, size_t len, size_t *off, const char *s) {
    jappend(out, len, off, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') jappend(out, len, off, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) jappend(out, len, off, "\\u%04x", *s);
        else jappend(out, len, off, "%c", *s);
    }
    jappend(out, len, off, "\"");
}

/* Is s a JSON number as printed by norm_value? */
static int is_number(const char *s) {
    char *end;
    strtod(s, &end);
    return end != s && !*end && strcmp(s, "nan") && strcmp(s, "inf") && strcmp(s, "-inf") && s[0] != '+' &&
           s[0] != '.' && !strchr(s, 'x') && !strchr(s, 'X');
}

/* Canonical JSON of a combination (unused keys dropped). For bench attn every
 * resolved attention parameter appears, so a value written out that equals
 * the default gives the same key as leaving it out. */
static int combo_json(const experiment *e, const int *vi, const attn_params *p, unsigned uses, char *out, size_t len) {
    size_t off = 0;
    jappend(out, len, &off, "{\"kind\":\"%s\"", exp_kind_name(e->kind));
    if (e->kind == EXP_KIND_BENCH)
        jappend(out, len, &off, ",\"bench\":\"%s\",\"runs\":%d,\"warmup\":%d", exp_bench_name(e->bench),
                e->timing_runs, e->timing_warmup);
    jappend(out, len, &off, ",\"backend\":");
    json_str(out, len, &off, backend_of(e, vi));
    if (e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN) {
        jappend(out, len, &off, ",\"seq\":%d,\"heads\":%d,\"head_dim\":%d,\"batch\":%d,\"causal\":%d", p->seq, p->heads,
                p->head_dim, p->batch, p->causal);
        if (uses & ATTN_USES_WINDOW) jappend(out, len, &off, ",\"window\":%d", p->window);
        if (uses & ATTN_USES_CLUSTERS) jappend(out, len, &off, ",\"clusters\":%d", p->clusters);
        if (uses & ATTN_USES_LOCAL_HEADS) jappend(out, len, &off, ",\"local_heads\":%d", p->local_heads);
        if (uses & ATTN_USES_SHARE_QK) jappend(out, len, &off, ",\"share_qk\":%d", p->share_qk);
        if (uses & ATTN_USES_ASSIGN) jappend(out, len, &off, ",\"assign\":\"%s\"", p->assign ? "argmax" : "topk");
        if (uses & ATTN_USES_NORM) jappend(out, len, &off, ",\"norm\":\"%s\"", p->norm ? "layernorm" : "l2");
        if (uses & ATTN_USES_KMEANS)
            jappend(out, len, &off, ",\"decay\":%.9g,\"commit_weight\":%.9g,\"kmeans_iters\":%d", (double)p->decay,
                    (double)p->commit_weight, p->kmeans_iters);
    } else {
        /* every parameter given, in the order of train_config_keys, normalised */
        int nk = 0;
        const train_config_key *keys = train_config_keys(&nk);
        for (int i = 0; i < nk; i++) {
            char ck[EXP_KEY_LEN];
            canon_key(ck, keys[i].key);
            if (strcmp(ck, "backend") == 0) continue;
            const exp_scalar *v = combo_get(e, vi, ck);
            if (!v) continue;
            unsigned u = key_uses(e, ck);
            if (u && !(u & uses)) continue;
            char nv[EXP_VAL_LEN];
            norm_value(e, ck, v->s, nv, sizeof nv);
            jappend(out, len, &off, ",\"%s\":", ck);
            if (is_number(nv)) jappend(out, len, &off, "%s", nv);
            else json_str(out, len, &off, nv);
        }
    }
    return jappend(out, len, &off, "}");
}

static void make_name(const experiment *e, const int *vi, const attn_params *p, const train_config *c,
                      unsigned uses, char *out, size_t len) {
    size_t off = 0;
    jappend(out, len, &off, "%s", backend_of(e, vi));
    int seq = p ? p->seq : c->seq;
    jappend(out, len, &off, "-s%d", seq);
    if (uses & ATTN_USES_CLUSTERS) {
        int k = p ? p->clusters : c->attn.clusters;
        if (k <= 0) k = (int)lround(sqrt((double)seq));
        jappend(out, len, &off, "-k%d", k);
    }
    if (uses & ATTN_USES_WINDOW) {
        int w = p ? p->window : c->attn.window;
        if (w > 0) jappend(out, len, &off, "-w%d", w);
    }
    /* other swept parameters that apply, so names tell trials apart */
    for (int a = 0; a < e->naxes; a++) {
        const char *k = e->axes[a].key;
        if (vi[a] < 0 || !strcmp(k, "backend") || !strcmp(k, "seq") || !strcmp(k, "clusters") || !strcmp(k, "window"))
            continue;
        const char *ab = NULL;
        for (size_t i = 0; i < sizeof abbrs / sizeof abbrs[0]; i++)
            if (strcmp(abbrs[i].key, k) == 0) ab = abbrs[i].abbr;
        char nv[EXP_VAL_LEN];
        norm_value(e, k, e->axes[a].values[vi[a]].s, nv, sizeof nv);
        if (ab) jappend(out, len, &off, "-%s%s", ab, nv);
        else jappend(out, len, &off, "-%s=%s", k, nv);
    }
}

/* Mixed-radix walk over the independent units (single axes and zip groups). */
typedef struct {
    int nunits;
    int unit_len[EXP_MAX_AXES];
    int unit_of_axis[EXP_MAX_AXES];
    int pos[EXP_MAX_AXES];
} combo_iter;

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

static void expand(experiment *e, exp_errors *errs) {
    combo_iter it;
    memset(&it, 0, sizeof it);
    int group_unit[EXP_MAX_AXES];
    for (int g = 0; g < EXP_MAX_AXES; g++) group_unit[g] = -1;
    long long total = 1;
    for (int a = 0; a < e->naxes; a++) {
        int g = e->axes[a].group;
        if (g >= 0 && group_unit[g] >= 0) {
            it.unit_of_axis[a] = group_unit[g];
            continue;
        }
        int u = it.nunits++;
        it.unit_len[u] = e->axes[a].nvalues;
        it.unit_of_axis[a] = u;
        if (g >= 0) group_unit[g] = u;
        total *= e->axes[a].nvalues;
        if (total > EXP_MAX_COMBOS) {
            add_err(errs, e->path, e->axes[a].key_line, e->axes[a].key_col, e->axes[a].key,
                    "the sweep has more than %ld combinations", EXP_MAX_COMBOS);
            return;
        }
    }
    int cap = 64;
    e->trials = mallocCheck((size_t)cap * sizeof *e->trials);
    e->vi_pool = NULL;
    int *vis = NULL; /* [ntrials][naxes] */
    size_t vis_cap = 0;
    keyset ks = {callocCheck(1 << 18, sizeof(uint64_t)), 1 << 18};
    int naxes = e->naxes, vi[EXP_MAX_AXES + 1];
    char msg[600], json[4096];
    int too_many = 0;
    for (long long c = 0; c < total && !too_many; c++) {
        /* position of each unit; the first axis varies slowest */
        long long rem = c;
        for (int u = it.nunits - 1; u >= 0; u--) {
            it.pos[u] = (int)(rem % it.unit_len[u]);
            rem /= it.unit_len[u];
        }
        for (int a = 0; a < naxes; a++) vi[a] = it.pos[it.unit_of_axis[a]];
        int keep = e->nonly == 0;
        for (int f = 0; f < e->nonly && !keep; f++) keep = filter_match(e, &e->only[f], vi);
        for (int f = 0; f < e->nexclude && keep; f++) keep = !filter_match(e, &e->exclude[f], vi);
        if (!keep) continue;

        /* which parameters apply: the backend(s) decide */
        unsigned uses = 0;
        attn_params p;
        train_config cfg;
        memset(&p, 0, sizeof p);
        memset(&cfg, 0, sizeof cfg);
        int line = 1, col = 1;
        const char *bkey;
        const char *bname = backend_of(e, vi);
        if (e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN) {
            const attn_backend *be = attn_find(bname);
            if (!be) continue; /* reported at load */
            uses = be->uses;
        } else {
            /* the layers' backends come from the config without the
             * backend-specific keys; then the config is built with those that apply */
            if (combo_config(e, vi, 0, &cfg, msg, sizeof msg) != 0) {
                char d[300];
                combo_desc(e, vi, d, sizeof d);
                blame(e, vi, msg, &line, &col, &bkey);
                add_err(errs, e->path, line, col, bkey, "%s%s%s%s", d, *d ? ": " : "", msg, "");
                continue;
            }
            for (int l = 0; l < cfg.layers; l++) {
                const attn_backend *be = attn_find(train_layer_backend(&cfg, l));
                if (be) uses |= be->uses;
            }
        }
        for (int a = 0; a < naxes; a++) {
            unsigned u = key_uses(e, e->axes[a].key);
            if (u && !(u & uses)) vi[a] = -1;
        }
        /* the combination as the backend will see it */
        int bad = 0;
        if (e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN) {
            combo_attn(e, vi, &p);
            const attn_backend *be = attn_find(bname);
            char m2[500];
            if (p.seq == 0) {
                add_err(errs, e->path, 1, 1, "seq", "missing: bench attn trials need seq (under params or sweep)");
                bad = 1;
            } else if (attn_params_check_sizes(&p, m2, sizeof m2) != 0 || be->validate(&p, m2, sizeof m2) != 0) {
                snprintf(msg, sizeof msg, "%s", m2);
                bad = 1;
            }
        } else {
            bad = combo_config(e, vi, uses, &cfg, msg, sizeof msg) != 0;
        }
        if (bad) {
            if (!(e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN && p.seq == 0)) {
                char d[300];
                combo_desc(e, vi, d, sizeof d);
                blame(e, vi, msg, &line, &col, &bkey);
                add_err(errs, e->path, line, col, bkey, "%s (%s): %s", bname, d, msg);
            }
            continue;
        }
        if (errs->n) continue; /* keep checking combinations but build no trials */
        if (combo_json(e, vi, &p, uses, json, sizeof json) != 0) {
            add_err(errs, e->path, 1, 1, NULL, "parameters too long to record");
            continue;
        }
        uint64_t h = exp_hash64(json, strlen(json), 0);
        if (!keyset_add(&ks, h)) continue; /* identical to an earlier trial once unused keys are dropped */
        for (int r = 0; r < e->repeat; r++) {
            if (e->ntrials >= EXP_MAX_TRIALS) {
                add_err(errs, e->path, 1, 1, NULL, "the sweep expands to more than %d trials", EXP_MAX_TRIALS);
                too_many = 1;
                break;
            }
            if (e->ntrials == cap) {
                cap *= 2;
                exp_trial *t = realloc(e->trials, (size_t)cap * sizeof *t);
                if (!t) {
                    fprintf(stderr, "error: out of memory expanding the sweep\n");
                    exit(1);
                }
                e->trials = t;
            }
            size_t need = (size_t)(e->ntrials + 1) * (size_t)(naxes ? naxes : 1);
            if (need > vis_cap) {
                vis_cap = need * 2;
                int *nv = realloc(vis, vis_cap * sizeof(int));
                if (!nv) {
                    fprintf(stderr, "error: out of memory expanding the sweep\n");
                    exit(1);
                }
                vis = nv;
            }
            exp_trial *t = &e->trials[e->ntrials];
            memset(t, 0, sizeof *t);
            t->index = e->ntrials;
            memcpy(vis + (size_t)e->ntrials * (size_t)(naxes ? naxes : 1), vi, sizeof(int) * (size_t)naxes);
            t->seed = e->seed + (uint64_t)r;
            exp_hex(t->key, h);
            snprintf(t->backend, sizeof t->backend, "%.*s", (int)sizeof t->backend - 1, bname);
            if (e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN) {
                t->attn = p;
                t->attn.seed = t->seed;
            }
            make_name(e, vi, e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN ? &p : NULL, &cfg, uses,
                      t->name, sizeof t->name);
            e->ntrials++;
        }
    }
    free(ks.keys);
    e->vi_pool = vis;
    for (int i = 0; i < e->ntrials; i++) e->trials[i].vi = vis + (size_t)i * (size_t)(naxes ? naxes : 1);
    if (e->ntrials == 0 && errs->n == 0)
        add_err(errs, e->path, 1, 1, NULL, "no trials: every combination is excluded (check `only` and `exclude`)");
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

int exp_load_string(experiment *e, const char *text, size_t len, const char *path, exp_errors *errs) {
    memset(e, 0, sizeof *e);
    memset(errs, 0, sizeof *errs);
    snprintf(e->path, sizeof e->path, "%s", path);
    e->repeat = 1;
    e->seed = 1;
    e->timing_runs = 5;
    e->timing_warmup = 1;
    if (len > EXP_MAX_FILE) {
        add_err(errs, path, 1, 1, NULL, "file larger than %d bytes; an experiment file is a page or two", EXP_MAX_FILE);
        return -1;
    }
    if (memchr(text, 0, len)) {
        size_t off = (size_t)((const char *)memchr(text, 0, len) - text);
        int line, col;
        offset_mark(text, len, off, &line, &col);
        add_err(errs, path, line, col, NULL, "invalid input: a NUL byte (is this a text file?)");
        return -1;
    }
    e->yaml = mallocCheck(len + 1);
    memcpy(e->yaml, text, len);
    e->yaml[len] = 0;
    e->yaml_len = len;
    exp_hex(e->hash, exp_hash64(text, len, 0));
    int empty = 0;
    ynode *root = yaml_read(text, len, path, errs, &empty);
    if (!root) {
        if (empty && errs->n == 0)
            add_err(errs, path, 1, 1, NULL, "empty experiment file (expected at least name: and params:/sweep:)");
        exp_free(e);
        return -1;
    }
    if (root->type == Y_SCALAR && root->slen == 0) {
        add_err(errs, path, root->line, root->col, NULL, "empty experiment file (expected at least name: and params:/sweep:)");
        ynode_free(root);
        exp_free(e);
        return -1;
    }
    read_top(e, root, errs);
    ynode_free(root);
    if (errs->n == 0 && find_fixed(e, "backend") < 0 && find_axis(e, "backend") < 0 &&
        e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN) {
        /* dense by default, like `routebench attn` */
    }
    if (errs->n == 0) expand(e, errs);
    sort_errs(errs);
    if (errs->n) {
        exp_free(e);
        return -1;
    }
    return 0;
}

int exp_load(experiment *e, const char *path, exp_errors *errs) {
    memset(errs, 0, sizeof *errs);
    memset(e, 0, sizeof *e);
    FILE *f = fopen(path, "rb");
    if (!f) {
        add_err(errs, path, 0, 0, NULL, "cannot open: %s", strerror(errno));
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
            char *nb = realloc(buf, cap);
            if (!nb) {
                fprintf(stderr, "error: out of memory reading %s\n", path);
                exit(1);
            }
            buf = nb;
        }
    }
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        free(buf);
        add_err(errs, path, 0, 0, NULL, "cannot read (is it a directory?)");
        return -1;
    }
    int r = exp_load_string(e, buf, len, path, errs);
    free(buf);
    return r;
}

int exp_trial_params(const experiment *e, const exp_trial *t, exp_assign *out, int max) {
    int n = 0;
    for (int i = 0; i < e->nfixed && n < max; i++) {
        unsigned u = key_uses(e, e->fixed[i].key);
        int applies = 1;
        if (u) {
            /* a fixed backend-specific key applies when some axis of that kind would */
            unsigned uses = 0;
            if (e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN) {
                const attn_backend *be = attn_find(t->backend);
                uses = be ? be->uses : 0;
            } else {
                train_config c;
                char err[8];
                if (combo_config(e, t->vi, 0, &c, err, sizeof err) == 0)
                    for (int l = 0; l < c.layers; l++) {
                        const attn_backend *be = attn_find(train_layer_backend(&c, l));
                        if (be) uses |= be->uses;
                    }
            }
            applies = (u & uses) != 0;
        }
        if (applies) out[n++] = e->fixed[i];
    }
    for (int a = 0; a < e->naxes && n < max; a++) {
        if (t->vi[a] < 0) continue;
        exp_assign *x = &out[n++];
        snprintf(x->key, sizeof x->key, "%s", e->axes[a].key);
        x->val = e->axes[a].values[t->vi[a]];
        x->key_line = e->axes[a].key_line, x->key_col = e->axes[a].key_col;
    }
    return n;
}

int exp_trial_config(const experiment *e, const exp_trial *t, train_config *c, char *err, size_t errlen) {
    if (combo_config(e, t->vi, 0, c, err, errlen) != 0) return -1;
    unsigned uses = 0;
    for (int l = 0; l < c->layers; l++) {
        const attn_backend *be = attn_find(train_layer_backend(c, l));
        if (be) uses |= be->uses;
    }
    if (combo_config(e, t->vi, uses, c, err, errlen) != 0) return -1;
    c->seed = t->seed;
    return 0;
}

int exp_trial_json(const experiment *e, const exp_trial *t, char *out, size_t len) {
    unsigned uses = 0;
    if (e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN) {
        const attn_backend *be = attn_find(t->backend);
        uses = be ? be->uses : 0;
    } else {
        train_config c;
        char err[8];
        if (combo_config(e, t->vi, 0, &c, err, sizeof err) == 0)
            for (int l = 0; l < c.layers; l++) {
                const attn_backend *be = attn_find(train_layer_backend(&c, l));
                if (be) uses |= be->uses;
            }
    }
    return combo_json(e, t->vi, &t->attn, uses, out, len);
}

const char exp_help_text[] =
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
    "  timing:             kind bench: {runs: timed runs (default 5), warmup: untimed runs (default 1)}\n"
    "  params:             fixed parameters, one value each: {backend: routing, heads: 4, ...}\n"
    "  sweep:              axes: a parameter with a list of values, e.g. seq: [1024, 2048];\n"
    "                      axes combine as a Cartesian product; a single value is a fixed parameter\n"
    "    zip:              a mapping of equal-length lists (or a list of such mappings) whose\n"
    "                      axes move together: zip: {seq: [1024, 4096], window: [32, 64]}\n"
    "    exclude:          list of partial assignments to drop: [{backend: dense, seq: 65536}]\n"
    "    only:             list of partial assignments to keep (a combination matching any)\n"
    "Parameters of bench attn trials (names as in `routebench attn`, '-' or '_'):\n"
    "  backend (default dense), seq (required), heads (1), head_dim (64), batch (1),\n"
    "  causal (true), window, clusters (N or auto = round(sqrt(seq))), local_heads, share_qk,\n"
    "  assign (topk|argmax), norm (l2|layernorm), decay (0.999), commit_weight (0), kmeans_iters (3)\n"
    "Parameters of bench model and train trials: the keys of `routebench train` (see its --help):\n"
    "  backend, d_model, layers, heads, seq, batch, steps, lr, task, ... (seed, load, save: not here)\n"
    "A parameter only some backends use (window, clusters, local_heads, share_qk, assign, norm,\n"
    "decay, kmeans_iters, commit_*) is dropped from the trials of backends that do not use it, so\n"
    "it does not multiply their trials. Every problem is reported as FILE:LINE:COL: KEY: message\n"
    "and nothing runs (exit status 2) until the file is clean.\n";
