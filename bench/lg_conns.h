/*
 * lg_conns: the conns mode: many idle client connections, for measuring
 * what they cost the server.
 *
 * Opens o->conns connections to the first server with plain sockets, sends
 * "version\r\n" on each and reads the VERSION reply (at most a window of
 * replies outstanding, so the server's accept queue never overflows into
 * SYN retries), prints {"mode":"conns","open":N} on stdout, then holds them
 * until stdin reaches EOF or o->duration seconds pass.
 */
#ifndef LG_CONNS_H
#define LG_CONNS_H

#include "lg_opts.h"

/* The exit status: 0 when every connection opened, 1 otherwise. */
int lg_conns_run(const lg_opts_t *o);

#endif
