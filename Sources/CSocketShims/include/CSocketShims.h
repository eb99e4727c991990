/* Socket helpers Swift cannot write itself: the CMSG_* macros for SCM_RIGHTS fd passing,
 * and SO_PEERCRED. Used by SMMUClient (MEM_MAP sends a file descriptor) and the daemon (recvmsg). */
#ifndef CSOCKETSHIMS_H
#define CSOCKETSHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/types.h>

/* The shared-memory ring (protocol v1.1 RING): 32-bit words in memory shared with another process.
 * Loads acquire, stores release; the futex is a shared (not private) one, so it works across processes. */
static inline uint32_t csock_load_acquire(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void csock_store_release(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void csock_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void csock_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("" ::: "memory");   /* no PAUSE: in a VM it can exit to the hypervisor (pause-loop exiting) */
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
/* Sleeps while *p == expected, at most timeout_ms. */
static inline long csock_futex_wait(uint32_t *p, uint32_t expected, long timeout_ms) {
    struct timespec ts = { timeout_ms / 1000, (timeout_ms % 1000) * 1000000L };
    return syscall(SYS_futex, p, FUTEX_WAIT, expected, &ts, NULL, 0);
}
static inline long csock_futex_wake(uint32_t *p) { return syscall(SYS_futex, p, FUTEX_WAKE, 1, NULL, NULL, 0); }


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

/* The connected peer's credentials (SO_PEERCRED). Returns 0 or -1 with errno set. */
int csock_peer_credentials(int sock, pid_t *pid, uid_t *uid, gid_t *gid);

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
