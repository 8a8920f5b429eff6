/* json.h: the project's one JSON writer and reader.
 *
 * The writer appends to a caller's buffer or to a FILE, tracks commas itself
 * and never overflows: a buffer that fills up sets `overflow` and keeps the
 * output NUL-terminated, so callers check once at the end. Numbers: integers
 * as integers, reals with the shortest text that reads back as the same
 * double (rb_jw_real) or float (rb_jw_float), non-finite values as null.
 *
 * The reader parses a whole document (RFC 8259; at most RB_JSON_MAX_DEPTH
 * nested containers) into a small tree. Strings are unescaped into UTF-8
 * (\u escapes included, surrogate pairs joined; a NUL written as \u0000 is
 * refused, since names and values are C strings here). Numbers keep their
 * text beside the parsed double, so a caller can re-emit a value exactly. */
#ifndef RB_JSON_H
#define RB_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- writer ---- */

#define RB_JW_MAX_DEPTH 32

typedef struct rb_jw {
    char *buf;          /* NULL: write to f */
    size_t len, off;
    FILE *f;
    int overflow;       /* the buffer was too small (or depth too deep) */
    int depth;
    int need_comma[RB_JW_MAX_DEPTH];
    int after_key;
} rb_jw;

void rb_jw_init_buf(rb_jw *w, char *buf, size_t len);
void rb_jw_init_file(rb_jw *w, FILE *f);
void rb_jw_obj(rb_jw *w);       /* { */
void rb_jw_obj_end(rb_jw *w);   /* } */
void rb_jw_arr(rb_jw *w);       /* [ */
void rb_jw_arr_end(rb_jw *w);   /* ] */
void rb_jw_key(rb_jw *w, const char *k);
void rb_jw_str(rb_jw *w, const char *s);
void rb_jw_int(rb_jw *w, long long x);
void rb_jw_u64(rb_jw *w, uint64_t x);
void rb_jw_real(rb_jw *w, double x);   /* shortest round trip as a double */
void rb_jw_float(rb_jw *w, float x);   /* shortest round trip as a float: 0.999, not 0.999000013 */
void rb_jw_bool(rb_jw *w, int b);
void rb_jw_null(rb_jw *w);
/* A value already formatted as JSON (a number's text, a nested document). */
void rb_jw_raw(rb_jw *w, const char *json);
/* Shorthands for a key and its value. */
void rb_jw_kstr(rb_jw *w, const char *k, const char *s);
void rb_jw_kint(rb_jw *w, const char *k, long long x);
void rb_jw_kreal(rb_jw *w, const char *k, double x);

/* The shortest %.Ng text of x that reads back as x (as a double, or as a
 * float when as_float), for tables and messages too. */
void rb_fmt_real(char *out, size_t len, double x, int as_float);

/* ---- reader ---- */

#define RB_JSON_MAX_DEPTH 64

enum { RB_JSON_NULL, RB_JSON_BOOL, RB_JSON_NUM, RB_JSON_STR, RB_JSON_ARR, RB_JSON_OBJ };

typedef struct rb_json rb_json;
struct rb_json {
    int type;
    int b;              /* BOOL */
    double num;         /* NUM */
    char *s;            /* STR: the string; NUM: the number's text */
    int n;              /* ARR, OBJ: items */
    char **keys;        /* OBJ: [n] */
    rb_json **items;    /* ARR, OBJ: [n] */
};

/* Parse len bytes of text. NULL with "line L, column C: ..." in err on a
 * syntax error, too deep nesting or no memory. */
rb_json *rb_json_parse(const char *text, size_t len, char *err, size_t errlen);
void rb_json_free(rb_json *j);
/* The value of key in object o (the last one when repeated), or NULL. */
const rb_json *rb_json_get(const rb_json *o, const char *key);
/* A JSON type's name, for messages: "an object", "a string", ... */
const char *rb_json_type_name(int type);

#endif
