/* experiment.h: an experiment file (YAML) read into a validated spec and
 * expanded into the list of trials the runner executes. Reading keeps the
 * line and column of every scalar so that each problem (unknown key, wrong
 * type, empty list, a combination a backend refuses) is reported as
 * file:line:column with the key; all problems are collected and reported
 * together, before anything runs. The file layout and every key is described
 * in exp_help_text (printed by `routebench run --help`) and in
 * results/README.md.
 *
 * Expansion: every list under `sweep` is an axis; axes combine as a Cartesian
 * product, a `zip` group moves its axes together, `exclude`/`only` filter
 * combinations. Parameters a backend does not use (attn_backend.uses) are
 * dropped from its trials, and trials that became identical are merged, so
 * such an axis does not multiply that backend's trials. Each combination runs
 * once per seed (`repeat`). */
#ifndef RB_EXPERIMENT_H
#define RB_EXPERIMENT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "attn/attn.h"
#include "model/train.h"

#define EXP_KEY_LEN 32      /* longest parameter name + 1 */
#define EXP_VAL_LEN 128     /* longest scalar value + 1 */
#define EXP_MAX_AXES 32
#define EXP_MAX_VALUES 1024 /* values on one axis */
#define EXP_MAX_FIXED 96
#define EXP_MAX_TRIALS 100000
#define EXP_MAX_REPEAT 1000
#define EXP_MAX_ERRORS 64   /* problems reported before giving up */
#define EXP_MAX_NOTES 8     /* notes (old spellings) kept */

enum { EXP_KIND_BENCH = 0, EXP_KIND_TRAIN = 1, EXP_KIND_ANALYZE = 2 /* train, then core/model/analyze.h */ };
enum { EXP_BENCH_ATTN = 0, EXP_BENCH_MODEL = 1 };

/* One scalar as written in the file, with its position (1-based). */
typedef struct {
    char s[EXP_VAL_LEN];
    int quoted; /* written in quotes: a string, never a number */
    int line, col;
} exp_scalar;

/* One parameter with one value (a fixed parameter, a filter entry). */
typedef struct {
    char key[EXP_KEY_LEN];
    exp_scalar val;
    int key_line, key_col;
} exp_assign;

typedef struct {
    char key[EXP_KEY_LEN];
    int key_line, key_col;
    int nvalues;
    exp_scalar *values;
    int group; /* zip group (axes of one group move together), or -1 */
} exp_axis;

/* A partial assignment under exclude/only: matches a combination when every
 * listed parameter has the listed value. */
typedef struct {
    int n;
    exp_assign *a;
    int line, col;
} exp_filter;

/* One expanded trial. Its parameters are rebuilt on demand from vi (value
 * index per axis, -1 where the axis does not apply to the trial's backend). */
typedef struct {
    int index;          /* position in the expanded order (shards use index % N) */
    int *vi;            /* [naxes] */
    uint64_t seed;
    char key[17];       /* hex hash of the resolved parameters without the seed */
    char name[160];     /* readable: routing-n4096-k64-w64 */
    char backend[TRAIN_NAME_LEN];
    attn_params attn;   /* bench attn: resolved parameters (seed set) */
} exp_trial;

typedef struct {
    char path[512];
    char *yaml;         /* the file as written (NUL-terminated) */
    size_t yaml_len;
    char hash[17];      /* hex hash of yaml */
    char name[64];
    char description[512];
    int kind;           /* EXP_KIND_* */
    int bench;          /* EXP_BENCH_* (kind bench) */
    int repeat;         /* seeds per combination */
    uint64_t seed;      /* first seed */
    int timing_runs, timing_warmup; /* bench: timed runs (at least) and untimed warm-up runs */
    double timeout_s; /* per-trial time limit, seconds (0: none) */
    double timing_min_time, timing_max_time; /* bench: seconds of timed runs at least / at most (util/measure.h) */
    int nfixed;
    exp_assign fixed[EXP_MAX_FIXED];
    int naxes;
    exp_axis axes[EXP_MAX_AXES];
    int nexclude, nonly;
    exp_filter *exclude, *only;
    int ntrials;
    exp_trial *trials;
    int *vi_pool;
    char overrides[2048]; /* the --set overrides, "k=v; sweep.k=[...]" ("" = none) */
    int nnotes;         /* things worth saying that are not problems (old spellings) */
    char notes[EXP_MAX_NOTES][800];
} experiment;

/* Collected problems: "file:line:col: key: message" lines. */
typedef struct {
    int n, dropped;
    char msg[EXP_MAX_ERRORS][384];
    int line[EXP_MAX_ERRORS], col[EXP_MAX_ERRORS];
} exp_errors;

/* Read, validate and expand the file at path. 0 on success; -1 with every
 * problem in errs (nothing allocated is left in e). */
int exp_load(experiment *e, const char *path, exp_errors *errs);
/* The same from a string (tests); path is only used in messages. */
int exp_load_string(experiment *e, const char *text, size_t len, const char *path, exp_errors *errs);
/* The same with --set overrides (KEY=VALUE, params.KEY=VALUE,
 * sweep.KEY=[...], timing.KEY=N, or a top-level key) applied to the file's
 * tree before it is read, so they are checked as the file is; problems in
 * one are reported as "FILE: --set N: KEY: message". e->overrides records
 * them. */
int exp_load_sets(experiment *e, const char *path, const char *const *sets, int nsets, exp_errors *errs);
int exp_load_string_sets(experiment *e, const char *text, size_t len, const char *path, const char *const *sets,
                         int nsets, exp_errors *errs);
void exp_free(experiment *e);
void exp_errors_print(const exp_errors *errs, FILE *f);

/* Build the train_config of a model-bench or train trial (set and checked).
 * 0, or -1 with a message. */
int exp_trial_config(const experiment *e, const exp_trial *t, train_config *c, char *err, size_t errlen);

/* Canonical text of the resolved parameters (what the key hashes), e.g.
 * {"kind":"bench","bench":"attn","backend":"dense","seq":256,...}: JSON. */
int exp_trial_json(const experiment *e, const exp_trial *t, char *out, size_t len);

/* Model parameters from a YAML file for `routebench train --config`: a
 * mapping of parameter: value (the keys of experiment files' train trials,
 * plus the per-run ones: seed, load, save, ...), or such a mapping under
 * `params:`, applied to c in file order. Every problem goes to errs as
 * FILE:LINE:COL: KEY: message. 0, or -1. */
int exp_train_config_file(const char *path, train_config *c, exp_errors *errs);
/* The same from len bytes of text (path only names it in messages). */
int exp_train_config_string(const char *text, size_t len, const char *path, train_config *c, exp_errors *errs);

/* "bench" / "train" and "attn" / "model" */
const char *exp_kind_name(int kind);
const char *exp_bench_name(int bench);

/* The documentation of the file format, with every parameter of the
 * table for each kind of trial (for `routebench run --help`). */
void exp_help(FILE *f);

#endif
