/* flags.c: see flags.h. */
#include "cli/flags.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/train.h"
#include "util/common.h"
#include "util/status.h"

const char *cli_param_flag(const rb_param *d, char *buf, size_t len) {
    snprintf(buf, len, "--%s", d->name);
    for (char *c = buf + 2; *c; c++)
        if (*c == '_') *c = '-';
    return buf;
}

void cli_argv_text(int argc, char **argv, char *out, size_t len) {
    size_t off = 0;
    if (len) out[0] = 0;
    for (int i = 0; i < argc && off < len; i++)
        off += (size_t)snprintf(out + off, len - off, "%s%s", i ? " " : "routebench ", argv[i]);
}

static int takes_param(const cli_spec *s, const rb_param *d) {
    if (s->params == CLI_PARAMS_ATTN) return rb_param_in_attn(d);
    if (s->params == CLI_PARAMS_MODEL) return rb_param_in_model(d);
    return 0;
}

/* ---- help ---- */

static const char *param_metavar(const rb_param *d, char *buf, size_t len) {
    const char *auto_ = (d->flags & PF_AUTO) ? "|auto" : "";
    switch (d->type) {
    case PT_INT: snprintf(buf, len, "N%s", auto_); break;
    case PT_BOOL: snprintf(buf, len, "[true|false%s]", auto_); break;
    case PT_ENUM:
    case PT_ENUMSTR: snprintf(buf, len, "%s", d->choices); break;
    case PT_FLOAT:
    case PT_DOUBLE: snprintf(buf, len, "X%s", auto_); break;
    case PT_U64: snprintf(buf, len, "N"); break;
    case PT_BACKEND: snprintf(buf, len, "NAME"); break;
    case PT_BACKENDS: snprintf(buf, len, "A,B,..."); break;
    default: snprintf(buf, len, "TEXT"); break;
    }
    return buf;
}

/* "  --flag META" padded to 24 columns, then help lines aligned under it. */
static void help_line(FILE *f, const char *flag, const char *meta, const char *help) {
    char left[96];
    snprintf(left, sizeof left, "  %s%s%s", flag, meta ? " " : "", meta ? meta : "");
    if (strlen(left) >= 24) fprintf(f, "%s\n%24s", left, "");
    else fprintf(f, "%-24s", left);
    for (const char *p = help; *p;) {
        size_t n = strcspn(p, "\n");
        fprintf(f, "%.*s\n", (int)n, p);
        p += n;
        if (*p == '\n' && *++p) fprintf(f, "%24s", "");
    }
}

void cli_usage(const cli_spec *s, FILE *f) {
    fprintf(f, "usage: routebench %s %s\n", s->cmd, s->synopsis ? s->synopsis : "[options]");
    if (s->about) fprintf(f, "%s\n", s->about);
    fprintf(f, "\noptions:\n");
    for (int i = 0; i < s->nflags; i++) {
        const cli_flag *fl = &s->flags[i];
        char name[64];
        snprintf(name, sizeof name, "%s%s%s", fl->name, fl->alt ? ", " : "", fl->alt ? fl->alt : "");
        help_line(f, name, fl->type == FL_SWITCH ? NULL : fl->metavar, fl->help);
    }
    if (s->params) fprintf(f, "\nparameters (core/util/params.def; also keys of experiment files):\n");
    for (int i = 0; s->params && i < rb_param_count(); i++) {
        const rb_param *d = rb_param_at(i);
        if (!takes_param(s, d)) continue;
        char flag[64], meta[64], help[512];
        const char *def = s->params == CLI_PARAMS_ATTN ? d->adef : d->tdef;
        if (*def) snprintf(help, sizeof help, "%s (default %s)", d->help, def);
        else snprintf(help, sizeof help, "%s", d->help);
        help_line(f, cli_param_flag(d, flag, sizeof flag), param_metavar(d, meta, sizeof meta), help);
    }
    help_line(f, "--help, -h", NULL, "this text");
    if (s->epilog) fprintf(f, "\n%s", s->epilog);
    if (s->more_help) fprintf(f, "\n"), s->more_help(f);
}

int cli_exit(int rc) { return rc == CLI_HELP ? RB_EXIT_OK : RB_EXIT_USAGE; }

/* ---- parsing ---- */

static int bad(const cli_spec *s, const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "routebench %s: ", s->cmd);
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n`routebench %s --help` lists the options\n", s->cmd);
    return CLI_BAD;
}

static const cli_flag *find_flag(const cli_spec *s, const char *arg) {
    for (int i = 0; i < s->nflags; i++)
        if (strcmp(s->flags[i].name, arg) == 0 || (s->flags[i].alt && strcmp(s->flags[i].alt, arg) == 0))
            return &s->flags[i];
    return NULL;
}

static const rb_param *find_param(const cli_spec *s, const char *arg) {
    if (!s->params || strncmp(arg, "--", 2) != 0) return NULL;
    const rb_param *d = rb_param_find(arg + 2);
    return d && takes_param(s, d) ? d : NULL;
}

static int unknown(const cli_spec *s, const char *arg) {
    const char *cands[256];
    char names[128][64];
    int n = 0;
    for (int i = 0; i < s->nflags && n < 256; i++) cands[n++] = s->flags[i].name;
    for (int i = 0; s->params && i < rb_param_count() && n < 128; i++)
        if (takes_param(s, rb_param_at(i))) cands[n] = cli_param_flag(rb_param_at(i), names[n], 64), n++;
    const char *sug = rb_closest(arg, cands, n);
    if (sug) return bad(s, "unknown option '%s' (did you mean '%s'?)", arg, sug);
    return bad(s, "unknown option '%s'%s", arg, "");
}

