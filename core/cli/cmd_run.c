/* cmd_run.c: `routebench run FILE.yaml` (validate, expand, run a sweep into
 * SQLite, resumable) and `routebench merge OUT.db IN.db...` (fold shard
 * databases into one). Exit status: 0 all trials done, 1 some trial failed,
 * 2 bad input (YAML, flags, database), 130 interrupted. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "harness/experiment.h"
#include "harness/runner.h"
#include "store/store.h"

static void run_usage(FILE *f) {
    fprintf(f,
            "usage: routebench run FILE.yaml [options]\n"
            "Validates the experiment file (every problem reported as FILE:LINE:COL: KEY: message, exit 2,\n"
            "nothing run or written), expands its sweep and runs the trials into an SQLite database.\n"
            "Rerunning the same command resumes: done trials are skipped, failed and interrupted ones\n"
            "run again. Ctrl-C marks the trial in flight interrupted and exits 130 (twice: at once).\n\n"
            "options:\n"
            "  --db PATH        database (default results/NAME.db)\n"
            "  --threads T      threads for everything (default: all cores)\n"
            "  --shard I/N      run only the trials whose index modulo N is I (0 <= I < N); give each\n"
            "                   shard its own --db and fold them with `routebench merge`\n"
            "  --filter PAT     run only trials whose name (e.g. routing-s4096-k64-w64) contains PAT,\n"
            "                   or matches it as a glob when it has * ? or [\n"
            "  --dry-run        print the expanded trials (count, key, seed, name, parameters) and exit\n"
            "  --no-sgemm       do not measure the sgemm ceiling at the start (saves a second or two)\n"
            "  --quiet          no progress on stderr\n"
            "exit status: 0 every trial done, 1 a trial failed, 2 bad input, 130 interrupted\n\n"
            "%s",
            exp_help_text);
}

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

int cmd_run(int argc, char **argv) {
    run_options o;
    memset(&o, 0, sizeof o);
    o.measure_sgemm = 1;
    const char *file = NULL;
    int dry = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            run_usage(stdout);
            return 0;
        } else if (!strcmp(f, "--db")) {
            if (!val || !*val) {
                fprintf(stderr, "routebench run: --db needs a path\n");
                return 2;
            }
            o.db_path = val, i++;
        } else if (!strcmp(f, "--threads")) {
            if (cli_int(f, val, 1, 4096, &o.threads)) return 2;
            i++;
        } else if (!strcmp(f, "--shard")) {
            if (parse_shard(val, &o.shard_i, &o.shard_n)) {
                fprintf(stderr, "routebench run: --shard wants I/N with 0 <= I < N (got '%s')\n", val ? val : "");
                return 2;
            }
            i++;
        } else if (!strcmp(f, "--filter")) {
            if (!val) {
                fprintf(stderr, "routebench run: --filter needs a pattern\n");
                return 2;
            }
            o.filter = val, i++;
        } else if (!strcmp(f, "--dry-run")) dry = 1;
        else if (!strcmp(f, "--no-sgemm")) o.measure_sgemm = 0;
        else if (!strcmp(f, "--quiet") || !strcmp(f, "-q")) o.quiet = 1;
        else if (f[0] == '-' && f[1]) {
            fprintf(stderr, "routebench run: unknown option '%s'\n", f);
            run_usage(stderr);
            return 2;
        } else if (file) {
            fprintf(stderr, "routebench run: one experiment file at a time (got '%s' and '%s')\n", file, f);
            return 2;
        } else file = f;
    }
    if (!file) {
        fprintf(stderr, "routebench run: which experiment file? (routebench run FILE.yaml; --help for the format)\n");
        return 2;
    }
    static experiment e;
    static exp_errors errs;
    if (exp_load(&e, file, &errs) != 0) {
        exp_errors_print(&errs, stderr);
        fprintf(stderr, "routebench run: %s: %d problem%s; nothing was run\n", file, errs.n + errs.dropped,
                errs.n + errs.dropped == 1 ? "" : "s");
        return 2;
    }
    char dbbuf[600];
    if (!o.db_path) {
        snprintf(dbbuf, sizeof dbbuf, "results/%s.db", e.name);
        o.db_path = dbbuf;
    }
    if (o.filter) {
        int any = 0;
        run_options all = o;
        all.shard_n = 0;
        for (int i = 0; i < e.ntrials && !any; i++) any = runner_selected(&all, &e.trials[i]);
        if (!any) {
            fprintf(stderr, "routebench run: --filter '%s' matches none of the %d trial names (see --dry-run)\n",
                    o.filter, e.ntrials);
            exp_free(&e);
            return 2;
        }
    }
    if (dry) {
        int n = 0;
        for (int i = 0; i < e.ntrials; i++) n += runner_selected(&o, &e.trials[i]);
        printf("%s: %d trials (%d in the sweep), database %s\n", e.name, n, e.ntrials, o.db_path);
        char json[4096];
        for (int i = 0; i < e.ntrials; i++) {
            const exp_trial *t = &e.trials[i];
            if (!runner_selected(&o, t)) continue;
            exp_trial_json(&e, t, json, sizeof json);
            printf("%5d  %s  seed %-4llu %-32s %s\n", t->index, t->key, (unsigned long long)t->seed, t->name, json);
        }
        exp_free(&e);
        return 0;
    }
    if (o.db_path == dbbuf && mkdir("results", 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "routebench run: cannot create the directory results/: %s (use --db)\n", strerror(errno));
        exp_free(&e);
        return 2;
    }
    char args[1024];
    size_t off = 0;
    args[0] = 0;
    for (int i = 0; i < argc && off < sizeof args; i++)
        off += (size_t)snprintf(args + off, sizeof args - off, "%s%s", i ? " " : "routebench ", argv[i]);
    o.argv = args;
    runner_install_signals();
    char err[1024];
    int rc = runner_run(&e, &o, err, sizeof err);
    if (rc == RUN_BAD_INPUT) fprintf(stderr, "routebench run: %s\n", err);
    exp_free(&e);
    return rc;
}

int cmd_merge(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: routebench merge OUT.db IN.db...\n"
               "Folds shard databases of one experiment into OUT.db (created if missing). Every input must\n"
               "hold the same experiment (name and YAML hash of its latest run); one copy of each trial\n"
               "(key, seed) is kept, a done one over any other. Inputs are only read.\n");
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: routebench merge OUT.db IN.db...\n");
        return 2;
    }
    for (int i = 1; i < argc; i++)
        if (argv[i][0] == '-') {
            fprintf(stderr, "routebench merge: unknown option '%s'\nusage: routebench merge OUT.db IN.db...\n", argv[i]);
            return 2;
        }
    char err[1024];
    int copied, kept;
    if (store_merge(argv[1], (const char *const *)argv + 2, argc - 2, &copied, &kept, err, sizeof err) != 0) {
        fprintf(stderr, "routebench merge: %s\n", err);
        return 2;
    }
    fprintf(stderr, "routebench merge: %s: %d trials copied, %d already there kept\n", argv[1], copied, kept);
    return 0;
}
