/*
 * Loaded into QEMU with LD_PRELOAD by the qemu engine (write-log.ts) when
 * COLO_WRITE_LOG=1: makes a userfaultfd for QEMU's own memory, before
 * QEMU's main() runs, and leaves it open. It does nothing else: the
 * daemon copies the descriptor (pidfd_getfd), registers QEMU's guest RAM
 * mapping on it for async write-protection and reads the written pages
 * with PAGEMAP_SCAN on /proc/<pid>/pagemap (src/sys/write-log.ts). A
 * userfaultfd covers the memory of the process that created it, whoever
 * holds it, and QEMU writes guest RAM through its own page tables: no
 * descriptor made by the daemon could see those writes.
 *
 * Only in qemu-system-* (setpriv, which execs QEMU, loads it too); the
 * variables are removed so QEMU's own children (exec: migration) skip it.
 * The descriptor is close-on-exec. If the kernel refuses a userfaultfd,
 * nothing happens and the daemon falls back to comparing RAM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

__attribute__((constructor)) static void colo_write_log_preload(void) {
  const char *on = getenv("COLO_WRITE_LOG");
  if (on == NULL || strcmp(on, "1") != 0) return;
  if (strncmp(program_invocation_short_name, "qemu-system", 11) != 0) return;
  int saved = errno;
  (void)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  unsetenv("COLO_WRITE_LOG");
  unsetenv("LD_PRELOAD");
  errno = saved;
}
