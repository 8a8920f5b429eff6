/* tap.h: a minimal TAP producer for the C test programs (run by prove). */
#ifndef RB_TAP_H
#define RB_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int tap_n = 0, tap_failed = 0;

static int __attribute__((format(printf, 2, 3))) ok(int cond, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%sok %d - ", cond ? "" : "not ", ++tap_n);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (!cond) tap_failed++;
    return cond;
}

static void __attribute__((format(printf, 1, 2), unused)) diag(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("# ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

static void __attribute__((format(printf, 1, 2), unused)) skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("ok %d # SKIP ", ++tap_n);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

/* done_testing: prints the plan at the end when none was given up front. */
static int tap_done(void) {
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

#endif
