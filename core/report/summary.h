/* summary.h: the paragraph `routebench report` prints above its table: which
 * configuration is fastest (at each sequence length when lengths vary),
 * which has the lowest loss, and which others are within noise of them
 * (their interquartile intervals of time, or 95% confidence intervals of
 * loss, overlap the best one's), and how many trials were noisy. */
#ifndef RB_REPORT_SUMMARY_H
#define RB_REPORT_SUMMARY_H

#include <stddef.h>

#include "report/report.h"

/* The paragraph into out ("" when the database has no done trial). */
void rpt_summary(const rpt_db *d, char *out, size_t len);

#endif
