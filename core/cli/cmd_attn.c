/* cmd_attn.c: `routebench attn` (time or check one attention layer) and
 * `routebench backends` (list the registry). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "attn/attn.h"
#include "attn/bench.h"
#include "attn/attn_npy.h"
#include "model/model_npy.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "util/json.h"
#include "util/status.h"
#include "util/threads.h"

int cmd_backends(int argc, char **argv) {
    int names_only = 0;
    const cli_flag flags[] = {
        {"--names", "-q", FL_SWITCH, &names_only, NULL, 0, 0, NULL, "print the names alone"},
    };
    const cli_spec spec = {.cmd = "backends", .synopsis = "[--names]",
                           .about = "One registered attention backend per line with a short description.",
                           .flags = flags, .nflags = 1};
    int rc = cli_parse(&spec, argc, argv, NULL, NULL);
    if (rc != CLI_OK) return cli_exit(rc);
    for (int i = 0; i < attn_count(); i++) {
        const attn_backend *be = attn_get(i);
        if (names_only) printf("%s\n", be->name);
        else printf("%-12s %s\n", be->name, be->description);
    }
    return RB_EXIT_OK;
}

typedef struct {
    const char *backend, *save_dir, *load_dir;
    int threads, repeat, warmup, json, check, eval;
    double min_time, max_time, tol;
} attn_opts;

static int set_attn_param(void *target, const rb_param *d, const char *text, char *err, size_t errlen) {
    return attn_params_set(target, d->name, text, err, errlen);
}

static const char attn_about[] =
    "Times one attention layer: forward, backward and forward+backward, median over\n"
    "--repeat samples or more after --warmup untimed passes (a sample is one pass, or the mean\n"
    "of a block of passes lasting 2 ms when a pass is shorter; interquartile ranges beside them,\n"
    "and `noisy` when the spread or other processes' use of the machine says not to trust\n"
    "them), with GFLOP/s from the backend's analytic\n"
    "count (2 FLOPs per multiply-add, only attended query-key pairs), its activation\n"
    "bytes and the process's peak RSS. With --check it instead checks the backend's\n"
    "gradients against central finite differences and, where the configuration must\n"
    "equal dense attention, its outputs and gradients against `dense`; exit 1 on failure.";

static int parse_attn(int argc, char **argv, attn_params *p, attn_opts *o) {
    char backend_help[1024], names[1000];
    snprintf(backend_help, sizeof backend_help, "one of: %s", attn_names(names, sizeof names));
    const cli_flag flags[] = {
        {"--backend", NULL, FL_STR, &o->backend, "NAME", 0, 0, NULL, backend_help},
        {"--threads", NULL, FL_INT, &o->threads, "T", 1, 4096, NULL, "threads for everything (default: all cores)"},
        {"--repeat", NULL, FL_INT, &o->repeat, "R", 1, 100000, NULL,
         "timed runs at least (default 5); more follow until their IQR is within\n--tol of the median or --max-time runs out"},
        {"--warmup", NULL, FL_INT, &o->warmup, "W", 0, 100000, NULL, "untimed runs first (default 1)"},
        {"--min-time", NULL, FL_DOUBLE, &o->min_time, "S", 0, 1e6, NULL, "keep timing at least S seconds (default 0.25: long enough to read the\n"
         "machine's load over the samples)"},
        {"--max-time", NULL, FL_DOUBLE, &o->max_time, "S", 0, 1e6, NULL, "stop adding runs after S seconds (default 3)"},
        {"--tol", NULL, FL_DOUBLE, &o->tol, "F", 0, 10, NULL, "IQR / median that is good enough (default 0.05)"},
        {"--check", NULL, FL_SWITCH, &o->check, NULL, 0, 0, NULL,
         "check gradients / agreement with dense instead of timing"},
        {"--json", NULL, FL_SWITCH, &o->json, NULL, 0, 0, NULL, "print one JSON object"},
        {"--save", NULL, FL_STR, &o->save_dir, "DIR", 0, 0, NULL,
         "instead of timing, run one forward and backward pass and write its\n"
         "inputs and results to DIR as .npy (q, k, v, dout, out, dq, dk, dv; routing:\n"
         "centroids_before/after, members) with manifest.json"},
        {"--load", NULL, FL_STR, &o->load_dir, "DIR", 0, 0, NULL,
         "take q, k, v, dout (and centroids_before, if there) from DIR/*.npy;\n"
         "without --seq the sizes come from q.npy; results go to DIR unless --save"},
        {"--eval", NULL, FL_SWITCH, &o->eval, NULL, 0, 0, NULL,
         "with --save/--load: an evaluation pass (routing: centroids stay put)"},
    };
    const cli_spec spec = {.cmd = "attn", .synopsis = "--backend NAME --seq N [options]", .about = attn_about,
                           .flags = flags, .nflags = (int)(sizeof flags / sizeof flags[0]),
                           .params = CLI_PARAMS_ATTN, .set_param = set_attn_param, .target = p,
                           .epilog = "exit status: 0 ok, 1 a check failed, 2 bad options or input\n"};
    int rc = cli_parse(&spec, argc, argv, NULL, NULL);
    if (rc != CLI_OK) return cli_exit(rc);
    const char *problem = !o->backend ? "--backend is required"
                          : o->eval && !o->save_dir && !o->load_dir ? "--eval applies to --save/--load passes only"
                          : (o->save_dir || o->load_dir) && o->check ? "--check does not combine with --save/--load"
                          : p->seq == 0 && !o->load_dir ? "--seq is required"
                                                        : NULL;
    if (problem) {
        fprintf(stderr, "routebench attn: %s (`routebench attn --help` lists the options)\n", problem);
        return RB_EXIT_USAGE;
    }
    return -1; /* go on */
}

