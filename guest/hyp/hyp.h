/*
 * The guest's Xen-like "hypervisor" stage (docs/xen.md). Linked into the same
 * image as the kernel but outside it: the Makefile links these objects with a
 * private copy of guest/lib (its symbols renamed hyp_lib_*, so no name is
 * defined twice) into one relocatable (hyp.o) whose only global symbol is
 * hyp_start_domain, and its only outside reference is the domain's
 * entry, xen_start_kernel (plus kernel.lds's __hyp_start/__hyp_end). The
 * kernel comes back in only through the hypercall gate (vector 0x82). All of
 * the hypervisor's state (this file's variables, the IDT) lies in its own
 * pages, [__hyp_start, __hyp_end), which the domain's tables map read-only.
 *
 *   domain_build.c  builds the start-of-day pagetable, switches the CPU onto
 *                   it and starts the domain (xen_start_kernel)
 *   hypercall.c     the IDT it owns, the 0x82 gate's entry and the dispatcher
 *   mm.c            the mm hypercalls, the table-frame tracking and the audit
 *                   that records violations instead of trusting the kernel
 */
#ifndef GUEST_HYP_HYP_H
#define GUEST_HYP_HYP_H

#include "guest.h"
#include "xen.h"

/* Entries per table page: 1024 (2-level), 512 (PAE). */
#define HYP_ENTRIES (PAGE_SIZE / sizeof(pteval_t))
/* The directory level holding the hypervisor-area chunks: the pgd (2-level)
 * or the pmd page of PDPT slot 3 (PAE). First chunk at or above HVS: */
#define HYP_AREA_FIRST ((HYPERVISOR_VIRT_START >> PMD_SHIFT) & (HYP_ENTRIES - 1))
#define HYP_AREA_CHUNKS (HYP_ENTRIES - HYP_AREA_FIRST) /* 16 / 84 */
#define HYP_KERNEL_SLOT 3 /* PAE: the PDPT slot whose pmd page holds the area */

/* Frame types the hypervisor tracks. */
enum hyp_frame_type {
	HYP_FRAME_NONE = 0,
	HYP_FRAME_L1 = HYP_TABLE_PTE,
	HYP_FRAME_L2 = HYP_TABLE_PMD,
	HYP_FRAME_L3 = HYP_TABLE_PDPT,
};

/* What the hypervisor built and tracks (physical frame numbers). */
struct hyp_domain {
	u32 nr_pages;
	u32 start_info_pfn, shared_info_pfn;
	u32 area_pte_pfn[2];   /* PTE pages A (chunk of HVS) and B (last chunk) */
	u32 pt_base_pfn;       /* the PGD / PDPT */
	u32 kernel_pmd_pfn;    /* PAE: the pmd page of slot 3 */
	u32 kernel_pte_pfn;    /* first PTE page of the kernel mapping */
	u32 tables_end_pfn;    /* end of the run: the last kernel PTE page + 1 */
	unsigned long map_end; /* xen_map_end: [0, map_end) is mapped at PAGE_OFFSET */
};
extern struct hyp_domain hyp_domain;

/* What the harness reads (docs/xen.md): every hyp_mmu_update since the domain
 * started, performed or refused, a batch counting one per entry; every hyp_pin. */
extern u32 hyp_mmu_update_count;
extern u32 hyp_pin_count;

/* The violation record the harness reads (docs/xen.md). */
enum hyp_violation_kind {
	HYP_WRITABLE_TABLE = 1,
	HYP_AREA_WRITE = 2,
	HYP_UNANNOUNCED_TABLE = 3,
	HYP_KERNEL_PMD_REPLACED = 4,
};
struct hyp_violation {
	u32 kind;
	u32 entry_pa; /* the entry written (0: a finding with no entry) */
	u64 value;    /* the value written or found */
	u32 frame;    /* physical address of the frame concerned */
	u32 va;       /* the VA the entry covers (0 if unknown) */
};
_Static_assert(sizeof(struct hyp_violation) == 24, "docs/xen.md: 24-byte records");
#define HYP_VIOLATIONS_MAX 1024
extern struct hyp_violation hyp_violations[HYP_VIOLATIONS_MAX];
extern u32 hyp_violation_count;

/* The hypervisor's own pages (kernel.lds): read-only in the domain's tables. */
extern char __hyp_start[], __hyp_end[];
bool hyp_own_frame(u32 pfn);
/* Entries poison= filled (DOMINFO_POISONED_ENTRIES). */
extern u32 hyp_poisoned_entries;

/* hypercall.c: take over the IDT (the boot IDT's exception gates and the
 * hypercall gate); the gate's C side. */
void hyp_trap_init(void);
u32 hyp_do_hypercall(u32 nr, u32 a1, u32 a2, u32 a3);

/* mm.c: the mm hypercalls, each run with CR0.WP already cleared by the
 * dispatcher (table pages and the hypervisor's own are read-only). */
int hyp_mmu_update(void *entry_va, u64 value);
unsigned hyp_mmu_update_batch(const struct mmu_update *req, unsigned count);
void hyp_new_baseptr(unsigned long pa);
void hyp_announce(u32 pfn, enum hyp_table_level level);
void hyp_pin(u32 pfn);
void hyp_invlpg(unsigned long va);
/* The violation report on the serial log (at the domain's exit). */
void hyp_report(void);

/* mm.c: frame types, table access, and what domain_build.c hands over. */
void hyp_set_frame_type(u32 pfn, enum hyp_frame_type type);
enum hyp_frame_type hyp_frame_type(u32 pfn);
/* The hypervisor's own entries, as built: the area chunks of the directory
 * (index HYP_AREA_FIRST + i) and the contents of PTE pages A and B. */
u64 hyp_built_area_entry(unsigned i);
u64 hyp_built_area_pte(unsigned which, unsigned idx);
/* Called once the domain's tables are live, before xen_start_kernel. */
void hyp_mm_start(void);

static inline u32 entry_pfn(u64 e)
{
	return (u32)((e & 0x000ffffffffff000ULL) >> PAGE_SHIFT);
}

#endif
