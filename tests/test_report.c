/* test_report.c: tables, plots and compare on databases this test writes
 * through the store API (core/store/store.h), so nothing depends on timing runs:
 *  - a "known" database (train-like: two backends, two lengths, routing
 *    clusters x window, three seeds, with failed, unsupported and pending
 *    trials): every table format has the right rows and columns, CSV parses
 *    back to the mean / std / median the test computes itself from the
 *    values it wrote, non-done trials show their status;
 *  - a synthetic power law t = c * n^1.37 (and memory ~ n^2): the exponent in
 *    the scaling and memory figures' legends and data files is recovered;
 *  - every figure kind gives a PNG (by signature) and an SVG, gnuplot exits 0;
 *  - compare exits 1 on an injected regression and 0 without one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/commands.h"
#include <sqlite3.h>

#include "report/crossover.h"
#include "report/plot.h"
#include "report/report.h"
#include "report/summary.h"
#include "store/store.h"
#include "tap.h"
#include "testutil.h"

static char tmpdir[256];

/* ------------------------------------------------------------------ */
/* building databases                                                  */

typedef struct {
    const char *backend;
    int seq, clusters, window; /* NA: does not apply */
    int nseeds;
    const char *status[3];     /* per seed */
    const char *error;
    double loss[3], time_ms[3], gflops, rss_mib;
} cfg;

#define NA (-1) /* a parameter that does not apply */

/* The known configurations (G0..G5). */
static const cfg known[] = {
    {"dense", 128, NA, NA, 3, {ST_DONE, ST_DONE, ST_DONE}, NULL, {2.0, 2.1, 2.2}, {10, 12, 11}, 50, 100},
    {"dense", 256, NA, NA, 3, {ST_DONE, ST_DONE, ST_DONE}, NULL, {1.8, 1.9, 2.3}, {40, 41, 39}, 60, 200},
    {"routing", 256, 4, 64, 3, {ST_DONE, ST_DONE, ST_FAILED}, "boom: out of memory", {1.7, 1.75, 0}, {20, 22, 0}, 30, 150},
    {"routing", 256, 8, 32, 3, {ST_FAILED, ST_FAILED, ST_FAILED}, "loss diverged", {0}, {0}, 0, 0},
    {"routing", 128, 4, 32, 1, {ST_UNSUPPORTED}, "needs 9.00 GiB", {0}, {0}, 0, 0},
    {"routing", 128, 8, 16, 1, {ST_PENDING}, NULL, {0}, {0}, 0, 0},
};
#define NKNOWN ((int)(sizeof known / sizeof known[0]))

static rb_store *open_new(const char *path, const char *name, double sgemm, int64_t *exp) {
    unlink(path);
    char err[512];
    rb_store *s;
    if (store_open(&s, path, 1, err, sizeof err)) {
        diag("store_open: %s", err);
        exit(1);
    }
    store_experiment x;
    memset(&x, 0, sizeof x);
    x.name = name, x.kind = "train", x.yaml = "name: test\n", x.yaml_hash = "0123456789abcdef", x.path = "t.yaml";
    x.host = "testhost", x.threads = 1, x.sgemm_gflops = sgemm;
    if (store_begin_experiment(s, &x, exp, err, sizeof err)) {
        diag("store_begin_experiment: %s", err);
        exit(1);
    }
    return s;
}

/* Register, claim and finish one trial with metrics m and a noise mark
 * (noisy < 0: not judged). */
static void put_trial_noise(rb_store *s, int64_t exp, const store_trial *t, const char *status, const char *error,
                            const store_metric *m, int nm, int noisy, const char *noise) {
    char err[512], st[32], runner[64];
    int64_t id;
    if (store_register_trials(s, t, 1, exp, err, sizeof err) ||
        store_trial_status(s, t->key, t->seed, st, sizeof st, &id, runner, sizeof runner, err, sizeof err)) {
        diag("store: %s", err);
        exit(1);
    }
    if (!strcmp(status, ST_PENDING)) return;
    if (store_claim_trial(s, id, exp, "testhost:1", err, sizeof err) ||
        store_finish_trial_noise(s, id, status, error, m, nm, noisy, noise, err, sizeof err)) {
        diag("store: %s", err);
        exit(1);
    }
}

static void put_trial(rb_store *s, int64_t exp, const store_trial *t, const char *status, const char *error,
                      const store_metric *m, int nm) {
    put_trial_noise(s, exp, t, status, error, m, nm, -1, NULL);
}

static store_trial base_trial(void);

/* One done train trial of a synthetic configuration (clusters, window <= 0:
 * do not apply) with metrics m and a noise mark. */
typedef struct {
    const char *backend;
    int seq, clusters, window;
} spec;

static void add_cfg(rb_store *s, int64_t exp, const spec *c, int seed, int idx, const store_metric *m, int nm,
                    int noisy, const char *noise) {
    const char *key = tu_str("k-%s-%d-%d-%d", c->backend, c->seq, c->clusters, c->window);
    const char *name = tu_str("%s-n%d-k%d-w%d", c->backend, c->seq, c->clusters, c->window);
    static char json[64][256];
    char *js = json[idx % 64];
    int o = snprintf(js, 256, "{\"kind\":\"train\",\"backend\":\"%s\",\"seq\":%d", c->backend, c->seq);
    if (c->clusters > 0) o += snprintf(js + o, 256 - o, ",\"clusters\":%d", c->clusters);
    if (c->window > 0) o += snprintf(js + o, 256 - o, ",\"window\":%d", c->window);
    snprintf(js + o, 256 - o, "}");
    store_trial t = base_trial();
    t.key = key, t.name = name, t.backend = c->backend, t.params_json = js;
    t.seed = (uint64_t)seed, t.idx = idx;
    tu_coli(&t, "seq", c->seq);
    if (c->clusters > 0) tu_coli(&t, "clusters", c->clusters);
    if (c->window > 0) tu_coli(&t, "window", c->window);
    put_trial_noise(s, exp, &t, ST_DONE, NULL, m, nm, noisy, noise);
}

static store_trial base_trial(void) {
    store_trial t;
    memset(&t, 0, sizeof t);
    t.kind = "train";
    tu_col(&t, "heads", "2"), tu_col(&t, "head_dim", "16"), tu_col(&t, "batch", "1"), tu_col(&t, "causal", "1");
    tu_col(&t, "d_model", "32"), tu_col(&t, "layers", "1"), tu_col(&t, "steps", "20"), tu_col(&t, "lr", "0.001");
    tu_col(&t, "task", "copy");
    return t;
}

/* The known database; time_factor scales G0's step time, fail_g1 makes G1
 * fail (compare's injected regressions). */
static void make_known(const char *path, double time_factor, int fail_g1) {
    int64_t exp;
    rb_store *s = open_new(path, "known", 100.0, &exp);
    int idx = 0;
    for (int g = 0; g < NKNOWN; g++) {
        const cfg *c = &known[g];
        char key[64], name[128], json[512];
        snprintf(key, sizeof key, "key-%s-%d-%d-%d", c->backend, c->seq, c->clusters, c->window);
        snprintf(name, sizeof name, "%s-s%d", c->backend, c->seq);
        if (c->clusters != NA)
            snprintf(json, sizeof json,
                     "{\"kind\":\"train\",\"backend\":\"%s\",\"d_model\":32,\"heads\":2,\"seq\":%d,\"window\":%d,"
                     "\"clusters\":%d,\"task\":\"copy\"}",
                     c->backend, c->seq, c->window, c->clusters);
        else
            snprintf(json, sizeof json,
                     "{\"kind\":\"train\",\"backend\":\"%s\",\"d_model\":32,\"heads\":2,\"seq\":%d,\"task\":\"copy\"}",
                     c->backend, c->seq);
        for (int sd = 0; sd < c->nseeds; sd++) {
            store_trial t = base_trial();
            t.key = key, t.name = name, t.backend = c->backend, t.params_json = json;
            t.seed = (uint64_t)sd + 1, t.idx = idx++;
            tu_coli(&t, "seq", c->seq);
            if (c->clusters != NA) tu_coli(&t, "clusters", c->clusters);
            if (c->window != NA) tu_coli(&t, "window", c->window);
            const char *status = c->status[sd], *error = c->error;
            if (fail_g1 && g == 1) status = ST_FAILED, error = "injected failure";
            store_metric m[64];
            int nm = 0;
            if (!strcmp(status, ST_DONE)) {
                double tf = g == 0 ? time_factor : 1.0;
                m[nm++] = (store_metric){-1, "eval_loss", c->loss[sd]};
                m[nm++] = (store_metric){-1, "step_ms", c->time_ms[sd] * tf};
                m[nm++] = (store_metric){-1, "gflops", c->gflops};
                m[nm++] = (store_metric){-1, "peak_rss_bytes", c->rss_mib * 1048576.0};
                m[nm++] = (store_metric){-1, "arena_peak_bytes", c->rss_mib * 65536.0};
                /* a training curve: eval every 5 steps, a step time every step */
                for (int st = 1; st <= 20; st++) {
                    m[nm++] = (store_metric){st, "step_ms", c->time_ms[sd] * tf};
                    if (st % 5 == 0) m[nm++] = (store_metric){st, "eval_loss", c->loss[sd] + 1.0 / st};
                }
            }
            put_trial(s, exp, &t, status, error, m, nm);
        }
    }
    store_close(s);
}

