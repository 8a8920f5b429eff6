/* cmd_train.c: `routebench train`: train one model from command-line flags
 * (every train_config option is a flag: --d-model 256 sets d_model), with a
 * progress line on stderr that rewrites itself on a terminal and prints plain
 * lines otherwise, Ctrl-C stopping cleanly (and saving when --save is given),
 * and a final evaluation and timing summary on stdout. --bench N times N
 * whole training steps instead of training. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/flags.h"
#include "harness/experiment.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "util/fsutil.h"
#include "util/json.h"
#include "util/measure.h"
#include "util/params.h"
#include "util/status.h"
#include "cli/commands.h"
#include "util/common.h"
#include "model/tasks.h"
#include "util/threads.h"
#include "model/train.h"

static volatile sig_atomic_t stop_requested = 0;
static void on_sigint(int sig) {
    (void)sig;
    stop_requested = 1;
}

typedef struct {
    int tty, steps, log_every;
    double start;
    int pending; /* a \r progress line is on the terminal without its newline */
} progress;

static void fmt_eta(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e7) snprintf(buf, n, "?");
    else if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else if (s >= 60) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(buf, n, "%.0fs", s);
}

static void on_step(void *ctx, const train_step_info *s) {
    progress *p = ctx;
    char eta[32];
    fmt_eta(eta, sizeof eta, s->elapsed_s / s->step * (p->steps - s->step));
    if (p->tty) {
        fprintf(stderr, "\rstep %d/%d  loss %.4f  lr %.2e  %.0f tok/s  %.1f ms/step  ETA %s   ", s->step, p->steps,
                s->loss, s->lr, s->tokens_per_s, s->step_ms, eta);
        p->pending = 1;
        if (s->step == p->steps) {
            fputc('\n', stderr);
            p->pending = 0;
        }
    } else if (s->step % p->log_every == 0 || s->step == p->steps || s->step == 1) {
        fprintf(stderr, "step %d/%d  loss %.4f  lr %.2e  %.0f tok/s  %.1f ms/step  ETA %s\n", s->step, p->steps,
                s->loss, s->lr, s->tokens_per_s, s->step_ms, eta);
    }
    fflush(stderr);
}

static void on_eval(void *ctx, const train_eval_info *e) {
    progress *p = ctx;
    fprintf(stderr, "%seval after step %d: loss %.4f, %.4f bits/token", p->pending ? "\n" : "", e->step,
            e->eval_loss, e->bits_per_token);
    p->pending = 0;
    if (!isnan(e->accuracy)) fprintf(stderr, ", accuracy %.4f", e->accuracy);
    fprintf(stderr, "\n");
}

static int should_stop(void *ctx) {
    (void)ctx;
    return stop_requested;
}

/* One line per run of layers whose heads are the same: "layers 0-20: local
 * heads 0-7 (window 256)". */
static void print_layers(const train_config *c) {
    char prev[512] = "", cur[512];
    int first = 0;
    for (int l = 0; l <= c->layers; l++) {
        attn_params p;
        cur[0] = 0;
        if (l < c->layers && train_layer_params(c, l, &p) == 0)
            attn_describe_heads(attn_find(train_layer_backend(c, l)), &p, cur, sizeof cur);
        if (l > 0 && (l == c->layers || strcmp(cur, prev) != 0)) {
            if (first == l - 1) printf("  layer %d: %s\n", first, prev);
            else printf("  layers %d-%d: %s\n", first, l - 1, prev);
            first = l;
        }
        memcpy(prev, cur, sizeof prev);
    }
}

static void print_model(const train_config *c, size_t params) {
    printf("model: d_model %d, layers %d, heads %d, seq %d, vocab %d, %zu parameters; backends:", c->d_model,
           c->layers, c->heads, c->seq, c->vocab, params);
    for (int l = 0; l < c->layers; l++) printf("%s%s", l ? "," : " ", train_layer_backend(c, l));
    printf("\n");
    print_layers(c);
}

