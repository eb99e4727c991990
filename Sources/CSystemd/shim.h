#ifndef CSYSTEMD_SHIM_H
#define CSYSTEMD_SHIM_H
// libsystemd plus the few socket calls Swift cannot reach on Linux: the CMSG_* macros (SCM_RIGHTS),
// accept4 and struct ucred are _GNU_SOURCE-only or function-like macros, so they are wrapped here.
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <stdint.h>
#include <time.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#ifndef SO_PEERCRED
#define SO_PEERCRED 17
#endif
#ifndef MSG_CMSG_CLOEXEC
#define MSG_CMSG_CLOEXEC 0x40000000
#endif

/// The most descriptors one recvmsg call accepts; more are closed here at once.
#define CSYSTEMD_MAX_FDS 16


/* The shared-memory ring (protocol v1.1 RING): 32-bit words in memory shared with another process.
 * Loads acquire, stores release; the futex is a shared (not private) one, so it works across processes. */
static inline uint32_t csystemd_load_acquire(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void csystemd_store_release(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void csystemd_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void csystemd_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("" ::: "memory");   /* no PAUSE: in a VM it can exit to the hypervisor (pause-loop exiting) */
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
/* Sleeps while *p == expected, at most timeout_ms. */
static inline long csystemd_futex_wait(uint32_t *p, uint32_t expected, long timeout_ms) {
    struct timespec ts = { timeout_ms / 1000, (timeout_ms % 1000) * 1000000L };
    return syscall(SYS_futex, p, FUTEX_WAIT, expected, &ts, NULL, 0);
}
static inline long csystemd_futex_wake(uint32_t *p) { return syscall(SYS_futex, p, FUTEX_WAKE, 1, NULL, NULL, 0); }

/// The filesystem type (statfs f_type) of an open file, or -1: MEM_MAP refuses hugetlbfs.
static inline long csystemd_fs_type(int fd) {
    struct statfs fs;
    return fstatfs(fd, &fs) == 0 ? (long)fs.f_type : -1;
}

/// The peer's credentials as the kernel recorded them at connect() (struct ucred).
struct csystemd_peer { int pid; unsigned int uid; unsigned int gid; };

static inline int csystemd_peer_credentials(int fd, struct csystemd_peer *out) {
    socklen_t len = sizeof(*out);
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, out, &len);
}

extern int accept4(int, struct sockaddr *, socklen_t *, int);

/// accept4(O_NONBLOCK | O_CLOEXEC); returns the fd or -1 with errno.
static inline int csystemd_accept(int listener) {
    return accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

/// recvmsg(MSG_DONTWAIT | MSG_CMSG_CLOEXEC) into buf, collecting SCM_RIGHTS descriptors into fds
/// (at most CSYSTEMD_MAX_FDS; any beyond are closed). Returns recvmsg's result; *nfds is set in all cases.
static inline ssize_t csystemd_recv(int sock, void *buf, size_t len, int *fds, int *nfds) {
    union { struct cmsghdr align; char bytes[CMSG_SPACE(sizeof(int) * CSYSTEMD_MAX_FDS)]; } control;
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.bytes;
    msg.msg_controllen = sizeof(control.bytes);
    *nfds = 0;
    ssize_t n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) return n;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int received[CSYSTEMD_MAX_FDS];
        memcpy(received, CMSG_DATA(c), count * sizeof(int));
        for (size_t i = 0; i < count; i++) {
            if (*nfds < CSYSTEMD_MAX_FDS) fds[(*nfds)++] = received[i];
            else close(received[i]);
        }
    }
    return n;
}

/// sendmsg with one SCM_RIGHTS descriptor array (clients and tests pass memfds this way).
static inline ssize_t csystemd_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    union { struct cmsghdr align; char bytes[CMSG_SPACE(sizeof(int) * CSYSTEMD_MAX_FDS)]; } control;
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        if (nfds > CSYSTEMD_MAX_FDS) { errno = EINVAL; return -1; }
        memset(control.bytes, 0, sizeof(control.bytes));
        msg.msg_control = control.bytes;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    return sendmsg(sock, &msg, MSG_NOSIGNAL);
}

// epoll for the server's I/O thread. struct epoll_event is packed on x86-64 and its data is a union,
// so events cross into Swift as this plain struct carrying a 64-bit token.
struct csystemd_event { unsigned int events; unsigned long long token; };
static const unsigned int CSYSTEMD_EPOLLIN = EPOLLIN;
static const unsigned int CSYSTEMD_EPOLLOUT = EPOLLOUT;
static const unsigned int CSYSTEMD_EPOLLHUP = EPOLLHUP;
static const unsigned int CSYSTEMD_EPOLLERR = EPOLLERR;
static const int CSYSTEMD_EPOLL_ADD = EPOLL_CTL_ADD;
static const int CSYSTEMD_EPOLL_MOD = EPOLL_CTL_MOD;
static const int CSYSTEMD_EPOLL_DEL = EPOLL_CTL_DEL;
/// The most events one csystemd_epoll_wait call returns.
#define CSYSTEMD_MAX_EVENTS 64

static inline int csystemd_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

static inline int csystemd_epoll_ctl(int ep, int op, int fd, unsigned int events, unsigned long long token) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.u64 = token;
    return epoll_ctl(ep, op, fd, &ev);
}

/// epoll_wait into out (at most CSYSTEMD_MAX_EVENTS); returns epoll_wait's result.
static inline int csystemd_epoll_wait(int ep, struct csystemd_event *out, int max, int timeout_ms) {
    struct epoll_event ev[CSYSTEMD_MAX_EVENTS];
    if (max > CSYSTEMD_MAX_EVENTS) max = CSYSTEMD_MAX_EVENTS;
    int n = epoll_wait(ep, ev, max, timeout_ms);
    for (int i = 0; i < n; i++) { out[i].events = ev[i].events; out[i].token = ev[i].data.u64; }
    return n;
}

/// A non-blocking close-on-exec eventfd (wakes the I/O thread).
static inline int csystemd_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

#endif
