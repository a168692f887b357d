/* What start_kernel learns from the boot loader and the command line. */
#ifndef GUEST_SETUP_H
#define GUEST_SETUP_H

#include "types.h"

extern unsigned long max_pfn;     /* end of RAM (mem= applied) */
extern unsigned long max_low_pfn; /* end of lowmem: min(max_pfn, MAXMEM >> 12) */
extern int disable_nx;            /* noexec=off */
extern int nx_enabled;            /* set_nx turned EFER.NX on */

/* Parsed command line knobs (docs/guest-contract.md). */
struct boot_options {
	bool have_mem_limit;
	u64 mem_limit; /* mem= */
	bool have_reservetop;
	unsigned long reservetop; /* reservetop= */
	enum { NOEXEC_DEFAULT, NOEXEC_ON, NOEXEC_OFF } noexec; /* noexec= */
	char pv_backend[32];      /* pv=, "native" unless given */
	enum {
		PVBUG_NONE, PVBUG_WRITABLE_PT, PVBUG_WRITABLE_ROOT, PVBUG_UNANNOUNCED_PT,
		PVBUG_BATCH_HV_WRITE,
	} pvbug; /* pvbug= (pv=xen only, docs/xen.md) */
	bool have_fault;
	unsigned long fault_addr; /* fault= */
	bool have_poke;
	unsigned long poke_addr; /* poke=: test-only, a word written after paging_init_done */
	enum { HANG_NONE, HANG_EARLY, HANG_LATE } hang; /* hang=: a guest that never ends */
	u32 poison; /* poison=: junk for free pages and empty table entries (0: none) */
	u32 smp_cpus; /* smp=N, 1..NR_CPUS: CPUs to bring up; parse_boot_options sets 1 (the BSP only) unless smp= says more */
};

/* The parsed command line, kept for the rest of the boot. */
extern struct boot_options boot_options;

/* From the boot information to the exit: CPU features, memory, paging_init,
 * the self-check. start_kernel calls it natively, xen_start_kernel under pv=xen. */
void __noreturn setup_arch(void);
/* Move the fixmap down (FIXADDR_TOP = -reserve - 4K) and shrink lowmem alike. */
void reserve_top_address(unsigned long reserve);

/* Command-line parsing (lib/cmdline.c). Returns 0, or prints why and returns -1. */
int parse_boot_options(const char *cmdline, struct boot_options *opts);
int memparse(const char *s, u64 *out);

#endif
