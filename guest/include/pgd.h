/*
 * The second pagetable (pgd.c, docs/guest-contract.md "Second pagetable"):
 * pgd_alloc as 2.6.22/2.6.23 do it, the switch onto it, and what a late
 * fixmap entry and a kmap look like through it.
 */
#ifndef GUEST_PGD_H
#define GUEST_PGD_H

#include "pgtable.h"

/* The harness decodes this layout (80 bytes). */
struct pgd2_record {
	u32 root_pa;      /* __pa of the new pgd (PAE: its PDPT at offset 0) */
	u32 nr_pmds;      /* pmd pages pgd_alloc allocated: 0 (2-level), 3 (PAE), 4 (PAE pv=xen) */
	u32 fix_idx;      /* FIX_VDSO */
	u32 fix_va;       /* __fix_to_virt(FIX_VDSO) */
	u32 fix_pa;       /* __pa(_text) */
	u32 fix_faulted;  /* 1: reading fix_va on the new pagetable faulted */
	u32 kmap_va;      /* PKMAP_BASE, or 0 without highmem */
	u32 kmap_pa;      /* max_low_pfn << 12 (0 without highmem) */
	u32 kmap_faulted; /* 1: the write or the read back through kmap_va faulted */
	u32 reserved[3];
	u8 fix_bytes[16];  /* read through fix_va (0 if it faulted) */
	u8 kmap_bytes[16]; /* read back through kmap_va (0 if it faulted) */
};
_Static_assert(sizeof(struct pgd2_record) == 80, "docs/guest-contract.md: 80-byte record");
extern struct pgd2_record pgd2_record;

/* What second_pagetable writes through the kmap and expects back. */
#define PGD2_KMAP_PATTERN "ptharness-kmap!\0"

/* A new pagetable, every page from the boot allocator (pgd.c). */
pgd_t *pgd_alloc(void);

/* init.c: kmap_init's protection for kmap()'s ptes. */
extern pgprot_t kmap_prot;

#endif
