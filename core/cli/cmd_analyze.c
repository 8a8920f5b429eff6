/* cmd_analyze.c: `routebench analyze CHECKPOINT`: load a trained model (its
 * configuration read from the checkpoint, --KEY VALUE options on top, as for
 * export), run held-out sequences of its task through
 * it and print what its attention heads do (core/model/analyze.h): entropies, kept
 * dense mass against the random floor, the JSD table in the paper's form,
 * routing statistics. With --db the measures are also written to a results
 * database as the metrics of one trial (kind "analyze"), so `report` and
 * `plot` read them like any sweep's. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/analyze.h"
#include "report/analysis.h"
#include "model/checkpoint.h"
#include "cli/flags.h"
#include "util/fsutil.h"
#include "util/status.h"
#include "cli/commands.h"
#include "harness/columns.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/params.h"
#include "util/common.h"
#include "report/report.h"
#include "store/store.h"
#include "util/sysinfo.h"
#include "model/tasks.h"
#include "util/threads.h"
#include "model/train.h"

static const char analyze_about[] =
    "Runs N micro-batches (default: eval_batches) of the checkpoint's task's held-out data (validation\n"
    "split by default, the sequences training evaluated on) through the model in evaluation mode and\n"
    "reads every head's attention distribution through its backend's own forward (the code path\n"
    "training uses: routes of the model's pass kept, V one-hot), then prints:\n"
    "  - per layer and head: entropy of each query's distribution (nats);\n"
    "  - per sparse head (local or routing): the share of the dense causal softmax mass (from the\n"
    "    head's own q and k; k = q when the backend shares QK) on the keys the head lets each query\n"
    "    see, averaged over queries (1.0 = nothing dense attention weighs was lost), and the same\n"
    "    for a seeded random key set of the same size per query (the floor);\n"
    "  - per layer: mean Jensen-Shannon divergence (nats, <= ln 2) between the distributions of\n"
    "    every pair of heads, grouped local-local, local-routing, routing-routing (mean ± std over\n"
    "    the pairs);\n"
    "  - the backend's statistics (cluster sizes, unrouted and multi-routed shares, k-means\n"
    "    objective), averaged over the batches.\n"
    "Queries a routing head routes to no cluster (an all-zero row) are left out of every average\n"
    "and counted in the `unrouted` column.\n"
    "\n"
    "Cost: it computes dense attention, O(seq^2) per head: ceil(seq / head_dim) extra forwards of\n"
    "each layer's backend, O(batch * heads * seq^2 * head_dim) for the dense softmax (double),\n"
    "O(batch * heads^2 * seq^2) for the divergences, and batch * heads * seq^2 floats of memory.\n"
    "Meant for evaluation-sized inputs (seq up to a few thousand).";

static int describing_layer(const analyze_acc *acc) {
    for (int pass = 0; pass < 2; pass++)
        for (int l = 0; l < acc->L; l++) {
            const attn_backend *be = attn_find(acc->layer_backend[l]);
            if (be && (be->uses & (pass == 0 ? ATTN_USES_CLUSTERS : ATTN_USES_WINDOW))) return l;
        }
    return 0;
}

/* Write acc as one done trial of DB. 0 or -1 with a message. */
static int write_db(const char *db, const char *exp_name, const train_config *c, const char *ckpt, int batches,
                    int split, const analyze_acc *acc, const char *argv, char *err, size_t errlen) {
    rb_store *s;
    if (store_open(&s, db, 1, err, errlen) != 0) return -1;
    char have[128];
    if (store_experiment_name(s, have, sizeof have, err, errlen) != 0) {
        store_close(s);
        return -1;
    }
    if (have[0] && strcmp(have, exp_name) != 0) {
        store_close(s);
        return rb_fail(err, errlen, "%s holds results of experiment '%s', not '%s' (use --name or another --db)", db,
                       have, exp_name);
    }
    int l = describing_layer(acc);
    const attn_params *p = &acc->layer_p[l];
    const attn_backend *be = attn_find(acc->layer_backend[l]);
    unsigned u = be ? be->uses : 0;
    const char *backend = c->layer_backends[0] ? c->layer_backends : c->backend;
    char json[4096];
    rb_jw w;
    rb_jw_init_buf(&w, json, sizeof json);
    rb_jw_obj(&w);
    rb_jw_kstr(&w, "kind", "analyze"), rb_jw_kstr(&w, "backend", backend), rb_jw_kstr(&w, "task", c->task);
    rb_jw_kint(&w, "seq", c->seq), rb_jw_kint(&w, "d_model", c->d_model), rb_jw_kint(&w, "layers", c->layers);
    rb_jw_kint(&w, "heads", c->heads), rb_jw_kint(&w, "steps", c->steps);
    if (u & ATTN_USES_WINDOW) rb_jw_kint(&w, "window", p->window);
    if (u & ATTN_USES_CLUSTERS) rb_jw_kint(&w, "clusters", p->clusters);
    if (u & ATTN_USES_LOCAL_HEADS) rb_jw_kint(&w, "local_heads", p->local_heads);
    if (u & ATTN_USES_SHARE_QK) rb_jw_kint(&w, "share_qk", p->share_qk);
    rb_jw_kstr(&w, "checkpoint", ckpt), rb_jw_kint(&w, "batches", batches), rb_jw_kint(&w, "batch", c->batch);
    rb_jw_kstr(&w, "split", split == TASK_TEST ? "test" : "val");
    rb_jw_obj_end(&w);
    if (w.overflow) {
        store_close(s);
        return rb_fail(err, errlen, "trial parameters too long (checkpoint path?)");
    }
    char key[17], name[160], yaml[4400], yhash[17];
    /* the key covers the configuration and what was analysed, so a rerun replaces its own trial */
    uint64_t h = train_config_hash(c);
    snprintf(key, sizeof key, "%016llx", (unsigned long long)rb_fnv1a(h, json, strlen(json)));
    snprintf(name, sizeof name, "analyze-%.60s-%s%d", backend, rb_param_short("seq"), c->seq);
    if (u & ATTN_USES_CLUSTERS) snprintf(name + strlen(name), sizeof name - strlen(name), "-k%d", p->clusters);
    if (u & ATTN_USES_WINDOW) snprintf(name + strlen(name), sizeof name - strlen(name), "-w%d", p->window);
    snprintf(yaml, sizeof yaml, "# routebench analyze (no experiment file)\nkind: analyze\nparams: %s\n", json);
    snprintf(yhash, sizeof yhash, "%016llx", (unsigned long long)rb_fnv1a(RB_FNV_BASIS, yaml, strlen(yaml)));

    rb_sysinfo si;
    rb_sysinfo_read(&si, 0);
    char blas[600];
    rb_sysinfo_blas_line(&si, blas, sizeof blas);
    store_experiment x = {.name = exp_name, .description = "routebench analyze", .kind = "analyze", .yaml = yaml,
                          .yaml_hash = yhash, .path = ckpt, .host = si.host, .cpu = si.cpu, .blas = blas,
                          .argv = argv, .threads = rb_threads()};
    int64_t exp_id, tid;
    int rc = store_begin_experiment(s, &x, &exp_id, err, errlen);
    store_trial t = {0};
    t.key = key, t.name = name, t.kind = "analyze", t.bench = NULL, t.backend = backend, t.params_json = json;
    t.seed = c->seed, t.idx = 0;
    trial_colbuf cb;
    columns_from_model(c, &cb, t.colv);
    char status[32], runner[200];
    snprintf(runner, sizeof runner, "%s:%ld", si.host, (long)getpid());
    if (rc == 0) rc = store_register_trials(s, &t, 1, exp_id, err, errlen);
    if (rc == 0) rc = store_trial_status(s, key, c->seed, status, sizeof status, &tid, NULL, 0, err, errlen);
    if (rc == 0) rc = store_claim_trial(s, tid, exp_id, runner, err, errlen);
    if (rc == 0) {
        int max = analyze_metrics_max(acc);
        store_metric *m = mallocCheck((size_t)max * sizeof *m);
        int n = analyze_metrics(acc, m, max);
        rc = store_finish_trial(s, tid, ST_DONE, NULL, m, n, err, errlen);
        free(m);
    }
    store_end_experiment(s, exp_id, rc == 0 ? "done" : "failed", NULL, 0);
    store_close(s);
    return rc;
}

