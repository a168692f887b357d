/*
 * The guest's status contract (docs/guest-contract.md): exit codes through
 * QEMU's isa-debug-exit and one key=value line per event on COM1.
 */
#ifndef GUEST_GUEST_H
#define GUEST_GUEST_H

#include "types.h"

/* isa-debug-exit at iobase 0xf4: QEMU exits with status (code << 1) | 1. */
#define DEBUG_EXIT_PORT 0xf4

enum guest_exit_code {
	GUEST_EXIT_PASS = 0,
	GUEST_EXIT_SELFCHECK = 1,   /* self-check or internal BUG: the log says what */
	GUEST_EXIT_EXCEPTION = 2,   /* CPU exception: vector, EIP, CR2, error code */
	GUEST_EXIT_UNSUPPORTED = 3, /* a PAE build on a CPU without PAE */
	GUEST_EXIT_BAD_CMDLINE = 4, /* bad command line or boot information */
};

void __noreturn guest_exit(enum guest_exit_code code);
/* Called by guest_exit before the exit line (pv=xen: the hypervisor's report). */
extern void (*guest_exit_notifier)(void);

/* Serial log (lib/serial.c, lib/printf.c). */
void serial_init(void);
void serial_putc(char c);
int __printf(1, 2) printk(const char *fmt, ...);

/* A broken internal assumption: log where and why, then exit with the
 * self-check code (the real kernel would BUG()). */
void __noreturn guest_bug(const char *file, int line, const char *what);
#define BUG_ON(cond)                                               \
	do {                                                       \
		if (__builtin_expect(!!(cond), 0))                 \
			guest_bug(__FILE__, __LINE__, #cond);      \
	} while (0)

/* Entry points between the parts of the guest. */
void trap_init(void);
void paging_init(void);
void paging_init_done(void);
int selfcheck(void);

#endif
