/* status.c: the code -> exit status / trial status table of status.h. */
#include "util/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int exit_status;
    const char *trial;
} table[RB_NSTATUS] = {
    [RB_OK] = {"ok", RB_EXIT_OK, "done"},
    [RB_EINVAL] = {"invalid input", RB_EXIT_USAGE, "failed"},
    [RB_ENOMEM] = {"out of memory", RB_EXIT_FAILED, "unsupported"},
    [RB_EUNSUPPORTED] = {"unsupported", RB_EXIT_FAILED, "unsupported"},
    [RB_EIO] = {"I/O error", RB_EXIT_USAGE, "failed"},
    [RB_EDB] = {"database error", RB_EXIT_USAGE, "failed"},
    [RB_EINTR] = {"interrupted", RB_EXIT_INTERRUPTED, "interrupted"},
    [RB_EFAILED] = {"failed", RB_EXIT_FAILED, "failed"},
};

int rb_err_set(rb_err *e, rb_status code, const char *key, const char *fmt, ...) {
    if (!e) return -1;
    e->code = code;
    snprintf(e->key, sizeof e->key, "%s", key ? key : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

void rb_err_clear(rb_err *e) {
    if (e) memset(e, 0, sizeof *e);
}

static int valid(rb_status s) { return (int)s >= 0 && s < RB_NSTATUS; }
int rb_status_exit(rb_status s) { return valid(s) ? table[s].exit_status : RB_EXIT_FAILED; }
const char *rb_status_trial(rb_status s) { return valid(s) ? table[s].trial : "failed"; }
const char *rb_status_name(rb_status s) { return valid(s) ? table[s].name : "?"; }