/* --report DB / --plot DB: read the analyze trials of a results database. */
static int from_db(const char *report, const char *plot, const char *format, const char *out, int dumb) {
    char err[2048];
    rpt_db d;
    const char *db = report ? report : plot;
    if (rpt_open(&d, db, "kind = 'analyze'", err, sizeof err) != 0) {
        fprintf(stderr, "routebench analyze: %s\n", err);
        return 2;
    }
    int rc = 0;
    if (report) {
        int fmt = rpt_format_parse(format ? format : "md");
        if (fmt < 0) {
            fprintf(stderr, "routebench analyze: --format: md, csv or tex for --report (got '%s')\n", format);
            rpt_close(&d);
            return 2;
        }
        rpt_table tb;
        if (analyze_jsd_table(&tb, &d, fmt, err, sizeof err) != 0) {
            fprintf(stderr, "routebench analyze: %s\n", err);
            rc = 2;
        } else {
            rpt_table_write(stdout, &tb, fmt);
            rpt_table_free(&tb);
        }
    } else {
        char dir[1024];
        if (out) snprintf(dir, sizeof dir, "%s", out);
        else snprintf(dir, sizeof dir, "plots/out/%s", d.exp_name[0] ? d.exp_name : "analyze");
        if (rb_mkdir_p(dir, err, sizeof err) != 0) {
            fprintf(stderr, "routebench analyze: %s\n", err);
            rpt_close(&d);
            return RB_EXIT_USAGE;
        }
        if (analyze_plot_kept(&d, dir, format ? format : "png", dumb, 0, err, sizeof err) != 0) {
            fprintf(stderr, "routebench analyze: %s\n", err);
            rc = 2;
        }
    }
    rpt_close(&d);
    return rc;
}

