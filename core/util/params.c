/* params.c: the table of params.def as rb_param rows, and the one set of
 * rules for reading a parameter's value from text and writing it back. */
#include "util/params.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"
#include "util/json.h"

static const rb_param table[] = {
#define PARAM(name, type, where, tfield, lo, hi, autoval, flags, uses, abbr, choices, adef, tdef, help) \
    {#name, type, where, lo, hi, autoval, flags, uses, abbr, choices, adef, tdef, help},
#define ALIAS(old, name)
#include "util/params.def"
#undef PARAM
#undef ALIAS
};

static const struct {
    const char *old, *name;
} aliases[] = {
#define PARAM(...)
#define ALIAS(old, name) {#old, #name},
#include "util/params.def"
#undef PARAM
#undef ALIAS
};

#define NTABLE ((int)(sizeof table / sizeof table[0]))
#define NALIAS ((int)(sizeof aliases / sizeof aliases[0]))

int rb_param_count(void) { return NTABLE; }
const rb_param *rb_param_at(int i) { return i >= 0 && i < NTABLE ? &table[i] : NULL; }
int rb_param_index(const rb_param *d) { return d ? (int)(d - table) : -1; }

/* a == b with '-' read as '_' */
static int same_name(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if ((*a == '-' ? '_' : *a) != (*b == '-' ? '_' : *b)) return 0;
    return *a == *b;
}

const rb_param *rb_param_find(const char *name) {
    if (!name) return NULL;
    for (int i = 0; i < NTABLE; i++)
        if (same_name(table[i].name, name)) return &table[i];
    for (int i = 0; i < NALIAS; i++)
        if (same_name(aliases[i].old, name)) return rb_param_find(aliases[i].name);
    return NULL;
}

const char *rb_param_alias_note(const char *name, char *buf, size_t len) {
    for (int i = 0; i < NALIAS; i++)
        if (same_name(aliases[i].old, name)) {
            snprintf(buf, len, "%s is now spelled %s", aliases[i].old, aliases[i].name);
            return buf;
        }
    return NULL;
}

int rb_param_in_attn(const rb_param *d) { return d->where == W_A || d->where == W_AA || d->where == W_AT; }
int rb_param_in_model(const rb_param *d) { return d->where != W_A; }

const char *rb_param_short(const char *name) {
    const rb_param *d = rb_param_find(name);
    return d && d->abbr[0] ? d->abbr : name;
}

int rb_param_numeric(const rb_param *d) {
    return d->type == PT_INT || d->type == PT_BOOL || d->type == PT_FLOAT || d->type == PT_DOUBLE || d->type == PT_U64;
}

int rb_param_integral(const rb_param *d) {
    return d->type == PT_INT || d->type == PT_BOOL || d->type == PT_ENUM || d->type == PT_U64;
}

/* ---- parsing ---- */

/* Index of word in "a|b|c", or -1. */
static int choice_index(const char *choices, const char *word) {
    int i = 0;
    size_t n = strlen(word);
    for (const char *p = choices; p && *p; i++) {
        size_t l = strcspn(p, "|");
        if (l == n && strncmp(p, word, n) == 0) return i;
        p += l + (p[l] == '|');
    }
    return -1;
}

/* "a or b" / "one of a, b, c" */
static void choices_text(const char *choices, char *out, size_t len) {
    int n = 1;
    for (const char *p = choices; *p; p++) n += *p == '|';
    size_t off = (size_t)snprintf(out, len, "%s", n > 2 ? "one of " : "");
    int i = 0;
    for (const char *p = choices; *p && off < len; i++) {
        size_t l = strcspn(p, "|");
        const char *sep = i == 0 ? "" : (n == 2 ? " or " : ", ");
        off += (size_t)snprintf(out + off, len - off, "%s%.*s", sep, (int)l, p);
        p += l + (p[l] == '|');
    }
}

static int in_range(const rb_param *d, double x) {
    if ((d->flags & PF_OPEN_LO) ? !(x > d->lo) : !(x >= d->lo)) return 0;
    if ((d->flags & PF_OPEN_HI) ? !(x < d->hi) : !(x <= d->hi)) return 0;
    return 1;
}

static int range_fail(const rb_param *d, const char *text, char *err, size_t errlen) {
    char lo[32], hi[32];
    rb_fmt_real(lo, sizeof lo, d->lo, 0);
    rb_fmt_real(hi, sizeof hi, d->hi, 0);
    return rb_fail(err, errlen, "%s is out of range %c%s, %s%c", text, (d->flags & PF_OPEN_LO) ? '(' : '[', lo, hi,
                   (d->flags & PF_OPEN_HI) ? ')' : ']');
}

static int parse_bool(const char *s, long long *out) {
    static const char *const t[] = {"true", "yes", "on", "1", "True", "TRUE", "Yes", "On"};
    static const char *const f[] = {"false", "no", "off", "0", "False", "FALSE", "No", "Off"};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (strcmp(s, t[i]) == 0) return *out = 1, 0;
        if (strcmp(s, f[i]) == 0) return *out = 0, 0;
    }
    return -1;
}

static int parse_integer(const rb_param *d, const char *s, rb_pval *v, char *err, size_t errlen) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s || *end)
        return rb_fail(err, errlen, "expected an integer%s, got '%s'", (d->flags & PF_AUTO) ? " or auto" : "", s);
    if ((d->flags & PF_AUTO) && x == d->autoval && errno == 0) return v->i = x, 0;
    if (errno == ERANGE || !in_range(d, (double)x)) return range_fail(d, s, err, errlen);
    v->i = x;
    return 0;
}

