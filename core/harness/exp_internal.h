/* exp_internal.h: what the three files behind experiment.h share, and
 * nothing outside core/harness includes: yamltree.c (libyaml into a tree
 * that keeps positions), experiment.c (the tree into a validated spec) and
 * expand.c (the spec into trials, their keys, names and configurations). */
#ifndef RB_EXP_INTERNAL_H
#define RB_EXP_INTERNAL_H

#include <stddef.h>

#include "harness/experiment.h"
#include "util/params.h"

#define EXP_MAX_FILE (1 << 20) /* an experiment file is a page or two */
#define EXP_MAX_DEPTH 16
#define EXP_MAX_NODES 100000
#define EXP_MAX_COMBOS 10000000L /* before filtering; the trial cap applies after */

/* ---- the YAML tree (yamltree.c) ---- */

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

/* Parse text into a tree. NULL on error (reported in errs); *empty = 1 for a
 * file with no document. */
ynode *yt_read(const char *text, size_t len, const char *path, exp_errors *errs, int *empty);
void yt_free(ynode *n);
const char *yt_type_name(const ynode *n); /* "a scalar", "a list", "a mapping" */
/* Building and editing a tree (the --set overrides): a new node (text for a
 * scalar), a child appended, the index of key in a mapping (-1), and the
 * removal of the key/value pair at index i. */
ynode *yt_new(int type, const char *text);
void yt_add(ynode *parent, ynode *child);
int yt_map_find(const ynode *map, const char *key);
void yt_map_remove(ynode *map, int i);
/* Line and column (1-based) of a byte offset. */
void yt_offset_mark(const char *text, size_t len, size_t off, int *line, int *col);

/* ---- problems (experiment.c) ---- */

void exp_add_err(exp_errors *errs, const char *path, int line, int col, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* ---- parameters in this experiment's context (experiment.c) ---- */

/* 1 for bench-attn experiments (trials are one attention layer). */
int exp_attn_trials(const experiment *e);
/* The table row of key when it is a parameter of this experiment's trials
 * (it may still be one not allowed in files: PF_NOSWEEP); NULL otherwise. */
const rb_param *exp_param(const experiment *e, const char *key);
/* Which backends read key (ATTN_USES_* bits; 0 = every backend). */
unsigned exp_key_uses(const experiment *e, const char *key);
/* Normal form of a value for comparison and trial keys: integers as
 * integers, other numbers %.9g, booleans of boolean parameters 0/1. */
void exp_norm_value(const experiment *e, const char *key, const char *s, char *out, size_t len);
int exp_find_fixed(const experiment *e, const char *key);
int exp_find_axis(const experiment *e, const char *key);

/* ---- --set overrides (overrides.c) ---- */

/* Apply sets[0..n) (KEY=VALUE, params.KEY=VALUE, sweep.KEY=[...],
 * timing.runs=N, or a top-level key: repeat=3) to the tree of the file.
 * Nodes they bring carry line -(i+1), so problems found in them later are
 * reported as "--set i+1". 0, or -1 with problems in errs. */
int exp_apply_sets(ynode *root, const char *const *sets, int n, const char *path, exp_errors *errs);

/* ---- the sweep into trials (expand.c) ---- */

void exp_expand(experiment *e, exp_errors *errs);

#endif
