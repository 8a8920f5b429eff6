/* compare.h: two results databases side by side, configuration by
 * configuration (matched by trial key): what `routebench compare` prints and
 * a user's CI checks. A configuration is flagged when a measure got worse by
 * more than both tolerances and the two runs' interquartile intervals do not
 * overlap (rpt_group_interval), or when it is done in the baseline and not in
 * the database compared. A time measured noisy in either run is reported as
 * noisy and never flagged. */
#ifndef RB_COMPARE_H
#define RB_COMPARE_H

#include <stddef.h>

#include "report/report.h"

typedef struct {
    double rel, abs; /* a fraction of the baseline, and the measure's unit */
} rpt_tol;

typedef struct {
    const char *time_measure; /* "time" (fwd+bwd or whole-step ms) or another measure */
    rpt_tol time, loss;
    int format;               /* RPT_MD / RPT_CSV / RPT_TEX */
    int flagged_only;         /* rows only for flagged configurations */
} rpt_compare_opts;

typedef struct {
    int matched, flagged, flag_time, flag_loss, flag_status, fresh, absent;
    int noisy; /* matched configurations whose time was noisy in either run: not judged */
} rpt_compare_counts;

/* Defaults: time 10% and 0.05 ms, loss 1% and 0.01, all rows, Markdown. */
void rpt_compare_defaults(rpt_compare_opts *o);

/* The comparison of d with baseline b as a table (caption: the counts and
 * tolerances); *n the counts. 0, or -1 with a message (an unknown measure). */
int rpt_compare(rpt_table *tb, const rpt_db *d, const rpt_db *b, const rpt_compare_opts *o, rpt_compare_counts *n,
                char *err, size_t errlen);

#endif