static void print_summary(const char *ckpt, const train_config *c, const analyze_acc *acc, const analyze_options *o,
                          double seconds) {
    printf("analyze %s: %d layers x %d heads, %d batches of %d sequences of %d tokens (%s split), "
           "eval loss %.4f nats/token, %.1f s\n",
           ckpt, acc->L, acc->H, o->batches, c->batch, c->seq, o->split == TASK_TEST ? "test" : "validation",
           acc->loss_batches ? acc->loss_sum / acc->loss_batches : NAN, seconds);
    for (int l = 0; l < acc->L; l++)
        printf("  layer %d: %s (window %d, clusters %d, local_heads %d, share_qk %d)\n", l, acc->layer_backend[l],
               acc->layer_p[l].window, acc->layer_p[l].clusters, acc->layer_p[l].local_heads, acc->layer_p[l].share_qk);
    printf("\n");
    analyze_print(stdout, acc);
}

static const char analyze_epilog[] =
    "The model's configuration is read from the checkpoint; parameters (those of `routebench\n"
    "train`) given on top replace single keys: --batch (sequences per micro-batch) or --data may\n"
    "differ from training's, options that change the model are refused by the checkpoint's\n"
    "configuration hash. A checkpoint of format version 1 (written before checkpoints held their\n"
    "configuration) needs every option `routebench train` was given.\n"
    "Metric names with --db: analyze.L<l>.H<h>.entropy|kept_mass|random_mass|rows|unrouted_rows,\n"
    "analyze.L<l>.kept_mass.<kind>, analyze.L<l>.jsd.<pair>[.std|.pairs], analyze.L<l>.<backend statistic>,\n"
    "analyze.kept_mass.<kind>, analyze.random_mass.<kind>, analyze.jsd.<pair>[.std|.pairs], analyze.eval_loss\n";