static void print_result(const train_config *c, const train_result *r, int bench) {
    print_model(c, r->params);
    if (!bench) {
        printf("steps: %d, final training loss %.4f\n", r->steps_done, r->final_train_loss);
        printf("validation: loss %.4f, %.4f bits/token", r->final_eval_loss, r->bits_per_token);
        if (!isnan(r->accuracy)) printf(", accuracy %.4f", r->accuracy);
        printf("\ntest: loss %.4f, %.4f bits/token", r->test_loss, r->test_bits_per_token);
        if (!isnan(r->test_accuracy)) printf(", accuracy %.4f", r->test_accuracy);
        printf("\n");
    }
    printf("step time (median of %d): %.2f ms (IQR %.2f; forward %.2f, backward %.2f, optimiser %.2f); %.0f "
           "tokens/s\n", r->steps_timed, r->median_step_ms, r->step_ms_iqr, r->fwd_ms, r->bwd_ms, r->opt_ms,
           r->tokens_per_s);
    printf("work: %.4g GFLOP per step (6 x matmul params x tokens + attention fwd+bwd), %.2f GFLOP/s\n",
           r->flops_per_step / 1e9, r->gflops);
    printf("memory: activation arena %.1f MB (peak %.1f MB), attention instances %.1f MB, peak RSS %.1f MB\n",
           r->arena_bytes / 1e6, r->arena_peak / 1e6, r->attn_bytes / 1e6, r->peak_rss / 1e6);
    printf("activations: %.0f bytes per token and layer (arena; %.1f MB of it kept from forward for backward)\n",
           r->arena_per_token_layer, r->saved_act_bytes / 1e6);
    for (int i = 0; i < r->nstats; i++) printf("stat %s: %.6g\n", r->stat_names[i], r->stat_values[i]);
}

/* --bench N --json: one JSON object on stdout (README, "Training a model"). */
static void print_json(const train_config *c, const train_result *r) {
    rb_jw w;
    rb_jw_init_file(&w, stdout);
    rb_jw_obj(&w);
    rb_jw_key(&w, "backends");
    rb_jw_arr(&w);
    for (int l = 0; l < c->layers; l++) rb_jw_str(&w, train_layer_backend(c, l));
    rb_jw_arr_end(&w);
    const struct {
        const char *k;
        long long v;
    } ints[] = {{"d_model", c->d_model}, {"layers", c->layers},   {"heads", c->heads},
                {"seq", c->seq},         {"batch", c->batch},     {"accum", c->accum},
                {"vocab", c->vocab},     {"threads", rb_threads()}, {"steps_timed", r->steps_timed},
                {"params", (long long)r->params}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) rb_jw_kint(&w, ints[i].k, ints[i].v);
    const struct {
        const char *k;
        double v;
    } nums[] = {{"step_ms", r->median_step_ms}, {"step_ms_iqr", r->step_ms_iqr}, {"step_ms_min", r->step_ms_min},
                {"step_ms_max", r->step_ms_max},  {"fwd_ms", r->fwd_ms},           {"bwd_ms", r->bwd_ms},
                {"opt_ms", r->opt_ms},            {"tokens_per_s", r->tokens_per_s},
                {"gflop_per_step", r->flops_per_step / 1e9}, {"gflops", r->gflops},
                {"arena_bytes_per_token_layer", r->arena_per_token_layer},
                {"load_avg", r->load_avg},        {"other_cpu", r->other_cpu}};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) rb_jw_kreal(&w, nums[i].k, nums[i].v);
    rb_jw_kint(&w, "arena_bytes", (long long)r->arena_bytes);
    rb_jw_kint(&w, "saved_act_bytes", (long long)r->saved_act_bytes);
    rb_jw_kint(&w, "attn_bytes", (long long)r->attn_bytes);
    rb_jw_kint(&w, "peak_rss_bytes", (long long)r->peak_rss);
    rb_jw_key(&w, "noisy"), rb_jw_bool(&w, r->noisy);
    if (r->noisy) rb_jw_kstr(&w, "noise", r->noise);
    rb_jw_key(&w, "stats");
    rb_jw_obj(&w);
    for (int i = 0; i < r->nstats; i++) rb_jw_kreal(&w, r->stat_names[i], r->stat_values[i]);
    rb_jw_obj_end(&w);
    rb_jw_obj_end(&w);
    printf("\n");
}

static const char train_about[] =
    "Trains one transformer language model and prints its evaluation and timing.\n"
    "Every parameter below is a flag taking one value (--d-model 256); dashes and\n"
    "underscores are interchangeable.";

