#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include "CFuzzShims.h"

int fuzz_memfd_create(const char *name) { return memfd_create(name, MFD_ALLOW_SEALING | MFD_CLOEXEC); }

int fuzz_add_seals(int fd, unsigned seals) {
    int s = 0;
    if (seals & FUZZ_SEAL_SEAL) s |= F_SEAL_SEAL;
    if (seals & FUZZ_SEAL_SHRINK) s |= F_SEAL_SHRINK;
    if (seals & FUZZ_SEAL_GROW) s |= F_SEAL_GROW;
    if (seals & FUZZ_SEAL_WRITE) s |= F_SEAL_WRITE;
    return fcntl(fd, F_ADD_SEALS, s);
}
