/*
 * smmu-hypd client device: an ARM MMU-500 emulated out of process by smmu-hypd.
 *
 * The guest's arm-smmu driver plays the pKVM host (EL1); smmu-hypd plays the EL2
 * hypervisor and the SMMU hardware. This device forwards MMIO of one SMMU window to the
 * daemon over protocol v1 (HELLO, READ, WRITE), shares guest RAM with it (MEM_MAP) so it
 * walks the guest's page tables, turns its interrupt EVENTS into GIC SPI levels, puts an
 * "arm,mmu-500" node and the PCIe host's iommu-map into the guest's device tree, and
 * translates every PCI DMA access through the daemon (DMA opcode, stream = PCI BDF).
 *
 * With a protocol v1.1 daemon the device caches translations (DMA_EPOCH, DMA_CACHED): each
 * answer carries the mapping's size (a 2 MiB block is one entry) and directions, and is used
 * only while nothing since the epoch it was answered in may have ended it: the daemon advances
 * the epoch before any change that could alter a translation takes effect (docs/protocol-v1.md,
 * "Version 1.1"), and a v1.2 daemon records in the same page what each advance ended ("Version
 * 1.2": a TLBIVA(L)'s address, or anything), so the device drops only the entries a TLBIVA(L)
 * names and empties the whole cache for anything else (or when the log overflowed). TLB maintenance writes are posted: the vCPU does not
 * wait for them, and the next blocking access (the driver's TLBSTATUS poll) collects their
 * answers in order. The property verify-cache=on checks every cache hit against the daemon
 * (the guest test's stale-translation check).
 *
 * With layout=tegra234 the device serves a daemon on the tegra234 topology instead: all five
 * MMU-500 instances and the memory controller's windows at their Tegra234 addresses plus a fixed
 * offset (4 GiB by default: 0-0x13000000 is flash, GIC and UART on virt), their interrupts at
 * Tegra234's SPIs, and the dtsi's iommu@ and memory-controller@ nodes, so the guest's stock
 * arm-smmu-nvidia and Tegra MC drivers drive them (smmu-hypd-tegra234.c.inc).
 *
 * pKVM finalization (property finalize): "ready" (the default) starts the guest only against a
 * finalized daemon; "realize" finalizes the daemon (PROT_FINALIZE) at realize, before the guest's
 * first instruction, for a guest without pKVM; "guest" starts whatever the daemon's state and
 * exposes a doorbell page (property doorbell, described in the device tree as
 * "smmu-hypd,pkvm-doorbell") that the guest kernel's finalize_pkvm() writes: the device forwards
 * that write as PROT_FINALIZE, so the guest's own pKVM finalization is the daemon's.
 *
 * Usage (must come before the PCI devices it translates):
 *   -machine virt,memory-backend=ram0
 *   -object memory-backend-memfd,id=ram0,size=512M,share=on,seal=on
 *   -device smmu-hypd,socket=/run/smmu-hypd.sock[,layout=tegra234]
 *
 * Copyright (c) 2026 the smmu-hypd authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include <sys/un.h>
#include <libfdt.h>
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/log.h"
#include "qemu/module.h"
#include "qemu/main-loop.h"
#include "qemu/thread.h"
#include "qemu/sockets.h"
#include "qemu/bswap.h"
#include "exec/memory.h"
#include "exec/address-spaces.h"
#include "exec/cpu-common.h"
#include "hw/qdev-core.h"
#include "hw/qdev-properties.h"
#include "hw/irq.h"
#include "hw/boards.h"
#include "hw/arm/fdt.h"
#include "hw/pci/pci.h"
#include "hw/pci/pci_host.h"
#include "hw/pci-host/gpex.h"
#include "hw/intc/arm_gic_common.h"
#include "hw/intc/arm_gicv3_common.h"
#include "sysemu/device_tree.h"
#include "sysemu/sysemu.h"
#include "qemu/atomic.h"
#include "qom/object.h"

#define TYPE_SMMU_HYPD "smmu-hypd"
#define TYPE_SMMU_HYPD_IOMMU_MR "smmu-hypd-iommu-memory-region"
OBJECT_DECLARE_SIMPLE_TYPE(SmmuHypdState, SMMU_HYPD)

/* Protocol v1 (docs/protocol-v1.md). */
enum {
    SH_MAGIC = 0x4D53, SH_VERSION = 1, SH_HEADER = 16, SH_MAX_PAYLOAD = 65536,
    SH_OP_HELLO = 0x01, SH_OP_READ = 0x02, SH_OP_WRITE = 0x03, SH_OP_DMA = 0x04,
    SH_OP_MEM_MAP = 0x07, SH_OP_DMA_EPOCH = 0x08, SH_OP_DMA_CACHED = 0x09,
    SH_OP_EVENTS = 0x30, SH_OP_EVENT = 0xB0, SH_OP_PROT_FINALIZE = 0x25,
    SH_ROLE_HOST = 1, SH_ROLE_DEVICE = 2,
    SH_OK = 0, SH_DEFERRED = 1, SH_DENIED = 2, SH_UNSUPPORTED = 6, SH_FAULT = 8, SH_INVALID = 9,
    SH_STATE_FINALIZED = 1,
    SH_WINDOW_RECORD = 32, SH_EVENT_PAYLOAD = 12,
    SH_MAX_IRQS = 1 + 128,
    SH_MAX_WINDOWS = 8, SH_NUM_SPIS = 256,
    SH_MAX_POSTED = 64, SH_OP_DMA_PREFETCH = 0x0A, SH_MAX_PREFETCH = 512, SH_V12_MAX_PREFETCH = 64, SH_OP_RING = 0x0B,
    SH_RING_SIZE = 0x23000, SH_RING_REQUEST = 0x1000, SH_RING_RESPONSE = 0x12000,
    SH_CACHE_PAGES = 4096, SH_CACHE_BLOCKS = 512, SH_BLOCK_SHIFT = 21,
    /* v1.2's invalidation log in the epoch page */
    SH_LOG_FORMAT = 0x08, SH_LOG_FIRST_SLOT = 0x40, SH_LOG_SLOT = 32, SH_LOG_SLOTS = 126,
    SH_LOG_EVERYTHING = 0, SH_LOG_ADDRESS = 1, SH_LOG_ADDRESS_ANY_ASID = 2,
    SH_CACHE_SIDS = 8,
    /* The doorbell page (finalize=guest): registers and the one value FINALIZE accepts ("FINL"). */
    SH_DOORBELL_SIZE = 0x1000, SH_DB_FINALIZE = 0x0, SH_DB_STATE = 0x4, SH_DB_STATUS = 0x8,
    SH_DB_FINALIZE_MAGIC = 0x46494e4c, SH_DB_NO_STATUS = 0xffffffff,
};

/* v1.2: DMA_PREFETCH's pages word with this bit speculates over the ranges before the access;
 * with the next, over the mapped pages on both sides of it (holes skipped). */
#define SH_PREFETCH_BACKWARD 0x80000000u
#define SH_PREFETCH_AROUND 0x40000000u

/* IOVA bits 55:12: what a log record's address is compared on. */
#define SH_LOG_ADDRESS_MASK 0x00FFFFFFFFFFF000ULL

static const char *const sh_status_names[] = {
    "OK", "DEFERRED", "DENIED", "BAD_ADDRESS", "BAD_ACCESS", "MALFORMED",
    "UNSUPPORTED", "FORBIDDEN", "FAULT", "INVALID", "SHUTTING_DOWN",
};

static const char *sh_status_name(uint32_t status)
{
    return status < ARRAY_SIZE(sh_status_names) ? sh_status_names[status] : "?";
}

/* One blocking request/response connection; the mutex keeps vCPU threads' exchanges whole. */
typedef struct SmmuHypdConn {
    int fd;
    QemuMutex lock;
    uint32_t next_tag;
    uint32_t posted;        /* requests sent whose responses are not read yet (WRITE only) */
    bool dead;
    uint8_t *ring;          /* the shared-memory ring (protocol v1.1 RING), or NULL: the socket */
    uint32_t ring_seq;
    /* With a ring, posted writes wait here and go with the next request (request_bytes). */
    uint8_t batch[SH_MAX_POSTED * (SH_HEADER + 24)];
    uint32_t batch_len, batch_count;
    uint64_t idr0_address;  /* what a full batch is flushed with */
    uint64_t calls, posts, call_ns; /* round trips, posted requests, time waited (printed at exit) */
    uint64_t wakes, wake_ns;        /* ring exchanges that found the daemon's thread asleep, their time */
} SmmuHypdConn;

/*
 * One cached DMA_CACHED answer: [iova_base, iova_base + 2^shift) -> pa_base, while gen is the
 * cache's generation (a full flush starts a new one) and no log record named its mapping (the
 * 2^reach bytes around iova_base). epoch: the epoch it was answered in (only while inserting).
 */
typedef struct SmmuHypdCacheEntry {
    uint64_t iova_base;
    uint64_t pa_base;
    uint64_t epoch;
    uint32_t gen;           /* 0: empty */
    uint32_t sid;
    uint8_t shift;
    uint8_t reach;
    uint8_t access;         /* bit 0 read, bit 1 write */
} SmmuHypdCacheEntry;

typedef struct SmmuHypdIOMMU {
    IOMMUMemoryRegion iommu;
    AddressSpace as;
    SmmuHypdState *s;
    PCIBus *bus;
    int devfn;
} SmmuHypdIOMMU;

/*
 * One register window the guest sees: an MMU-500 instance or a memory-controller window. A guest
 * access at guest_base + offset goes to the daemon at daemon_base + offset.
 */
