/* Socket helpers Swift cannot write itself: the CMSG_* macros for SCM_RIGHTS fd passing,
 * and sealed memfds. Used by SMMUClient (MEM_MAP sends a file descriptor), and its tests. */
#ifndef CSOCKETSHIMS_H
#define CSOCKETSHIMS_H

#include <stddef.h>
#include <sys/types.h>

/* Sends len bytes of buf with nfds descriptors attached as one SCM_RIGHTS message.
 * nfds may be 0 (plain sendmsg). flags are sendmsg flags (pass MSG_NOSIGNAL).
 * Returns bytes sent or -1 with errno set. */
ssize_t csock_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds, int flags);

/* Receives up to len bytes into buf and any SCM_RIGHTS descriptors (close-on-exec).
 * The first max_fds descriptors go to fds; any beyond are closed. *num_fds receives the total
 * number received (so a caller can tell "more than one"); *truncated is 1 when the kernel
 * cut the control data (MSG_CTRUNC), else 0.
 * Returns bytes received (0 at EOF) or -1 with errno set. */
ssize_t csock_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *num_fds,
                            int *truncated, int flags);

/* Memory to share with the daemon (MEM_MAP): a close-on-exec memfd of `size` bytes, sealed against
 * shrinking and growing and then against further sealing, as QEMU's memory-backend-memfd does.
 * The daemon refuses a file that could shrink under its mapping. Returns the fd or -1 with errno set. */
int csock_sealed_memfd(const char *name, size_t size);

/* The memfd helpers tests need to build files the daemon must refuse: an unsealed-but-sealable memfd,
 * adding seals (F_SEAL_* bits), reading them. Each returns -1 with errno set on failure. */
int csock_memfd(const char *name);
int csock_add_seals(int fd, int seals);
int csock_get_seals(int fd);
#define CSOCK_SEAL_SHRINK 0x0002
#define CSOCK_SEAL_GROW 0x0004
#define CSOCK_SEAL_WRITE 0x0008

#endif
