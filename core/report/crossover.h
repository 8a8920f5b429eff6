/* crossover.h: where a sparse backend overtakes dense. For each sparse
 * series (a backend and the parameters that split it, as in the scaling
 * figure) matched at each sequence length with the dense configuration of
 * the same parameters (rpt_dense_match):
 *  - time: the length at which its time (the `time` measure: fwd+bwd or
 *    whole-step ms, median over seeds) falls below dense's, interpolated
 *    linearly in log time against log length between the two measured
 *    lengths around the crossing (exact for power laws), or "below the
 *    shortest length measured", or "not within the lengths measured";
 *  - loss (train sweeps): the length from which its evaluation loss (mean
 *    over seeds) is within loss_tol of dense's, interpolated linearly in
 *    log length, with the same two other answers.
 * `routebench report DB --crossover` prints the table; `plot` draws the
 * ratio to dense against length (figure crossover). */
#ifndef RB_REPORT_CROSSOVER_H
#define RB_REPORT_CROSSOVER_H

#include <stddef.h>

#include "report/report.h"

enum { RPT_X_NODATA = 0, RPT_X_AT, RPT_X_BELOW_FIRST, RPT_X_NOT_WITHIN };

typedef struct {
    char label[512];
    int n;                         /* lengths where the series and dense both have a time */
    double *x, *ratio, *rlo, *rhi; /* [n] length, time / dense time and its interval (interquartile intervals) */
    int *noisy;                    /* [n] noisy trials at that length (either side) */
    int time_case;
    double time_at;                /* RPT_X_AT: the interpolated length */
    int nl;                        /* lengths where both have a loss */
    double *lx, *ldiff;            /* [nl] length, loss - dense loss */
    int loss_case;
    double loss_at;
} rpt_cross;

/* The first x at which y turns negative, y linear in log x between the
 * points around it; n points sorted by x. *kase one of RPT_X_*. */
double rpt_cross_first_below(const double *x, const double *y, int n, int *kase);

/* The sparse series of d. 0, or -1 with a message (no seq parameter). */
int rpt_crossover(const rpt_db *d, double loss_tol, rpt_cross **out, int *n, char *err, size_t errlen);
void rpt_crossover_free(rpt_cross *c, int n);

/* The table of rpt_crossover. 0, or -1 with a message. */
int rpt_crossover_table(rpt_table *tb, const rpt_db *d, double loss_tol, int format, char *err, size_t errlen);

#endif