static int set_flag(const cli_spec *s, const cli_flag *fl, const char *val) {
    char *end;
    if (fl->type == FL_STR) {
        if (!*val) return bad(s, "%s needs a non-empty %s", fl->name, fl->metavar ? fl->metavar : "value");
        *(const char **)fl->dst = val;
        return CLI_OK;
    }
    if (fl->type == FL_MULTI) {
        cli_multi *m = fl->dst;
        if (m->n == CLI_MULTI_MAX) return bad(s, "%s: at most %s times", fl->name, "64");
        m->v[m->n++] = val;
        return CLI_OK;
    }
    if (fl->type == FL_CHOICE) {
        int idx = 0;
        for (const char *p = fl->choices; *p; idx++) {
            size_t l = strcspn(p, "|");
            if (strlen(val) == l && strncmp(p, val, l) == 0) return *(int *)fl->dst = idx, CLI_OK;
            p += l + (p[l] == '|');
        }
        fprintf(stderr, "routebench %s: %s must be one of %s (got '%s')\n", s->cmd, fl->name, fl->choices, val);
        return CLI_BAD;
    }
    errno = 0;
    double x = fl->type == FL_INT ? (double)strtoll(val, &end, 10) : strtod(val, &end);
    if (end == val || *end || errno == ERANGE || !isfinite(x)) {
        fprintf(stderr, "routebench %s: %s: '%s' is not %s\n", s->cmd, fl->name, val,
                fl->type == FL_INT ? "an integer" : "a number");
        return CLI_BAD;
    }
    if (x < fl->lo || x > fl->hi) {
        fprintf(stderr, "routebench %s: %s: %s is out of range [%.17g, %.17g]\n", s->cmd, fl->name, val, fl->lo, fl->hi);
        return CLI_BAD;
    }
    if (fl->type == FL_INT) *(int *)fl->dst = (int)x;
    else *(double *)fl->dst = x;
    return CLI_OK;
}

/* A parameter flag at argv[*i]: a bool takes a following true/false/auto,
 * or stands alone for true; --no-NAME is false. Others take one value. */
static int set_param(const cli_spec *s, const rb_param *d, int argc, char **argv, int *i, int negated) {
    char err[512];
    const char *val = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (d->type == PT_BOOL) {
        rb_pval v;
        if (negated) val = "false";
        else if (val && rb_param_parse(d, val, &v, NULL, 0) == 0) (*i)++;
        else val = "true";
    } else {
        if (!val) return bad(s, "%s needs a value%s", argv[*i], "");
        (*i)++;
    }
    if (s->set_param(s->target, d, val, err, sizeof err) != 0) {
        fprintf(stderr, "routebench %s: %s\n", s->cmd, err);
        return CLI_BAD;
    }
    return CLI_OK;
}

int cli_parse(const cli_spec *s, int argc, char **argv, const char **pos, int *npos) {
    int np = 0, only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
            cli_usage(s, stdout);
            return CLI_HELP;
        }
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (only_pos || a[0] != '-' || !a[1]) {
            if (np >= s->max_pos) {
                if (!s->positional) return bad(s, "unexpected argument '%s'%s", a, "");
                return bad(s, "unexpected argument '%s' (takes %s)", a, s->positional);
            }
            pos[np++] = a;
            continue;
        }
        const cli_flag *fl = find_flag(s, a);
        const rb_param *d = fl ? NULL : find_param(s, a);
        int negated = 0;
        if (!fl && !d && strncmp(a, "--no-", 5) == 0 && s->params) {
            char plain[128];
            snprintf(plain, sizeof plain, "--%s", a + 5);
            d = find_param(s, plain);
            negated = d && d->type == PT_BOOL;
            if (!negated) d = NULL;
        }
        int rc = CLI_OK;
        if (d) rc = set_param(s, d, argc, argv, &i, negated);
        else if (!fl) rc = unknown(s, a);
        else if (fl->type == FL_SWITCH) *(int *)fl->dst = fl->lo != 0 ? (int)fl->lo : 1;
        else if (i + 1 >= argc) rc = bad(s, "%s needs %s", a, fl->metavar ? fl->metavar : "a value");
        else rc = set_flag(s, fl, argv[++i]);
        if (rc != CLI_OK) return rc;
    }
    if (np < s->min_pos) return bad(s, "missing %s%s", s->positional ? s->positional : "argument", "");
    if (npos) *npos = np;
    return CLI_OK;
}

/* ---- parameters applied over a checkpoint's configuration ---- */

void cli_kv_init(cli_kv *k, int argc) {
    train_config *c = mallocCheck(sizeof *c);
    train_config_default(c);
    k->check = c;
    k->kv = mallocCheck((size_t)(2 * argc + 2) * sizeof *k->kv);
    k->n = 0;
}

int cli_kv_remember(void *target, const rb_param *d, const char *text, char *err, size_t errlen) {
    cli_kv *k = target;
    if (train_config_set(k->check, d->name, text, err, errlen) != 0) return -1; /* refused now, not later */
    k->kv[2 * k->n] = d->name, k->kv[2 * k->n + 1] = text, k->n++;
    return 0;
}

void cli_kv_free(cli_kv *k) {
    free(k->check), free(k->kv);
    memset(k, 0, sizeof *k);
}
