/* yamltree.c: libyaml's events into a small tree that keeps every node's
 * line and column, so each problem in an experiment file can be reported at
 * its place. Anchors, aliases and tags are refused: an experiment file never
 * needs them, an alias bomb is then impossible, and a tag (!!str 2) would
 * otherwise be silently ignored. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "harness/exp_internal.h"
#include "util/common.h"

void yt_free(ynode *n) {
    if (!n) return;
    for (int i = 0; i < n->n; i++) yt_free(n->kids[i]);
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

void yt_add(ynode *p, ynode *c) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 8;
        p->kids = reallocCheck(p->kids, (size_t)p->cap * sizeof *p->kids);
    }
    p->kids[p->n++] = c;
}

ynode *yt_new(int type, const char *text) {
    ynode *n = callocCheck(1, sizeof *n);
    n->type = type;
    if (text) {
        n->slen = strlen(text);
        n->s = mallocCheck(n->slen + 1);
        memcpy(n->s, text, n->slen + 1);
    }
    return n;
}

int yt_map_find(const ynode *map, const char *key) {
    for (int i = 0; map && map->type == Y_MAP && i + 1 < map->n; i += 2)
        if (map->kids[i]->type == Y_SCALAR && strcmp(map->kids[i]->s, key) == 0) return i;
    return -1;
}

void yt_map_remove(ynode *map, int i) {
    yt_free(map->kids[i]), yt_free(map->kids[i + 1]);
    memmove(map->kids + i, map->kids + i + 2, (size_t)(map->n - i - 2) * sizeof *map->kids);
    map->n -= 2;
}

/* Line and column of a byte offset (reader errors carry only the offset). */
void yt_offset_mark(const char *text, size_t len, size_t off, int *line, int *col) {
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
typedef struct {
    const char *path;
    exp_errors *errs;
    ynode *stack[EXP_MAX_DEPTH + 1];
    int depth, ndocs, nodes;
    ynode *root;
} yt_state;

static int yt_fail(yt_state *y, yaml_mark_t m, const char *fmt, const char *arg) {
    exp_add_err(y->errs, y->path, (int)m.line + 1, (int)m.column + 1, NULL, fmt, arg);
    return -1;
}

/* A scalar, or the start of a list or mapping: a node of the tree. */
static int yt_node(yt_state *y, const yaml_event_t *ev) {
    yaml_mark_t m = ev->start_mark;
    int scalar = ev->type == YAML_SCALAR_EVENT, seq = ev->type == YAML_SEQUENCE_START_EVENT;
    const yaml_char_t *anchor = scalar ? ev->data.scalar.anchor
                                : seq  ? ev->data.sequence_start.anchor
                                       : ev->data.mapping_start.anchor;
    const yaml_char_t *tag = scalar ? ev->data.scalar.tag : seq ? ev->data.sequence_start.tag : ev->data.mapping_start.tag;
    if (anchor) return yt_fail(y, m, "YAML anchors (&%s) are not supported in experiment files", (const char *)anchor);
    if (tag)
        return yt_fail(y, m, "YAML tags (%s) are not supported in experiment files: write the value plainly",
                       (const char *)tag);
    if (++y->nodes > EXP_MAX_NODES) return yt_fail(y, m, "more than %s YAML nodes", "100000");
    ynode *node = ynode_new(scalar ? Y_SCALAR : seq ? Y_SEQ : Y_MAP, m);
    if (scalar) {
        node->slen = ev->data.scalar.length;
        node->s = mallocCheck(node->slen + 1);
        memcpy(node->s, ev->data.scalar.value, node->slen);
        node->s[node->slen] = 0;
        node->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    }
    if (y->depth > 0) yt_add(y->stack[y->depth - 1], node);
    else if (!y->root) y->root = node;
    else yt_free(node); /* cannot happen in one document; keeps the tree's owner clear */
    if (scalar) return 0;
    if (y->depth >= EXP_MAX_DEPTH) return yt_fail(y, m, "nested deeper than %s levels", "16");
    y->stack[y->depth++] = node;
    return 0;
}

/* One event; 1 at the end of the stream, -1 on a problem (reported). */
static int yt_event(yt_state *y, const yaml_event_t *ev) {
    switch (ev->type) {
    case YAML_STREAM_END_EVENT: return 1;
    case YAML_DOCUMENT_START_EVENT:
        if (++y->ndocs > 1)
            return yt_fail(y, ev->start_mark, "more than one YAML document; an experiment file holds one%s", "");
        return 0;
    case YAML_ALIAS_EVENT:
        return yt_fail(y, ev->start_mark, "YAML aliases (*%s) are not supported in experiment files",
                       (const char *)ev->data.alias.anchor);
    case YAML_SCALAR_EVENT:
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: return yt_node(y, ev);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (y->depth > 0) y->depth--;
        return 0;
    default: return 0;
    }
}

static void yt_syntax_error(const yaml_parser_t *parser, const char *text, size_t len, const char *path,
                            exp_errors *errs) {
    int line, col;
    if (parser->error == YAML_READER_ERROR) yt_offset_mark(text, len, parser->problem_offset, &line, &col);
    else line = (int)parser->problem_mark.line + 1, col = (int)parser->problem_mark.column + 1;
    const char *what = parser->error == YAML_READER_ERROR ? "invalid input" : "YAML syntax error";
    if (parser->context)
        exp_add_err(errs, path, line, col, NULL, "%s: %s %s", what, parser->problem ? parser->problem : "?",
                    parser->context);
    else exp_add_err(errs, path, line, col, NULL, "%s: %s", what, parser->problem ? parser->problem : "?");
}

/* Parse text into a tree. NULL on error (reported). *empty = 1 for a file
 * with no document. */
ynode *yt_read(const char *text, size_t len, const char *path, exp_errors *errs, int *empty) {
    yaml_parser_t parser;
    yaml_event_t ev;
    *empty = 0;
    if (!yaml_parser_initialize(&parser)) {
        exp_add_err(errs, path, 1, 1, NULL, "cannot initialise the YAML parser");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    yt_state y;
    memset(&y, 0, sizeof y);
    y.path = path, y.errs = errs;
    int rc = 0;
    while (rc == 0) {
        if (!yaml_parser_parse(&parser, &ev)) {
            yt_syntax_error(&parser, text, len, path, errs);
            rc = -1;
            break;
        }
        rc = yt_event(&y, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    if (rc < 0) {
        yt_free(y.root);
        return NULL;
    }
    if (!y.root) *empty = 1;
    return y.root;
}

const char *yt_type_name(const ynode *n) {
    return n->type == Y_SCALAR ? "a scalar" : n->type == Y_SEQ ? "a list" : "a mapping";
}