static int npy_pass(const char *backend, attn_params *p, const attn_opts *o) {
    char err[1024];
    int narrays;
    if (attn_npy_pass(backend, p, o->eval ? ATTN_EVAL : ATTN_TRAIN, o->load_dir, o->save_dir, &narrays, err,
                      sizeof err) != 0) {
        fprintf(stderr, "routebench attn: %s\n", err);
        return RB_EXIT_USAGE;
    }
    const char *dir = o->save_dir ? o->save_dir : o->load_dir;
    if (!o->json) {
        printf("%s: wrote %d arrays and manifest.json to %s\n", backend, narrays, dir);
        return RB_EXIT_OK;
    }
    rb_jw w;
    rb_jw_init_file(&w, stdout);
    rb_jw_obj(&w);
    rb_jw_kstr(&w, "backend", backend), rb_jw_kstr(&w, "dir", dir), rb_jw_kint(&w, "arrays", narrays);
    rb_jw_obj_end(&w);
    printf("\n");
    return RB_EXIT_OK;
}

/* "  heads: local heads 0-1 (window 8), routing heads 2-3 (...)" for a layer
 * of head groups (hybrid); nothing for a backend whose heads are all alike. */
static void print_heads(const char *backend, const attn_params *p) {
    const attn_backend *be = attn_find(backend);
    char text[512];
    if (be && be->head_groups) printf("  heads: %s\n", attn_describe_heads(be, p, text, sizeof text));
}

static int check(const char *backend, attn_params *p, int json) {
    char err[1024];
    attn_check_result r;
    if (attn_check(backend, p, &r, err, sizeof err) != 0) {
        fprintf(stderr, "routebench attn: %s\n", err);
        return RB_EXIT_USAGE;
    }
    if (json) {
        rb_jw w;
        rb_jw_init_file(&w, stdout);
        rb_jw_obj(&w);
        rb_jw_kstr(&w, "backend", backend);
        attn_params_json(&w, p, attn_find(backend)->uses, RB_FMT_TEXT);
        rb_jw_key(&w, "pass"), rb_jw_bool(&w, r.pass);
        rb_jw_kreal(&w, "grad_rel_err", r.grad_rel_err);
        rb_jw_kreal(&w, "dense_max_abs_err", r.compared_dense ? r.dense_max_abs_err : NAN);
        rb_jw_kstr(&w, "detail", r.detail);
        rb_jw_obj_end(&w);
        printf("\n");
    } else {
        printf("%s: %s\n  gradient vs central differences: worst relative error %.3g (%s)\n", backend,
               r.pass ? "PASS" : "FAIL", r.grad_rel_err, r.detail);
        print_heads(backend, p);
        if (r.compared_dense) printf("  against dense: max abs difference %.3g\n", r.dense_max_abs_err);
        else printf("  against dense: not applicable for this configuration\n");
    }
    return r.pass ? RB_EXIT_OK : RB_EXIT_FAILED;
}

