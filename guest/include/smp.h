/*
 * SMP bring-up shaped like Linux 2.6.22 (kernel-facts.md section 8): the
 * real-mode trampoline, startup_32_smp and the per-CPU records the harness
 * decodes (docs/guest-contract.md "SMP"). Usable from C and from
 * trampoline.S.
 */
#ifndef GUEST_SMP_H
#define GUEST_SMP_H

#include "page.h"

/* CONFIG_SMP with NR_CPUS = 4: also sizes the kmap slots of the fixmap. */
#define NR_CPUS 4

/*
 * The trampoline page (physical, below 1 MiB, page aligned: the STARTUP IPI
 * vector is its page number). Under QEMU's pc machine with SeaBIOS and the
 * multiboot loader, 0x8000 is free after boot: 0x0 holds the IVT and BIOS
 * data area, 0x6000 SeaBIOS's stack, 0x9000 the loader's memory map, 0x9f000
 * the EBDA; the multiboot info and command line lie above the image.
 */
#define SMP_TRAMPOLINE_PA _AC(0x8000, UL)

/* Segment selectors of the trampoline's GDT (the same as head.S's). */
#define SMP_CS 0x10
#define SMP_DS 0x18

/* Per-CPU stack of an AP (bss, reached through PAGE_OFFSET only). */
#define SMP_AP_STACK_SIZE 1024

/* struct smp_cpu_record: 12 u32, byte offsets (the layout is fixed: the
 * harness decodes it). */
#define SMP_REC_STATE 0
#define SMP_REC_APIC_ID 4
#define SMP_REC_CR0 8
#define SMP_REC_CR3 12
#define SMP_REC_CR4 16
#define SMP_REC_EFER_LO 20
#define SMP_REC_EFER_HI 24
#define SMP_REC_FAULT_VECTOR 28
#define SMP_REC_FAULT_ERROR 32
#define SMP_REC_FAULT_EIP 36
#define SMP_REC_FAULT_CR2 40
#define SMP_REC_RESERVED 44
#define SMP_REC_SIZE 48

/* Record states. */
#define SMP_STATE_NONE 0       /* never started (or did not get as far as the record) */
#define SMP_STATE_PROTECTED 1  /* in startup_32_smp, protected mode, paging off */
#define SMP_STATE_PAGE_OFFSET 2 /* "running": paging on, reached PAGE_OFFSET, halted */
#define SMP_STATE_FAULTED 3    /* took an exception after its IDT was loaded, halted */
#define SMP_STATE_BOOT_CPU 4   /* the BSP, filled in by init_apic_mappings */

#ifndef __ASSEMBLER__
#include "types.h"

struct smp_cpu_record {
	u32 state;
	u32 apic_id;
	u32 cr0, cr3, cr4;
	u32 efer_lo, efer_hi; /* 0 where the CPU has no EFER (no NX, no LM) */
	u32 fault_vector;
	u32 fault_error; /* 0 where the CPU pushes no error code */
	u32 fault_eip;
	u32 fault_cr2;
	u32 reserved;
};
_Static_assert(sizeof(struct smp_cpu_record) == SMP_REC_SIZE, "layout fixed for the harness");
_Static_assert(__builtin_offsetof(struct smp_cpu_record, fault_cr2) == SMP_REC_FAULT_CR2,
	       "offsets shared with trampoline.S");
_Static_assert(__builtin_offsetof(struct smp_cpu_record, efer_lo) == SMP_REC_EFER_LO,
	       "offsets shared with trampoline.S");

/* Indexed by APIC id (QEMU gives ids 0..N-1). */
extern struct smp_cpu_record smp_cpu_records[NR_CPUS];
extern u32 smp_nr_cpus;       /* CPUs asked for with smp= (1 by default) */
extern u32 smp_cpus_up;       /* CPUs that reached PAGE_OFFSET, the BSP included */
extern u32 smp_trampoline_pa; /* SMP_TRAMPOLINE_PA, for the harness */

/* trampoline.S */
extern const char trampoline_data[], trampoline_end[];
extern const u32 smp_ap_exception_stubs[32];
void startup_32_smp(void);
#endif

#endif