static const char train_epilog[] =
    "With --load CKPT the checkpoint's own configuration is the starting point (the flags given\n"
    "change single parameters on top; one that changes the model is refused by the checkpoint's\n"
    "configuration hash), and training continues from its step.\n"
    "Exit status: 0 done, 1 the run failed (e.g. the loss became NaN), 2 bad options or input (a\n"
    "damaged checkpoint, a missing corpus, nowhere to save), 130 stopped by Ctrl-C (after the\n"
    "current step, saving with --save and evaluating).\n";

/* Say which parameters given on top of a checkpoint's configuration change
 * it (the model-defining ones are then refused by the configuration hash). */
static void say_changes(const char *ckpt, const train_config *from, const train_config *to) {
    char line[2048], a[600], b[600];
    size_t off = 0;
    line[0] = 0;
    for (int i = 0; i < rb_param_count() && off < sizeof line; i++) {
        const rb_param *d = rb_param_at(i);
        const void *fa = train_config_field((train_config *)from, d, NULL), *fb = train_config_field((train_config *)to, d, NULL);
        if (!fa || (d->flags & PF_NOSWEEP)) continue;
        rb_param_format(d, fa, RB_FMT_TEXT, a, sizeof a);
        rb_param_format(d, fb, RB_FMT_TEXT, b, sizeof b);
        if (strcmp(a, b)) off += (size_t)snprintf(line + off, sizeof line - off, "%s%s %s -> %s", off ? ", " : "", d->name, a, b);
    }
    fprintf(stderr, "train: resuming %s with its configuration%s%s\n", ckpt, off ? "; changed: " : " (nothing changed)", line);
}

/* The configuration: the defaults, or a checkpoint's own when --load names
 * one that holds it; then --config FILE; then the flags (kv). 0, or an exit
 * status. */
static int build_config(train_config *c, const char *file, const cli_kv *kv, char *err, size_t errlen) {
    const char *load = NULL;
    for (int i = 0; i < kv->n; i++)
        if (!strcmp(kv->kv[2 * i], "load")) load = kv->kv[2 * i + 1];
    train_config_default(c);
    train_config base;
    int from_ckpt = 0;
    if (load) {
        int rc = checkpoint_read_config(load, &base, err, errlen);
        if (rc != 0 && rc != CHECKPOINT_NO_CONFIG) return RB_EXIT_USAGE; /* damaged, foreign, missing: bad input */
        if (rc == 0) *c = base, from_ckpt = 1;
    }
    if (file) {
        exp_errors *errs = mallocCheck(sizeof *errs);
        int rc = exp_train_config_file(file, c, errs);
        if (rc != 0) exp_errors_print(errs, stderr);
        free(errs);
        if (rc != 0) return rb_fail(err, errlen, "%s: the configuration file has problems (above)", file), RB_EXIT_USAGE;
    }
    for (int i = 0; i < kv->n; i++)
        if (train_config_set(c, kv->kv[2 * i], kv->kv[2 * i + 1], err, errlen) != 0) return RB_EXIT_USAGE;
    if (from_ckpt) say_changes(load, &base, c);
    return 0;
}

/* What must hold before the first step: a valid configuration, the corpus,
 * a place to save. 0, or an exit status with the message printed. */
static int preflight(train_config *c, int bench) {
    char err[1024];
    int bad = train_config_check(c, err, sizeof err) != 0;
    if (!bad && !bench) { /* a missing corpus is bad input (exit 2), found before the model is built */
        task *t = task_open(c, err, sizeof err);
        bad = !t;
        task_free(t);
    }
    if (!bad && !bench && c->save[0]) bad = rb_check_writable(c->save, err, sizeof err) != 0;
    if (!bad) return 0;
    fprintf(stderr, "routebench train: %s\n", err);
    return RB_EXIT_USAGE;
}

static int bench_steps(const train_config *c, int bench, double min_time, int json) {
    char err[1024];
    train_result r;
    fprintf(stderr, "timing %d training steps%s (after 2 warm-up) on %d thread%s...\n", bench,
            min_time > 0 ? " or more" : "", rb_threads(), rb_threads() == 1 ? "" : "s");
    if (train_bench_step(c, bench, 2, min_time, &r, err, sizeof err)) {
        fprintf(stderr, "routebench train: %s\n", err);
        return RB_EXIT_FAILED;
    }
    if (r.noisy) fprintf(stderr, "routebench train: warning: noisy timing: %s\n", r.noise);
    if (json) print_json(c, &r);
    else print_result(c, &r, 1);
    return RB_EXIT_OK;
}

