/* status.h: what went wrong, as a code next to the message, and the one
 * table that maps a code to the process's exit status and to a trial's
 * status in the results database. Library functions return 0 or -1 and
 * fill an rb_err (or, for the older char *err interface, a message); the
 * CLI turns the code into an exit status here and nowhere else. */
#ifndef RB_STATUS_H
#define RB_STATUS_H

#include <stddef.h>

typedef enum {
    RB_OK = 0,
    RB_EINVAL,       /* invalid input: a flag, a file, a parameter combination */
    RB_ENOMEM,       /* memory could not be had */
    RB_EUNSUPPORTED, /* valid, but this backend or machine cannot do it */
    RB_EIO,          /* a file could not be read or written */
    RB_EDB,          /* the results database refused */
    RB_EINTR,        /* stopped by a signal (Ctrl-C, SIGTERM) */
    RB_EFAILED,      /* ran and failed (a check, a diverging loss, a crashed trial) */
    RB_NSTATUS
} rb_status;

/* Exit statuses of routebench (README: "Exit status"). */
enum { RB_EXIT_OK = 0, RB_EXIT_FAILED = 1, RB_EXIT_USAGE = 2, RB_EXIT_INTERRUPTED = 130 };

/* An error: its code, the parameter it is about ("" when none) and text. */
typedef struct {
    rb_status code;
    char key[48];
    char msg[1024];
} rb_err;

/* Fill e (may be NULL) and return -1. key may be NULL. */
int rb_err_set(rb_err *e, rb_status code, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void rb_err_clear(rb_err *e);

int rb_status_exit(rb_status s);          /* 0, 1, 2 or 130 */
const char *rb_status_trial(rb_status s); /* "done", "failed", "unsupported", "interrupted" */
const char *rb_status_name(rb_status s);  /* "invalid input", ... */

#endif