/* Power law: fwdbwd_ms = c n^1.37 (dense), c' n^1.0 (local), activation
 * bytes ~ n^2 and n; three seeds at 0.97, 1, 1.03 times the law so the
 * median over seeds is the law itself; one failed length. */
static const double K_DENSE = 1.37, K_LOCAL = 1.0;

static void make_power(const char *path) {
    int64_t exp;
    rb_store *s = open_new(path, "power", 0, &exp);
    static const double jitter[3] = {0.97, 1.0, 1.03};
    static const char *const be[2] = {"dense", "local"};
    int idx = 0;
    for (int b = 0; b < 2; b++)
        for (int seq = 256; seq <= 8192; seq *= 2) {
            char key[64], name[64], json[256];
            snprintf(key, sizeof key, "p-%s-%d", be[b], seq);
            snprintf(name, sizeof name, "%s-s%d", be[b], seq);
            snprintf(json, sizeof json, "{\"kind\":\"bench\",\"bench\":\"attn\",\"backend\":\"%s\",\"seq\":%d}", be[b], seq);
            for (int sd = 0; sd < 3; sd++) {
                store_trial t = base_trial();
                t.kind = "bench", t.bench = "attn";
                tu_col(&t, "task", NULL), tu_col(&t, "d_model", NULL), tu_col(&t, "layers", NULL);
                tu_col(&t, "steps", NULL), tu_col(&t, "lr", NULL);
                t.key = key, t.name = name, t.backend = be[b], t.params_json = json;
                tu_coli(&t, "seq", seq);
                t.seed = (uint64_t)sd + 1, t.idx = idx++;
                double n = seq;
                double ms = b == 0 ? 2e-4 * pow(n, K_DENSE) : 3e-3 * pow(n, K_LOCAL);
                double act = b == 0 ? 4.0 * n * n : 4.0 * 64 * n;
                store_metric m[3] = {{-1, "fwdbwd_ms", ms * jitter[sd]}, {-1, "act_bytes", act * jitter[sd]},
                                     {-1, "peak_rss_bytes", 1e7 + act}};
                if (b == 0 && seq == 8192) put_trial(s, exp, &t, ST_FAILED, "out of memory", NULL, 0);
                else put_trial(s, exp, &t, ST_DONE, NULL, m, 3);
            }
        }
    store_close(s);
}

/* ------------------------------------------------------------------ */
/* helpers                                                             */

static char *slurp(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    b[n] = 0;
    fclose(f);
    if (len) *len = n;
    return b;
}