static int train_steps(const train_config *c, int log_every) {
    char err[1024];
    train_result r;
    progress p = {isatty(2), c->steps, log_every > 0 ? log_every : RB_MAX(1, c->steps / 20), rb_now(), 0};
    train_hooks h = {&p, on_step, on_eval, should_stop, NULL};
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, &old);
    int rc = train_run(c, &h, &r, err, sizeof err);
    sigaction(SIGINT, &old, NULL);
    if (rc) {
        if (p.pending) fputc('\n', stderr);
        fprintf(stderr, "routebench train: %s\n", err);
        return RB_EXIT_FAILED;
    }
    if (stop_requested) fprintf(stderr, "%sstopped by Ctrl-C after step %d\n", p.pending ? "\n" : "", r.steps_done);
    print_result(c, &r, 0);
    return stop_requested ? RB_EXIT_INTERRUPTED : RB_EXIT_OK;
}

int cmd_train(int argc, char **argv) {
    train_config c;
    int threads = 0, bench = 0, log_every = 0, dry = 0, json = 0;
    double min_time = RB_LOAD_MIN_S;
    const char *file = NULL;
    char err[1024];
    cli_kv kv;
    cli_kv_init(&kv, argc);
    const cli_flag flags[] = {
        {"--config", NULL, FL_STR, &file, "FILE", 0, 0, NULL,
         "parameters from a YAML file (parameter: value lines, or under params:);\n"
         "flags given beside it win"},
        {"--threads", NULL, FL_INT, &threads, "N", 1, 4096, NULL, "threads for our loops and BLAS (default: all cores)"},
        {"--bench", NULL, FL_INT, &bench, "N", 1, 1 << 20, NULL,
         "time N whole training steps on random tokens (after 2 warm-up), no training;\n"
         "more while under --min-time seconds"},
        {"--min-time", NULL, FL_DOUBLE, &min_time, "S", 0, 1e6, NULL,
         "with --bench: keep timing steps until S seconds (default 0.25: long enough to read\n"
         "the machine's load beside them; 0 = exactly N steps)"},
        {"--dry-run", NULL, FL_SWITCH, &dry, NULL, 0, 0, NULL,
         "check the configuration and print the model (its layers' head groups, parameter\n"
         "count, FLOPs per step) without building it: the paper's full-size models fit here"},
        {"--json", NULL, FL_SWITCH, &json, NULL, 0, 0, NULL,
         "with --bench: print one JSON object (step_ms, step_ms_iqr, fwd_ms, bwd_ms, opt_ms,\n"
         "gflop_per_step, gflops, arena_bytes_per_token_layer, peak_rss_bytes, ...)"},
        {"--log-every", NULL, FL_INT, &log_every, "N", 1, 1 << 30, NULL,
         "progress line every N steps when stderr is not a terminal (default steps/20)"},
    };
    const cli_spec spec = {.cmd = "train", .about = train_about, .flags = flags,
                           .nflags = (int)(sizeof flags / sizeof flags[0]), .params = CLI_PARAMS_MODEL,
                           .set_param = cli_kv_remember, .target = &kv, .epilog = train_epilog};
    int rc = cli_parse(&spec, argc, argv, NULL, NULL);
    if (rc == CLI_OK && (rc = build_config(&c, file, &kv, err, sizeof err)) != 0)
        fprintf(stderr, "routebench train: %s\n", err);
    cli_kv_free(&kv);
    if (rc == CLI_HELP || rc == CLI_BAD) return cli_exit(rc);
    if (rc != 0) return rc;
    if (json && !bench) {
        fprintf(stderr, "routebench train: --json needs --bench N (it prints the timing of bench steps)\n");
        return RB_EXIT_USAGE;
    }
    rb_set_threads(threads);
    if ((rc = preflight(&c, bench || dry)) != 0) return rc;
    if (dry) {
        print_model(&c, model_param_sizes(&c, NULL));
        printf("work: %.4g GFLOP per step (analytic); nothing built or trained (--dry-run)\n",
               train_flops_per_step(&c) / 1e9);
        return RB_EXIT_OK;
    }
    return bench ? bench_steps(&c, bench, min_time, json) : train_steps(&c, log_every);
}