typedef struct SmmuHypdWindow {
    SmmuHypdState *s;
    MemoryRegion mr;
    uint64_t daemon_base;
    uint64_t guest_base;
    uint64_t size;
    uint32_t page_size;     /* 0: a memory-controller window (32-bit registers, nothing posted) */
    uint32_t index;         /* HELLO's window index (MMU-500 instances only) */
    uint16_t num_cb, num_smrg;
    char name[9];
    uint32_t num_lines;     /* interrupt lines: 0 global, 1 + n context bank n */
    uint16_t line_spi[SH_MAX_IRQS];
    uint8_t line_level[SH_MAX_IRQS];
    uint64_t reads, writes; /* guest accesses, printed at exit (the test compares the instances) */
} SmmuHypdWindow;

struct SmmuHypdState {
    DeviceState parent_obj;

    /* properties */
    char *socket_path;
    char *client_name;
    uint32_t window;
    uint64_t base;          /* guest address of the window; UINT64_MAX: the daemon's */
    uint64_t size;          /* 0: the daemon's */
    uint32_t spi;           /* GIC SPI of the global fault line; context lines follow */
    uint32_t context_irqs;  /* 0: as many as the host sees context banks */
    uint64_t ram_base;      /* guest physical address of the machine's RAM */
    bool verify_cache;      /* ask the daemon on every cache hit too, and count disagreements */
    uint32_t prefetch;      /* on a miss, translate this many ranges at once (DMA_PREFETCH); 0: off */
    bool use_ring;          /* MMIO and DMA through shared-memory rings (RING) instead of the sockets */
    bool backward_prefetch; /* a miss just below the previous one prefetches downwards (v1.2) */
    bool around_prefetch;   /* a miss prefetches the mapped pages on both sides (v1.2) */
    uint64_t last_miss_page;
    char *layout;           /* "mmu-500" (one generic node) or "tegra234" */
    uint64_t offset;        /* tegra234: guest address of a window = its Tegra234 address + offset */
    char *finalize;         /* "ready", "realize" or "guest": who finalizes the daemon */
    uint64_t doorbell;      /* finalize=guest: the doorbell page's guest address; 0: none */

    /* learned from HELLO */
    SmmuHypdWindow windows[SH_MAX_WINDOWS];
    uint32_t num_windows;
    uint32_t dma_window;    /* HELLO index of the instance that translates PCI DMA */
    uint64_t idle_accesses; /* tegra234: accesses to the MC channel windows the daemon does not model */
    MemoryRegion mc_channels[16];
    uint32_t tegra_slot[3][2];  /* windows[] index of each Tegra234 node's instances */

    SmmuHypdConn mmio;      /* READ/WRITE, MEM_MAP (role host) */
    SmmuHypdConn dma;       /* DMA (role device) */
    int events_fd;          /* EVENTS (role host), read from the main loop */
    uint8_t events_buf[SH_HEADER + SH_EVENT_PAYLOAD];
    size_t events_len;

    qemu_irq spis[SH_NUM_SPIS];
    uint16_t spi_sources[SH_NUM_SPIS];  /* raised (window, line) pairs per SPI: lines that share one OR */
    MemoryRegion doorbell_mem;
    uint32_t daemon_state;  /* the lifecycle as HELLO or PROT_FINALIZE last showed it */
    uint32_t finalize_status; /* the last PROT_FINALIZE's wire status, SH_DB_NO_STATUS before one */
    GHashTable *iommu_by_bus;   /* PCIBus * -> SmmuHypdIOMMU *[PCI_DEVFN_MAX] */

    /* Translation cache (protocol v1.1); epoch_page is NULL against a v1.0 daemon. */
    const uint64_t *epoch_page;
    bool log_kept;          /* the daemon keeps v1.2's invalidation log in the page */
    QemuMutex cache_lock;
    uint64_t seen;          /* the epoch every live entry is valid in */
    uint32_t gen;           /* live entries carry it; a full flush increments it */
    /* Entries only a scan could find for a range (a piece smaller than its mapping, a size other
     * than 4 KiB or 2 MiB): while any is live, a ranged record flushes everything. */
    uint32_t wide_entries;
    uint32_t sids[SH_CACHE_SIDS], num_sids;   /* the streams with live entries (probed per range) */
    bool sids_overflow;
    SmmuHypdCacheEntry cache_pages[SH_CACHE_PAGES];
    SmmuHypdCacheEntry cache_blocks[SH_CACHE_BLOCKS];
    uint64_t cache_hits, cache_misses, cache_faults, cache_verified, cache_stale;
    uint64_t cache_full_flushes, cache_ranges, cache_range_drops;
    /* why full flushes happened: no log or overflow, an unranged record, a range not probed */
    uint64_t flush_overflow, flush_unranged, flush_unprobed;
    uint64_t prefetch_calls, prefetch_records;
    Notifier exit_notifier;
};

/* ---- socket plumbing ---- */

static int sh_connect(const char *path, Error **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct timeval tv = { .tv_sec = 10 };
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        error_setg(errp, "smmu-hypd: socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "smmu-hypd: socket");
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        error_setg_errno(errp, errno, "smmu-hypd: cannot connect to %s", path);
        close(fd);
        return -1;
    }
    /* A daemon that stops answering must not hang a vCPU for ever. */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static bool sh_send_all(int fd, const void *buf, size_t len, int pass_fd)
{
    const uint8_t *p = buf;
    bool first = true;

    while (len > 0) {
        struct iovec iov = { .iov_base = (void *)p, .iov_len = len };
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } control;
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (first && pass_fd >= 0) {
            struct cmsghdr *cmsg;
            memset(&control, 0, sizeof(control));
            msg.msg_control = control.buf;
            msg.msg_controllen = sizeof(control.buf);
            cmsg = CMSG_FIRSTHDR(&msg);
            cmsg->cmsg_level = SOL_SOCKET;
            cmsg->cmsg_type = SCM_RIGHTS;
            cmsg->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cmsg), &pass_fd, sizeof(int));
        }
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        first = false;
        p += n;
        len -= n;
    }
    return true;
}

static bool sh_recv_all(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        p += n;
        len -= n;
    }
    return true;
}

static void sh_put_header(uint8_t *h, uint8_t opcode, uint32_t tag, uint32_t length)
{
    stw_le_p(h, SH_MAGIC);
    h[2] = SH_VERSION;
    h[3] = opcode;
    stl_le_p(h + 4, tag);
    stl_le_p(h + 8, 0);
    stl_le_p(h + 12, length);
}

/* ---- the shared-memory ring: one request at a time, spin then futex (docs/protocol-v1.md) ---- */

static uint32_t *sh_ring_word(SmmuHypdConn *c, int i)
{
    return (uint32_t *)c->ring + i;
}

static long sh_futex(uint32_t *p, int op, uint32_t val, long timeout_ms)
{
    struct timespec ts = { timeout_ms / 1000, (timeout_ms % 1000) * 1000000L };
    return syscall(SYS_futex, p, op, val, op == FUTEX_WAIT ? &ts : NULL, NULL, 0);
}

/* The request frame is at SH_RING_REQUEST; returns the response header, its payload follows. */
static uint8_t *sh_ring_exchange(SmmuHypdConn *c, uint32_t request_bytes)
{
    uint32_t seq = ++c->ring_seq;

    qatomic_store_release(sh_ring_word(c, 4), request_bytes);
    int64_t start = get_clock();
    unsigned spins = 0;

    bool woke = false;

    qatomic_store_release(sh_ring_word(c, 0), seq);
    smp_mb();
    if (qatomic_load_acquire(sh_ring_word(c, 2))) {
        sh_futex(sh_ring_word(c, 0), FUTEX_WAKE, 1, 0);
        woke = true;
    }
    while (qatomic_load_acquire(sh_ring_word(c, 1)) != seq) {
        uint32_t now;
        cpu_relax();
        if (++spins % 16) {
            continue;
        }
        sched_yield();      /* the daemon's ring thread may be waiting for this CPU (every ~0.4 µs) */
        if (get_clock() - start < 100000) {
            continue;
        }
        qatomic_store_release(sh_ring_word(c, 3), 1);
        smp_mb();
        now = qatomic_load_acquire(sh_ring_word(c, 1));
        if (now != seq) {
            sh_futex(sh_ring_word(c, 1), FUTEX_WAIT, now, 1000);
        }
        qatomic_store_release(sh_ring_word(c, 3), 0);
        if (get_clock() - start > 10 * NANOSECONDS_PER_SECOND) {
            return NULL;
        }
    }
    if (woke) {
        c->wakes++;
        c->wake_ns += get_clock() - start;
    }
    return c->ring + SH_RING_RESPONSE;
}

/* Checks the answers to the batched (posted) writes at *r and moves *r past them. */
static bool sh_ring_batch_answers(SmmuHypdConn *c, uint8_t **r)
{
    for (uint32_t i = 0; i < c->batch_count; i++) {
        uint32_t status = ldl_le_p(*r + 8);
        if (lduw_le_p(*r) != SH_MAGIC || (*r)[3] != (SH_OP_WRITE | 0x80) || ldl_le_p(*r + 12)) {
            error_report("smmu-hypd: unexpected answer to a batched write");
            return false;
        }
        if (status != SH_OK) {
            warn_report("smmu-hypd: posted WRITE (tag %u): %s", ldl_le_p(*r + 4),
                        sh_status_name(status));
        }
        *r += SH_HEADER;
    }
    c->batch_len = c->batch_count = 0;
    return true;
}

/* The connection broke: from now on the SMMU reads as zero and writes go nowhere. */
static void sh_mark_dead(SmmuHypdConn *c)
{
    error_report("smmu-hypd: connection to the daemon lost; the SMMU now reads as zero");
    c->dead = true;
}

/*
 * Reads the responses of posted requests, oldest first (the daemon answers in order). Called
 * with the lock held before anything that waits for its own response.
 */
