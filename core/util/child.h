/* child.h: run a function in a child process (fork) and collect what it
 * writes to a pipe, how it ended and its peak memory. The sweep runner runs
 * each trial this way, so a trial's peak RSS is its own (not what the
 * allocator kept from earlier trials), and a trial that crashes, runs out of
 * memory or outlives its time limit is recorded as failed while the sweep
 * goes on.
 *
 * OpenMP and fork: GNU libgomp's thread pool does not survive fork (a child
 * of a process that has run a parallel region can hang in its own first
 * one). A process that forks children for measurements must therefore not
 * run parallel regions (or OpenMP-threaded BLAS) itself: it measures in
 * children too (rb_child_run is cheap: a fork of a small process). */
#ifndef RB_CHILD_H
#define RB_CHILD_H

#include <stddef.h>

/* How the child ended. */
typedef enum {
    RB_CHILD_EXITED = 0, /* exit status in `code` */
    RB_CHILD_SIGNALED,   /* killed by signal `code` (not by us) */
    RB_CHILD_TIMEOUT,    /* outlived its time limit; we killed it */
    RB_CHILD_NOMEM,      /* exited through rb_malloc_check's out-of-memory path */
    RB_CHILD_FORK_FAILED /* fork or pipe failed; errno text in `why` */
} rb_child_how;

typedef struct {
    rb_child_how how;
    int code;               /* exit status or signal number */
    double seconds;         /* wall time */
    size_t max_rss_bytes;   /* the child's peak RSS (getrusage) */
    char *data;             /* what the child wrote (malloc'ed, NUL-terminated; free it) */
    size_t len;
    char why[256];          /* a sentence for the failed trial: "crashed: Segmentation fault (SIGSEGV)" */
} rb_child_result;

/* The function run in the child: writes its result to fd (rb_child_write)
 * and returns the exit status. The child then ends with _exit. */
typedef int (*rb_child_fn)(void *arg, int fd);

typedef struct {
    double timeout_s;       /* 0: no limit */
    /* polled about 5 times a second; when it returns nonzero the child is
     * sent SIGTERM once (it should stop cleanly and still write its result) */
    int (*stop)(void);
} rb_child_opts;

/* Run fn(arg, fd) in a child and wait for it. Returns 0 when the child exited
 * with status 0, -1 otherwise (r->how and r->why say why). r->data holds the
 * bytes written either way. */
int rb_child_run(rb_child_fn fn, void *arg, const rb_child_opts *o, rb_child_result *r);
void rb_child_result_free(rb_child_result *r);

/* Write all of buf to fd (retrying short writes); 0 or -1. */
int rb_child_write(int fd, const void *buf, size_t len);

/* Async-signal-safe: send sig to the child running now, if any (a second
 * Ctrl-C ends the parent at once and must not leave an orphan running). */
void rb_child_kill_current(int sig);

/* 1 inside a child made by rb_child_run. */
int rb_child_inside(void);

#endif
