/* flags.h: the one command-line parser of every subcommand. A command
 * declares a table of its flags (name, type, where the value goes, range,
 * help) and, where it takes them, which parameters of core/util/params.def
 * are flags too (--seq, --d-model, ...: one table for all of them); cli_parse
 * reads argv against it and cli_usage prints the help from it, so a flag's
 * help cannot drift from what is parsed. An unknown flag gets "did you mean"
 * and one line pointing at --help. */
#ifndef RB_CLI_FLAGS_H
#define RB_CLI_FLAGS_H

#include <stddef.h>
#include <stdio.h>

#include "util/params.h"

enum {
    FL_SWITCH, /* no value: *(int *)dst = 1 (or = lo when lo != 0) */
    FL_INT,    /* int in [lo, hi] */
    FL_DOUBLE, /* finite double in [lo, hi] */
    FL_STR,    /* const char * (a non-empty value) */
    FL_CHOICE, /* int index into choices "a|b|c" */
    FL_MULTI,  /* repeatable: each value appended to a cli_multi */
};

#define CLI_MULTI_MAX 64
typedef struct {
    const char *v[CLI_MULTI_MAX];
    int n;
} cli_multi;

typedef struct {
    const char *name;     /* "--repeat" */
    const char *alt;      /* another spelling ("-q") or NULL */
    int type;
    void *dst;
    const char *metavar;  /* "N", "DIR"; NULL for FL_SWITCH */
    double lo, hi;
    const char *choices;  /* FL_CHOICE */
    const char *help;     /* may span lines with "\n" (indented in --help) */
} cli_flag;

/* Which parameter table flags a command takes. */
enum { CLI_PARAMS_NONE = 0, CLI_PARAMS_ATTN = 1, CLI_PARAMS_MODEL = 2 };

typedef struct {
    const char *cmd;        /* "attn": messages say "routebench attn: ..." */
    const char *synopsis;   /* "--backend NAME --seq N [options]" */
    const char *about;      /* paragraph under the usage line; may be NULL */
    const cli_flag *flags;
    int nflags;
    int params;             /* CLI_PARAMS_*: every such parameter is a flag --name VALUE */
    /* Sets parameter d from text (attn_params_set, train_config_set); 0 or
     * -1 with a message. */
    int (*set_param)(void *target, const rb_param *d, const char *text, char *err, size_t errlen);
    void *target;
    const char *positional; /* "FILE.yaml", NULL when the command takes none */
    int min_pos, max_pos;
    const char *epilog;     /* after the options (exit statuses, notes); may be NULL */
    void (*more_help)(FILE *f); /* printed after the epilog (a file format); may be NULL */
} cli_spec;

enum { CLI_OK = 0, CLI_HELP = 1, CLI_BAD = 2 };

/* Parse argv[1..argc) (argv[0] is the command's name). Positional
 * arguments go to pos[0..*npos) (pos has room for spec->max_pos). Returns
 * CLI_OK, CLI_HELP (--help printed on stdout) or CLI_BAD (a message on
 * stderr). A command returns cli_exit(rc) for the last two. */
int cli_parse(const cli_spec *spec, int argc, char **argv, const char **pos, int *npos);
int cli_exit(int rc); /* CLI_HELP -> 0, CLI_BAD -> 2 */
void cli_usage(const cli_spec *spec, FILE *f);

/* "routebench CMD ARGS..." of a command's argv, to record with its results. */
void cli_argv_text(int argc, char **argv, char *out, size_t len);

/* The parameter table's flag for d ("--d-model") into buf. */
const char *cli_param_flag(const rb_param *d, char *buf, size_t len);

/* Model parameters given on the command line of a command that reads a
 * checkpoint (export, analyze): checked at once on a default configuration,
 * remembered as key/value pairs to apply on top of the checkpoint's own
 * (checkpoint_config_with). Use cli_kv_remember as cli_spec.set_param. */
typedef struct {
    void *check;        /* a train_config */
    const char **kv;    /* [2 * n] */
    int n;
} cli_kv;
void cli_kv_init(cli_kv *k, int argc);
int cli_kv_remember(void *target, const rb_param *d, const char *text, char *err, size_t errlen);
void cli_kv_free(cli_kv *k);

#endif
