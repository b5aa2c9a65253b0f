/*
 * oc_verify: `objcached --verify MODEL [--sample N] -c FILE`, an operator's
 * check of what the cache holds against PostgreSQL, for cron or a
 * monitoring probe (docs/consistency.md).
 *
 * It picks N random ids that exist (TABLESAMPLE on a big table, ORDER BY
 * random() on a small one) and about N/10 that do not (gaps in an integer
 * key's range and ids past its end; random values for uuid and text keys),
 * reads the cache's copy of each straight from the memcached server that
 * ketama places it on (a meta get without a lease flag: the read-through
 * path, which would repair a stale entry, is not used, and nothing is ever
 * written), reads the rows (the daemon's own load statement, so the bytes
 * compare), and judges each with oc_smp: a disagreement is read again
 * after sample_recheck (1 s by default, as the sampler does for a hit) and
 * counts only if the same item still disagrees with an unchanged row, so a
 * write committing during the run, whose invalidation lands within
 * sample_recheck, is not reported.
 *
 * Report: fresh, stale, missing (not cached), absent (no row, and not
 * cached or cached as absent), absent-but-cached (no row, an object
 * cached), changing (written during the check: not judged), errors; up to
 * five examples of each kind of staleness.
 *
 * Exit status: 0 nothing stale; 1 something stale or absent-but-cached;
 * 2 bad usage (no such model, a bad sample size); 3 PostgreSQL or a
 * memcached server could not be read.
 *
 * Contract: blocking I/O, run from the command line only (never from the
 * event loop); prints the report to `out`, errors to `errout`; never
 * prints the conninfo.
 */
#ifndef OC_VERIFY_H
#define OC_VERIFY_H

#include <stdint.h>
#include <stdio.h>

#include "oc_conf.h"
#include "oc_status.h"

#define OC_VERIFY_SAMPLE_DEFAULT 1000
#define OC_VERIFY_SAMPLE_MAX     100000

#define OC_VERIFY_OK     0
#define OC_VERIFY_STALE  1
#define OC_VERIFY_USAGE  2
#define OC_VERIFY_UNREAD 3

/* A sample size: decimal digits only, 1..OC_VERIFY_SAMPLE_MAX. Pure. */
oc_status_t oc_verify_parse_sample(const char *s, uint32_t *out, char *err);

/* Verify `model` with `sample` present ids; returns the exit status. */
int oc_verify_run(const oc_conf_t *conf, const char *model, uint32_t sample, FILE *out,
                  FILE *errout);

#endif
