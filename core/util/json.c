/* json.c: see json.h. The reader is a recursive-descent parser over a byte
 * range (no NUL needed), depth-limited, that reports the line and column of
 * the first error. */
#include "util/json.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- writer ---- */

void rb_jw_init_buf(rb_jw *w, char *buf, size_t len) {
    memset(w, 0, sizeof *w);
    w->buf = buf, w->len = len;
    if (len) buf[0] = 0;
}

void rb_jw_init_file(rb_jw *w, FILE *f) {
    memset(w, 0, sizeof *w);
    w->f = f;
}

static void emit(rb_jw *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(rb_jw *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (!w->buf) {
        vfprintf(w->f, fmt, ap);
    } else if (!w->overflow) {
        size_t room = w->len > w->off ? w->len - w->off : 0;
        int n = vsnprintf(w->buf + w->off, room, fmt, ap);
        if (n < 0 || (size_t)n >= room) {
            w->overflow = 1;
            if (w->len) w->buf[w->off < w->len ? w->off : w->len - 1] = 0;
        } else {
            w->off += (size_t)n;
        }
    }
    va_end(ap);
}

/* Before a value: the comma between items, unless a key just went out. */
static void sep(rb_jw *w) {
    if (w->after_key) {
        w->after_key = 0;
        return;
    }
    if (w->depth > 0 && w->need_comma[w->depth - 1]) emit(w, ",");
    if (w->depth > 0) w->need_comma[w->depth - 1] = 1;
}

static void jw_open(rb_jw *w, char c) {
    sep(w);
    emit(w, "%c", c);
    if (w->depth >= RB_JW_MAX_DEPTH) {
        w->overflow = 1;
        return;
    }
    w->need_comma[w->depth++] = 0;
}

static void jw_close(rb_jw *w, char c) {
    if (w->depth > 0) w->depth--;
    emit(w, "%c", c);
}

void rb_jw_obj(rb_jw *w) { jw_open(w, '{'); }
void rb_jw_obj_end(rb_jw *w) { jw_close(w, '}'); }
void rb_jw_arr(rb_jw *w) { jw_open(w, '['); }
void rb_jw_arr_end(rb_jw *w) { jw_close(w, ']'); }

static void quoted(rb_jw *w, const char *s) {
    emit(w, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') emit(w, "\\%c", *p);
        else if (*p == '\n') emit(w, "\\n");
        else if (*p == '\t') emit(w, "\\t");
        else if (*p < 0x20) emit(w, "\\u%04x", *p);
        else emit(w, "%c", *p);
    }
    emit(w, "\"");
}

void rb_jw_key(rb_jw *w, const char *k) {
    sep(w);
    quoted(w, k);
    emit(w, ":");
    w->after_key = 1;
}

void rb_jw_str(rb_jw *w, const char *s) {
    sep(w);
    quoted(w, s ? s : "");
}

void rb_jw_int(rb_jw *w, long long x) {
    sep(w);
    emit(w, "%lld", x);
}

void rb_jw_u64(rb_jw *w, uint64_t x) {
    sep(w);
    emit(w, "%llu", (unsigned long long)x);
}

void rb_fmt_real(char *out, size_t len, double x, int as_float) {
    if (!isfinite(x)) {
        snprintf(out, len, "%s", isnan(x) ? "nan" : x > 0 ? "inf" : "-inf");
        return;
    }
    int lo = as_float ? 6 : 15, hi = as_float ? 9 : 17;
    for (int p = lo; p <= hi; p++) {
        snprintf(out, len, "%.*g", p, x);
        if (as_float ? strtof(out, NULL) == (float)x : strtod(out, NULL) == x) return;
    }
}

/* A number, in the shortest form that reads back as the same double (or
 * float, as_float), null when not finite. */
static void jw_number(rb_jw *w, double x, int as_float) {
    char b[40];
    sep(w);
    if (!isfinite(x)) {
        emit(w, "null");
        return;
    }
    rb_fmt_real(b, sizeof b, x, as_float);
    emit(w, "%s", b);
}

void rb_jw_real(rb_jw *w, double x) { jw_number(w, x, 0); }

void rb_jw_float(rb_jw *w, float x) { jw_number(w, x, 1); }

void rb_jw_bool(rb_jw *w, int b) {
    sep(w);
    emit(w, "%s", b ? "true" : "false");
}

void rb_jw_null(rb_jw *w) {
    sep(w);
    emit(w, "null");
}

void rb_jw_raw(rb_jw *w, const char *json) {
    sep(w);
    emit(w, "%s", json);
}

void rb_jw_kstr(rb_jw *w, const char *k, const char *s) { rb_jw_key(w, k), rb_jw_str(w, s); }
void rb_jw_kint(rb_jw *w, const char *k, long long x) { rb_jw_key(w, k), rb_jw_int(w, x); }
void rb_jw_kreal(rb_jw *w, const char *k, double x) { rb_jw_key(w, k), rb_jw_real(w, x); }

/* ---- reader ---- */

typedef struct {
    const char *p, *end, *start;
    char *err;
    size_t errlen;
    int failed;
} jr;

static void jr_fail(jr *r, const char *what) {
    if (r->failed) return;
    r->failed = 1;
    int line = 1, col = 1;
    for (const char *q = r->start; q < r->p && q < r->end; q++) {
        if (*q == '\n') line++, col = 1;
        else col++;
    }
    if (r->err && r->errlen) snprintf(r->err, r->errlen, "line %d, column %d: %s", line, col, what);
}

static void ws(jr *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static rb_json *node(int type) {
    rb_json *j = calloc(1, sizeof *j);
    if (j) j->type = type;
    return j;
}

static int hex4(jr *r, unsigned *out) {
    if (r->end - r->p < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = r->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    r->p += 4;
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | (cp >> 6)), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)), o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)), o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* One \u escape (r->p after the 'u'), a surrogate pair joined. */
static int escape_u(jr *r, unsigned *cp) {
    unsigned hi, lo;
    if (hex4(r, &hi)) return -1;
    if (hi >= 0xD800 && hi < 0xDC00) {
        if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u') return -1;
        r->p += 2;
        if (hex4(r, &lo) || lo < 0xDC00 || lo > 0xDFFF) return -1;
        hi = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
    } else if (hi >= 0xDC00 && hi <= 0xDFFF) {
        return -1;
    }
    if (hi == 0) return -1; /* C strings cannot hold it */
    *cp = hi;
    return 0;
}

