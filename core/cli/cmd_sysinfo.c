/* cmd_sysinfo.c: `routebench sysinfo`, the machine and its sgemm ceiling. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "util/sysinfo.h"
#include "util/threads.h"

int cmd_sysinfo(int argc, char **argv) {
    int json = 0, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) json = 1;
        else if (strcmp(argv[i], "--threads") == 0) {
            if (cli_int("--threads", i + 1 < argc ? argv[i + 1] : NULL, 1, 4096, &threads)) return 2;
            i++;
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: routebench sysinfo [--threads T] [--json]\n"
                   "CPU model, cores, threads in use, BLAS and its threading, and the sgemm GFLOP/s\n"
                   "(2048-cube product, median of 7) with that thread count: the ceiling every\n"
                   "benchmark is compared with.\n");
            return 0;
        } else {
            fprintf(stderr, "routebench sysinfo: unknown option '%s'\n"
                            "usage: routebench sysinfo [--threads T] [--json]\n", argv[i]);
            return 2;
        }
    }
    rb_set_threads(threads);
    rb_sysinfo s;
    rb_sysinfo_read(&s, 1);
    if (json) {
        printf("{\"cpu\": \"%s\", \"host\": \"%s\", \"cores\": %d, \"threads\": %d, \"blas\": \"%s\", "
               "\"sgemm_n\": 2048, \"sgemm_gflops\": %.2f}\n",
               s.cpu, s.host, s.cores, s.threads, s.blas, s.sgemm_gflops);
    } else {
        printf("cpu           %s\nhost          %s\ncores         %d\nthreads       %d\nblas          %s\n"
               "sgemm         %.1f GFLOP/s (2048^3, median of 7, %d threads)\n",
               s.cpu, s.host, s.cores, s.threads, s.blas, s.sgemm_gflops, s.threads);
    }
    return 0;
}
