/* After paging_init: what the kernel does next with the tables it built
 * (kernel-facts.md sections 8-9, docs/guest-contract.md "The tables at work"). */
#ifndef GUEST_WORK_H
#define GUEST_WORK_H

#include "types.h"

/* smp.c: map the local APIC at FIX_APIC_BASE, uncached (natively, always). */
void init_apic_mappings(void);
/* smp.c: start the application processors 1..ncpus-1 through the identity
 * slot (INIT-SIPI-SIPI, trampoline, startup_32_smp) and wait for them. */
void smp_boot_cpus(u32 ncpus);
/* pgd.c: drop the low identity mappings from swapper_pg_dir, flush the TLB. */
void zap_low_mappings(void);
/* probes.c: the CPU's own verdict on the tables (faults caught and recorded). */
void run_probes(void);
/* pgd.c: pgd_alloc a second pagetable, switch CR3 to it, then change a fixmap
 * slot and kmap a highmem page and read both through it. */
void second_pagetable(void);

#endif