static bool sh_drain_posted(SmmuHypdConn *c)
{
    while (c->posted) {
        uint8_t hdr[SH_HEADER], sink[16];
        uint32_t tag = c->next_tag - c->posted, rlen, status;

        if (!sh_recv_all(c->fd, hdr, SH_HEADER)) {
            return false;
        }
        rlen = ldl_le_p(hdr + 12);
        if (lduw_le_p(hdr) != SH_MAGIC || hdr[3] != (SH_OP_WRITE | 0x80) ||
            ldl_le_p(hdr + 4) != tag || rlen > sizeof(sink)) {
            error_report("smmu-hypd: unexpected response to a posted write (opcode 0x%x tag %u)",
                         hdr[3], ldl_le_p(hdr + 4));
            return false;
        }
        if (rlen && !sh_recv_all(c->fd, sink, rlen)) {
            return false;
        }
        status = ldl_le_p(hdr + 8);
        if (status != SH_OK) {
            warn_report("smmu-hypd: posted WRITE (tag %u): %s", tag, sh_status_name(status));
        }
        c->posted--;
    }
    return true;
}

/*
 * Sends a request without waiting for its response (a posted write); the next sh_call on the
 * connection collects it first, so whatever the guest reads next observes it.
 */
static bool sh_call(SmmuHypdConn *c, uint8_t opcode, const void *payload, uint32_t len,
                    int pass_fd, uint32_t *status, void *resp, uint32_t resp_cap,
                    uint32_t *resp_len);

static void sh_post(SmmuHypdConn *c, uint8_t opcode, const void *payload, uint32_t len)
{
    uint8_t req[SH_HEADER + 64];

    if (c->ring) {
        /* Batched: they go to the daemon, in order, in front of the next request. */
        qemu_mutex_lock(&c->lock);
        c->posts++;
        if (!c->dead) {
            sh_put_header(c->batch + c->batch_len, opcode, c->next_tag++, len);
            memcpy(c->batch + c->batch_len + SH_HEADER, payload, len);
            c->batch_len += SH_HEADER + len;
            c->batch_count++;
        }
        qemu_mutex_unlock(&c->lock);
        if (c->batch_count >= SH_MAX_POSTED) {
            /* Full: send them with a harmless read of IDR0 in front of nothing else. */
            uint8_t req[16], resp[8];
            uint32_t status;
            stq_le_p(req, c->idr0_address);
            stl_le_p(req + 8, 4);
            stl_le_p(req + 12, 0);
            sh_call(c, SH_OP_READ, req, sizeof(req), -1, &status, resp, sizeof(resp), NULL);
        }
        return;
    }

    assert(len <= sizeof(req) - SH_HEADER);
    qemu_mutex_lock(&c->lock);
    if (c->dead) {
        goto out;
    }
    if (c->posted >= SH_MAX_POSTED && !sh_drain_posted(c)) {
        goto broken;
    }
    sh_put_header(req, opcode, c->next_tag++, len);
    memcpy(req + SH_HEADER, payload, len);
    if (!sh_send_all(c->fd, req, SH_HEADER + len, -1)) {
        goto broken;
    }
    c->posted++;
    c->posts++;
    goto out;
broken:
    sh_mark_dead(c);
out:
    qemu_mutex_unlock(&c->lock);
}

/*
 * One request and its response on a connection. Returns false when the connection broke;
 * otherwise *status is the response status and resp holds min(length, resp_cap) bytes.
 */
static bool sh_call(SmmuHypdConn *c, uint8_t opcode, const void *payload, uint32_t len,
                    int pass_fd, uint32_t *status, void *resp, uint32_t resp_cap,
                    uint32_t *resp_len)
{
    uint8_t req[SH_HEADER + 64];
    uint8_t hdr[SH_HEADER];
    uint32_t tag, rlen;
    bool ok = false;

    int64_t t0 = get_clock();

    assert(len <= sizeof(req) - SH_HEADER);
    qemu_mutex_lock(&c->lock);
    c->calls++;
    if (c->dead) {
        goto out;
    }
    if (!sh_drain_posted(c)) {
        goto broken;
    }
    tag = c->next_tag++;
    if (c->ring && pass_fd < 0) {
        uint8_t *r;
        uint32_t batched = c->batch_len;
        memcpy(c->ring + SH_RING_REQUEST, c->batch, batched);
        sh_put_header(c->ring + SH_RING_REQUEST + batched, opcode, tag, len);
        memcpy(c->ring + SH_RING_REQUEST + batched + SH_HEADER, payload, len);
        r = sh_ring_exchange(c, batched ? batched + SH_HEADER + len : 0);
        if (!r || !sh_ring_batch_answers(c, &r)) {
            goto broken;
        }
        rlen = ldl_le_p(r + 12);
        if (lduw_le_p(r) != SH_MAGIC || r[3] != (opcode | 0x80) || ldl_le_p(r + 4) != tag ||
            rlen > SH_MAX_PAYLOAD) {
            error_report("smmu-hypd: unexpected ring response (opcode 0x%x tag %u)", r[3],
                         ldl_le_p(r + 4));
            goto broken;
        }
        *status = ldl_le_p(r + 8);
        if (resp_len) {
            *resp_len = rlen;
        }
        memcpy(resp, r + SH_HEADER, MIN(rlen, resp_cap));
        ok = true;
        goto out;
    }
    sh_put_header(req, opcode, tag, len);
    memcpy(req + SH_HEADER, payload, len);
    if (!sh_send_all(c->fd, req, SH_HEADER + len, pass_fd) ||
        !sh_recv_all(c->fd, hdr, SH_HEADER)) {
        goto broken;
    }
    rlen = ldl_le_p(hdr + 12);
    if (lduw_le_p(hdr) != SH_MAGIC || hdr[3] != (opcode | 0x80) ||
        ldl_le_p(hdr + 4) != tag || rlen > SH_MAX_PAYLOAD) {
        error_report("smmu-hypd: unexpected response (opcode 0x%x tag %u length %u)",
                     hdr[3], ldl_le_p(hdr + 4), rlen);
        goto broken;
    }
    *status = ldl_le_p(hdr + 8);
    if (resp_len) {
        *resp_len = rlen;
    }
    /* Keep what fits, drain the rest so the stream stays framed. */
    {
        uint32_t keep = MIN(rlen, resp_cap);
        uint8_t sink[256];
        if (keep && !sh_recv_all(c->fd, resp, keep)) {
            goto broken;
        }
        rlen -= keep;
        while (rlen) {
            uint32_t n = MIN(rlen, sizeof(sink));
            if (!sh_recv_all(c->fd, sink, n)) {
                goto broken;
            }
            rlen -= n;
        }
    }
    ok = true;
    goto out;
broken:
    sh_mark_dead(c);
out:
    c->call_ns += get_clock() - t0;
    qemu_mutex_unlock(&c->lock);
    return ok;
}

/* HELLO on a fresh connection; the response (up to cap bytes) is left in resp. */
static bool sh_open(SmmuHypdConn *c, SmmuHypdState *s, uint32_t role, uint8_t *resp,
                    uint32_t cap, uint32_t *resp_len, Error **errp)
{
    uint8_t hello[8 + 64];
    size_t name_len = MIN(strlen(s->client_name), 64);
    uint32_t status;

    c->fd = sh_connect(s->socket_path, errp);
    if (c->fd < 0) {
        return false;
    }
    qemu_mutex_init(&c->lock);
    c->next_tag = 1;
    c->posted = 0;
    c->ring = NULL;
    c->dead = false;
    stl_le_p(hello, role);
    stl_le_p(hello + 4, 0);
    memcpy(hello + 8, s->client_name, name_len);
    if (!sh_call(c, SH_OP_HELLO, hello, 8 + name_len, -1, &status, resp, cap, resp_len)) {
        error_setg(errp, "smmu-hypd: no HELLO response from %s", s->socket_path);
        return false;
    }
    if (status != SH_OK) {
        error_setg(errp, "smmu-hypd: HELLO as role %u refused: %s", role,
                   sh_status_name(status));
        return false;
    }
    return true;
}

