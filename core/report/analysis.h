/* analysis.h: the attention analysis (core/model/analyze.h) as read back
 * from a results database: the paper's JSD table and the kept-mass figure. */
#ifndef RB_REPORT_ANALYSIS_H
#define RB_REPORT_ANALYSIS_H

#include <stddef.h>

#include "report/report.h"

/* The paper's JSD table from the analyze trials of d: one row per
 * configuration (trials grouped by key) and layer, columns local_local,
 * local_routing, routing_routing (and the dense pairs when present), each
 * the mean over the group's done trials of analyze.L<l>.jsd.<pair>, ± the
 * std over those trials when there are several, else over the layer's pairs
 * (the caption says which). format RPT_CSV puts mean and std in separate
 * columns. 0, or -1 with a message when d has no analyze measures. */
int analyze_jsd_table(rpt_table *tb, const rpt_db *d, int format, char *err, size_t errlen);

/* The kept-mass figure: kept dense mass (analyze.kept_mass.<kind>) against
 * clusters (routing heads) or window (local heads), one line per backend and
 * head kind (and sequence length when several), the random floor dashed in
 * the same colour. Writes DIR/kept_mass.dat, DIR/kept_mass.gp (DIR must
 * exist) and runs gnuplot: an image kept_mass.FORMAT, or the dumb terminal on
 * stdout. A database without analyze measures gives a frame saying so. 0, or
 * -1 with a message. */
int analyze_plot_kept(const rpt_db *d, const char *dir, const char *format, int dumb, int quiet, char *err,
                      size_t errlen);

#endif
