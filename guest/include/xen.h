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

/* Table levels for hyp_announce (Xen's L1/L2/L3 page types). */
enum hyp_table_level {
	HYP_TABLE_PTE = 1,
	HYP_TABLE_PMD = 2,  /* the pmd page in PAE, the pgd in 2-level mode */
	HYP_TABLE_PDPT = 3, /* PAE root: never announced, known from hyp_new_baseptr */
};

/*
 * Hypercalls: plain calls into the hypervisor stage. Once a frame is a page
 * table it is mapped read-only and CR0.WP is set, so these are the only way
 * the kernel can change it.
 */
/* Write one entry (4 or 8 bytes) at entry_va. Returns 0, or -1 if refused. */
int hyp_mmu_update(void *entry_va, u64 value);
/* The same for count requests, in order, each checked and recorded exactly as
 * one hyp_mmu_update would be; only CR0.WP is cleared once for the lot (as
 * Xen's mmu_update takes an array). Returns how many were refused. */
struct mmu_update {
	void *ptr; /* the entry's virtual address */
	u64 val;
};
unsigned hyp_mmu_update_batch(const struct mmu_update *req, unsigned count);
/* Load CR3 with the root at physical address pa. */
void hyp_new_baseptr(unsigned long pa);
/* The frame pfn becomes a page table of the given level. */
void hyp_announce(u32 pfn, enum hyp_table_level level);
/* Pin the root at pfn: the hypervisor validates the whole tree. */
void hyp_pin(u32 pfn);
void hyp_invlpg(unsigned long va);

/* The hypervisor stage's entry (start_kernel calls it for pv=xen) and the
 * domain's entry it ends in. poison: the poison= pattern (0: none), which the
 * hypervisor writes into the empty entries of the tables it builds. */
void __noreturn hyp_start_domain(u32 poison);
/* How many entries it poisoned, for the kernel's poison log line. */
extern u32 hyp_poisoned_entries;
void __noreturn xen_start_kernel(struct start_info *si);

#endif