int cmd_analyze(int argc, char **argv) {
    train_config c;
    train_config_default(&c);
    const char *ckpt = NULL, *db = NULL, *exp_name = "analyze";
    const char *report = NULL, *plot = NULL, *format = NULL, *out = NULL;
    int threads = 0, batches = 0, split = 0, dumb = 0, npos = 0;
    char err[2048];
    cli_kv kv;
    cli_kv_init(&kv, argc);
    const cli_flag flags[] = {
        {"--db", NULL, FL_STR, &db, "DB", 0, 0, NULL,
         "also write the measures as metrics of one trial (kind analyze) into DB\n"
         "(created if missing; a database of another experiment is refused)"},
        {"--name", NULL, FL_STR, &exp_name, "NAME", 0, 0, NULL, "experiment name in DB (default: analyze)"},
        {"--batches", NULL, FL_INT, &batches, "N", 1, 1 << 20, NULL,
         "evaluation micro-batches (default: the eval_batches parameter, 8)"},
        {"--split", NULL, FL_CHOICE, &split, "val|test", 0, 0, "val|test", "val (default) or test"},
        {"--threads", NULL, FL_INT, &threads, "N", 1, 4096, NULL, "threads (default: all cores)"},
        {"--report", NULL, FL_STR, &report, "DB", 0, 0, NULL,
         "instead: print the JSD table in the paper's form from DB's analyze trials\n"
         "(rows: configuration and layer; columns: local-local, local-routing, routing-routing)"},
        {"--plot", NULL, FL_STR, &plot, "DB", 0, 0, NULL,
         "instead: draw kept_mass.png from DB: kept dense mass against clusters (routing\n"
         "heads) or window (local heads), one line per backend, the random floor dashed"},
        {"--format", NULL, FL_STR, &format, "F", 0, 0, NULL, "md|csv|tex with --report, png|svg|pdf with --plot"},
        {"--out", NULL, FL_STR, &out, "DIR", 0, 0, NULL, "with --plot: the output directory"},
        {"--dumb", NULL, FL_SWITCH, &dumb, NULL, 0, 0, NULL, "with --plot: draw in the terminal"},
    };
    const cli_spec spec = {.cmd = "analyze", .synopsis = "CHECKPOINT [options] | --report DB | --plot DB",
                           .about = analyze_about, .flags = flags, .nflags = (int)(sizeof flags / sizeof flags[0]),
                           .params = CLI_PARAMS_MODEL, .set_param = cli_kv_remember, .target = &kv,
                           .positional = "CHECKPOINT", .max_pos = 1, .epilog = analyze_epilog};
    int prc = cli_parse(&spec, argc, argv, &ckpt, &npos);
    if (prc == CLI_OK && (report || plot) && (ckpt || (report && plot))) {
        fprintf(stderr, "routebench analyze: --report and --plot take a database and no checkpoint, one at a time\n");
        prc = CLI_BAD;
    } else if (prc == CLI_OK && !report && !plot && !ckpt) {
        fprintf(stderr, "routebench analyze: which checkpoint? (`routebench analyze --help`)\n");
        prc = CLI_BAD;
    } else if (prc == CLI_OK && ckpt && checkpoint_config_with(ckpt, &c, kv.kv, kv.n, err, sizeof err) != 0) {
        fprintf(stderr, "routebench analyze: %s\n", err);
        prc = CLI_BAD;
    }
    cli_kv_free(&kv);
    if (prc != CLI_OK) return cli_exit(prc);
    if (report || plot) return from_db(report, plot, format, out, dumb);
    split = split == 1 ? TASK_TEST : TASK_VAL;
    rb_set_threads(threads);
    analyze_options o = {batches > 0 ? batches : c.eval_batches, split};
    analyze_acc *acc;
    double t0 = rb_now();
    if (analyze_checkpoint(&c, ckpt, &o, &acc, err, sizeof err) != 0) {
        fprintf(stderr, "routebench analyze: %s\n", err);
        return 2;
    }
    print_summary(ckpt, &c, acc, &o, rb_now() - t0);
    int rc = 0;
    if (db) {
        char line[2048];
        cli_argv_text(argc, argv, line, sizeof line);
        if (write_db(db, exp_name, &c, ckpt, o.batches, split, acc, line, err, sizeof err) != 0) {
            fprintf(stderr, "routebench analyze: %s\n", err);
            rc = 2;
        } else {
            printf("\nwrote the measures to %s\n", db);
        }
    }
    analyze_acc_free(acc);
    return rc;
}
