/* measure.c: see measure.h. */
#include "util/measure.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "util/common.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Quantile q of sorted v[0..n) with linear interpolation (NumPy's default). */
static double quantile(const double *v, int n, double q) {
    double pos = q * (n - 1);
    int i = (int)floor(pos);
    if (i >= n - 1) return v[n - 1];
    return v[i] + (pos - i) * (v[i + 1] - v[i]);
}

void rb_summarize(double *v, int n, rb_summary *s) {
    memset(s, 0, sizeof *s);
    s->n = n;
    if (n <= 0) {
        s->median = s->q1 = s->q3 = s->iqr = s->min = s->max = NAN;
        return;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    s->median = quantile(v, n, 0.5), s->q1 = quantile(v, n, 0.25), s->q3 = quantile(v, n, 0.75);
    s->iqr = s->q3 - s->q1, s->min = v[0], s->max = v[n - 1];
}

/* ---- the machine's load ---- */

static int read_busy(unsigned long long *busy) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    unsigned long long u, ni, sy, id, io, irq, sirq, st;
    int k = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &u, &ni, &sy, &id, &io, &irq, &sirq, &st);
    fclose(f);
    if (k < 7) return -1;
    if (k < 8) st = 0;
    *busy = u + ni + sy + irq + sirq + st;
    return 0;
}

static double own_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static double load_avg1(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    double l = NAN;
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = NAN;
        fclose(f);
    }
    return l;
}

void rb_load_begin(rb_load_probe *p) {
    memset(p, 0, sizeof *p);
    p->ok = read_busy(&p->busy0) == 0;
    p->own_cpu0 = own_cpu();
    p->t0 = rb_now();
}

void rb_load_end(const rb_load_probe *p, rb_load *out) {
    unsigned long long busy1 = 0;
    int ok = p->ok && read_busy(&busy1) == 0;
    double wall = rb_now() - p->t0, own = own_cpu() - p->own_cpu0;
    long hz = sysconf(_SC_CLK_TCK);
    out->seconds = wall;
    out->load_avg = load_avg1();
    out->other_cpu = NAN;
    /* jiffies are coarse (10 ms): an interval of a few of them says nothing */
    if (ok && hz > 0 && wall >= 0.8 * RB_LOAD_MIN_S) out->other_cpu = fmax(0.0, ((double)(busy1 - p->busy0) / hz - own) / wall);
}

/* ---- judging ---- */

void rb_noise_rule_default(rb_noise_rule *r, int threads) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    r->iqr_tol = 0.10;
    r->threads = threads > 0 ? threads : 1;
    r->cores = c > 0 ? (int)c : 1;
}

int rb_noise_judge(const rb_noise_rule *r, const rb_summary *s, const rb_load *l, char *why, size_t len) {
    size_t off = 0;
    why[0] = 0;
    double rel = s->n > 1 && s->median > 0 ? s->iqr / s->median : 0.0;
    if (rel > r->iqr_tol)
        off += (size_t)snprintf(why + off, len - off, "IQR %.0f%% of the median > %.0f%%", 100 * rel, 100 * r->iqr_tol);
    double free_cores = fmax(0.0, (double)(r->cores - r->threads));
    /* a few tenths of a core is the system's own background; more than
     * that beyond the free cores takes time from our threads */
    int known = !isnan(l->other_cpu);
    int busy = known && l->other_cpu > free_cores + 0.3;
    int loaded = !known && !isnan(l->load_avg) && l->load_avg - r->threads > free_cores + 0.5;
    if ((busy || loaded) && off < len)
        off += (size_t)snprintf(why + off, len - off, "%sother processes used %.1f cores (load average %.1f) while %d %s "
                                "free of %d", off ? "; " : "", known ? l->other_cpu : l->load_avg - r->threads, l->load_avg,
                                (int)free_cores, free_cores == 1 ? "was" : "were", r->cores);
    return why[0] != 0;
}

/* ---- adaptive sampling ---- */

void rb_autorange_default(rb_autorange *a) {
    a->min_runs = 5, a->max_runs = 1000;
    a->min_time = RB_LOAD_MIN_S, a->max_time = 10.0;
    a->tol = 0.05;
}

int rb_autorange_more(const rb_autorange *a, const double *v, int n, double elapsed) {
    if (n < a->min_runs || elapsed < a->min_time) return n < a->max_runs;
    if (n >= a->max_runs || elapsed >= a->max_time) return 0;
    double *c = mallocCheck((size_t)n * sizeof *c);
    memcpy(c, v, (size_t)n * sizeof *c);
    rb_summary s;
    rb_summarize(c, n, &s);
    free(c);
    return !(s.median > 0 && s.iqr <= a->tol * s.median);
}

int rb_parse_seconds(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno) return -1;
    double unit = 1;
    if (*end == 's') end++;
    else if (*end == 'm') unit = 60, end++;
    else if (*end == 'h') unit = 3600, end++;
    if (*end || !(v > 0) || !isfinite(v) || v * unit > 1e7) return -1;
    *out = v * unit;
    return 0;
}
