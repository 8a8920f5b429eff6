/* child.c: a function run in a child process (child.h). */
#include "util/child.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/common.h"

/* The exit status rb_malloc_check uses inside a child: "out of memory". */
#define CHILD_NOMEM_EXIT 86

static volatile sig_atomic_t g_child_pid = 0;
static int g_inside = 0;

void rb_child_kill_current(int sig) {
    pid_t p = (pid_t)g_child_pid;
    if (p > 0) kill(p, sig);
}

int rb_child_inside(void) { return g_inside; }

int rb_child_write(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w, len -= (size_t)w;
    }
    return 0;
}

void rb_child_result_free(rb_child_result *r) {
    free(r->data);
    r->data = NULL;
    r->len = 0;
}

static void describe_end(rb_child_result *r, int timed_out, double timeout_s, int status) {
    if (timed_out) {
        r->how = RB_CHILD_TIMEOUT, r->code = SIGKILL;
        snprintf(r->why, sizeof r->why, "exceeded its time limit of %g s and was killed", timeout_s);
    } else if (WIFSIGNALED(status)) {
        r->how = RB_CHILD_SIGNALED, r->code = WTERMSIG(status);
        if (r->code == SIGKILL)
            snprintf(r->why, sizeof r->why, "killed by SIGKILL at a peak RSS of %.0f MiB (most likely the kernel's "
                     "out-of-memory killer; `dmesg` says)", (double)r->max_rss_bytes / (1 << 20));
        else
            snprintf(r->why, sizeof r->why, "crashed: %s (signal %d)", strsignal(r->code), r->code);
    } else {
        r->code = WEXITSTATUS(status);
        r->how = r->code == CHILD_NOMEM_EXIT ? RB_CHILD_NOMEM : RB_CHILD_EXITED;
        if (r->how == RB_CHILD_NOMEM)
            snprintf(r->why, sizeof r->why, "ran out of memory (an allocation failed at a peak RSS of %.0f MiB)",
                     (double)r->max_rss_bytes / (1 << 20));
        else if (r->code != 0)
            snprintf(r->why, sizeof r->why, "its process exited with status %d", r->code);
    }
}

/* The child's side: never returns. */
static void child_main(rb_child_fn fn, void *arg, int fd, pid_t parent) {
    g_inside = 1;
    /* die with the parent (SIGKILL of the runner must not leave a trial running) */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    rb_set_nomem_exit(CHILD_NOMEM_EXIT);
    int rc = fn(arg, fd);
    close(fd);
    fflush(NULL);
    _exit(rc);
}

/* Append what is readable on fd to r->data; 0 at end of file, 1 more to come. */
static int drain(int fd, rb_child_result *r, size_t *cap) {
    if (r->len + 65536 + 1 > *cap) {
        *cap = 2 * (*cap) + 65536 + 1;
        r->data = reallocCheck(r->data, *cap);
    }
    ssize_t n = read(fd, r->data + r->len, *cap - r->len - 1);
    if (n < 0) return errno == EINTR || errno == EAGAIN ? 1 : 0;
    if (n == 0) return 0;
    r->len += (size_t)n;
    r->data[r->len] = 0;
    return 1;
}

int rb_child_run(rb_child_fn fn, void *arg, const rb_child_opts *o, rb_child_result *r) {
    memset(r, 0, sizeof *r);
    size_t cap = 0;
    int p[2];
    if (pipe(p) != 0) {
        r->how = RB_CHILD_FORK_FAILED;
        snprintf(r->why, sizeof r->why, "cannot make a pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL); /* or the child's exit writes our buffered output again */
    double t0 = rb_now();
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]), close(p[1]);
        r->how = RB_CHILD_FORK_FAILED;
        snprintf(r->why, sizeof r->why, "cannot fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        child_main(fn, arg, p[1], parent);
    }
    g_child_pid = pid;
    close(p[1]);
    int timed_out = 0, stopped = 0, open = 1;
    while (open) {
        struct pollfd pf = {p[0], POLLIN, 0};
        int pr = poll(&pf, 1, 200);
        if (pr > 0) open = drain(p[0], r, &cap);
        if (!stopped && o && o->stop && o->stop()) {
            kill(pid, SIGTERM);
            stopped = 1;
        }
        if (open && o && o->timeout_s > 0 && rb_now() - t0 > o->timeout_s) {
            kill(pid, SIGKILL);
            timed_out = 1;
            while (drain(p[0], r, &cap)) {
            }
            open = 0;
        }
    }
    close(p[0]);
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    g_child_pid = 0;
    r->seconds = rb_now() - t0;
    r->max_rss_bytes = (size_t)ru.ru_maxrss * 1024;
    if (!r->data) r->data = callocCheck(1, 1);
    describe_end(r, timed_out, o ? o->timeout_s : 0, status);
    return r->how == RB_CHILD_EXITED && r->code == 0 ? 0 : -1;
}
