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

static void ynode_add(ynode *p, ynode *c) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 8;
        p->kids = reallocCheck(p->kids, (size_t)p->cap * sizeof *p->kids);
    }
    p->kids[p->n++] = c;
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
ynode *yt_read(const char *text, size_t len, const char *path, exp_errors *errs, int *empty) {
    yaml_parser_t parser;
    yaml_event_t ev;
    *empty = 0;
    if (!yaml_parser_initialize(&parser)) {
        exp_add_err(errs, path, 1, 1, NULL, "cannot initialise the YAML parser");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    ynode *stack[EXP_MAX_DEPTH + 1];
    int depth = 0, ndocs = 0, nodes = 0, done = 0, failed = 0;
    ynode *root = NULL;
    while (!done && !failed) {
        if (!yaml_parser_parse(&parser, &ev)) {
            int line, col;
            if (parser.error == YAML_READER_ERROR) yt_offset_mark(text, len, parser.problem_offset, &line, &col);
            else line = (int)parser.problem_mark.line + 1, col = (int)parser.problem_mark.column + 1;
            const char *what = parser.error == YAML_READER_ERROR ? "invalid input" : "YAML syntax error";
            if (parser.context)
                exp_add_err(errs, path, line, col, NULL, "%s: %s %s", what, parser.problem ? parser.problem : "?",
                        parser.context);
            else exp_add_err(errs, path, line, col, NULL, "%s: %s", what, parser.problem ? parser.problem : "?");
            failed = 1;
            break;
        }
        yaml_mark_t m = ev.start_mark;
        ynode *node = NULL;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT: done = 1; break;
        case YAML_DOCUMENT_START_EVENT:
            if (++ndocs > 1) {
                exp_add_err(errs, path, (int)m.line + 1, (int)m.column + 1, NULL,
                        "more than one YAML document; an experiment file holds one");
                failed = 1;
            }
            break;
        case YAML_ALIAS_EVENT:
            exp_add_err(errs, path, (int)m.line + 1, (int)m.column + 1, NULL,
                    "YAML aliases (*%s) are not supported in experiment files", (char *)ev.data.alias.anchor);
            failed = 1;
            break;
        case YAML_SCALAR_EVENT:
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
            const yaml_char_t *anchor = ev.type == YAML_SCALAR_EVENT ? ev.data.scalar.anchor
                                        : ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor
                                                                              : ev.data.mapping_start.anchor;
            const yaml_char_t *tag = ev.type == YAML_SCALAR_EVENT ? ev.data.scalar.tag
                                     : ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.tag
                                                                           : ev.data.mapping_start.tag;
            if (anchor || tag) {
                exp_add_err(errs, path, (int)m.line + 1, (int)m.column + 1, NULL,
                            anchor ? "YAML anchors (&%s) are not supported in experiment files"
                                   : "YAML tags (%s) are not supported in experiment files: write the value plainly",
                            (const char *)(anchor ? anchor : tag));
                failed = 1;
                break;
            }
            if (++nodes > EXP_MAX_NODES) {
                exp_add_err(errs, path, (int)m.line + 1, (int)m.column + 1, NULL, "more than %d YAML nodes",
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
                    exp_add_err(errs, path, node->line, node->col, NULL, "nested deeper than %d levels",
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
        yt_free(root);
        return NULL;
    }
    if (!root) *empty = 1;
    return root;
}

const char *yt_type_name(const ynode *n) {
    return n->type == Y_SCALAR ? "a scalar" : n->type == Y_SEQ ? "a list" : "a mapping";
}