static char *str(jr *r) {
    r->p++; /* the opening quote */
    /* the unescaped text is never longer than the escaped */
    const char *q = r->p;
    while (q < r->end && *q != '"') q += (*q == '\\' && q + 1 < r->end) ? 2 : 1;
    if (q >= r->end) return jr_fail(r, "unterminated string"), NULL;
    char *out = malloc((size_t)(q - r->p) + 1), *o = out;
    if (!out) return jr_fail(r, "out of memory"), NULL;
    while (*r->p != '"') {
        unsigned char c = (unsigned char)*r->p++;
        if (c < 0x20) return free(out), jr_fail(r, "control character in a string"), NULL;
        if (c != '\\') {
            *o++ = (char)c;
            continue;
        }
        char e = *r->p++;
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
        const char *hit = e ? strchr(from, e) : NULL;
        unsigned cp;
        if (hit) *o++ = to[hit - from];
        else if (e == 'u' && escape_u(r, &cp) == 0) o += put_utf8(o, cp);
        else return free(out), jr_fail(r, "bad escape in a string"), NULL;
    }
    r->p++;
    *o = 0;
    return out;
}

static rb_json *value(jr *r, int depth);

static int add_item(rb_json *c, char *key, rb_json *v) {
    if ((c->n & (c->n - 1)) == 0) { /* grow at powers of two */
        size_t cap = c->n ? (size_t)c->n * 2 : 1;
        rb_json **it = realloc(c->items, cap * sizeof *it);
        if (!it) return -1;
        c->items = it;
        if (c->type == RB_JSON_OBJ) {
            char **k = realloc(c->keys, cap * sizeof *k);
            if (!k) return -1;
            c->keys = k;
        }
    }
    if (c->type == RB_JSON_OBJ) c->keys[c->n] = key;
    c->items[c->n++] = v;
    return 0;
}

