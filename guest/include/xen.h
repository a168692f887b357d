/*
 * The interface between the domain (the kernel) and the guest's Xen-like
 * "hypervisor" stage (guest/hyp/), docs/xen.md: the start-info block, the
 * hypervisor's reserved area and the hypercalls. Nothing else of the
 * hypervisor is visible to the kernel.
 */
#ifndef GUEST_XEN_H
#define GUEST_XEN_H

#include "pgtable.h"

/* The hypervisor owns the address space from here up (kernel-facts.md section 7). */
#ifdef CONFIG_X86_PAE
#define HYPERVISOR_VIRT_START 0xF5800000UL
#else
#define HYPERVISOR_VIRT_START 0xFC000000UL
#endif
/* What the kernel must leave free at the top: reserve_top_address() of this. */
#define XEN_RESERVE_TOP (-HYPERVISOR_VIRT_START + 2 * PAGE_SIZE)

#define XEN_START_INFO_MAGIC 0x584E4558 /* "XENX" */

/* Handed to xen_start_kernel; lives in its own read-only page. All u32. */
struct start_info {
	u32 magic;
	u32 nr_pages;              /* RAM the domain has, in pages */
	u32 shared_info;           /* physical address of the shared-info page */
	u32 pt_base;               /* virtual address of the start-of-day PGD / PDPT */
	u32 nr_pt_frames;          /* frames from pt_base to the end of the bootstrap tables */
	u32 hypervisor_virt_start;
	u32 reserve_top;           /* XEN_RESERVE_TOP */
	u32 flags;
};
_Static_assert(sizeof(struct start_info) == 32, "docs/xen.md: eight u32 fields");

/* The kernel's pointer to it (NULL when not booted by the hypervisor). */
extern struct start_info *xen_start_info;

/* Table levels for MMUEXT_ANNOUNCE (Xen's L1/L2/L3 page types). */
enum hyp_table_level {
	HYP_TABLE_PTE = 1,
	HYP_TABLE_PMD = 2,  /* the pmd page in PAE, the pgd in 2-level mode */
	HYP_TABLE_PDPT = 3, /* PAE root: never announced, known from MMUEXT_NEW_BASEPTR */
};

/* One request of HYPERVISOR_mmu_update: the entry's virtual address and the
 * value to write (4 or 8 bytes, as the paging mode's entries). */
struct mmu_update {
	void *ptr;
	u64 val;
};

/*
 * The hypercall ABI (docs/xen.md "Hypercalls"): `int $0x82` (Xen's 32-bit
 * vector), the number in %eax, arguments in %ebx, %ecx, %edx; the result
 * comes back in %eax, every other register is preserved. The kernel reaches
 * the hypervisor stage in no other way (include/hypercall.h has the stubs).
 */
#define HYPERCALL_VECTOR 0x82
enum hypercall_nr {
	__HYPERVISOR_mmu_update = 1,   /* ebx = req[], ecx = count -> how many refused */
	__HYPERVISOR_update_entry = 2, /* ebx = entry VA, ecx:edx = value (low, high) -> 0 / -1 */
	__HYPERVISOR_mmuext_op = 3,    /* ebx = MMUEXT_*, ecx, edx = its arguments -> 0 */
	__HYPERVISOR_set_trap_table = 4, /* ebx = struct idt_gate[32] -> 0 */
	__HYPERVISOR_domain_info = 5,  /* ebx = DOMINFO_* -> the value */
	__HYPERVISOR_domain_exit = 6,  /* the domain is leaving: the hypervisor reports -> 0 */
};
enum mmuext_cmd {
	MMUEXT_PIN_TABLE = 1,   /* ecx = pfn of a root: validate the tree */
	MMUEXT_NEW_BASEPTR = 2, /* ecx = physical address of a root: load CR3 */
	MMUEXT_INVLPG = 3,      /* ecx = VA */
	MMUEXT_ANNOUNCE = 4,    /* ecx = pfn, edx = enum hyp_table_level */
};
enum dominfo_query {
	DOMINFO_POISONED_ENTRIES = 1, /* entries poison= filled in the start-of-day tables */
	DOMINFO_HYP_FRAMES_START = 2, /* physical [start, end): the frames the hypervisor */
	DOMINFO_HYP_FRAMES_END = 3,   /* keeps for itself in the domain's memory (read-only) */
};

/* What the kernel hands the hypervisor stage at its entry: what head.S and the
 * loader left (the hypervisor links to nothing else of the kernel). */
struct hyp_boot_params {
	u32 poison;          /* the poison= pattern (0: none) */
	u32 mb_flags;        /* the multiboot info's flags and mem_upper (KiB above 1 MiB) */
	u32 mb_mem_upper;
	u32 pg_tables_end;   /* physical end of head.S's pg0 tables */
	u32 map_end;         /* physical end of head.S's mapping */
};

/* The hypervisor stage's entry (start_kernel calls it for pv=xen, on head.S's
 * tables) and the domain's entry it ends in. The only two symbols the two
 * sides share (tests/unit/test_hyp_link.py). */
void __noreturn hyp_start_domain(const struct hyp_boot_params *params);
void __noreturn xen_start_kernel(struct start_info *si);

#endif