static void bench_json(const char *backend, const attn_params *p, const attn_bench_result *r) {
    rb_jw w;
    rb_jw_init_file(&w, stdout);
    rb_jw_obj(&w);
    rb_jw_kstr(&w, "backend", backend);
    attn_params_json(&w, p, attn_find(backend)->uses, RB_FMT_TEXT);
    rb_jw_kint(&w, "threads", rb_threads()), rb_jw_kint(&w, "repeat", r->repeat);
    rb_jw_kint(&w, "block", r->block);
    const struct {
        const char *k;
        double v;
    } nums[] = {{"fwd_ms", r->fwd_ms},         {"fwd_ms_iqr", r->fwd_ms_iqr},   {"bwd_ms", r->bwd_ms},
                {"bwd_ms_iqr", r->bwd_ms_iqr}, {"fwdbwd_ms", r->fwdbwd_ms},     {"fwdbwd_ms_iqr", r->fwdbwd_ms_iqr},
                {"fwd_ms_min", r->fwd_ms_min}, {"fwd_ms_max", r->fwd_ms_max},   {"fwd_flops", r->fwd_flops},
                {"bwd_flops", r->bwd_flops},   {"fwd_gflops", r->fwd_gflops},   {"fwdbwd_gflops", r->fwdbwd_gflops},
                {"load_avg", r->load_avg},     {"other_cpu", r->other_cpu}};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) rb_jw_kreal(&w, nums[i].k, nums[i].v);
    rb_jw_kint(&w, "act_bytes", (long long)r->act_bytes), rb_jw_kint(&w, "inst_bytes", (long long)r->inst_bytes);
    rb_jw_kint(&w, "base_rss_bytes", (long long)r->base_rss_bytes);
    rb_jw_kint(&w, "peak_rss_bytes", (long long)r->peak_rss_bytes);
    rb_jw_key(&w, "noisy"), rb_jw_bool(&w, r->noisy);
    if (r->noisy) rb_jw_kstr(&w, "noise", r->noise);
    rb_jw_key(&w, "stats");
    rb_jw_obj(&w);
    for (int i = 0; i < r->nstats; i++) rb_jw_kreal(&w, r->stats[i].name, r->stats[i].value);
    rb_jw_obj_end(&w);
    rb_jw_obj_end(&w);
    printf("\n");
}

static void bench_text(const char *backend, const attn_params *p, const attn_bench_result *r) {
    printf("%s  seq %d  heads %d  head_dim %d  batch %d  %s", backend, p->seq, p->heads, p->head_dim, p->batch,
           p->causal ? "causal" : "non-causal");
    if (p->window) printf("  window %d", p->window);
    if (p->clusters) printf("  clusters %d", p->clusters);
    printf("  threads %d\n", rb_threads());
    print_heads(backend, p);
    printf("  forward           %9.3f ms  (IQR %.3f, min %.3f, max %.3f)  %8.2f GFLOP/s\n", r->fwd_ms, r->fwd_ms_iqr,
           r->fwd_ms_min, r->fwd_ms_max, r->fwd_gflops);
    printf("  backward          %9.3f ms  (IQR %.3f, min %.3f, max %.3f)\n", r->bwd_ms, r->bwd_ms_iqr, r->bwd_ms_min,
           r->bwd_ms_max);
    printf("  forward+backward  %9.3f ms  (IQR %.3f)  %8.2f GFLOP/s  (median of %d sample%s", r->fwdbwd_ms,
           r->fwdbwd_ms_iqr, r->fwdbwd_gflops, r->repeat, r->repeat == 1 ? "" : "s");
    if (r->block > 1) printf(", each the mean of %d passes", r->block);
    printf(")\n");
    printf("  activation bytes  %zu analytic, %zu held\n", r->act_bytes, r->inst_bytes);
    printf("  peak RSS          %.1f MiB (baseline with inputs %.1f MiB)\n", r->peak_rss_bytes / 1048576.0,
           r->base_rss_bytes / 1048576.0);
    for (int i = 0; i < r->nstats; i++) printf("  %-17s %.6g\n", r->stats[i].name, r->stats[i].value);
}

int cmd_attn(int argc, char **argv) {
    attn_params p;
    attn_params_default(&p);
    attn_opts o = {NULL, NULL, NULL, 0, 5, 1, 0, 0, 0, RB_LOAD_MIN_S, 3.0, 0.05};
    int rc = parse_attn(argc, argv, &p, &o);
    if (rc >= 0) return rc;
    rb_set_threads(o.threads);
    if (o.save_dir || o.load_dir) return npy_pass(o.backend, &p, &o);
    if (o.check) return check(o.backend, &p, o.json);
    char err[1024];
    attn_bench_result r;
    attn_bench_opts bo;
    attn_bench_opts_default(&bo, o.repeat);
    bo.warmup = o.warmup, bo.ar.min_time = o.min_time, bo.ar.max_time = o.max_time, bo.ar.tol = o.tol;
    if (attn_bench(o.backend, &p, &bo, &r, err, sizeof err) != 0) {
        fprintf(stderr, "routebench attn: %s\n", err);
        return RB_EXIT_USAGE;
    }
    if (r.noisy) fprintf(stderr, "routebench attn: warning: noisy measurement: %s\n", r.noise);
    if (o.json) bench_json(o.backend, &p, &r);
    else bench_text(o.backend, &p, &r);
    return RB_EXIT_OK;
}
