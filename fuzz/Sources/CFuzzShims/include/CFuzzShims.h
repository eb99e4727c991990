/* What Swift's Glibc module does not declare: memfd_create and the file seals (GNU extensions). */
#ifndef CFUZZSHIMS_H
#define CFUZZSHIMS_H

/* memfd_create(name, MFD_ALLOW_SEALING | MFD_CLOEXEC): an fd or -1. */
int fuzz_memfd_create(const char *name);

/* fcntl(fd, F_ADD_SEALS, seals) with seals a mask of the FUZZ_SEAL_* bits: 0 or -1. */
int fuzz_add_seals(int fd, unsigned seals);

enum {
    FUZZ_SEAL_SEAL = 1,    /* F_SEAL_SEAL */
    FUZZ_SEAL_SHRINK = 2,  /* F_SEAL_SHRINK */
    FUZZ_SEAL_GROW = 4,    /* F_SEAL_GROW */
    FUZZ_SEAL_WRITE = 8,   /* F_SEAL_WRITE */
};

#endif
