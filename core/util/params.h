/* params.h: the parameter table (params.def) as data: names, types, ranges,
 * defaults, which backends read each one, short names and help; parsing a
 * value from text with one set of rules and messages; formatting it back.
 * Where a parameter lives (attn_params, train_config) is known by the layers
 * that own those structs (core/attn/attn.c, core/model/train.c), which turn
 * the table into setters and getters; everything else (flags, experiment
 * files, trial keys and names, database columns, report labels) reads the
 * table through this header. */
#ifndef RB_PARAMS_H
#define RB_PARAMS_H

#include <stddef.h>
#include <stdint.h>

/* Which parameters a backend reads (attn_backend.uses; params.def's uses
 * column). A sweep axis over a parameter no backend of a trial reads does
 * not multiply its trials, and is left out of its key and columns. */
enum {
    ATTN_USES_WINDOW = 1 << 0,
    ATTN_USES_CLUSTERS = 1 << 1,
    ATTN_USES_LOCAL_HEADS = 1 << 2,
    ATTN_USES_SHARE_QK = 1 << 3,
    ATTN_USES_ASSIGN = 1 << 4,
    ATTN_USES_NORM = 1 << 5,
    ATTN_USES_KMEANS = 1 << 6, /* decay, kmeans_iters, commit_weight */
    ATTN_USES_LOCAL_WINDOW = 1 << 7, /* hybrid's local heads; in a model also its local layers */
    ATTN_USES_STRIDE = 1 << 8, /* strided: stride, strided_heads */
    ATTN_USES_HASH = 1 << 9,   /* lsh: hashes, buckets */
    ATTN_USES_LSH_HEADS = 1 << 10, /* hybrid's lsh heads */
};

enum {
    PT_INT, PT_BOOL, PT_ENUM, PT_FLOAT, PT_DOUBLE, PT_U64, PT_STR, PT_ENUMSTR, PT_BACKEND, PT_BACKENDS
};

enum { W_A, W_AA, W_AT, W_T, W_SEL };

enum {
    PF_AUTO = 1 << 0,    /* "auto" (and the autoval number) stand for autoval */
    PF_OPEN_LO = 1 << 1, /* lo itself is out of range */
    PF_OPEN_HI = 1 << 2, /* hi itself is out of range */
    PF_NOSWEEP = 1 << 3, /* per run: not in experiment files */
    PF_COLUMN = 1 << 4,  /* a column of the trials table */
    PF_NEWKEY = 1 << 5,  /* in a bench-attn trial key only when not at its default */
};

typedef struct {
    const char *name;
    int type, where;
    double lo, hi;
    long long autoval;
    unsigned flags, uses;
    const char *abbr;      /* "" = none */
    const char *choices;   /* "a|b" or NULL */
    const char *adef, *tdef;
    const char *help;
} rb_param;

int rb_param_count(void);
const rb_param *rb_param_at(int i);
int rb_param_index(const rb_param *d);
/* By name: dashes and underscores alike, old spellings (ALIAS lines) too.
 * NULL when unknown. */
const rb_param *rb_param_find(const char *name);
/* When name is an old spelling: "commit_beta is now commit_weight". */
const char *rb_param_alias_note(const char *name, char *buf, size_t len);
/* 1 when the parameter exists for one attention layer / for a model. */
int rb_param_in_attn(const rb_param *d);
int rb_param_in_model(const rb_param *d);
/* Short name for labels: abbr, or the name when it has none. */
const char *rb_param_short(const char *name);

/* A parsed value. */
typedef struct {
    long long i;      /* INT, BOOL, ENUM */
    double f;         /* FLOAT, DOUBLE */
    uint64_t u;       /* U64 */
    const char *s;    /* STR, ENUMSTR, BACKEND(S): points into the text parsed */
} rb_pval;

/* Parse text by d's type and range. 0, or -1 with a message that does not
 * repeat the parameter's name ("expected an integer, got 'x'"). Backend
 * names are not checked here (util does not know the registry). */
int rb_param_parse(const rb_param *d, const char *text, rb_pval *v, char *err, size_t errlen);

/* The same without the range (defaults such as seq 0 = "to be set"). */
int rb_param_parse_default(const rb_param *d, const char *text, rb_pval *v);

/* Store v into a field of d's C type (int, float, double, uint64_t, or a
 * char[size] for the text types). -1 when a text does not fit. */
int rb_param_put(const rb_param *d, void *field, size_t size, const rb_pval *v);

/* The field's value as text. RB_FMT_TEXT: what a user writes (auto, topk,
 * true, the shortest number that reads back); RB_FMT_KEY: the form trial
 * keys were first hashed from (integers and booleans as integers, reals with
 * %.9g, enums by name), which must never change. */
enum { RB_FMT_TEXT = 0, RB_FMT_KEY = 1 };
void rb_param_format(const rb_param *d, const void *field, int fmt, char *out, size_t len);
/* 1 when the value is a number in JSON (and in SQL: INTEGER or REAL). */
int rb_param_numeric(const rb_param *d);
/* 1 for the types stored as integers (INT, BOOL, ENUM, U64). */
int rb_param_integral(const rb_param *d);

/* Edit distance (for "did you mean"), capped: strings over 64 bytes give 1000. */
int rb_levenshtein(const char *a, const char *b);
/* The closest of cands[0..n) to key when it is close enough, else NULL. */
const char *rb_closest(const char *key, const char *const *cands, int n);

#endif
