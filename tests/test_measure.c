/* test_measure.c: util/measure.h against values worked out by hand: the
 * median and quartiles of small samples (linear interpolation between order
 * statistics, as numpy's default percentile), when a measurement is judged
 * noisy (its spread; others' CPU beyond the free cores; the load average
 * only when others' CPU is unknown), when adaptive sampling stops, and the
 * durations a file or flag may give. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "util/measure.h"
#include "tap.h"

static int near(double a, double b) { return fabs(a - b) < 1e-12; }

static void summaries(void) {
    double v[] = {5, 1, 4, 2, 3};
    rb_summary s;
    rb_summarize(v, 5, &s);
    ok(s.n == 5 && near(s.median, 3) && near(s.q1, 2) && near(s.q3, 4) && near(s.iqr, 2) && near(s.min, 1) &&
           near(s.max, 5), "1..5: median 3, quartiles 2 and 4 (got %g %g %g)", s.median, s.q1, s.q3);
    double w[] = {10, 40, 20, 30};
    rb_summarize(w, 4, &s);
    /* positions 0.75, 1.5, 2.25 of 10 20 30 40 */
    ok(near(s.median, 25) && near(s.q1, 17.5) && near(s.q3, 32.5) && near(s.iqr, 15),
       "10..40: median 25, quartiles 17.5 and 32.5 (got %g %g %g)", s.median, s.q1, s.q3);
    double one[] = {7};
    rb_summarize(one, 1, &s);
    ok(near(s.median, 7) && near(s.iqr, 0), "one sample: itself, no spread");
    rb_summarize(one, 0, &s);
    ok(isnan(s.median) && s.n == 0, "no samples: NAN");
}

static int judge(double iqr_rel, double other, double load, int threads, int cores, char *why) {
    rb_noise_rule r = {0.10, threads, cores};
    rb_summary s = {.n = 9, .median = 100, .iqr = 100 * iqr_rel};
    rb_load l = {other, load, 1.0};
    return rb_noise_judge(&r, &s, &l, why, 256);
}

static void judging(void) {
    char why[256];
    ok(!judge(0.05, 0.1, 2.0, 2, 2, why) && !why[0], "IQR 5%%, others 0.1 core: clean");
    ok(judge(0.20, 0.0, 2.0, 2, 2, why) && strstr(why, "IQR 20%"), "IQR 20%% > 10%%: noisy (%s)", why);
    ok(judge(0.02, 1.0, 3.0, 2, 2, why) && strstr(why, "other processes used 1.0 cores"),
       "a busy core beside a 2-thread team on 2 cores: noisy (%s)", why);
    ok(!judge(0.02, 1.0, 3.0, 1, 2, why), "the same busy core beside 1 thread on 2 cores: one core was free, clean");
    ok(!judge(0.02, 0.0, 6.0, 2, 2, why), "a high load average with others' CPU known to be 0: clean (it lags)");
    ok(judge(0.02, NAN, 3.6, 2, 2, why), "others' CPU unknown, load 3.6 for 2 threads on 2 cores: noisy (%s)", why);
    ok(!judge(0.02, NAN, 2.2, 2, 2, why), "others' CPU unknown, load 2.2 (our own threads): clean");
}

static void autorange(void) {
    rb_autorange a = {3, 10, 0.0, 5.0, 0.05};
    double steady[] = {1, 1, 1, 1}, jumpy[] = {1, 2, 1, 3, 1, 2};
    ok(rb_autorange_more(&a, steady, 2, 0.1), "fewer than min_runs: more");
    ok(!rb_autorange_more(&a, steady, 3, 0.1), "min_runs steady samples: enough");
    ok(rb_autorange_more(&a, jumpy, 6, 0.1), "a spread above tol: more");
    ok(!rb_autorange_more(&a, jumpy, 6, 5.0), "the time budget spent: stop");
    a.min_time = 1.0;
    ok(rb_autorange_more(&a, steady, 4, 0.5), "steady but under min_time: more");
    a.max_runs = 4;
    ok(!rb_autorange_more(&a, steady, 4, 0.5), "max_runs reached: stop even under min_time");
}

static void durations(void) {
    double s = 0;
    ok(rb_parse_seconds("90", &s) == 0 && near(s, 90), "90 is 90 s");
    ok(rb_parse_seconds("1.5m", &s) == 0 && near(s, 90), "1.5m is 90 s");
    ok(rb_parse_seconds("2h", &s) == 0 && near(s, 7200), "2h is 7200 s");
    ok(rb_parse_seconds("30s", &s) == 0 && near(s, 30), "30s is 30 s");
    const char *bad[] = {"", "0", "-5", "5x", "m", "1e9", "nan", "5 m"};
    int refused = 0;
    for (int i = 0; i < 8; i++) refused += rb_parse_seconds(bad[i], &s) != 0;
    ok(refused == 8, "empty, zero, negative, unknown unit, no number, too long, nan, inner space refused (%d of 8)",
       refused);
}

int main(void) {
    summaries();
    judging();
    autorange();
    durations();
    return tap_done();
}
