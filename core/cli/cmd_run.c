/* cmd_run.c: `routebench run FILE.yaml` (validate, expand, run a sweep into
 * SQLite, resumable) and `routebench merge OUT.db IN.db...` (fold shard
 * databases into one). Exit status: 0 all trials done, 1 some trial failed,
 * 2 bad input (YAML, flags, database), 130 interrupted. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "harness/experiment.h"
#include "harness/runner.h"
#include "store/store.h"
#include "util/common.h"
#include "util/status.h"
#include "util/measure.h"

static const char run_about[] =
    "Validates the experiment file (every problem reported as FILE:LINE:COL: KEY: message, exit 2,\n"
    "nothing run or written), expands its sweep and runs the trials into an SQLite database.\n"
    "Rerunning the same command resumes: done trials are skipped, failed and interrupted ones\n"
    "run again. Ctrl-C marks the trial in flight interrupted and exits 130 (twice: at once).";

static int parse_shard(const char *v, int *i, int *n) {
    char *end;
    if (!v) return -1;
    errno = 0;
    long a = strtol(v, &end, 10);
    if (end == v || *end != '/' || errno) return -1;
    const char *p = end + 1;
    long b = strtol(p, &end, 10);
    if (end == p || *end || errno || b < 1 || b > 100000 || a < 0 || a >= b) return -1;
    *i = (int)a, *n = (int)b;
    return 0;
}

/* Flags into o; the experiment file into *file. -1 to go on, else an exit status. */
static int parse_run(int argc, char **argv, run_options *o, const char **file, int *dry, cli_multi *sets) {
    const char *shard = NULL, *timeout = NULL, *ckpt = NULL;
    int no_sgemm = 0;
    const cli_flag flags[] = {
        {"--db", NULL, FL_STR, &o->db_path, "PATH", 0, 0, NULL, "database (default results/NAME.db)"},
        {"--threads", NULL, FL_INT, &o->threads, "T", 1, 4096, NULL, "threads for everything (default: all cores)"},
        {"--shard", NULL, FL_STR, &shard, "I/N", 0, 0, NULL,
         "run only the trials whose index modulo N is I (0 <= I < N); give each\n"
         "shard its own --db and fold them with `routebench merge`"},
        {"--filter", NULL, FL_STR, &o->filter, "PAT", 0, 0, NULL,
         "run only trials whose name (e.g. routing-n4096-k64-w64) contains PAT,\n"
         "or matches it as a glob when it has * ? or ["},
        {"--dry-run", NULL, FL_SWITCH, dry, NULL, 0, 0, NULL,
         "print the expanded trials (count, key, seed, name, parameters) and exit"},
        {"--no-sgemm", NULL, FL_SWITCH, &no_sgemm, NULL, 0, 0, NULL,
         "do not measure the sgemm ceiling at the start (saves a second or two)"},
        {"--timeout", NULL, FL_STR, &timeout, "T", 0, 0, NULL,
         "a time limit per trial (90, 90s, 5m, 2h), overriding the file's `timeout:`:\n"
         "a trial that runs longer is killed and recorded failed, and the sweep goes on"},
        {"--checkpoint-every", NULL, FL_STR, &ckpt, "T", 0, 0, NULL,
         "a training trial saves a checkpoint beside the database (DB.ckpt/) this often\n"
         "(default 5m; 0 never) and a rerun after Ctrl-C, a kill or a crash resumes it"},
        {"--in-process", NULL, FL_SWITCH, &o->in_process, NULL, 0, 0, NULL,
         "run the trials in this process instead of each in its own child process\n"
         "(then peak RSS includes what earlier trials left, and a crash ends the sweep)"},
        {"--quiet", "-q", FL_SWITCH, &o->quiet, NULL, 0, 0, NULL, "no progress on stderr"},
        {"--set", NULL, FL_MULTI, sets, "KEY=VALUE", 0, 0, NULL,
         "override the file (repeatable): seq=2048, params.heads=8, sweep.seq=[1024, 2048],\n"
         "timing.runs=9, repeat=3; checked as a line of the file would be, and recorded with\n"
         "the run. A database is kept to one set of overrides (see --new-overrides)"},
        {"--new-overrides", NULL, FL_SWITCH, &o->new_overrides, NULL, 0, 0, NULL,
         "accept --set overrides other than those the database's runs had"},
        {"--redo-noisy", NULL, FL_SWITCH, &o->redo_noisy, NULL, 0, 0, NULL,
         "measure again the selected trials that are done but marked noisy (their old\n"
         "metrics are replaced when the new measurement ends; a training trial restarts)"},
        {"--redo", NULL, FL_SWITCH, &o->redo, NULL, 0, 0, NULL,
         "measure again every selected trial that is done (choose them with --filter), as\n"
         "--redo-noisy does; for trials a disturbance spoilt that the noise checks missed"},
    };
    const cli_spec spec = {.cmd = "run", .synopsis = "FILE.yaml [options]", .about = run_about, .flags = flags,
                           .nflags = (int)(sizeof flags / sizeof flags[0]), .positional = "FILE.yaml",
                           .min_pos = 1, .max_pos = 1,
                           .epilog = "exit status: 0 every trial done, 1 a trial failed, 2 bad input, 130 interrupted\n",
                           .more_help = exp_help};
    int rc = cli_parse(&spec, argc, argv, file, NULL);
    if (rc != CLI_OK) return cli_exit(rc);
    if (shard && parse_shard(shard, &o->shard_i, &o->shard_n)) {
        fprintf(stderr, "routebench run: --shard wants I/N with 0 <= I < N (got '%s')\n", shard);
        return RB_EXIT_USAGE;
    }
    if (timeout && rb_parse_seconds(timeout, &o->timeout_s) != 0) {
        fprintf(stderr, "routebench run: --timeout wants a positive duration: seconds, or a number with s, m or h "
                "(90, 5m, 2h; got '%s')\n", timeout);
        return RB_EXIT_USAGE;
    }
    if (ckpt && strcmp(ckpt, "0") == 0) o->checkpoint_every_s = -1;
    else if (ckpt && rb_parse_seconds(ckpt, &o->checkpoint_every_s) != 0) {
        fprintf(stderr, "routebench run: --checkpoint-every wants a duration (30s, 5m, 1h) or 0 (got '%s')\n", ckpt);
        return RB_EXIT_USAGE;
    }
    o->measure_sgemm = !no_sgemm;
    return -1;
}

