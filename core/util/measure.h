/* measure.h: timing that knows when it is noisy. A measurement keeps every
 * sample and is summarised by its median and interquartile range (IQR), the
 * way torch.utils.benchmark and Google Benchmark's repetitions report, and
 * it watches the machine while it runs: other processes' CPU time (from
 * /proc/stat, our own subtracted) and the 1-minute load average. A
 * measurement is noisy when its IQR is a large share of its median, or when
 * others took more CPU than its thread count left free (a 2-thread team on a
 * 2-core machine that another job also uses waits for a descheduled thread:
 * samples 50x slower are normal there), and says why. */
#ifndef RB_MEASURE_H
#define RB_MEASURE_H

#include <stddef.h>

/* Summary of samples: median, quartiles (linear interpolation), IQR. */
typedef struct {
    int n;
    double median, q1, q3, iqr, min, max;
} rb_summary;

/* Summarise v[0..n) (v is sorted in place). All NAN when n == 0. */
void rb_summarize(double *v, int n, rb_summary *s);

/* The machine's load over an interval: start with rb_load_begin, end with
 * rb_load_end. */
typedef struct {
    double t0, own_cpu0;      /* wall clock, this process's CPU seconds */
    unsigned long long busy0; /* all CPUs' busy jiffies (user+nice+system+irq+softirq+steal) */
    int ok;                   /* /proc/stat was readable */
} rb_load_probe;

typedef struct {
    double other_cpu; /* cores' worth of CPU others used on average (busy minus ours / wall); NAN unknown */
    double load_avg;  /* 1-minute load average at the end; NAN unknown */
    double seconds;   /* wall time of the interval */
} rb_load;

/* The shortest interval whose load /proc/stat's 10 ms ticks can tell:
 * timings sample at least this long by default (rb_autorange.min_time), so
 * their other_cpu is known. */
#define RB_LOAD_MIN_S 0.25

void rb_load_begin(rb_load_probe *p);
void rb_load_end(const rb_load_probe *p, rb_load *out);

/* When a measurement counts as noisy. */
typedef struct {
    double iqr_tol;   /* IQR / median above this is noisy; default 0.10 */
    int threads;      /* the measurement's thread count */
    int cores;        /* the machine's (online) cores */
} rb_noise_rule;

void rb_noise_rule_default(rb_noise_rule *r, int threads);

/* 1 when noisy, with why in `why` ("" when not): the spread ("IQR 34% of
 * the median > 10%") and/or the machine ("other processes used 1.2 cores
 * while 0 were free"). The machine is judged by other_cpu when it is known;
 * only for an interval too short to read it, by the 1-minute load average
 * (which lags, and counts our own threads). */
int rb_noise_judge(const rb_noise_rule *r, const rb_summary *s, const rb_load *l, char *why, size_t len);

/* Adaptive sampling (blocked_autorange's idea): take samples until at
 * least min_runs are in and their IQR is within tol of the median, or
 * max_time seconds (of samples) have passed, or max_runs samples are in. */
typedef struct {
    int min_runs, max_runs;
    double min_time, max_time; /* seconds: keep sampling at least / at most this long */
    double tol;                /* IQR / median that is good enough */
} rb_autorange;

void rb_autorange_default(rb_autorange *a);
/* 1 when another sample should be taken after n samples v[0..n) that took
 * `elapsed` seconds in all (v is not reordered). */
int rb_autorange_more(const rb_autorange *a, const double *v, int n, double elapsed);

/* A duration as written in a file or on the command line: seconds, or a
 * number with s, m or h ("90", "90s", "1.5m", "2h"); positive, at most
 * 1e7 s. 0, or -1 when s is not one. */
int rb_parse_seconds(const char *s, double *out);

#endif
