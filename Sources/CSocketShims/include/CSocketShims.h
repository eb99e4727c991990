/* Socket helpers Swift cannot write itself, for the daemon, the client and their tests: the CMSG_* macros for
 * SCM_RIGHTS fd passing, SO_PEERCRED, accept4, epoll (its event struct is packed on x86-64), eventfd, the
 * filesystem type of a file, and sealed memfds. libsystemd is CSystemd's alone. */
#ifndef CSOCKETSHIMS_H
#define CSOCKETSHIMS_H

#include <stddef.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/types.h>

/* The most descriptors one message carries (send) or one receive keeps (more are closed). */
#define CSOCK_MAX_FDS 16
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>

/* The shared-memory ring (protocol v1.1 RING): 32-bit words in memory shared with another process.
 * Loads acquire, stores release; the futex is a shared (not private) one, so it works across processes. */
static inline uint32_t csock_load_acquire(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void csock_store_release(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
/* The restart journal's commit word (a memfd shared with the next process): one 64-bit store publishes a record. */
static inline uint64_t csock_load_acquire_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void csock_store_release_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void csock_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
/* The epoch page's 64-bit words (protocol v1.2's invalidation log, a seqlock per slot). */
static inline uint64_t csock_load_acquire64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint64_t csock_load_relaxed64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void csock_store_release64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void csock_store_relaxed64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void csock_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void csock_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void csock_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("" ::: "memory");   /* no PAUSE: in a VM it can exit to the hypervisor (pause-loop exiting) */
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
/* CLOCK_MONOTONIC in nanoseconds: the spinning loops' clock (the rings, the epoll thread's busy poll). */
static inline uint64_t csock_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
/* Sleeps while *p == expected, at most timeout_ms. */
static inline long csock_futex_wait(uint32_t *p, uint32_t expected, long timeout_ms) {
    struct timespec ts = { timeout_ms / 1000, (timeout_ms % 1000) * 1000000L };
    return syscall(SYS_futex, p, FUTEX_WAIT, expected, &ts, NULL, 0);
}
static inline long csock_futex_wake(uint32_t *p) { return syscall(SYS_futex, p, FUTEX_WAKE, 1, NULL, NULL, 0); }
/* Moves the calling thread to another CPU it may run on (its affinity less the current CPU, then the whole affinity
 * again, so it stays where it went but is not pinned). 1 if it moved; 0 with one CPU allowed. A ring's spinning
 * thread that finds its client spinning on the same CPU leaves it: sharing one, each waits for the other's yield. */
int csock_leave_this_cpu(void);
/* How many CPUs the calling thread may run on (its affinity), or -1; the CPU it runs on (sched_getcpu). */
int csock_allowed_cpu_count(void);
int csock_current_cpu(void);


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
/* The filesystem type (statfs f_type) of an open file, or -1: MEM_MAP refuses hugetlbfs. */
long csock_fs_type(int fd);

/* Frees bytes [offset, offset+len) of a file, keeping its size (fallocate FALLOC_FL_PUNCH_HOLE): the restart mode's
 * output files drop what the socket has taken. Returns 0 or -1 with errno set. */
int csock_punch_hole(int fd, off_t offset, off_t len);

/* The peer's credentials as the kernel recorded them at connect() (struct ucred, SO_PEERCRED). */
struct csock_peer { int pid; unsigned int uid; unsigned int gid; };
int csock_peer_credentials(int fd, struct csock_peer *out);

/* accept4(SOCK_NONBLOCK | SOCK_CLOEXEC); returns the fd or -1 with errno set. */
int csock_accept(int listener);

/* Bytes in a stream socket's receive queue (FIONREAD): a peek stops at a message carrying descriptors, this does
 * not. -1 on error. */
static inline int csock_queued(int fd) { int n = 0; return ioctl(fd, FIONREAD, &n) == 0 ? n : -1; }

/* epoll for the daemon's I/O thread. struct epoll_event is packed on x86-64 and its data is a union,
 * so events cross into Swift as this plain struct carrying a 64-bit token. */
struct csock_event { unsigned int events; unsigned long long token; };
static const unsigned int CSOCK_EPOLLIN = EPOLLIN;
static const unsigned int CSOCK_EPOLLOUT = EPOLLOUT;
static const unsigned int CSOCK_EPOLLHUP = EPOLLHUP;
static const unsigned int CSOCK_EPOLLERR = EPOLLERR;
static const unsigned int CSOCK_EPOLLRDHUP = EPOLLRDHUP;
static const unsigned int CSOCK_EPOLLET = EPOLLET;
static const int CSOCK_EPOLL_ADD = EPOLL_CTL_ADD;
static const int CSOCK_EPOLL_MOD = EPOLL_CTL_MOD;
static const int CSOCK_EPOLL_DEL = EPOLL_CTL_DEL;
/* The most events one csock_epoll_wait call returns. */
#define CSOCK_MAX_EVENTS 64
/* epoll_create1(EPOLL_CLOEXEC). */
int csock_epoll_create(void);
int csock_epoll_ctl(int ep, int op, int fd, unsigned int events, unsigned long long token);
/* epoll_wait into out (at most CSOCK_MAX_EVENTS); returns epoll_wait's result. */
int csock_epoll_wait(int ep, struct csock_event *out, int max, int timeout_ms);
/* A non-blocking close-on-exec eventfd (wakes the I/O thread). */
int csock_eventfd(void);

#define CSOCK_SEAL_SHRINK 0x0002
#define CSOCK_SEAL_GROW 0x0004
#define CSOCK_SEAL_WRITE 0x0008

#endif
