/*
 * oc_sd: systemd's notification protocol (sd_notify(3),
 * sd_pid_notify_with_fds), written out rather than linking libsystemd for
 * these few lines: one datagram to the AF_UNIX socket NOTIFY_SOCKET names
 * (a path, or @name in the abstract namespace), with descriptors attached
 * (SCM_RIGHTS) for the file descriptor store (FDSTORE=1, FDNAME=...:
 * https://systemd.io/FILE_DESCRIPTOR_STORE/).
 *
 * Without NOTIFY_SOCKET (not started by systemd) nothing is sent. Blocking, as
 * libsystemd's, but with a 1 s send timeout: systemd reads its notification socket at
 * once, and a stalled one must not hold the stop for ever.
 *
 * Ownership: the caller keeps its descriptors; the kernel passes dups.
 */
#ifndef OC_SD_H
#define OC_SD_H

#include <stddef.h>

/* The name objcached gives the client connections it hands to systemd's
 * store at a restart (oc_conn), and adopts at start (oc_listen). */
#define OC_SD_CLIENT_FDNAME "oc-client"

/* 1 if NOTIFY_SOCKET names a socket we could send to. */
int oc_sd_enabled(void);
/* Send `state` (and nfds descriptors, at most OC_SD_FDS_MAX) to systemd.
 * 0 on success; -1 with errno set (ENOENT: no NOTIFY_SOCKET). */
#define OC_SD_FDS_MAX 253 /* the kernel's SCM_MAX_FD */
int oc_sd_notify(const char *state, const int *fds, size_t nfds);

#endif