static int parse_real(const rb_param *d, const char *s, rb_pval *v, char *err, size_t errlen) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || *end || !isfinite(x) || isspace((unsigned char)*s))
        return rb_fail(err, errlen, "expected a number%s, got '%s'", (d->flags & PF_AUTO) ? " or auto" : "", s);
    if ((d->flags & PF_AUTO) && x == (double)d->autoval) return v->f = x, 0;
    if (errno == ERANGE && x != 0) return range_fail(d, s, err, errlen);
    if (!in_range(d, x)) return range_fail(d, s, err, errlen);
    v->f = x;
    return 0;
}

static int parse_u64(const char *s, rb_pval *v, char *err, size_t errlen) {
    char *end;
    errno = 0;
    if (!*s || *s == '-' || *s == '+' || isspace((unsigned char)*s))
        return rb_fail(err, errlen, "expected a non-negative integer, got '%s'", s);
    unsigned long long x = strtoull(s, &end, 10);
    if (*end || errno == ERANGE) return rb_fail(err, errlen, "expected a non-negative integer, got '%s'", s);
    v->u = x;
    return 0;
}

int rb_param_parse(const rb_param *d, const char *s, rb_pval *v, char *err, size_t errlen) {
    memset(v, 0, sizeof *v);
    v->s = s;
    if (!s) return rb_fail(err, errlen, "missing value");
    int text = d->type == PT_STR || d->type == PT_BACKENDS;
    if (!*s && !text) return rb_fail(err, errlen, "missing value");
    if ((d->flags & PF_AUTO) && strcmp(s, "auto") == 0) {
        v->i = d->autoval, v->f = (double)d->autoval;
        return 0;
    }
    char what[160];
    switch (d->type) {
    case PT_INT: return parse_integer(d, s, v, err, errlen);
    case PT_BOOL:
        if (parse_bool(s, &v->i) == 0) return 0;
        if ((d->flags & PF_AUTO) && d->autoval == -1 && strcmp(s, "-1") == 0) return v->i = -1, 0; /* older files */
        return rb_fail(err, errlen, "expected true or false%s, got '%s'", (d->flags & PF_AUTO) ? " or auto" : "", s);
    case PT_ENUM:
    case PT_ENUMSTR:
        v->i = choice_index(d->choices, s);
        if (v->i >= 0) return 0;
        choices_text(d->choices, what, sizeof what);
        return rb_fail(err, errlen, "expected %s, got '%s'", what, s);
    case PT_FLOAT:
    case PT_DOUBLE: return parse_real(d, s, v, err, errlen);
    case PT_U64: return parse_u64(s, v, err, errlen);
    default: return 0; /* STR, BACKEND(S): any text */
    }
}

int rb_param_parse_default(const rb_param *d, const char *text, rb_pval *v) {
    rb_param wide = *d;
    wide.lo = -HUGE_VAL, wide.hi = HUGE_VAL;
    wide.flags &= ~(unsigned)(PF_OPEN_LO | PF_OPEN_HI);
    return rb_param_parse(&wide, text, v, NULL, 0);
}

int rb_param_put(const rb_param *d, void *field, size_t size, const rb_pval *v) {
    switch (d->type) {
    case PT_INT:
    case PT_BOOL:
    case PT_ENUM: *(int *)field = (int)v->i; return 0;
    case PT_FLOAT: *(float *)field = (float)v->f; return 0;
    case PT_DOUBLE: *(double *)field = v->f; return 0;
    case PT_U64: *(uint64_t *)field = v->u; return 0;
    default:
        if (strlen(v->s) >= size) return -1;
        memcpy(field, v->s, strlen(v->s) + 1);
        return 0;
    }
}

/* The i-th word of "a|b|c" into out ("?" when out of range). */
static void choice_word(const char *choices, long long i, char *out, size_t len) {
    const char *p = choices;
    for (long long k = 0; p && *p; k++) {
        size_t l = strcspn(p, "|");
        if (k == i) {
            snprintf(out, len, "%.*s", (int)l, p);
            return;
        }
        p += l + (p[l] == '|');
    }
    snprintf(out, len, "?");
}

void rb_param_format(const rb_param *d, const void *field, int fmt, char *out, size_t len) {
    int autos = (d->flags & PF_AUTO) && fmt == RB_FMT_TEXT;
    switch (d->type) {
    case PT_INT:
    case PT_BOOL: {
        int x = *(const int *)field;
        if (autos && x == d->autoval) snprintf(out, len, "auto");
        else if (d->type == PT_BOOL && fmt == RB_FMT_TEXT) snprintf(out, len, "%s", x ? "true" : "false");
        else snprintf(out, len, "%d", x);
        return;
    }
    case PT_ENUM: choice_word(d->choices, *(const int *)field, out, len); return;
    case PT_FLOAT:
    case PT_DOUBLE: {
        double x = d->type == PT_FLOAT ? (double)*(const float *)field : *(const double *)field;
        if (autos && x == (double)d->autoval) snprintf(out, len, "auto");
        else if (fmt == RB_FMT_KEY) snprintf(out, len, "%.9g", x);
        else rb_fmt_real(out, len, x, d->type == PT_FLOAT);
        return;
    }
    case PT_U64: snprintf(out, len, "%llu", (unsigned long long)*(const uint64_t *)field); return;
    default: snprintf(out, len, "%s", (const char *)field); return;
    }
}

/* ---- names ---- */

int rb_levenshtein(const char *a, const char *b) {
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

const char *rb_closest(const char *key, const char *const *cands, int n) {
    const char *best = NULL;
    int bd = 1000;
    for (int i = 0; i < n; i++) {
        int d = rb_levenshtein(key, cands[i]);
        if (d < bd) bd = d, best = cands[i];
    }
    int lim = (int)strlen(key) / 3 + 1;
    return bd <= RB_MAX(lim, 2) ? best : NULL;
}