/* The table as text in a format (rpt_table_write into a temporary file). */
static char *table_text(const char *db, const char *where, const char *by, const char *metrics, int format) {
    char err[2048];
    rpt_db d;
    if (rpt_open(&d, db, where, err, sizeof err)) {
        diag("rpt_open: %s", err);
        return NULL;
    }
    rpt_table tb;
    rpt_table_opts o = {by, metrics, format};
    if (rpt_table_build(&tb, &d, &o, err, sizeof err)) {
        diag("rpt_table_build: %s", err);
        rpt_close(&d);
        return NULL;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/table.out", tmpdir);
    FILE *f = fopen(path, "w");
    rpt_table_write(f, &tb, format);
    fclose(f);
    rpt_table_free(&tb);
    rpt_close(&d);
    return slurp(path, NULL);
}

/* Minimal RFC 4180 CSV reader: rows of fields (quotes, doubled quotes). */
typedef struct {
    int nrow, ncol[64];
    char *f[64][64];
} csv;

static void csv_parse(const char *s, csv *c) {
    memset(c, 0, sizeof *c);
    while (*s && c->nrow < 64) {
        int r = c->nrow++;
        for (;;) {
            char buf[1024];
            int n = 0;
            if (*s == '"') {
                s++;
                while (*s && !(*s == '"' && s[1] != '"')) {
                    if (*s == '"') s++;
                    if (n < 1023) buf[n++] = *s;
                    s++;
                }
                if (*s == '"') s++;
            } else {
                while (*s && *s != ',' && *s != '\n')
                    if (n < 1023) buf[n++] = *s++;
                    else s++;
            }
            buf[n] = 0;
            if (c->ncol[r] < 64) c->f[r][c->ncol[r]++] = strdup(buf);
            if (*s == ',') {
                s++;
                continue;
            }
            if (*s == '\n') s++;
            break;
        }
    }
}

static void csv_free(csv *c) {
    for (int r = 0; r < c->nrow; r++)
        for (int j = 0; j < c->ncol[r]; j++) free(c->f[r][j]);
}

static int csv_col(const csv *c, const char *name) {
    for (int j = 0; j < c->ncol[0]; j++)
        if (!strcmp(c->f[0][j], name)) return j;
    return -1;
}

/* The csv row of (backend, seq, clusters) (clusters "" for none). */
static int csv_row(const csv *c, const char *backend, int seq, int clusters, int window) {
    int cb = csv_col(c, "backend"), cs = csv_col(c, "seq"), ck = csv_col(c, "clusters"), cw = csv_col(c, "window");
    char sq[32], k[32], w[32];
    snprintf(sq, sizeof sq, "%d", seq);
    if (clusters == NA) k[0] = 0, w[0] = 0;
    else snprintf(k, sizeof k, "%d", clusters), snprintf(w, sizeof w, "%d", window);
    for (int r = 1; r < c->nrow; r++)
        if (!strcmp(c->f[r][cb], backend) && !strcmp(c->f[r][cs], sq) && !strcmp(c->f[r][ck], k) &&
            !strcmp(c->f[r][cw], w))
            return r;
    return -1;
}

/* Split a Markdown table line into trimmed cells. */
static int md_cells(const char *line, char cells[][256], int max) {
    int n = 0;
    const char *p = strchr(line, '|');
    while (p && *p == '|' && n < max) {
        const char *q = p + 1;
        while (*q && *q != '\n' && !(*q == '|' && q[-1] != '\\')) q++;
        if (*q != '|') break;
        const char *a = p + 1, *b = q;
        while (a < b && *a == ' ') a++;
        while (b > a && b[-1] == ' ') b--;
        int len = (int)(b - a) < 255 ? (int)(b - a) : 255;
        memcpy(cells[n], a, (size_t)len);
        cells[n++][len] = 0;
        p = q;
    }
    return n;
}

static double mean_of(const double *v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    return s / n;
}

static double std_of(const double *v, int n) {
    double m = mean_of(v, n), s = 0;
    for (int i = 0; i < n; i++) s += (v[i] - m) * (v[i] - m);
    return sqrt(s / (n - 1));
}

static double median3(double a, double b, double c) {
    return fmax(fmin(a, b), fmin(fmax(a, b), c));
}

static int is_png(const char *path) {
    static const unsigned char sig[8] = {0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A};
    long n = 0;
    char *b = slurp(path, &n);
    int ok = b && n > 100 && memcmp(b, sig, 8) == 0;
    free(b);
    return ok;
}

static int is_svg(const char *path) {
    long n = 0;
    char *b = slurp(path, &n);
    int ok = b && n > 100 && strstr(b, "<svg") != NULL;
    free(b);
    return ok;
}

/* Run a command function with stdout and stderr sent to a file. */
static int quietly(int (*fn)(int, char **), int argc, char **argv) {
    char path[512];
    snprintf(path, sizeof path, "%s/cmd.out", tmpdir);
    fflush(stdout), fflush(stderr);
    int o = dup(1), e = dup(2);
    FILE *f = fopen(path, "w");
    dup2(fileno(f), 1), dup2(fileno(f), 2);
    int rc = fn(argc, argv);
    fflush(stdout), fflush(stderr);
    dup2(o, 1), dup2(e, 2);
    close(o), close(e), fclose(f);
    return rc;
}

/* ------------------------------------------------------------------ */
/* tests                                                               */

static void test_tables(const char *db) {
    /* Markdown: rows, columns, cells of non-done configurations */
    char *md = table_text(db, NULL, NULL, NULL, RPT_MD);
    ok(md != NULL, "markdown table builds");
    if (!md) return;
    char cells[32][256];
    const char *head = strstr(md, "\n| ");
    int nh = head ? md_cells(head + 1, cells, 32) : 0;
    static const char *const want[] = {"backend",  "seq",     "window",  "clusters",          "n",
                                       "eval loss", "step ms (IQR)", "peak RSS MiB", "act. MiB", "GFLOP/s",
                                       "% sgemm",  "speed-up vs dense", "note"};
    int nw = (int)(sizeof want / sizeof want[0]), same = nh == nw;
    for (int i = 0; i < nw && same; i++) {
        int found = 0;
        for (int j = 0; j < nh; j++) found |= !strcmp(cells[j], want[i]);
        same &= found;
    }
    ok(same && !strcmp(cells[0], "backend"), "markdown header: varying parameters, n, measures, note (%d columns: %s ...)",
       nh, nh ? cells[0] : "");
    int rows = 0;
    for (const char *p = head ? head + 1 : md; (p = strchr(p, '\n')) && p[1] == '|'; p++) rows++;
    ok(rows == NKNOWN + 1, "markdown: one row per configuration (%d rows after the header, want %d + separator)", rows,
       NKNOWN);
    ok(strstr(md, "Fixed: ") && strstr(md, "d_model=32") && strstr(md, "heads=2") && strstr(md, "task=copy"),
       "caption names the fixed parameters");
    /* the routing k=4 w=64 row: 2 of 3 done, mean ± std of the two, note with the error */
    const char *r2 = strstr(md, "| routing |");
    int found_partial = 0, found_failed = 0, found_unsup = 0, found_pending = 0;
    char exp_cell[64];
    double l2[2] = {known[2].loss[0], known[2].loss[1]};
    /* two seeds: the 95% CI of the mean is mean -+ t(0.975, 1) std / sqrt(2), t(0.975, 1) = tan(0.475 pi) (Cauchy) */
    double h2 = tan(0.475 * M_PI) * std_of(l2, 2) / sqrt(2.0);
    snprintf(exp_cell, sizeof exp_cell, "%.4f ± %.4f [%.4f, %.4f]", mean_of(l2, 2), std_of(l2, 2), mean_of(l2, 2) - h2,
             mean_of(l2, 2) + h2);
    for (const char *p = r2; p; p = strstr(p + 1, "| routing |")) {
        char c[32][256];
        int n = md_cells(p, c, 32);
        if (n != nh) continue;
        int in = 0, il = -1, inote = -1, it = -1;
        for (int j = 0; j < nh; j++) {
            if (!strcmp(cells[j], "n")) in = j;
            if (!strcmp(cells[j], "eval loss")) il = j;
            if (!strcmp(cells[j], "note")) inote = j;
            if (!strcmp(cells[j], "step ms (IQR)")) it = j;
        }
        if (!strcmp(c[in], "2/3") && !strcmp(c[il], exp_cell) && strstr(c[inote], "1 failed: boom")) found_partial = 1;
        if (!strcmp(c[in], "0/3") && !strcmp(c[il], "failed") && !strcmp(c[it], "failed") &&
            strstr(c[inote], "3 failed: loss diverged"))
            found_failed = 1;
        if (!strcmp(c[in], "0/1") && !strcmp(c[il], "unsupported") && strstr(c[inote], "needs 9.00 GiB")) found_unsup = 1;
        if (!strcmp(c[in], "0/1") && !strcmp(c[il], "pending")) found_pending = 1;
    }
    ok(found_partial, "partly failed configuration: n 2/3, loss %s, the error in the note", exp_cell);
    ok(found_failed, "failed configuration: cells say failed, the error in the note");
    ok(found_unsup && found_pending, "unsupported and pending configurations are shown as such");
    free(md);

    /* CSV parses back to the numbers computed here from what was written */
    char *text = table_text(db, NULL, NULL, NULL, RPT_CSV);
    csv c;
    csv_parse(text ? text : "", &c);
    int consistent = c.nrow == NKNOWN + 1;
    for (int r = 1; r < c.nrow; r++) consistent &= c.ncol[r] == c.ncol[0];
    ok(consistent, "csv: %d rows of %d fields (header + %d configurations)", c.nrow, c.ncol[0], NKNOWN);
    int cl = csv_col(&c, "loss"), cls = csv_col(&c, "loss_std"), cln = csv_col(&c, "loss_n"), ct = csv_col(&c, "time");
    int cn = csv_col(&c, "n"), ctr = csv_col(&c, "trials"), cst = csv_col(&c, "status"), csg = csv_col(&c, "sgemm");
    int cm = csv_col(&c, "mem");
    ok(cl >= 0 && cls >= 0 && cln >= 0 && ct >= 0 && cn >= 0 && ctr >= 0 && cst >= 0 && csg >= 0 && cm >= 0,
       "csv has loss, loss_std, loss_n, time, n, trials, status, sgemm, mem columns");
    double worst = 0;
    int rows_ok = 1;
    for (int g = 0; g < NKNOWN && cl >= 0 && cls >= 0 && cln >= 0 && ct >= 0 && cn >= 0 && csg >= 0 && cm >= 0; g++) {
        const cfg *k = &known[g];
        int r = csv_row(&c, k->backend, k->seq, k->clusters, k->window);
        if (r < 0) {
            rows_ok = 0;
            diag("csv: no row for %s seq %d clusters %d", k->backend, k->seq, k->clusters);
            continue;
        }
        double loss[3], tm[3];
        int nd = 0;
        for (int s = 0; s < k->nseeds; s++)
            if (!strcmp(k->status[s], ST_DONE)) loss[nd] = k->loss[s], tm[nd] = k->time_ms[s], nd++;
        char want_n[16];
        snprintf(want_n, sizeof want_n, "%d", nd);
        rows_ok &= !strcmp(c.f[r][cn], want_n) && atoi(c.f[r][ctr]) == k->nseeds;
        if (nd == 0) {
            rows_ok &= c.f[r][cl][0] == 0 && c.f[r][ct][0] == 0 && !strcmp(c.f[r][cst], k->status[0]);
            continue;
        }
        double m = mean_of(loss, nd), sd = nd > 1 ? std_of(loss, nd) : NAN;
        double med = nd == 3 ? median3(tm[0], tm[1], tm[2]) : nd == 2 ? 0.5 * (tm[0] + tm[1]) : tm[0];
        double got_m = atof(c.f[r][cl]), got_s = atof(c.f[r][cls]), got_t = atof(c.f[r][ct]);
        double got_g = atof(c.f[r][csg]), got_mem = atof(c.f[r][cm]);
        worst = fmax(worst, fabs(got_m - m) / m);
        worst = fmax(worst, fabs(got_s - sd) / sd);
        worst = fmax(worst, fabs(got_t - med) / med);
        worst = fmax(worst, fabs(got_g - k->gflops / 100.0) / (k->gflops / 100.0));
        worst = fmax(worst, fabs(got_mem - k->rss_mib * 1048576.0) / (k->rss_mib * 1048576.0));
        rows_ok &= atoi(c.f[r][cln]) == nd;
    }
    diag("csv: worst relative difference from the values computed here: %.3g", worst);
    ok(rows_ok && worst < 1e-12, "csv parses back to the same numbers (mean, std, median, sgemm share, memory)");
    csv_free(&c);
    free(text);

    /* LaTeX booktabs: rules, the same rows, the same number of columns per row */
    char *tex = table_text(db, NULL, NULL, NULL, RPT_TEX);
    const char *mid = tex ? strstr(tex, "\\midrule") : NULL, *bot = tex ? strstr(tex, "\\bottomrule") : NULL;
    const char *top = tex ? strstr(tex, "\\toprule") : NULL;
    ok(top && mid && bot && top < mid && mid < bot && strstr(tex, "\\begin{tabular}{"),
       "tex: tabular with toprule, midrule, bottomrule");
    int trows = 0, amp_ok = 1;
    for (const char *p = top; p && p < bot; p = strchr(p, '\n')) {
        p++;
        const char *e = strstr(p, "\\\\\n");
        const char *nl = strchr(p, '\n');
        if (!e || (nl && e > nl) || e > bot) continue;
        int amps = 0;
        for (const char *q = p; q < e; q++) amps += *q == '&' && (q == p || q[-1] != '\\');
        amp_ok &= amps == nh - 1;
        if (p > mid) trows++;
    }
    ok(trows == NKNOWN && amp_ok, "tex: %d body rows (want %d), every row has %d columns", trows, NKNOWN, nh);
    ok(tex && strstr(tex, "$\\pm$") && strstr(tex, "d\\_model=32") && strstr(tex, "\\caption{"),
       "tex: ± as $\\pm$, underscores escaped, caption");
    free(tex);

    /* --by backend pools seeds and configurations of a backend */
    text = table_text(db, NULL, "backend", "loss,time", RPT_CSV);
    csv_parse(text ? text : "", &c);
    int rd = -1;
    for (int r = 1; r < c.nrow; r++)
        if (!strcmp(c.f[r][0], "dense")) rd = r;
    double dl[6] = {known[0].loss[0], known[0].loss[1], known[0].loss[2],
                    known[1].loss[0], known[1].loss[1], known[1].loss[2]};
    cl = csv_col(&c, "loss");
    /* backend; n, trials, status, noisy; loss, _std, _ci_lo, _ci_hi, _n; time, _iqr, _n; note */
    ok(c.nrow == 3 && c.ncol[0] == 1 + 4 + 5 + 3 + 1 && rd > 0 && cl > 0 && fabs(atof(c.f[rd][cl]) - mean_of(dl, 6)) < 1e-12,
       "--by backend: two rows, only the chosen measures, dense loss = mean of its 6 trials (%d columns)", c.ncol[0]);
    csv_free(&c);
    free(text);

    /* --where filters trials */
    text = table_text(db, "seq = 256 AND backend = 'routing'", NULL, NULL, RPT_CSV);
    csv_parse(text ? text : "", &c);
    ok(c.nrow == 3, "--where seq = 256 AND backend = 'routing': 2 rows (got %d)", c.nrow - 1);
    csv_free(&c);
    free(text);

    char err[2048];
    rpt_db d;
    ok(rpt_open(&d, db, "nosuchcolumn > 3", err, sizeof err) == -1 && strstr(err, "nosuchcolumn"),
       "a bad --where is refused with SQLite's message: %s", err);
    ok(rpt_open(&d, db, "1); DELETE FROM trials; --", err, sizeof err) == -1, "--where cannot smuggle a statement");
    rpt_table tb;
    ok(rpt_open(&d, db, NULL, err, sizeof err) == 0, "reopen");
    rpt_table_opts o = {NULL, "loss,nosuch_metric", RPT_MD};
    ok(rpt_table_build(&tb, &d, &o, err, sizeof err) == -1 && strstr(err, "nosuch_metric"),
       "an unknown --metric is refused, naming it");
    rpt_table_opts o2 = {"bogus_param", NULL, RPT_MD};
    ok(rpt_table_build(&tb, &d, &o2, err, sizeof err) == -1 && strstr(err, "bogus_param"),
       "an unknown --by parameter is refused, naming it");
    rpt_close(&d);
    char notdb[512];
    snprintf(notdb, sizeof notdb, "%s/notdb.txt", tmpdir);
    FILE *f = fopen(notdb, "w");
    fprintf(f, "hello, not a database\n");
    fclose(f);
    ok(rpt_open(&d, notdb, NULL, err, sizeof err) == -1 && strstr(err, "not a routebench"),
       "a file that is not a database is refused: %s", err);
}

/* The figures only (NULL: all) of database db drawn as format into out:
 * plot_all's status, with its message in err and the figures made in *nmade. */
static int draw(const char *db, const char *out, const char *format, const char *only, int *nmade, char *err,
                size_t errlen) {
    rpt_db d;
    *nmade = 0;
    if (rpt_open(&d, db, NULL, err, errlen)) return -1;
    plot_opts o;
    memset(&o, 0, sizeof o);
    o.out_dir = out, o.format = format, o.only = only, o.quiet = 1;
    plot_result pr;
    int rc = plot_all(&d, &o, &pr, err, errlen);
    *nmade = pr.nmade;
    rpt_close(&d);
    return rc;
}

static void test_power_law(const char *db) {
    double x[6], y[6], k, c;
    for (int i = 0; i < 6; i++) x[i] = 100.0 * (1 << i), y[i] = 0.5 * pow(x[i], 1.37);
    k = c = NAN;
    int frc = plot_fit_power(x, y, 6, &k, &c);
    ok(frc == 0 && fabs(k - 1.37) < 1e-9 && fabs(c - 0.5) < 1e-9,
       "plot_fit_power: exact power law (k %.12f, c %.12f)", k, c);
    ok(plot_fit_power(x, y, 1, &k, &c) == -1, "plot_fit_power: one point is not a fit");

    char err[2048], out[512];
    snprintf(out, sizeof out, "%s/power", tmpdir);
    int n;
    int rc = draw(db, out, "png", "scaling,memory", &n, err, sizeof err);
    ok(rc == 0 && n == 2, "scaling and memory figures drawn (%s)", rc ? err : "ok");
    char path[600];
    snprintf(path, sizeof path, "%s/scaling.gp", out);
    char *gp = slurp(path, NULL);
    snprintf(path, sizeof path, "%s/scaling.dat", out);
    char *dat = slurp(path, NULL);
    const char *p = gp ? strstr(gp, "dense: ~n^") : NULL, *q = gp ? strstr(gp, "local: ~n^") : NULL;
    double kd = p ? atof(p + strlen("dense: ~n^")) : NAN, kl = q ? atof(q + strlen("local: ~n^")) : NAN;
    diag("legend exponents: dense %.4f (law %.2f), local %.4f (law %.2f)", kd, K_DENSE, kl, K_LOCAL);
    ok(fabs(kd - K_DENSE) < 0.01 && fabs(kl - K_LOCAL) < 0.01, "scaling legend recovers the exponents within 0.01");
    p = dat ? strstr(dat, "# fit dense: exponent ") : NULL;
    kd = p ? atof(p + strlen("# fit dense: exponent ")) : NAN;
    ok(fabs(kd - K_DENSE) < 1e-4, "scaling.dat records the fitted exponent %.6f (law %.2f)", kd, K_DENSE);
    ok(gp && strstr(gp, "set logscale xy") && strstr(gp, "missing (1): dense n=8192 (failed)"),
       "log-log axes; the failed length is noted on the figure");
    free(gp), free(dat);
    snprintf(path, sizeof path, "%s/memory.gp", out);
    gp = slurp(path, NULL);
    p = gp ? strstr(gp, "dense: ~n^") : NULL;
    kd = p ? atof(p + strlen("dense: ~n^")) : NAN;
    ok(fabs(kd - 2.0) < 0.01, "memory legend recovers the n^2 of dense activations (%.4f)", kd);
    free(gp);
    snprintf(path, sizeof path, "%s/scaling.png", out);
    ok(is_png(path), "scaling.png is a PNG");
}

static void test_every_figure(const char *db) {
    static const char *const fmts[2] = {"png", "svg"};
    for (int fi = 0; fi < 2; fi++) {
        char err[2048], out[512];
        snprintf(out, sizeof out, "%s/figs-%s", tmpdir, fmts[fi]);
        int n;
        int rc = draw(db, out, fmts[fi], NULL, &n, err, sizeof err);
        ok(rc == 0 && n == PLOT_NFIGURES, "%s: every figure drawn, gnuplot exited 0 (%d of %d%s%s)", fmts[fi], n,
           PLOT_NFIGURES, rc ? ": " : "", rc ? err : "");
        for (int i = 0; i < PLOT_NFIGURES; i++) {
            char img[700], gp[700];
            snprintf(img, sizeof img, "%s/%s.%s", out, plot_figures[i], fmts[fi]);
            snprintf(gp, sizeof gp, "%s/%s.gp", out, plot_figures[i]);
            struct stat sb;
            ok((fi == 0 ? is_png(img) : is_svg(img)) && stat(gp, &sb) == 0,
               "%s: %s is a non-empty %s with its script beside it", fmts[fi], plot_figures[i], fmts[fi]);
        }
    }
    /* the script can be rerun as is, from its directory */
    char dir[512], script[] = "heatmap.gp";
    snprintf(dir, sizeof dir, "%s/figs-png", tmpdir);
    char err[512];
    ok(plot_run_gnuplot(dir, script, err, sizeof err) == 0, "gnuplot heatmap.gp reruns in the output directory");
    char path[600];
    snprintf(path, sizeof path, "%s/figs-png/heatmap.gp", tmpdir);
    char *gp;
    snprintf(path, sizeof path, "%s/figs-png/heatmap.dat", tmpdir);
    char *dat = slurp(path, NULL);
    /* seq=256 is the longest: cells (k=4,w=64) with a loss, (k=8,w=32) failed */
    ok(dat && strstr(dat, "\"failed\"") && strstr(dat, "1.725"), "heatmap: the failed cell is labelled, the done one "
                                                                 "holds its mean loss");
    free(dat);
    snprintf(path, sizeof path, "%s/figs-png/curves_step.gp", tmpdir);
    gp = slurp(path, NULL);
    ok(gp && strstr(gp, "missing (") && strstr(gp, "unsupported") && strstr(gp, "pending"),
       "curves: configurations without a curve are listed as missing with their status");
    free(gp);
    /* pdf: drawn when this gnuplot has pdfcairo, else a clear error */
    char e2[512];
    const char *t = plot_terminal("pdf", e2, sizeof e2);
    ok(t ? !strcmp(t, "pdfcairo") : strstr(e2, "pdf") != NULL, "pdf terminal: %s", t ? t : e2);
    ok(plot_terminal("gif", e2, sizeof e2) == NULL && strstr(e2, "gif"), "an unknown format is refused: %s", e2);
    /* a gnuplot that fails is reported */
    setenv("RB_GNUPLOT", "false", 1);
    ok(plot_run_gnuplot(dir, script, err, sizeof err) == -1 && strstr(err, "status 1"),
       "a failing gnuplot is reported: %s", err);
    unsetenv("RB_GNUPLOT");
}

static void test_compare(const char *base) {
    char cur[512], slow[512], noisy[512], broke[512];
    snprintf(cur, sizeof cur, "%s/same.db", tmpdir);
    snprintf(slow, sizeof slow, "%s/slow.db", tmpdir);
    snprintf(noisy, sizeof noisy, "%s/noisy.db", tmpdir);
    snprintf(broke, sizeof broke, "%s/broke.db", tmpdir);
    make_known(cur, 1.0, 0);
    make_known(slow, 1.5, 0);
    make_known(noisy, 1.05, 0);
    make_known(broke, 1.0, 1);
    char *a1[] = {"compare", cur, "--baseline", (char *)base, NULL};
    int rc = quietly(cmd_compare, 4, a1);
    ok(rc == 0, "compare: an identical database exits 0 (got %d)", rc);
    char *a2[] = {"compare", slow, "--baseline", (char *)base, NULL};
    rc = quietly(cmd_compare, 4, a2);
    ok(rc == 1, "compare: a 50%% slower configuration exits 1 (got %d)", rc);
    char path[600];
    snprintf(path, sizeof path, "%s/cmd.out", tmpdir);
    char *out = slurp(path, NULL);
    ok(out && strstr(out, "SLOWER") && strstr(out, "+50.0%") && strstr(out, "1 flagged"),
       "compare names the slower configuration and its change");
    free(out);
    char *a3[] = {"compare", noisy, "--baseline", (char *)base, NULL};
    rc = quietly(cmd_compare, 4, a3);
    ok(rc == 0, "compare: 5%% slower is within the default 10%% tolerance (exit %d)", rc);
    /* G0 10,12,11 ms -> 10.5,12.6,11.55: past 1%, but inside the spread over seeds of both runs */
    char *a4[] = {"compare", noisy, "--baseline", (char *)base, "--time-rel", "0.01", "--time-abs", "0", NULL};
    rc = quietly(cmd_compare, 8, a4);
    ok(rc == 0, "compare: 5%% slower is within the seeds' spread, not flagged even at --time-rel 0.01 (exit %d)", rc);
    /* G0's median goes from 11 to 16.5 ms: past 5 ms, within 6 ms */
    char *a5[] = {"compare", slow, "--baseline", (char *)base, "--time-abs", "5", NULL};
    rc = quietly(cmd_compare, 6, a5);
    ok(rc == 1, "compare: +5.5 ms is past an absolute tolerance of 5 ms (exit %d)", rc);
    char *a9[] = {"compare", slow, "--baseline", (char *)base, "--time-abs", "6", NULL};
    rc = quietly(cmd_compare, 6, a9);
    ok(rc == 0, "compare: +5.5 ms is within an absolute tolerance of 6 ms although 50%% slower (exit %d)", rc);
    char *a6[] = {"compare", broke, "--baseline", (char *)base, NULL};
    rc = quietly(cmd_compare, 4, a6);
    ok(rc == 1, "compare: a configuration that now fails is flagged (exit %d)", rc);
    char *a7[] = {"compare", cur, NULL};
    ok(quietly(cmd_compare, 2, a7) == 2, "compare without --baseline exits 2");
    char *a8[] = {"compare", cur, "--baseline", "/nonexistent/x.db", NULL};
    ok(quietly(cmd_compare, 4, a8) == 2, "compare with a missing baseline exits 2");
}


/* ------------------------------------------------------------------ */
/* issue 16: statistics, noise, speed-up, crossover, compare by spread */

/* Student t quantiles: the closed forms for 1 and 2 degrees of freedom
 * (Cauchy: tan(pi (p - 1/2)); df 2: (2p-1) sqrt(2 / (4p(1-p)))) and the
 * printed table's values for 4, 9 and 30. */
static void test_student_t(void) {
    double p = 0.975, t1 = tan(M_PI * (p - 0.5)), t2 = (2 * p - 1) * sqrt(2 / (4 * p * (1 - p)));
    ok(fabs(rpt_student_t(p, 1) - t1) < 1e-9 && fabs(rpt_student_t(p, 2) - t2) < 1e-9,
       "t(0.975; 1) = %.9f (want %.9f), t(0.975; 2) = %.9f (want %.9f)", rpt_student_t(p, 1), t1, rpt_student_t(p, 2),
       t2);
    static const struct {
        double df, t;
    } table[] = {{4, 2.776445}, {9, 2.262157}, {30, 2.042272}};
    int good = 1;
    for (int i = 0; i < 3; i++) good &= fabs(rpt_student_t(p, table[i].df) - table[i].t) < 1e-6;
    ok(good, "t(0.975; 4, 9, 30) = %.6f %.6f %.6f (tables: 2.776445 2.262157 2.042272)", rpt_student_t(p, 4),
       rpt_student_t(p, 9), rpt_student_t(p, 30));
    ok(fabs(rpt_student_t(0.5, 7)) < 1e-6 && fabs(rpt_student_t(0.025, 4) + 2.776445) < 1e-6, "symmetric about 0");
}

/* Losses over 1, 2, 3, 5 and 10 seeds: the CSV's CI bounds are mean -+ t
 * std / sqrt(n) with the t values of the table; one seed has none, and the
 * Markdown cell shows no interval. */
static void test_ci_table(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/ci.db", tmpdir);
    int64_t exp;
    rb_store *s = open_new(path, "ci", 0, &exp);
    static const int ns[] = {1, 2, 3, 5, 10};
    static const double tq[] = {NAN, 12.706205, 4.302653, 2.776445, 2.262157};
    double v[5][10];
    int idx = 0;
    for (int c = 0; c < 5; c++) {
        spec sp = {"dense", 64 * (c + 1), 0, 0};
        for (int k = 0; k < ns[c]; k++) {
            v[c][k] = 2.0 + 0.1 * sin(1.0 + 3.0 * k + c);
            store_metric m[2] = {{-1, "eval_loss", v[c][k]}, {-1, "step_ms", 5.0}};
            add_cfg(s, exp, &sp, k + 1, idx++, m, 2, -1, NULL);
        }
    }
    store_close(s);
    char *text = table_text(path, NULL, NULL, "loss", RPT_CSV);
    csv t;
    csv_parse(text ? text : "", &t);
    int cl = csv_col(&t, "loss_ci_lo"), ch = csv_col(&t, "loss_ci_hi"), cs = csv_col(&t, "seq"), good = cl > 0 && ch > 0;
    double worst = 0;
    for (int c = 0; c < 5 && good; c++) {
        int r = 0;
        for (int i = 1; i < t.nrow; i++)
            if (atoi(t.f[i][cs]) == 64 * (c + 1)) r = i;
        if (!r) {
            good = 0;
            break;
        }
        if (ns[c] == 1) {
            good &= !t.f[r][cl][0] && !t.f[r][ch][0];
            continue;
        }
        double m = mean_of(v[c], ns[c]), h = tq[c] * std_of(v[c], ns[c]) / sqrt(ns[c]);
        worst = fmax(worst, fmax(fabs(atof(t.f[r][cl]) - (m - h)), fabs(atof(t.f[r][ch]) - (m + h))));
    }
    ok(good && worst < 1e-6, "csv 95%% CI bounds = mean -+ t std/sqrt(n) with table t (worst %.2g); none for one seed",
       worst);
    csv_free(&t);
    free(text);
    text = table_text(path, "seq = 64", NULL, "loss", RPT_MD);
    char want[64];
    snprintf(want, sizeof want, " %.4f |\n", v[0][0]);
    const char *row = text ? strstr(text, want) : NULL;
    ok(row && row[-1] == ' ' && !strchr(row + 1, '['), "one seed: the cell is the mean alone, no ± and no interval");
    free(text);
}

/* Noisy trials: a mark on the row, the reasons under the table, a count in CSV. */
static void test_noisy_mark(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/noisy_mark.db", tmpdir);
    int64_t exp;
    rb_store *s = open_new(path, "noisemark", 0, &exp);
    spec a = {"dense", 128, 0, 0}, b = {"local", 128, 0, 16};
    for (int k = 0; k < 3; k++) {
        store_metric m[3] = {{-1, "fwdbwd_ms", 10.0 + k}, {-1, "fwdbwd_ms_iqr", 0.5}, {-1, "eval_loss", 2}};
        add_cfg(s, exp, &a, k + 1, k, m, 3, k == 1, k == 1 ? "IQR 31% of the median; other processes used 1.6 CPUs" : NULL);
        add_cfg(s, exp, &b, k + 1, 3 + k, m, 3, 0, NULL);
    }
    store_close(s);
    char *md = table_text(path, NULL, NULL, "time", RPT_MD);
    ok(md && strstr(md, "| dense   |  3* |") && strstr(md, "| local   |   3 |"),
       "md: the row with a noisy trial is marked 3*, the clean one is not");
    ok(md && strstr(md, "* noisy measurement: dense: 1 of 3 trials (IQR 31% of the median; other processes used 1.6 CPUs)"),
       "md: the footnote gives the row and the reason");
    free(md);
    char *text = table_text(path, NULL, NULL, "time", RPT_CSV);
    csv t;
    csv_parse(text ? text : "", &t);
    int cn = csv_col(&t, "noisy"), cb = csv_col(&t, "backend"), good = cn > 0 && t.nrow == 3;
    for (int r = 1; r < t.nrow && good; r++) good &= atoi(t.f[r][cn]) == (strcmp(t.f[r][cb], "dense") == 0);
    ok(good, "csv: noisy = 1 on dense, 0 on local");
    csv_free(&t);
    free(text);
}

/* A column keeps one scale: 22660 ms beside 5540 ms, 2193 MiB beside 589,
 * never 2.266e+04 or 2.19e+03 (issue: tables mixed 12710 and 1.271e+04). */
static void test_number_formats(void) {
    char path[512], a[64];
    rpt_fmt_sig(a, sizeof a, 22660.4, 4);
    int good = !strcmp(a, "22660");
    rpt_fmt_sig(a, sizeof a, 9999.6, 4);
    good &= !strcmp(a, "10000");
    rpt_fmt_sig(a, sizeof a, 5540.25, 4);
    good &= !strcmp(a, "5540");
    rpt_fmt_sig(a, sizeof a, 1.23456, 4);
    good &= !strcmp(a, "1.235");
    rpt_fmt_sig(a, sizeof a, 2193.1, 3);
    good &= !strcmp(a, "2193");
    ok(good, "rpt_fmt_sig: 4 significant digits below 10^4, whole numbers from there (%s)", a);
    snprintf(path, sizeof path, "%s/formats.db", tmpdir);
    int64_t exp;
    rb_store *s = open_new(path, "formats", 0, &exp);
    spec x = {"dense", 4096, 0, 0}, y = {"dense", 32768, 0, 0};
    store_metric m1[2] = {{-1, "fwdbwd_ms", 5540.25}, {-1, "peak_rss_bytes", 589.0 * 1048576}};
    store_metric m2[2] = {{-1, "fwdbwd_ms", 22660.4}, {-1, "peak_rss_bytes", 2193.1 * 1048576}};
    add_cfg(s, exp, &x, 1, 0, m1, 2, -1, NULL);
    add_cfg(s, exp, &y, 1, 1, m2, 2, -1, NULL);
    store_close(s);
    char *md = table_text(path, NULL, NULL, "time,mem", RPT_MD);
    if (md && !strstr(md, " 2193 ")) diag("%s", md);
    ok(md && strstr(md, " 22660 ") && strstr(md, " 2193 ") && strstr(md, " 5540 ") && !strstr(md, "e+0"),
       "md: step time 22660 and peak RSS 2193 MiB written out, no exponent in any cell");
    free(md);
}

/* Each trial's share of sgemm uses its own run's ceiling: run 1 (100
 * GFLOP/s) records A, run 2 (200 before, 250 after the sweep) records B, run
 * 3 (400) records nothing; both did 50 GFLOP/s: A 50%, B 20%. */
static void test_sgemm_own_run(void) {
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/sgemm.db", tmpdir);
    int64_t e1, e2, e3;
    rb_store *s = open_new(path, "sgemm", 100, &e1);
    spec a = {"dense", 128, 0, 0}, b = {"dense", 256, 0, 0};
    store_metric m[2] = {{-1, "gflops", 50}, {-1, "step_ms", 1}};
    add_cfg(s, e1, &a, 1, 0, m, 2, -1, NULL);
    store_experiment x;
    memset(&x, 0, sizeof x);
    x.name = "sgemm", x.kind = "train", x.yaml = "name: test\n", x.yaml_hash = "0123456789abcdef", x.path = "t.yaml";
    x.host = "testhost", x.threads = 1, x.sgemm_gflops = 200;
    if (store_begin_experiment(s, &x, &e2, err, sizeof err)) diag("%s", err);
    add_cfg(s, e2, &b, 1, 1, m, 2, -1, NULL);
    x.sgemm_gflops = 400;
    if (store_begin_experiment(s, &x, &e3, err, sizeof err)) diag("%s", err);
    store_close(s);
    sqlite3 *db;
    sqlite3_open(path, &db);
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE experiments SET sgemm_after = 250 WHERE id = %lld", (long long)e2);
    ok(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK, "sgemm_after set on run 2");
    sqlite3_close(db);
    char *text = table_text(path, NULL, NULL, "sgemm", RPT_CSV);
    csv t;
    csv_parse(text ? text : "", &t);
    int cg = csv_col(&t, "sgemm"), cs = csv_col(&t, "seq");
    double ga = NAN, gb = NAN;
    for (int r = 1; r < t.nrow && cg > 0; r++) *(atoi(t.f[r][cs]) == 128 ? &ga : &gb) = atof(t.f[r][cg]);
    ok(fabs(ga - 0.5) < 1e-12 && fabs(gb - 0.2) < 1e-12,
       "share of sgemm from each trial's own run: %.3f (want 0.5), %.3f (want 0.2 = 50/max(200, 250))", ga, gb);
    csv_free(&t);
    free(text);
    char *md = table_text(path, NULL, NULL, "sgemm", RPT_MD);
    ok(md && strstr(md, "100.0-250.0 GFLOP/s") && !strstr(md, "400"), "caption: the range of the trials' own ceilings, "
                                                                        "not the latest run's 400");
    free(md);
}

/* Speed-up on the known database: routing n=256 against dense n=256, from
 * the medians and the interquartile intervals computed here. */
static void test_speedup(const char *db) {
    char *text = table_text(db, NULL, NULL, NULL, RPT_CSV);
    csv t;
    csv_parse(text ? text : "", &t);
    int r = csv_row(&t, "routing", 256, 4, 64), c = csv_col(&t, "speedup"), cl = csv_col(&t, "speedup_lo");
    int ch = csv_col(&t, "speedup_hi"), rd = csv_row(&t, "dense", 256, NA, NA);
    /* dense 39, 40, 41: median 40, quartiles 39.5, 40.5; routing 20, 22: median 21, quartiles 20.5, 21.5 */
    double s = 40.0 / 21.0, lo = 39.5 / 21.5, hi = 40.5 / 20.5;
    ok(r > 0 && c > 0 && fabs(atof(t.f[r][c]) - s) < 1e-12 && fabs(atof(t.f[r][cl]) - lo) < 1e-12 &&
           fabs(atof(t.f[r][ch]) - hi) < 1e-12 && rd > 0 && atof(t.f[rd][c]) == 1.0,
       "speed-up vs dense %.4f [%.4f, %.4f]; dense itself 1", s, lo, hi);
    csv_free(&t);
    free(text);
    rpt_db d;
    char err[512], sum[4096];
    if (rpt_open(&d, db, NULL, err, sizeof err)) return (void)ok(0, "open: %s", err);
    rpt_summary(&d, sum, sizeof sum);
    rpt_close(&d);
    diag("%s", sum);
    ok(strstr(sum, "Lowest eval loss: routing n=256 w=64 k=4") &&
           strstr(sum, "(within noise of it: dense n=128, dense n=256)") &&
           strstr(sum, "n=256: routing n=256 w=64 k=4, 21 ms") && strstr(sum, "none judged noisy"),
       "summary: the lowest loss, the two dense rows whose 95%% CIs overlap it, the fastest at n=256");
}

/* Two runs: base times 10, 10.2, 9.9 ms, each trial's own IQR 2 ms.
 * Within noise: +15% (past the 10% tolerance) inside the IQR; a real 2x
 * slowdown; the same 2x measured noisy. */
static void make_timed(const char *path, double f, int noisy) {
    int64_t exp;
    rb_store *s = open_new(path, "timed", 0, &exp);
    static const double base[3] = {10, 10.2, 9.9};
    spec a = {"dense", 256, 0, 0}, b = {"local", 256, 0, 32};
    for (int k = 0; k < 3; k++) {
        store_metric m[3] = {{-1, "fwdbwd_ms", base[k] * f}, {-1, "fwdbwd_ms_iqr", 2.0}, {-1, "fwdbwd_ms_n", 20}};
        add_cfg(s, exp, &a, k + 1, k, m, 3, noisy, noisy ? "other processes used 1.9 CPUs" : NULL);
        store_metric m2[3] = {{-1, "fwdbwd_ms", base[k]}, {-1, "fwdbwd_ms_iqr", 2.0}, {-1, "fwdbwd_ms_n", 20}};
        add_cfg(s, exp, &b, k + 1, 3 + k, m2, 3, 0, NULL);
    }
    store_close(s);
}

static void test_compare_noise(void) {
    char base[512], same[512], slow2[512], noisy2[512], out[600];
    snprintf(base, sizeof base, "%s/t_base.db", tmpdir), snprintf(same, sizeof same, "%s/t_noise.db", tmpdir);
    snprintf(slow2, sizeof slow2, "%s/t_slow.db", tmpdir), snprintf(noisy2, sizeof noisy2, "%s/t_noisy.db", tmpdir);
    snprintf(out, sizeof out, "%s/cmd.out", tmpdir);
    make_timed(base, 1.0, 0), make_timed(same, 1.15, 0), make_timed(slow2, 2.0, 0), make_timed(noisy2, 2.0, 1);
    char *a1[] = {"compare", same, "--baseline", base, NULL};
    int rc = quietly(cmd_compare, 4, a1);
    char *o = slurp(out, NULL);
    ok(rc == 0 && o && strstr(o, "+15.0%") && !strstr(o, "SLOWER"),
       "compare: +15%% inside both runs' IQR is no regression (exit %d)", rc);
    free(o);
    char *a2[] = {"compare", slow2, "--baseline", base, NULL};
    rc = quietly(cmd_compare, 4, a2);
    o = slurp(out, NULL);
    ok(rc == 1 && o && strstr(o, "SLOWER") && strstr(o, "+100.0%") && strstr(o, "1 flagged"),
       "compare: a real 2x slowdown is a regression (exit %d)", rc);
    free(o);
    char *a3[] = {"compare", noisy2, "--baseline", base, NULL};
    rc = quietly(cmd_compare, 4, a3);
    o = slurp(out, NULL);
    ok(rc == 0 && o && strstr(o, "time noisy (not judged)") && !strstr(o, "SLOWER") && strstr(o, "1 noisy"),
       "compare: the same 2x measured noisy is reported as noisy, not as a regression (exit %d)", rc);
    free(o);
}

/* Crossover on known power laws: dense a n^2, routing b n^1.5 cross at
 * (b/a)^2 = 1225; local is below dense everywhere, hybrid never. Loss:
 * routing - dense = 0.3 - 0.1 log2(n/128) reaches the 0.05 tolerance at
 * n = 128 * 2^2.5. */
static void make_cross(const char *path) {
    int64_t exp;
    rb_store *s = open_new(path, "cross", 0, &exp);
    const double a = 1e-6, b = 3.5e-5;
    int idx = 0;
    for (int n = 128; n <= 4096; n *= 2) {
        double l2 = log2(n / 128.0);
        spec sd = {"dense", n, 0, 0}, sr = {"routing", n, 8, 0}, sl = {"local", n, 0, 64}, sh = {"hybrid", n, 8, 64};
        store_metric md[2] = {{-1, "step_ms", a * n * (double)n}, {-1, "eval_loss", 2.0}};
        store_metric mr[2] = {{-1, "step_ms", b * pow(n, 1.5)}, {-1, "eval_loss", 2.3 - 0.1 * l2}};
        store_metric ml[2] = {{-1, "step_ms", 0.5 * a * n * (double)n}, {-1, "eval_loss", 2.5}};
        store_metric mh[2] = {{-1, "step_ms", 2 * a * n * (double)n}, {-1, "eval_loss", 2.01}};
        add_cfg(s, exp, &sd, 1, idx++, md, 2, -1, NULL), add_cfg(s, exp, &sr, 1, idx++, mr, 2, -1, NULL);
        add_cfg(s, exp, &sl, 1, idx++, ml, 2, -1, NULL), add_cfg(s, exp, &sh, 1, idx++, mh, 2, -1, NULL);
    }
    store_close(s);
}

static void test_crossover(void) {
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/cross.db", tmpdir);
    make_cross(path);
    rpt_db d;
    if (rpt_open(&d, path, NULL, err, sizeof err)) return (void)ok(0, "open: %s", err);
    rpt_cross *c;
    int n = 0;
    ok(rpt_crossover(&d, 0.05, &c, &n, err, sizeof err) == 0 && n == 3, "three sparse series (%d)", n);
    double exact = pow(3.5e-5 / 1e-6, 2), lexact = 128 * pow(2, 2.5);
    for (int i = 0; i < n; i++) {
        if (!strncmp(c[i].label, "routing", 7)) {
            ok(c[i].time_case == RPT_X_AT && fabs(c[i].time_at / exact - 1) < 0.01,
               "routing: time crossover n = %.2f, exact %.2f (within 1%%)", c[i].time_at, exact);
            ok(c[i].loss_case == RPT_X_AT && fabs(c[i].loss_at / lexact - 1) < 0.01,
               "routing: loss within 0.05 of dense from n = %.2f, exact %.2f", c[i].loss_at, lexact);
        } else if (!strncmp(c[i].label, "local", 5)) {
            ok(c[i].time_case == RPT_X_BELOW_FIRST && c[i].loss_case == RPT_X_NOT_WITHIN,
               "local: below dense at the shortest length, its loss never within tolerance");
        } else {
            ok(c[i].time_case == RPT_X_NOT_WITHIN && c[i].loss_case == RPT_X_BELOW_FIRST,
               "hybrid: not below dense within the lengths, its loss within tolerance from the start");
        }
    }
    rpt_crossover_free(c, n);
    rpt_close(&d);
    char *a1[] = {"report", path, "--crossover", "--loss-tol", "0.05", NULL};
    int rc = quietly(cmd_report, 5, a1);
    char out[600];
    snprintf(out, sizeof out, "%s/cmd.out", tmpdir);
    char *o = slurp(out, NULL);
    ok(rc == 0 && o && strstr(o, "n = 1225") && strstr(o, "below the shortest length measured (n = 128)") &&
           strstr(o, "not within the lengths measured (up to n = 4096)"),
       "report --crossover prints the three answers");
    free(o);
}

/* The heatmap never averages backends: routing 123.58 and hybrid 101.68 in
 * the same cell give two panels, not one cell of 112.63. */
static void test_heatmap_panels(void) {
    char path[512], err[2048], out[512];
    snprintf(path, sizeof path, "%s/heat.db", tmpdir);
    snprintf(out, sizeof out, "%s/heat", tmpdir);
    int64_t exp;
    rb_store *s = open_new(path, "heat", 0, &exp);
    spec r = {"routing", 256, 4, 32}, h = {"hybrid", 256, 4, 32}, r2 = {"routing", 256, 8, 32};
    store_metric m1[1] = {{-1, "eval_loss", 123.58}}, m2[1] = {{-1, "eval_loss", 101.68}}, m3[1] = {{-1, "eval_loss", 99}};
    add_cfg(s, exp, &r, 1, 0, m1, 1, -1, NULL), add_cfg(s, exp, &h, 1, 1, m2, 1, -1, NULL);
    add_cfg(s, exp, &r2, 1, 2, m3, 1, -1, NULL);
    store_close(s);
    int n;
    int rc = draw(path, out, "png", "heatmap", &n, err, sizeof err);
    char p[600];
    snprintf(p, sizeof p, "%s/heatmap.dat", out);
    char *dat = slurp(p, NULL);
    snprintf(p, sizeof p, "%s/heatmap.gp", out);
    char *gp = slurp(p, NULL);
    ok(rc == 0 && dat && strstr(dat, "panel routing") && strstr(dat, "panel hybrid") && strstr(dat, "\"123.58\"") &&
           strstr(dat, "\"101.68\"") && !strstr(dat, "112.63"),
       "heatmap: one panel per backend, each cell its own value, no mean of the two (%s)", rc ? err : "ok");
    ok(gp && strstr(gp, "set multiplot layout 1,2") && strstr(gp, "index 1"), "heatmap.gp draws two panels");
    snprintf(p, sizeof p, "%s/heatmap.png", out);
    ok(is_png(p), "heatmap.png drawn");
    free(dat), free(gp);
}

/* plot without --only draws only figures with data and lists the others;
 * --fit-from limits the fit and the legend says which points it used. */
static void test_plot_skip(const char *power) {
    char err[2048], out[512], p[600];
    snprintf(out, sizeof out, "%s/skip", tmpdir);
    rpt_db d;
    if (rpt_open(&d, power, NULL, err, sizeof err)) return (void)ok(0, "open: %s", err);
    plot_opts o;
    memset(&o, 0, sizeof o);
    o.out_dir = out, o.format = "png", o.quiet = 1, o.fit_from = 1024;
    plot_result r;
    int rc = plot_all(&d, &o, &r, err, sizeof err);
    struct stat sb;
    snprintf(p, sizeof p, "%s/curves_step.png", out);
    int no_curves = stat(p, &sb) != 0;
    ok(rc == 0 && r.nmade == 3 && r.nskipped == 4 && strstr(r.skipped, "curves_step: no evaluation curves") &&
           strstr(r.skipped, "curves_time: ") && strstr(r.skipped, "heatmap: ") && strstr(r.skipped, "tradeoff: ") &&
           no_curves,
       "bench database: scaling, memory, crossover drawn; curves, heatmap, tradeoff skipped with why");
    for (char *l = strtok(r.skipped, "\n"); l; l = strtok(NULL, "\n")) diag("skipped %s", l);
    snprintf(p, sizeof p, "%s/scaling.gp", out);
    char *gp = slurp(p, NULL);
    const char *q = gp ? strstr(gp, "dense: ~n^") : NULL;
    ok(q && fabs(atof(q + strlen("dense: ~n^")) - K_DENSE) < 0.01 && strstr(gp, "fit n=1024-4096, 3 of 5 points") &&
           strstr(gp, "yerrorlines"),
       "--fit-from 1024: the legend says the fit used n=1024-4096, 3 of 5 points; error bars drawn");
    free(gp);
    snprintf(p, sizeof p, "%s/memory.gp", out);
    gp = slurp(p, NULL);
    ok(gp && strstr(gp, "set ylabel 'activation memory, MiB"), "memory axis says it is activation memory");
    free(gp);
    o.only = "curves_step";
    rc = plot_all(&d, &o, &r, err, sizeof err);
    snprintf(p, sizeof p, "%s/curves_step.png", out);
    ok(rc == 0 && r.nmade == 1 && is_png(p), "--only curves_step still draws the frame that says why");
    rpt_close(&d);
}

int main(void) {
    if (tu_tmpdir(tmpdir, sizeof tmpdir, "test_report")) return 1;
    char known_db[512], power_db[512];
    snprintf(known_db, sizeof known_db, "%s/known.db", tmpdir);
    snprintf(power_db, sizeof power_db, "%s/power.db", tmpdir);
    make_known(known_db, 1.0, 0);
    make_power(power_db);
    test_tables(known_db);
    test_power_law(power_db);
    test_every_figure(known_db);
    test_compare(known_db);
    test_student_t();
    test_ci_table();
    test_noisy_mark();
    test_number_formats();
    test_sgemm_own_run();
    test_speedup(known_db);
    test_compare_noise();
    test_crossover();
    test_heatmap_panels();
    test_plot_skip(power_db);
    tu_rmtree(tmpdir);
    return tap_done();
}