static rb_json *container(jr *r, int depth) {
    int obj = *r->p == '{';
    char close = obj ? '}' : ']';
    if (depth >= RB_JSON_MAX_DEPTH) return jr_fail(r, "nested too deeply"), NULL;
    rb_json *c = node(obj ? RB_JSON_OBJ : RB_JSON_ARR);
    if (!c) return jr_fail(r, "out of memory"), NULL;
    r->p++;
    ws(r);
    if (r->p < r->end && *r->p == close) return r->p++, c;
    for (;;) {
        char *key = NULL;
        ws(r);
        if (obj) {
            if (r->p >= r->end || *r->p != '"') return jr_fail(r, "expected a string key"), rb_json_free(c), NULL;
            if (!(key = str(r))) return rb_json_free(c), NULL;
            ws(r);
            if (r->p >= r->end || *r->p != ':') return free(key), jr_fail(r, "expected ':'"), rb_json_free(c), NULL;
            r->p++;
        }
        rb_json *v = value(r, depth + 1);
        if (!v || add_item(c, key, v)) {
            if (v) jr_fail(r, "out of memory"), rb_json_free(v);
            return free(key), rb_json_free(c), NULL;
        }
        ws(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end && *r->p == close) return r->p++, c;
        jr_fail(r, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        return rb_json_free(c), NULL;
    }
}

static rb_json *number(jr *r) {
    const char *b = r->p;
    if (r->p < r->end && *r->p == '-') r->p++;
    if (r->p >= r->end || !(*r->p >= '0' && *r->p <= '9')) return jr_fail(r, "unexpected character"), NULL;
    if (*r->p == '0') r->p++;
    else while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    if (r->p < r->end && *r->p == '.') {
        r->p++;
        if (r->p >= r->end || !(*r->p >= '0' && *r->p <= '9')) return jr_fail(r, "bad number"), NULL;
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
        if (r->p >= r->end || !(*r->p >= '0' && *r->p <= '9')) return jr_fail(r, "bad number"), NULL;
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    }
    rb_json *j = node(RB_JSON_NUM);
    if (j) j->s = malloc((size_t)(r->p - b) + 1);
    if (!j || !j->s) return free(j), jr_fail(r, "out of memory"), NULL;
    memcpy(j->s, b, (size_t)(r->p - b));
    j->s[r->p - b] = 0;
    j->num = strtod(j->s, NULL);
    return j;
}

static rb_json *word(jr *r, const char *w, int type, int b) {
    size_t n = strlen(w);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, w, n) != 0) return jr_fail(r, "unexpected word"), NULL;
    r->p += n;
    rb_json *j = node(type);
    if (!j) return jr_fail(r, "out of memory"), NULL;
    j->b = b;
    return j;
}

static rb_json *value(jr *r, int depth) {
    ws(r);
    if (r->p >= r->end) return jr_fail(r, "unexpected end of input"), NULL;
    switch (*r->p) {
    case '{':
    case '[': return container(r, depth);
    case '"': {
        char *s = str(r);
        if (!s) return NULL;
        rb_json *j = node(RB_JSON_STR);
        if (!j) {
            free(s);
            jr_fail(r, "out of memory");
            return NULL;
        }
        j->s = s;
        return j;
    }
    case 't': return word(r, "true", RB_JSON_BOOL, 1);
    case 'f': return word(r, "false", RB_JSON_BOOL, 0);
    case 'n': return word(r, "null", RB_JSON_NULL, 0);
    default: return number(r);
    }
}

rb_json *rb_json_parse(const char *text, size_t len, char *err, size_t errlen) {
    jr r = {text, text + len, text, err, errlen, 0};
    rb_json *j = value(&r, 0);
    if (!j) return NULL;
    ws(&r);
    if (r.p != r.end) {
        jr_fail(&r, "text after the document");
        rb_json_free(j);
        return NULL;
    }
    return j;
}

void rb_json_free(rb_json *j) {
    if (!j) return;
    for (int i = 0; i < j->n; i++) {
        rb_json_free(j->items[i]);
        if (j->keys) free(j->keys[i]);
    }
    free(j->items), free(j->keys), free(j->s), free(j);
}

const rb_json *rb_json_get(const rb_json *o, const char *key) {
    const rb_json *hit = NULL;
    if (o && o->type == RB_JSON_OBJ)
        for (int i = 0; i < o->n; i++)
            if (strcmp(o->keys[i], key) == 0) hit = o->items[i];
    return hit;
}

const char *rb_json_type_name(int type) {
    static const char *const n[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
    return type >= 0 && type <= RB_JSON_OBJ ? n[type] : "?";
}