/* --dry-run: the selected trials, one line each. */
static void print_trials(const experiment *e, const run_options *o) {
    int n = 0;
    for (int i = 0; i < e->ntrials; i++) n += runner_selected(o, &e->trials[i]);
    printf("%s: %d trials (%d in the sweep), database %s\n", e->name, n, e->ntrials, o->db_path);
    char json[4096];
    for (int i = 0; i < e->ntrials; i++) {
        const exp_trial *t = &e->trials[i];
        if (!runner_selected(o, t)) continue;
        exp_trial_json(e, t, json, sizeof json);
        printf("%5d  %s  seed %-4llu %-32s %s\n", t->index, t->key, (unsigned long long)t->seed, t->name, json);
    }
}

/* The rest of cmd_run, with the experiment loaded. */
static int run_loaded(experiment *e, run_options *o, int dry, int argc, char **argv) {
    for (int i = 0; i < e->nnotes; i++) fprintf(stderr, "note: %s\n", e->notes[i]);
    char dbbuf[600];
    if (!o->db_path) {
        snprintf(dbbuf, sizeof dbbuf, "results/%s.db", e->name);
        o->db_path = dbbuf;
    }
    if (o->filter) {
        int any = 0;
        run_options all = *o;
        all.shard_n = 0;
        for (int i = 0; i < e->ntrials && !any; i++) any = runner_selected(&all, &e->trials[i]);
        if (!any) {
            fprintf(stderr, "routebench run: --filter '%s' matches none of the %d trial names (see --dry-run)\n",
                    o->filter, e->ntrials);
            exp_free(e);
            return 2;
        }
    }
    if (dry) {
        print_trials(e, o);
        exp_free(e);
        return RB_EXIT_OK;
    }
    if (o->db_path == dbbuf && mkdir("results", 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "routebench run: cannot create the directory results/: %s (use --db)\n", strerror(errno));
        exp_free(e);
        return 2;
    }
    char args[1024];
    cli_argv_text(argc, argv, args, sizeof args);
    o->argv = args;
    runner_install_signals();
    char err[1024];
    int rc = runner_run(e, o, err, sizeof err);
    if (rc == RUN_BAD_INPUT) fprintf(stderr, "routebench run: %s\n", err);
    exp_free(e);
    return rc;
}

int cmd_run(int argc, char **argv) {
    run_options o;
    memset(&o, 0, sizeof o);
    const char *file = NULL;
    int dry = 0;
    cli_multi sets = {.n = 0};
    int prc = parse_run(argc, argv, &o, &file, &dry, &sets);
    if (prc >= 0) return prc;
    experiment *ep = mallocCheck(sizeof *ep); /* both are large */
    exp_errors *errs = mallocCheck(sizeof *errs);
    int rc = exp_load_sets(ep, file, sets.v, sets.n, errs);
    if (rc != 0) {
        exp_errors_print(errs, stderr);
        fprintf(stderr, "routebench run: %s: %d problem%s; nothing was run\n", file, errs->n + errs->dropped,
                errs->n + errs->dropped == 1 ? "" : "s");
    }
    free(errs);
    if (rc == 0) rc = run_loaded(ep, &o, dry, argc, argv);
    else rc = RB_EXIT_USAGE;
    free(ep);
    return rc;
}

int cmd_merge(int argc, char **argv) {
    const char *pos[4096];
    int npos = 0;
    const cli_spec spec = {.cmd = "merge", .synopsis = "OUT.db IN.db...",
                           .about = "Folds shard databases of one experiment into OUT.db (created if missing). Every\n"
                                    "input must hold the same experiment (name and YAML hash of its latest run); one\n"
                                    "copy of each trial (key, seed) is kept, a done one over any other. Inputs are\n"
                                    "only read.",
                           .positional = "OUT.db IN.db...", .min_pos = 2, .max_pos = 4096};
    int rc = cli_parse(&spec, argc, argv, pos, &npos);
    if (rc != CLI_OK) return cli_exit(rc);
    char err[1024];
    int copied, kept;
    if (store_merge(pos[0], pos + 1, npos - 1, &copied, &kept, err, sizeof err) != 0) {
        fprintf(stderr, "routebench merge: %s\n", err);
        return RB_EXIT_USAGE;
    }
    fprintf(stderr, "routebench merge: %s: %d trials copied, %d already there kept\n", pos[0], copied, kept);
    return RB_EXIT_OK;
}
