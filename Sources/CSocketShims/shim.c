#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "CSocketShims.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <sched.h>
#include <unistd.h>

ssize_t csock_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds, int flags) {
    if (nfds < 0 || nfds > CSOCK_MAX_FDS) { errno = EINVAL; return -1; }
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    union { char bytes[CMSG_SPACE(sizeof(int) * CSOCK_MAX_FDS)]; struct cmsghdr align; } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.bytes;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n;
    do { n = sendmsg(sock, &msg, flags); } while (n < 0 && errno == EINTR);
    return n;
}

ssize_t csock_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *num_fds,
                            int *truncated, int flags) {
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    union { char bytes[CMSG_SPACE(sizeof(int) * CSOCK_MAX_FDS)]; struct cmsghdr align; } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.bytes;
    msg.msg_controllen = sizeof control.bytes;
    *num_fds = 0;
    *truncated = 0;
    ssize_t n;
    do { n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n < 0) return n;
    if (msg.msg_flags & MSG_CTRUNC) *truncated = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *data = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, data + i, sizeof fd);
            if (*num_fds < max_fds) fds[*num_fds] = fd; else close(fd);
            (*num_fds)++;
        }
    }
    return n;
}

int csock_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING); }

int csock_add_seals(int fd, int seals) { return fcntl(fd, F_ADD_SEALS, seals); }

int csock_get_seals(int fd) { return fcntl(fd, F_GET_SEALS); }

int csock_sealed_memfd(const char *name, size_t size) {
    int fd = csock_memfd(name);
    if (fd < 0) return -1;
    if (ftruncate(fd, (off_t)size) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

long csock_fs_type(int fd) {
    struct statfs fs;
    return fstatfs(fd, &fs) == 0 ? (long)fs.f_type : -1;
}

int csock_peer_credentials(int fd, struct csock_peer *out) {
    socklen_t len = sizeof(*out);
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, out, &len);
}

int csock_accept(int listener) { return accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

int csock_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int csock_epoll_ctl(int ep, int op, int fd, unsigned int events, unsigned long long token) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = token;
    return epoll_ctl(ep, op, fd, &ev);
}

int csock_epoll_wait(int ep, struct csock_event *out, int max, int timeout_ms) {
    struct epoll_event ev[CSOCK_MAX_EVENTS];
    if (max > CSOCK_MAX_EVENTS) max = CSOCK_MAX_EVENTS;
    int n = epoll_wait(ep, ev, max, timeout_ms);
    for (int i = 0; i < n; i++) { out[i].events = ev[i].events; out[i].token = ev[i].data.u64; }
    return n;
}

int csock_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

int csock_punch_hole(int fd, off_t offset, off_t len) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len);
}

int csock_leave_this_cpu(void) {
    cpu_set_t allowed, others;
    int cpu = sched_getcpu();
    if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return 0;
    others = allowed;
    CPU_CLR(cpu, &others);
    if (CPU_COUNT(&others) == 0 || sched_setaffinity(0, sizeof(others), &others) != 0) return 0;
    /* The thread now runs on another allowed CPU; the full set again lets the scheduler place it later. */
    sched_setaffinity(0, sizeof(allowed), &allowed);
    return 1;
}

int csock_allowed_cpu_count(void) {
    cpu_set_t allowed;
    return sched_getaffinity(0, sizeof(allowed), &allowed) == 0 ? CPU_COUNT(&allowed) : -1;
}

int csock_current_cpu(void) { return sched_getcpu(); }
