/* threads.h: the one thread setting. rb_set_threads() sets OpenMP's team size
 * and OpenBLAS's, so a single knob controls every core we use. Inside our own
 * OpenMP parallel regions BLAS must run single-threaded or the cores are
 * oversubscribed: the OpenMP build of OpenBLAS does that by itself (it checks
 * omp_in_parallel), the pthreads build does not, so parallel regions that call
 * BLAS are bracketed with rb_par_begin()/rb_par_end(). */
#ifndef RB_THREADS_H
#define RB_THREADS_H

#include <stddef.h>

void rb_set_threads(int n); /* n <= 0: all cores */
int rb_threads(void);       /* threads in use */
int rb_cores(void);         /* online cores */

/* Around an OpenMP region whose body calls BLAS. */
void rb_par_begin(void);
void rb_par_end(void);

/* "OpenBLAS 0.3.21 (openmp)" and the like, for sysinfo and the results db. */
const char *rb_blas_name(char *buf, size_t len);

#endif
