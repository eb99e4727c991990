#ifndef CSYSTEMD_SHIM_H
#define CSYSTEMD_SHIM_H
// libsystemd: sd_notify, socket activation, the watchdog and the structured journal.
// The socket, epoll and eventfd helpers are CSocketShims'.
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#endif