/* Moves a connection's requests to a shared-memory ring (RING); false (socket kept) if refused. */
static bool sh_open_ring(SmmuHypdConn *c, const char *what)
{
    uint32_t status;
    void *p;
    int fd = memfd_create("smmu-hypd-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    if (fd < 0 || ftruncate(fd, SH_RING_SIZE) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0 ||
        (p = mmap(NULL, SH_RING_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
        warn_report("smmu-hypd: no ring memfd for %s (%s); using the socket", what, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return false;
    }
    if (!sh_call(c, SH_OP_RING, NULL, 0, fd, &status, NULL, 0, NULL) || status != SH_OK) {
        warn_report("smmu-hypd: the daemon refused a ring for %s; using the socket", what);
        munmap(p, SH_RING_SIZE);
        close(fd);
        return false;
    }
    close(fd);
    c->ring_seq = 0;
    c->batch_len = c->batch_count = 0;
    c->ring = p;
    return true;
}

/* ---- MMIO: the SMMU window ---- */

/* Applies the level changes the daemon has sent so far (main-loop fd handler, and inline). */
static void smmu_hypd_events_readable(void *opaque);

static uint64_t smmu_hypd_read(void *opaque, hwaddr offset, unsigned size)
{
    SmmuHypdWindow *w = opaque;
    uint8_t req[16], resp[8] = { 0 };
    uint32_t status;

    w->reads++;
    stq_le_p(req, w->daemon_base + offset);
    stl_le_p(req + 8, size);
    stl_le_p(req + 12, 0);
    if (!sh_call(&w->s->mmio, SH_OP_READ, req, sizeof(req), -1, &status, resp, sizeof(resp),
                 NULL)) {
        return 0;
    }
    if (status != SH_OK) {
        warn_report_once("smmu-hypd: READ 0x%" PRIx64 " (%u bytes): %s; reads as zero",
                         w->daemon_base + offset, size, sh_status_name(status));
        return 0;
    }
    return ldq_le_p(resp);
}

/*
 * TLB maintenance and sync writes change no interrupt line and answer nothing the guest reads:
 * they may be posted. The driver's TLBSTATUS / sTLBGSTATUS poll is a read, which waits for them.
 * GR0: STLBIALL, TLBIVMID, TLBIALLNSNH, TLBIALLH, sTLBGSYNC (0x60-0x70); a context bank: TLBIVA
 * to TLBIIPAS2L (0x600-0x638), TLBSYNC (0x7f0). Nothing is posted to a memory-controller window.
 */
static bool smmu_hypd_write_may_post(SmmuHypdWindow *w, hwaddr offset)
{
    uint64_t half = w->size / 2, reg;

    if (!w->page_size) {
        return false;
    }
    if (offset < w->page_size) {
        return offset >= 0x60 && offset <= 0x70;
    }
    if (offset < half) {
        return false;
    }
    reg = (offset - half) % w->page_size;
    return (reg >= 0x600 && reg < 0x640) || reg == 0x7f0;
}

static void smmu_hypd_write(void *opaque, hwaddr offset, uint64_t value, unsigned size)
{
    SmmuHypdWindow *w = opaque;
    SmmuHypdState *s = w->s;
    uint8_t req[24];
    uint32_t status;

    w->writes++;
    stq_le_p(req, w->daemon_base + offset);
    stq_le_p(req + 8, value);
    stl_le_p(req + 16, size);
    stl_le_p(req + 20, 0);
    if (smmu_hypd_write_may_post(w, offset)) {
        sh_post(&s->mmio, SH_OP_WRITE, req, sizeof(req));
        return;
    }
    if (!sh_call(&s->mmio, SH_OP_WRITE, req, sizeof(req), -1, &status, NULL, 0, NULL)) {
        return;
    }
    if (status != SH_OK) {
        /* A refused write changes nothing; the daemon audits it. */
        warn_report("smmu-hypd: WRITE 0x%" PRIx64 " = 0x%" PRIx64 " (%u bytes): %s",
                    w->daemon_base + offset, value, size, sh_status_name(status));
    }
    /*
     * On hardware a W1C write lowers the fault line at once. The daemon has sent the level
     * change by the time it answers; apply it now, before the vCPU EOIs, or the GIC would
     * re-deliver a line the guest already cleared (a spurious interrupt per main-loop delay).
     */
    smmu_hypd_events_readable(s);
}

static const MemoryRegionOps smmu_hypd_ops = {
    .read = smmu_hypd_read,
    .write = smmu_hypd_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = { .min_access_size = 4, .max_access_size = 8 },
    .impl = { .min_access_size = 4, .max_access_size = 8 },
};

/* A memory-controller window: every register is 32 bits wide (the daemon refuses other widths). */
static const MemoryRegionOps smmu_hypd_mc_ops = {
    .read = smmu_hypd_read,
    .write = smmu_hypd_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = { .min_access_size = 4, .max_access_size = 4 },
    .impl = { .min_access_size = 4, .max_access_size = 4 },
};

/* ---- pKVM finalization: PROT_FINALIZE and the guest's doorbell ---- */

/* Asks the daemon to finalize as the host's pKVM does; the daemon decides (once, where its
 * configuration says finalization.mode: host) and audits a refusal. Logged before it is sent, so
 * the log's time stamp (-msg timestamp=on) is the moment READY=1 must follow. */
static uint32_t smmu_hypd_prot_finalize(SmmuHypdState *s, const char *why)
{
    uint32_t status;

    info_report("smmu-hypd: PROT_FINALIZE sent (%s)", why);
    if (!sh_call(&s->mmio, SH_OP_PROT_FINALIZE, NULL, 0, -1, &status, NULL, 0, NULL)) {
        return SH_DB_NO_STATUS;
    }
    if (status == SH_OK) {
        s->daemon_state = SH_STATE_FINALIZED;
    }
    s->finalize_status = status;
    return status;
}

static uint64_t smmu_hypd_doorbell_read(void *opaque, hwaddr offset, unsigned size)
{
    SmmuHypdState *s = opaque;

    switch (offset) {
    case SH_DB_STATE:
        return s->daemon_state;
    case SH_DB_STATUS:
        return s->finalize_status;
    default:
        return 0;
    }
}

static void smmu_hypd_doorbell_write(void *opaque, hwaddr offset, uint64_t value, unsigned size)
{
    SmmuHypdState *s = opaque;
    uint32_t status;

    if (offset != SH_DB_FINALIZE || value != SH_DB_FINALIZE_MAGIC) {
        qemu_log_mask(LOG_GUEST_ERROR, "smmu-hypd: doorbell write 0x%" PRIx64 " at 0x%" PRIx64
                      " ignored\n", value, (uint64_t)offset);
        return;
    }
    status = smmu_hypd_prot_finalize(s, "the guest's pKVM finalization, doorbell");
    info_report("smmu-hypd: the guest's pKVM finalization (doorbell): PROT_FINALIZE %s; "
                "daemon state %u", status == SH_DB_NO_STATUS ? "got no answer" : sh_status_name(status),
                s->daemon_state);
}

static const MemoryRegionOps smmu_hypd_doorbell_ops = {
    .read = smmu_hypd_doorbell_read,
    .write = smmu_hypd_doorbell_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = { .min_access_size = 4, .max_access_size = 4 },
    .impl = { .min_access_size = 4, .max_access_size = 4 },
};

/* Who finalizes (property finalize), checked against what HELLO said. */
static bool smmu_hypd_finalization(SmmuHypdState *s, Error **errp)
{
    uint32_t status;

    if (!strcmp(s->finalize, "ready")) {
        if (s->daemon_state != SH_STATE_FINALIZED) {
            /* A guest MMIO read cannot be deferred: start the guest after the daemon's READY. */
            error_setg(errp, "smmu-hypd: the daemon is not finalized (state %u); start the "
                       "guest after smmu-hypd reports READY, or use finalize=guest (a guest "
                       "kernel running pKVM) or finalize=realize", s->daemon_state);
            return false;
        }
        return true;
    }
    if (!strcmp(s->finalize, "realize")) {
        if (s->daemon_state == SH_STATE_FINALIZED) {
            info_report("smmu-hypd: the daemon was finalized before realize");
            return true;
        }
        status = smmu_hypd_prot_finalize(s, "finalize=realize");
        if (status != SH_OK) {
            error_setg(errp, "smmu-hypd: finalize=realize: PROT_FINALIZE %s (the daemon needs "
                       "finalization.mode: host)", status == SH_DB_NO_STATUS ? "got no answer" :
                       sh_status_name(status));
            return false;
        }
        info_report("smmu-hypd: finalized the daemon at realize, before the guest's first "
                    "instruction (the emulator's signal for a guest without pKVM)");
        return true;
    }
    if (!strcmp(s->finalize, "guest")) {
        info_report("smmu-hypd: the guest's pKVM finalizes the daemon (state %u now)%s",
                    s->daemon_state, s->doorbell ? "" : "; no doorbell on this device");
        return true;
    }
    error_setg(errp, "smmu-hypd: finalize must be ready, realize or guest, not \"%s\"",
               s->finalize);
    return false;
}

/* ---- interrupts: EVENTS to GIC SPI levels ---- */

static void smmu_hypd_events_close(SmmuHypdState *s, const char *why)
{
    error_report("smmu-hypd: %s; the SMMU's interrupt lines stay as they are", why);
    qemu_set_fd_handler(s->events_fd, NULL, NULL, NULL);
    close(s->events_fd);
    s->events_fd = -1;
}

/*
 * One line of one instance changed level. Several lines may share an SPI (Tegra234 wires every
 * context bank of a pair to one or two SPIs): the SPI is the OR of the lines raised on it.
 */
static void smmu_hypd_set_line(SmmuHypdState *s, uint32_t window, uint32_t line, uint32_t level)
{
    SmmuHypdWindow *w = NULL;
    uint16_t spi;

    for (uint32_t i = 0; i < s->num_windows; i++) {
        if (s->windows[i].page_size && s->windows[i].index == window) {
            w = &s->windows[i];
        }
    }
    if (!w) {
        return;     /* an instance this device does not serve */
    }
    if (line >= w->num_lines) {
        warn_report_once("smmu-hypd: event for line %u, only %u wired", line, w->num_lines);
        return;
    }
    spi = w->line_spi[line];
    /* One line per change: the test reads these to see a fault raised and cleared. */
    info_report("smmu-hypd: window %u %s line %u -> SPI %u level %u", window,
                line == 0 ? "global" : "context", line, spi, level);
    if (w->line_level[line] == level) {
        return;
    }
    w->line_level[line] = level;
    s->spi_sources[spi] += level ? 1 : -1;
    qemu_set_irq(s->spis[spi], s->spi_sources[spi] != 0);
}

static void smmu_hypd_events_readable(void *opaque)
{
    SmmuHypdState *s = opaque;

    while (s->events_fd >= 0) {
        ssize_t n = recv(s->events_fd, s->events_buf + s->events_len,
                         sizeof(s->events_buf) - s->events_len, MSG_DONTWAIT);
        uint32_t window, line, level;

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            smmu_hypd_events_close(s, "event connection closed");
            return;
        }
        s->events_len += n;
        if (s->events_len < sizeof(s->events_buf)) {
            continue;
        }
        s->events_len = 0;
        if (lduw_le_p(s->events_buf) != SH_MAGIC || s->events_buf[3] != SH_OP_EVENT ||
            ldl_le_p(s->events_buf + 12) != SH_EVENT_PAYLOAD) {
            smmu_hypd_events_close(s, "malformed event");
            return;
        }
        window = ldl_le_p(s->events_buf + SH_HEADER);
        line = ldl_le_p(s->events_buf + SH_HEADER + 4);
        level = ldl_le_p(s->events_buf + SH_HEADER + 8) != 0;
        smmu_hypd_set_line(s, window, line, level);
    }
}

/* ---- DMA: PCI masters translated by the daemon ---- */

static SmmuHypdCacheEntry *smmu_hypd_cache_slot(SmmuHypdState *s, uint32_t sid,
                                                uint64_t iova, bool block)
{
    uint64_t key = (iova >> (block ? SH_BLOCK_SHIFT : 12)) * 0x9E3779B97F4A7C15ULL ^
                   (uint64_t)sid * 0xBF58476D1CE4E5B9ULL;

    return block ? &s->cache_blocks[(key >> 40) % SH_CACHE_BLOCKS]
                 : &s->cache_pages[(key >> 40) % SH_CACHE_PAGES];
}

static void smmu_hypd_cache_flush(SmmuHypdState *s)
{
    s->gen++;
    if (s->gen == 0) {      /* wrapped: no entry may carry a reused generation */
        memset(s->cache_pages, 0, sizeof(s->cache_pages));
        memset(s->cache_blocks, 0, sizeof(s->cache_blocks));
        s->gen = 1;
    }
    s->wide_entries = 0;
    s->num_sids = 0;
    s->sids_overflow = false;
    s->cache_full_flushes++;
}

static void smmu_hypd_cache_drop(SmmuHypdState *s, SmmuHypdCacheEntry *e, uint32_t sid,
                                 uint64_t first, uint64_t end)
{
    uint64_t base = e->iova_base & SH_LOG_ADDRESS_MASK;

    if (e->gen == s->gen && e->sid == sid && base < end && first < base + (1ULL << e->shift)) {
        e->gen = 0;
        s->cache_range_drops++;
    }
}

/*
 * Drops what one log record names: window's translations whose mapping overlaps
 * [first, first + pages * 4 KiB). Narrow entries sit in the slot of their own base, so probing
 * each page's (and each 2 MiB block's) slot for each stream finds every one. False when only a
 * full flush would do.
 */
static bool smmu_hypd_cache_drop_range(SmmuHypdState *s, uint64_t first, uint32_t pages)
{
    uint64_t end = first + ((uint64_t)pages << 12);

    if (s->wide_entries || s->sids_overflow || pages > 512) {
        return false;
    }
    for (uint32_t i = 0; i < s->num_sids; i++) {
        uint32_t sid = s->sids[i];
        for (uint64_t page = first; page < end; page += 0x1000) {
            smmu_hypd_cache_drop(s, smmu_hypd_cache_slot(s, sid, page, false), sid, first, end);
        }
        for (uint64_t block = first & ~((1ULL << SH_BLOCK_SHIFT) - 1); block < end;
             block += 1ULL << SH_BLOCK_SHIFT) {
            smmu_hypd_cache_drop(s, smmu_hypd_cache_slot(s, sid, block, true), sid, first, end);
        }
    }
    return true;
}

/*
 * Brings the cache to the epoch now (cache lock held): the reader's half of v1.2's seqlock
 * (docs/protocol-v1.md, "Version 1.2"). Each record of the advances since the epoch last seen
 * is trusted only if its sequence, loaded with acquire before its fields and again after an
 * acquire fence, is its epoch both times: the daemon zeroes a slot's sequence (then a release
 * fence) before it rewrites the fields, and stores the record's epoch there (release) before
 * the page's epoch. Anything else (no log, overflow, a torn or unranged record) empties all.
 */
static void smmu_hypd_cache_sync(SmmuHypdState *s)
{
    struct { uint64_t address, epoch; uint32_t pages; uint16_t window; } rec[SH_LOG_SLOTS];
    uint64_t now = le64_to_cpu(qatomic_load_acquire(s->epoch_page));
    uint32_t n = 0;

    if (now == s->seen) {
        return;
    }
    if (!s->log_kept || now < s->seen) {
        s->flush_overflow++;
        goto flush;
    }
    /*
     * Newest first: a record that covers k advances (v1.3, bytes 28-31; 0 from a v1.2 daemon, taken as 1)
     * names a range that includes the ranges of the k - 1 records before it, so the next one read is k back.
     */
    for (uint64_t e = now; e > s->seen; ) {
        const uint64_t *slot = s->epoch_page + (SH_LOG_FIRST_SLOT + (e % SH_LOG_SLOTS) * SH_LOG_SLOT) / 8;
        uint64_t w1, w2;
        uint32_t covers;
        uint8_t kind;

        if (now - e >= SH_LOG_SLOTS) {
            s->flush_overflow++;
            goto flush;     /* that slot was reused: the chain cannot reach the epoch last seen */
        }
        if (le64_to_cpu(qatomic_load_acquire(&slot[0])) != e) {
            goto flush;
        }
        rec[n].address = le64_to_cpu(qatomic_read(&slot[1]));
        w1 = le64_to_cpu(qatomic_read(&slot[2]));
        w2 = le64_to_cpu(qatomic_read(&slot[3]));
        kind = w2 >> 16;
        if (kind != SH_LOG_ADDRESS && kind != SH_LOG_ADDRESS_ANY_ASID) {
            s->flush_unranged++;
            goto flush;     /* anything may have changed (or a kind this device does not know) */
        }
        rec[n].pages = (uint32_t)w1;
        rec[n].window = (uint16_t)(w1 >> 32);
        rec[n].epoch = e;
        covers = MAX((uint32_t)(w2 >> 32), 1);
        n++;
        e -= MIN(e, covers);
    }
    smp_rmb();
    for (uint32_t i = 0; i < n; i++) {
        const uint64_t *slot = s->epoch_page +
            (SH_LOG_FIRST_SLOT + (rec[i].epoch % SH_LOG_SLOTS) * SH_LOG_SLOT) / 8;
        if (le64_to_cpu(qatomic_read(&slot[0])) != rec[i].epoch) {
            goto flush;     /* rewritten while read */
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        if (rec[i].window != s->dma_window) {
            continue;       /* this device caches its own window's translations only */
        }
        if (!smmu_hypd_cache_drop_range(s, rec[i].address & SH_LOG_ADDRESS_MASK, rec[i].pages)) {
            s->flush_unprobed++;
            goto flush;
        }
    }
    s->cache_ranges += n;
    s->seen = now;
    return;
flush:
    smmu_hypd_cache_flush(s);
    s->seen = now;
}

/* Keeps an answer (cache lock held) if it was given in the epoch the cache has reached. */
static void smmu_hypd_cache_insert(SmmuHypdState *s, const SmmuHypdCacheEntry *answer)
{
    SmmuHypdCacheEntry *slot;
    bool known = false;

    smmu_hypd_cache_sync(s);
    if (answer->epoch != s->seen) {
        return;             /* something may have changed since: use it once, keep nothing */
    }
    for (uint32_t i = 0; i < s->num_sids; i++) {
        known |= s->sids[i] == answer->sid;
    }
    if (!known) {
        if (s->num_sids < SH_CACHE_SIDS) {
            s->sids[s->num_sids++] = answer->sid;
        } else {
            s->sids_overflow = true;
        }
    }
    if (!((answer->shift == 12 && answer->reach <= 12) ||
          (answer->shift == SH_BLOCK_SHIFT && answer->reach <= SH_BLOCK_SHIFT)) ||
        answer->iova_base > SH_LOG_ADDRESS_MASK) {
        s->wide_entries++;
    }
    slot = smmu_hypd_cache_slot(s, answer->sid, answer->iova_base, answer->shift == SH_BLOCK_SHIFT);
    *slot = *answer;
    slot->gen = s->gen;
}

/* A usable cached entry covering iova for the access, copied into *out. Cache lock held. */
static bool smmu_hypd_cache_lookup(SmmuHypdState *s, uint32_t sid, uint64_t iova,
                                   uint8_t need, SmmuHypdCacheEntry *out)
{
    smmu_hypd_cache_sync(s);
    for (int block = 0; block < 2; block++) {
        SmmuHypdCacheEntry *e = smmu_hypd_cache_slot(s, sid, iova, block);
        if (e->gen == s->gen && e->sid == sid && (e->access & need) == need &&
            iova - e->iova_base < (1ULL << e->shift)) {
            *out = *e;
            return true;
        }
    }
    return false;
}

/* Asks the daemon; fills *e (epoch 0 when it must not be cached). Returns the status. */
static bool smmu_hypd_ask(SmmuHypdState *s, uint32_t sid, uint64_t iova, bool write,
                          uint32_t *status, SmmuHypdCacheEntry *e, uint32_t *fault)
{
    uint8_t req[24], resp[24] = { 0 };
    bool cached = s->epoch_page != NULL;

    stl_le_p(req, s->dma_window);
    stl_le_p(req + 4, sid);
    stq_le_p(req + 8, iova);
    stl_le_p(req + 16, write ? 1 : 0);
    stl_le_p(req + 20, 0);
    if (!sh_call(&s->dma, cached ? SH_OP_DMA_CACHED : SH_OP_DMA, req, sizeof(req), -1, status,
                 resp, sizeof(resp), NULL)) {
        return false;
    }
    *fault = ldl_le_p(resp + 8);
    e->sid = sid;
    e->epoch = 0;
    e->reach = 12;
    if (*status != SH_OK) {
        return true;
    }
    if (cached && resp[12] >= 12 && resp[12] <= SH_BLOCK_SHIFT) {
        uint64_t mask = (1ULL << resp[12]) - 1;
        e->shift = resp[12];
        e->access = resp[13] & 3;
        e->reach = MAX(resp[14], resp[12]);     /* 0 from a v1.1 daemon, which keeps no log */
        e->iova_base = iova & ~mask;
        e->pa_base = ldq_le_p(resp) & ~mask;
        e->epoch = ldq_le_p(resp + 16);
    } else {
        e->shift = 12;
        e->access = write ? 2 : 1;
        e->iova_base = iova & ~0xfffULL;
        e->pa_base = ldq_le_p(resp) & ~0xfffULL;
    }
    return true;
}

/*
 * A miss with prefetching: DMA_PREFETCH answers the access and the ranges after it (stopping
 * before one that would fault); every record goes into the cache, the first is returned in *e.
 */
static bool smmu_hypd_prefetch(SmmuHypdState *s, uint32_t sid, uint64_t iova, bool write,
                               uint32_t *status, SmmuHypdCacheEntry *e)
{
    uint8_t req[24], resp[16 + 16 * (2 * SH_MAX_PREFETCH + 1)];
    uint32_t len = 0, n, max_records;
    uint64_t epoch, edge = 0;
    uint64_t page = iova >> 12, last = qatomic_read(&s->last_miss_page);
    /*
     * A v1.2 daemon probes the pages on both sides of the access and answers the mapped ones
     * (Linux's lazy mode reuses IOVAs in no order, so a buffer's pages are scattered). Else:
     * Linux hands out fresh IOVAs from the top down, so a buffer's pages often sit at
     * descending IOVAs: when this miss is just below the previous one, speculate downwards.
     */
    bool around = s->around_prefetch && s->log_kept;
    bool backward = !around && s->backward_prefetch && last > page && last - page <= SH_MAX_PREFETCH;

    qatomic_set(&s->last_miss_page, page);
    stl_le_p(req, s->dma_window);
    stl_le_p(req + 4, sid);
    stq_le_p(req + 8, iova);
    stl_le_p(req + 16, write ? 1 : 0);
    stl_le_p(req + 20, MIN(s->prefetch, SH_MAX_PREFETCH) | (backward ? SH_PREFETCH_BACKWARD : 0) |
                       (around ? SH_PREFETCH_AROUND : 0));
    if (!sh_call(&s->dma, SH_OP_DMA_PREFETCH, req, sizeof(req), -1, status, resp, sizeof(resp),
                 &len)) {
        return false;
    }
    if (*status == SH_INVALID && s->prefetch > SH_V12_MAX_PREFETCH) {
        /* A daemon before v1.3 takes at most 64 pages: ask as many from now on. */
        s->prefetch = SH_V12_MAX_PREFETCH;
        return smmu_hypd_prefetch(s, sid, iova, write, status, e);
    }
    if (*status == SH_INVALID && (backward || around)) {
        /* A v1.1 daemon: pages with bit 31 or 30 is out of range (nothing was translated). */
        s->backward_prefetch = s->around_prefetch = false;
        return smmu_hypd_prefetch(s, sid, iova, write, status, e);
    }
    if (*status == SH_UNSUPPORTED) {
        /* A daemon with DMA_EPOCH but no DMA_PREFETCH: ask one access at a time from now on. */
        uint32_t fault;
        s->prefetch = 0;
        return smmu_hypd_ask(s, sid, iova, write, status, e, &fault);
    }
    if (*status != SH_OK) {
        return true;
    }
    epoch = ldq_le_p(resp);
    n = ldl_le_p(resp + 8);
    max_records = around ? 2 * SH_MAX_PREFETCH + 1 : SH_MAX_PREFETCH;
    if (len < 16 || n == 0 || n > max_records || len != 16 + 16 * n) {
        error_report("smmu-hypd: malformed DMA_PREFETCH answer (%u bytes, %u records)", len, n);
        *status = SH_FAULT;
        return true;
    }
    qemu_mutex_lock(&s->cache_lock);
    s->prefetch_calls++;
    s->prefetch_records += n;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *r = resp + 16 + 16 * i;
        uint8_t shift = r[8];
        uint64_t mask, at;
        SmmuHypdCacheEntry rec;

        if (shift < 12 || shift > SH_BLOCK_SHIFT) {
            break;
        }
        mask = (1ULL << shift) - 1;
        /*
         * v1.2 says where each record starts: page_offset pages from the access's page. A 1.1
         * daemon's record i > 0 starts where record i - 1 ends.
         */
        if (s->log_kept) {
            at = (iova & ~0xfffULL) + (uint64_t)(int64_t)(int32_t)ldl_le_p(r + 12) * 0x1000;
        } else {
            at = i == 0 ? iova : backward ? edge - 0x1000 : edge;
        }
        rec = (SmmuHypdCacheEntry) {
            .iova_base = at & ~mask, .pa_base = ldq_le_p(r) & ~mask, .epoch = epoch, .sid = sid,
            .shift = shift, .reach = MAX(r[10], shift), .access = r[9] & 3,
        };
        if (i == 0) {
            *e = rec;
        }
        smmu_hypd_cache_insert(s, &rec);
        edge = backward ? rec.iova_base : rec.iova_base + mask + 1;
    }
    qemu_mutex_unlock(&s->cache_lock);
    return true;
}

static IOMMUTLBEntry smmu_hypd_translate(IOMMUMemoryRegion *iommu, hwaddr addr,
                                         IOMMUAccessFlags flag, int iommu_idx)
{
    SmmuHypdIOMMU *sdev = container_of(iommu, SmmuHypdIOMMU, iommu);
    SmmuHypdState *s = sdev->s;
    uint16_t sid = PCI_BUILD_BDF(pci_bus_num(sdev->bus), sdev->devfn);
    IOMMUTLBEntry entry = {
        .target_as = &address_space_memory,
        .iova = addr & ~(hwaddr)0xfff,
        .translated_addr = 0,
        .addr_mask = 0xfff,
        .perm = IOMMU_NONE,
    };
    bool write = flag & IOMMU_WO;
    uint8_t need = (flag & IOMMU_WO ? 2 : 0) | (flag & IOMMU_RO || flag == IOMMU_NONE ? 1 : 0);
    SmmuHypdCacheEntry e = { 0 };
    uint32_t status, fault = 0;
    bool hit = false;

    if (s->epoch_page) {
        qemu_mutex_lock(&s->cache_lock);
        hit = smmu_hypd_cache_lookup(s, sid, addr, need, &e);
        if (hit) {
            s->cache_hits++;
        } else {
            s->cache_misses++;
        }
        qemu_mutex_unlock(&s->cache_lock);
    }
    if (hit && s->verify_cache) {
        /* The stale-translation check: the daemon must agree with every hit. */
        SmmuHypdCacheEntry now = { 0 };
        uint32_t vstatus, vfault;
        if (smmu_hypd_ask(s, sid, addr, write, &vstatus, &now, &vfault)) {
            bool same = vstatus == SH_OK &&
                        now.pa_base + (addr & ((1ULL << now.shift) - 1) & ~0xfffULL) ==
                        e.pa_base + ((addr - e.iova_base) & ~0xfffULL);
            qemu_mutex_lock(&s->cache_lock);
            s->cache_verified++;
            if (!same) {
                s->cache_stale++;
            }
            qemu_mutex_unlock(&s->cache_lock);
            if (!same) {
                error_report("smmu-hypd: STALE cached translation: stream 0x%x iova 0x%" PRIx64
                             " cached -> 0x%" PRIx64 ", daemon says %s (fault %u)", sid,
                             (uint64_t)addr, e.pa_base + (addr - e.iova_base),
                             sh_status_name(vstatus), vfault);
            }
        }
    }
    if (!hit && s->epoch_page && s->prefetch) {
        if (!smmu_hypd_prefetch(s, sid, addr, write, &status, &e)) {
            return entry;
        }
        if (status != SH_OK) {
            qemu_mutex_lock(&s->cache_lock);
            s->cache_faults++;
            qemu_mutex_unlock(&s->cache_lock);
            warn_report("smmu-hypd: DMA stream 0x%x iova 0x%" PRIx64 " %s: %s", sid,
                        (uint64_t)addr, write ? "write" : "read", sh_status_name(status));
            return entry;
        }
    } else if (!hit) {
        if (!smmu_hypd_ask(s, sid, addr, write, &status, &e, &fault)) {
            return entry;
        }
        if (status != SH_OK) {
            qemu_mutex_lock(&s->cache_lock);
            s->cache_faults++;
            qemu_mutex_unlock(&s->cache_lock);
            warn_report("smmu-hypd: DMA stream 0x%x iova 0x%" PRIx64 " %s: %s (fault %u)", sid,
                        (uint64_t)addr, write ? "write" : "read", sh_status_name(status), fault);
            return entry;
        }
        if (e.epoch) {
            qemu_mutex_lock(&s->cache_lock);
            smmu_hypd_cache_insert(s, &e);
            qemu_mutex_unlock(&s->cache_lock);
        }
    }
    entry.iova = e.iova_base;
    entry.addr_mask = (1ULL << e.shift) - 1;
    entry.translated_addr = e.pa_base;
    entry.perm = (e.access & 1 ? IOMMU_RO : 0) | (e.access & 2 ? IOMMU_WO : 0);
    return entry;
}

static void smmu_hypd_exit_summary(Notifier *n, void *data)
{
    SmmuHypdState *s = container_of(n, SmmuHypdState, exit_notifier);

    info_report("smmu-hypd: translation cache: %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64
                " faults; verified %" PRIu64 " hits, %" PRIu64 " stale; %" PRIu64 " full flushes, %"
                PRIu64 " ranges applied dropping %" PRIu64 " entries", s->cache_hits,
                s->cache_misses, s->cache_faults, s->cache_verified, s->cache_stale,
                s->cache_full_flushes, s->cache_ranges, s->cache_range_drops);
    info_report("smmu-hypd: full flushes: %" PRIu64 " log overflow, %" PRIu64 " unranged, %" PRIu64
                " unprobed; %" PRIu64 " prefetches, %" PRIu64 " records", s->flush_overflow,
                s->flush_unranged, s->flush_unprobed, s->prefetch_calls, s->prefetch_records);
    info_report("smmu-hypd: round trips: mmio %" PRIu64 " (%" PRIu64 " ms), %" PRIu64 " posted; dma %"
                PRIu64 " (%" PRIu64 " ms)", s->mmio.calls, s->mmio.call_ns / 1000000, s->mmio.posts,
                s->dma.calls, s->dma.call_ns / 1000000);
    info_report("smmu-hypd: ring exchanges that woke the daemon: mmio %" PRIu64 " (%" PRIu64 " ms); dma %"
                PRIu64 " (%" PRIu64 " ms)", s->mmio.wakes, s->mmio.wake_ns / 1000000, s->dma.wakes,
                s->dma.wake_ns / 1000000);
    for (uint32_t i = 0; i < s->num_windows; i++) {
        SmmuHypdWindow *w = &s->windows[i];
        info_report("smmu-hypd: window \"%s\" at 0x%" PRIx64 ": %" PRIu64 " reads, %" PRIu64
                    " writes", w->name, w->guest_base, w->reads, w->writes);
    }
    if (s->layout && !strcmp(s->layout, "tegra234")) {
        info_report("smmu-hypd: MC channel windows (read as zero): %" PRIu64 " accesses",
                    s->idle_accesses);
    }
}

/* Shares an epoch page with the daemon (DMA_EPOCH); without one (a v1.0 daemon) nothing is cached. */
static void smmu_hypd_open_cache(SmmuHypdState *s)
{
    uint8_t resp[8];
    uint32_t status;
    void *page;
    int fd = memfd_create("smmu-hypd-epoch", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    qemu_mutex_init(&s->cache_lock);
    if (fd < 0 || ftruncate(fd, 4096) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) {
        warn_report("smmu-hypd: no epoch memfd (%s); DMA translations are not cached",
                    strerror(errno));
        goto out;
    }
    page = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (page == MAP_FAILED) {
        warn_report("smmu-hypd: cannot map the epoch page; DMA translations are not cached");
        goto out;
    }
    if (!sh_call(&s->dma, SH_OP_DMA_EPOCH, NULL, 0, fd, &status, resp, sizeof(resp), NULL) ||
        status != SH_OK) {
        warn_report("smmu-hypd: the daemon does not share a translation epoch (protocol v1.0?); "
                    "DMA translations are not cached");
        munmap(page, 4096);
        goto out;
    }
    s->seen = ldq_le_p(resp);
    s->gen = 1;
    /* v1.2: format 1 with 126 slots at 0x08 (a v1.1 daemon leaves the zeros of the memfd). */
    s->log_kept = le64_to_cpu(qatomic_load_acquire((const uint64_t *)page + SH_LOG_FORMAT / 8)) ==
                  (1 | (uint64_t)SH_LOG_SLOTS << 32);
    s->epoch_page = page;
    info_report("smmu-hypd: caching DMA translations (epoch %" PRIu64 "%s%s)", s->seen,
                s->log_kept ? ", ranged invalidation log" : "",
                s->verify_cache ? ", every hit verified" : "");
out:
    s->exit_notifier.notify = smmu_hypd_exit_summary;
    qemu_add_exit_notifier(&s->exit_notifier);
    if (fd >= 0) {
        close(fd);
    }
}

static AddressSpace *smmu_hypd_find_add_as(PCIBus *bus, void *opaque, int devfn)
{
    SmmuHypdState *s = opaque;
    SmmuHypdIOMMU **table = g_hash_table_lookup(s->iommu_by_bus, bus);
    SmmuHypdIOMMU *sdev;

    if (!table) {
        table = g_new0(SmmuHypdIOMMU *, PCI_DEVFN_MAX);
        g_hash_table_insert(s->iommu_by_bus, bus, table);
    }
    sdev = table[devfn];
    if (!sdev) {
        g_autofree char *name = g_strdup_printf("smmu-hypd-%p-%d", (void *)bus, devfn);
        sdev = table[devfn] = g_new0(SmmuHypdIOMMU, 1);
        sdev->s = s;
        sdev->bus = bus;
        sdev->devfn = devfn;
        memory_region_init_iommu(&sdev->iommu, sizeof(sdev->iommu), TYPE_SMMU_HYPD_IOMMU_MR,
                                 OBJECT(s), name, UINT64_MAX);
        address_space_init(&sdev->as, MEMORY_REGION(&sdev->iommu), name);
    }
    return &sdev->as;
}

/* ---- realize ---- */

static bool smmu_hypd_map_ram(SmmuHypdState *s, Error **errp)
{
    MachineState *ms = MACHINE(qdev_get_machine());
    uint8_t req[24];
    uint32_t status;
    int fd;

    if (!ms->ram || !ms->ram->ram_block) {
        error_setg(errp, "smmu-hypd: the machine has no RAM region");
        return false;
    }
    fd = memory_region_get_fd(ms->ram);
    if (fd < 0 || !qemu_ram_is_shared(ms->ram->ram_block)) {
        error_setg(errp, "smmu-hypd: guest RAM must be shared with the daemon: use "
                   "-machine memory-backend=ID -object memory-backend-memfd,id=ID,"
                   "share=on,seal=on,size=... (the daemon maps only a memfd sealed "
                   "against shrinking)");
        return false;
    }
    stq_le_p(req, s->ram_base);
    stq_le_p(req + 8, ms->ram_size);
    stq_le_p(req + 16, 0);
    if (!sh_call(&s->mmio, SH_OP_MEM_MAP, req, sizeof(req), fd, &status, NULL, 0, NULL)) {
        error_setg(errp, "smmu-hypd: MEM_MAP got no response");
        return false;
    }
    if (status != SH_OK) {
        error_setg(errp, "smmu-hypd: MEM_MAP of guest RAM 0x%" PRIx64 "+0x%" PRIx64
                   " refused: %s (does the config's host_ram match -m?)", s->ram_base,
                   (uint64_t)ms->ram_size, sh_status_name(status));
        return false;
    }
    return true;
}

static bool smmu_hypd_open_events(SmmuHypdState *s, Error **errp)
{
    SmmuHypdConn c;
    uint8_t resp[SH_HEADER + SH_WINDOW_RECORD * 8];
    uint32_t status;

    if (!sh_open(&c, s, SH_ROLE_HOST, resp, sizeof(resp), NULL, errp)) {
        return false;
    }
    if (!sh_call(&c, SH_OP_EVENTS, NULL, 0, -1, &status, NULL, 0, NULL) || status != SH_OK) {
        error_setg(errp, "smmu-hypd: EVENTS refused");
        close(c.fd);
        return false;
    }
    qemu_mutex_destroy(&c.lock);
    s->events_fd = c.fd;
    s->events_len = 0;
    qemu_socket_set_nonblock(s->events_fd);
    qemu_set_fd_handler(s->events_fd, smmu_hypd_events_readable, NULL, s);
    return true;
}

static DeviceState *smmu_hypd_find_gic(void)
{
    Object *gic = object_resolve_path_type("", TYPE_ARM_GIC_COMMON, NULL);

    if (!gic) {
        gic = object_resolve_path_type("", TYPE_ARM_GICV3_COMMON, NULL);
    }
    return gic ? DEVICE(gic) : NULL;
}

/* Fills an "interrupts" property: one level-high SPI per cell triple. */
static void smmu_hypd_fdt_spis(void *fdt, const char *node, const uint16_t *spis, uint32_t n)
{
    g_autofree uint32_t *cells = g_new(uint32_t, 3 * n);

    for (uint32_t i = 0; i < n; i++) {
        cells[3 * i] = cpu_to_be32(GIC_FDT_IRQ_TYPE_SPI);
        cells[3 * i + 1] = cpu_to_be32(spis[i]);
        cells[3 * i + 2] = cpu_to_be32(GIC_FDT_IRQ_FLAGS_LEVEL_HI);
    }
    qemu_fdt_setprop(fdt, node, "interrupts", cells, 3 * n * sizeof(uint32_t));
}

/* Every PCI requester ID is its stream ID on the SMMU with this phandle. */
static void smmu_hypd_fdt_pci_map(void *fdt, uint32_t phandle)
{
    char pcie_path[256];
    int pcie = fdt_node_offset_by_compatible(fdt, -1, "pci-host-ecam-generic");

    if (pcie >= 0 && fdt_get_path(fdt, pcie, pcie_path, sizeof(pcie_path)) == 0) {
        qemu_fdt_setprop_cells(fdt, pcie_path, "iommu-map", 0, phandle, 0, 0x10000);
    } else {
        warn_report("smmu-hypd: no PCIe host node; PCI masters bypass the SMMU description");
    }
}

/* finalize=guest: the doorbell page the guest kernel's finalize_pkvm() writes. */
static void smmu_hypd_fdt_doorbell(SmmuHypdState *s, void *fdt)
{
    if (!strcmp(s->finalize, "guest") && s->doorbell) {
        g_autofree char *db = g_strdup_printf("/smmu-hypd-doorbell@%" PRIx64, s->doorbell);
        qemu_fdt_add_subnode(fdt, db);
        qemu_fdt_setprop_string(fdt, db, "compatible", "smmu-hypd,pkvm-doorbell");
        qemu_fdt_setprop_sized_cells(fdt, db, "reg", 2, s->doorbell, 2, SH_DOORBELL_SIZE);
    }
}

static bool smmu_hypd_write_fdt(SmmuHypdState *s, Error **errp)
{
    MachineState *ms = MACHINE(qdev_get_machine());
    void *fdt = ms->fdt;
    SmmuHypdWindow *w = &s->windows[0];
    g_autofree char *node = g_strdup_printf("/smmu@%" PRIx64, w->guest_base);
    uint32_t phandle;

    if (!fdt) {
        error_setg(errp, "smmu-hypd: this machine has no device tree to describe the SMMU in");
        return false;
    }
    phandle = qemu_fdt_alloc_phandle(fdt);
    qemu_fdt_add_subnode(fdt, node);
    qemu_fdt_setprop_string(fdt, node, "compatible", "arm,mmu-500");
    qemu_fdt_setprop_sized_cells(fdt, node, "reg", 2, w->guest_base, 2, w->size);
    qemu_fdt_setprop_cell(fdt, node, "#global-interrupts", 1);
    smmu_hypd_fdt_spis(fdt, node, w->line_spi, w->num_lines);
    qemu_fdt_setprop_cell(fdt, node, "#iommu-cells", 1);
    qemu_fdt_setprop_cell(fdt, node, "phandle", phandle);
    smmu_hypd_fdt_pci_map(fdt, phandle);
    smmu_hypd_fdt_doorbell(s, fdt);
    return true;
}

/* HELLO's record i as a window the guest sees at guest_base (UINT64_MAX: the daemon's base). */
static void smmu_hypd_window_from_hello(SmmuHypdWindow *w, SmmuHypdState *s, const uint8_t *hello,
                                        uint32_t i, uint64_t guest_base, uint64_t size)
{
    const uint8_t *r = hello + SH_HEADER + SH_WINDOW_RECORD * i;

    w->s = s;
    w->index = i;
    w->daemon_base = ldq_le_p(r);
    w->size = size ? size : ldq_le_p(r + 8);
    w->page_size = ldl_le_p(r + 16);
    w->num_cb = lduw_le_p(r + 20);
    w->num_smrg = lduw_le_p(r + 22);
    memcpy(w->name, r + 24, 8);
    w->name[8] = 0;
    w->guest_base = guest_base == UINT64_MAX ? w->daemon_base : guest_base;
}

/* Maps a window into the guest's physical address space. */
static void smmu_hypd_map_window(SmmuHypdState *s, SmmuHypdWindow *w)
{
    g_autofree char *name = g_strdup_printf("smmu-hypd-%s", w->name);

    memory_region_init_io(&w->mr, OBJECT(s), w->page_size ? &smmu_hypd_ops : &smmu_hypd_mc_ops,
                          w, name, w->size);
    memory_region_add_subregion(get_system_memory(), w->guest_base, &w->mr);
}

/* The generic layout: the one window the `window` property names, as an "arm,mmu-500" node. */
static bool smmu_hypd_setup_generic(SmmuHypdState *s, const uint8_t *hello, uint32_t hello_len,
                                    uint32_t nwin, Error **errp)
{
    SmmuHypdWindow *w = &s->windows[0];

    if (s->window >= nwin ||
        MIN(hello_len, SH_HEADER + SH_WINDOW_RECORD * 64) <
            SH_HEADER + SH_WINDOW_RECORD * ((uint64_t)s->window + 1)) {
        error_setg(errp, "smmu-hypd: window %u does not exist (the daemon has %u)",
                   s->window, nwin);
        return false;
    }
    smmu_hypd_window_from_hello(w, s, hello, s->window, s->base, s->size);
    s->num_windows = 1;
    s->dma_window = s->window;
    w->num_lines = 1 + (s->context_irqs ? s->context_irqs : w->num_cb);
    if (w->num_lines > SH_MAX_IRQS || s->spi + w->num_lines > SH_NUM_SPIS) {
        error_setg(errp, "smmu-hypd: too many interrupts (%u from SPI %u)", w->num_lines, s->spi);
        return false;
    }
    for (uint32_t i = 0; i < w->num_lines; i++) {
        w->line_spi[i] = s->spi + i;
    }
    info_report("smmu-hypd: window %u \"%s\" at 0x%" PRIx64 " size 0x%" PRIx64
                ", %u KiB pages, host sees %u context banks and %u SMRs; SPIs %u-%u",
                s->window, w->name, w->guest_base, w->size, w->page_size / 1024,
                w->num_cb, w->num_smrg, s->spi, s->spi + w->num_lines - 1);
    return true;
}

#include "smmu-hypd-tegra234.c.inc"

static void smmu_hypd_realize(DeviceState *dev, Error **errp)
{
    SmmuHypdState *s = SMMU_HYPD(dev);
    uint8_t hello[SH_HEADER + SH_WINDOW_RECORD * 64];
    uint32_t hello_len = 0, state, nwin;
    bool tegra;
    DeviceState *gic;
    Object *host;

    if (!s->socket_path) {
        error_setg(errp, "smmu-hypd: the socket property is required");
        return;
    }
    if (!s->client_name) {
        s->client_name = g_strdup("qemu-smmu-hypd");
    }
    tegra = s->layout && !strcmp(s->layout, "tegra234");
    if (s->layout && !tegra && strcmp(s->layout, "mmu-500")) {
        error_setg(errp, "smmu-hypd: layout must be mmu-500 or tegra234, not %s", s->layout);
        return;
    }
    s->events_fd = -1;
    s->mmio.fd = s->dma.fd = -1;
    if (!sh_open(&s->mmio, s, SH_ROLE_HOST, hello, sizeof(hello), &hello_len, errp)) {
        return;
    }
    if (hello_len < SH_HEADER) {
        error_setg(errp, "smmu-hypd: short HELLO response");
        return;
    }
    state = ldl_le_p(hello + 4);
    nwin = ldl_le_p(hello + 8);
    s->daemon_state = state;
    s->finalize_status = SH_DB_NO_STATUS;
    if (!s->finalize) {
        s->finalize = g_strdup("ready");
    }
    if (!smmu_hypd_finalization(s, errp)) {
        return;
    }
    if (tegra ? !smmu_hypd_setup_tegra234(s, hello, hello_len, nwin, errp)
              : !smmu_hypd_setup_generic(s, hello, hello_len, nwin, errp)) {
        return;
    }

    if (!smmu_hypd_map_ram(s, errp)) {
        return;
    }
    {
        uint8_t resp[SH_HEADER + SH_WINDOW_RECORD * 8];
        if (!sh_open(&s->dma, s, SH_ROLE_DEVICE, resp, sizeof(resp), NULL, errp)) {
            return;
        }
    }
    smmu_hypd_open_cache(s);
    s->mmio.idr0_address = s->windows[0].daemon_base + 0x20;
    if (s->use_ring && sh_open_ring(&s->mmio, "MMIO") && sh_open_ring(&s->dma, "DMA")) {
        info_report("smmu-hypd: MMIO and DMA through shared-memory rings");
    }

    gic = smmu_hypd_find_gic();
    if (!gic) {
        error_setg(errp, "smmu-hypd: no GIC to wire the SMMU's interrupts to");
        return;
    }
    for (uint32_t i = 0; i < s->num_windows; i++) {
        for (uint32_t l = 0; l < s->windows[i].num_lines; l++) {
            uint16_t spi = s->windows[i].line_spi[l];
            if (!s->spis[spi]) {
                s->spis[spi] = qdev_get_gpio_in(gic, spi);
            }
        }
    }
    if (!smmu_hypd_open_events(s, errp)) {
        return;
    }

    for (uint32_t i = 0; i < s->num_windows; i++) {
        smmu_hypd_map_window(s, &s->windows[i]);
    }
    if (!strcmp(s->finalize, "guest") && s->doorbell) {
        memory_region_init_io(&s->doorbell_mem, OBJECT(s), &smmu_hypd_doorbell_ops, s,
                              "smmu-hypd-doorbell", SH_DOORBELL_SIZE);
        memory_region_add_subregion(get_system_memory(), s->doorbell, &s->doorbell_mem);
    }
    if (tegra ? !smmu_hypd_write_fdt_tegra234(s, errp) : !smmu_hypd_write_fdt(s, errp)) {
        return;
    }

    host = object_resolve_path_type("", TYPE_GPEX_HOST, NULL);
    if (host) {
        s->iommu_by_bus = g_hash_table_new(NULL, NULL);
        pci_setup_iommu(PCI_HOST_BRIDGE(host)->bus, smmu_hypd_find_add_as, s);
    } else {
        warn_report("smmu-hypd: no PCIe host bridge; no DMA goes through the daemon");
    }
}

static Property smmu_hypd_properties[] = {
    DEFINE_PROP_STRING("socket", SmmuHypdState, socket_path),
    DEFINE_PROP_STRING("name", SmmuHypdState, client_name),
    DEFINE_PROP_UINT32("window", SmmuHypdState, window, 0),
    DEFINE_PROP_UINT64("base", SmmuHypdState, base, UINT64_MAX),
    DEFINE_PROP_UINT64("size", SmmuHypdState, size, 0),
    DEFINE_PROP_UINT32("spi", SmmuHypdState, spi, 176),
    DEFINE_PROP_UINT32("context-irqs", SmmuHypdState, context_irqs, 0),
    DEFINE_PROP_UINT64("ram-base", SmmuHypdState, ram_base, 0x40000000),
    DEFINE_PROP_BOOL("verify-cache", SmmuHypdState, verify_cache, false),
    DEFINE_PROP_UINT32("prefetch", SmmuHypdState, prefetch, 256),
    DEFINE_PROP_BOOL("ring", SmmuHypdState, use_ring, false),
    DEFINE_PROP_BOOL("prefetch-backward", SmmuHypdState, backward_prefetch, true),
    DEFINE_PROP_BOOL("prefetch-around", SmmuHypdState, around_prefetch, true),
    DEFINE_PROP_STRING("layout", SmmuHypdState, layout),
    DEFINE_PROP_UINT64("offset", SmmuHypdState, offset, 0x100000000ULL),
    DEFINE_PROP_STRING("finalize", SmmuHypdState, finalize),
    /* A free page on virt (between the secure GPIO at 0x090b0000 and virtio-mmio at 0x0a000000). */
    DEFINE_PROP_UINT64("doorbell", SmmuHypdState, doorbell, 0x090f0000),
    DEFINE_PROP_END_OF_LIST(),
};

static void smmu_hypd_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);

    dc->realize = smmu_hypd_realize;
    dc->desc = "ARM MMU-500 emulated by the smmu-hypd daemon";
    dc->user_creatable = true;
    dc->hotpluggable = false;
    device_class_set_props(dc, smmu_hypd_properties);
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
}

static void smmu_hypd_iommu_class_init(ObjectClass *klass, void *data)
{
    IOMMUMemoryRegionClass *imrc = IOMMU_MEMORY_REGION_CLASS(klass);

    imrc->translate = smmu_hypd_translate;
}

static const TypeInfo smmu_hypd_types[] = {
    {
        .name = TYPE_SMMU_HYPD,
        .parent = TYPE_DEVICE,
        .instance_size = sizeof(SmmuHypdState),
        .class_init = smmu_hypd_class_init,
    }, {
        .name = TYPE_SMMU_HYPD_IOMMU_MR,
        .parent = TYPE_IOMMU_MEMORY_REGION,
        .class_init = smmu_hypd_iommu_class_init,
    },
};

DEFINE_TYPES(smmu_hypd_types)
