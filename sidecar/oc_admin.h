/*
 * oc_admin: one-shot administrative actions run from the command line,
 * before (and instead of) the daemon: installing the invalidation hook and
 * checking a configuration against the live database.
 *
 * Contract: these use blocking libpq calls and print to the FILE* given;
 * they are never called from the event loop. They never print conninfo.
 */
#ifndef OC_ADMIN_H
#define OC_ADMIN_H

#include <stdio.h>

#include "oc_conf.h"

/* Install (or upgrade in place) sql/install.sql, which is compiled in, and
 * attach every configured model. Returns 0 on success, 1 on failure. */
int oc_admin_install_hook(const oc_conf_t *conf, FILE *out);

/*
 * Check every model against the database: the table and columns exist, the
 * key column has the configured type, and the invalidation hook is attached.
 * Missing tables or columns are errors; a missing hook or an unreachable
 * database is a warning. Returns the number of errors.
 */
int oc_admin_check_db(const oc_conf_t *conf, FILE *out);

/* The compiled-in text of sql/install.sql (NUL-terminated). */
extern const char oc_admin_install_sql[];

#endif
