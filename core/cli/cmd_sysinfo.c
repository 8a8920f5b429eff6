/* cmd_sysinfo.c: `routebench sysinfo`, the machine and its sgemm ceiling. */
#include <stdio.h>
#include <string.h>

#include "cli/flags.h"
#include "cli/commands.h"
#include "util/sysinfo.h"
#include "util/threads.h"

int cmd_sysinfo(int argc, char **argv) {
    int json = 0, threads = 0;
    const cli_flag flags[] = {
        {"--threads", NULL, FL_INT, &threads, "T", 1, 4096, NULL, "threads (default: all cores)"},
        {"--json", NULL, FL_SWITCH, &json, NULL, 0, 0, NULL, "print one JSON object"},
    };
    const cli_spec spec = {.cmd = "sysinfo", .synopsis = "[--threads T] [--json]",
                           .about = "CPU model, cores, threads in use, BLAS and its threading, and the sgemm GFLOP/s\n"
                                    "(2048-cube product, median of 7) with that thread count: the ceiling every\n"
                                    "benchmark is compared with.",
                           .flags = flags, .nflags = 2};
    int rc = cli_parse(&spec, argc, argv, NULL, NULL);
    if (rc != CLI_OK) return cli_exit(rc);
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
