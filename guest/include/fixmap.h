/*
 * Fixmap and pkmap layout (kernel-facts.md section 3).
 *
 * The enum is Linux 2.6.22's include/asm-i386/fixmap.h for a minimal
 * uniprocessor HIGHMEM configuration with CONFIG_PARAVIRT: no local/IO APIC,
 * no ACPI, no PCI MMCONFIG; KM_TYPE_NR = 13 kmap slots (2.6.22 kmap_types.h)
 * and NR_CPUS = 1. The paravirt boot map (the Xen-like backend maps the
 * shared-info page there) costs one boot-time slot, so the total stays 32
 * (docs/xen.md).
 *
 *   index  name
 *   0      FIX_HOLE
 *   1      FIX_VDSO
 *   2      FIX_KMAP_BEGIN      (kmap_pte is the pte of this slot)
 *   14     FIX_KMAP_END
 *   15     FIX_PARAVIRT_BOOTMAP
 *   16     __end_of_permanent_fixed_addresses = FIX_BTMAP_END
 *   30     FIX_BTMAP_BEGIN     (15 boot-time slots)
 *   31     FIX_WP_TEST
 *   32     __end_of_fixed_addresses
 */
#ifndef GUEST_FIXMAP_H
#define GUEST_FIXMAP_H

#include "pgtable.h"

#define KM_TYPE_NR 13
#define NR_CPUS 1
#define NR_FIX_BTMAPS 15

enum fixed_addresses {
	FIX_HOLE,
	FIX_VDSO,
	FIX_KMAP_BEGIN,
	FIX_KMAP_END = FIX_KMAP_BEGIN + (KM_TYPE_NR * NR_CPUS) - 1,
	FIX_PARAVIRT_BOOTMAP,
	__end_of_permanent_fixed_addresses,
	FIX_BTMAP_END = __end_of_permanent_fixed_addresses,
	FIX_BTMAP_BEGIN = FIX_BTMAP_END + NR_FIX_BTMAPS - 1,
	FIX_WP_TEST,
	__end_of_fixed_addresses
};

_Static_assert(FIX_KMAP_BEGIN == 2, "documented in docs/guest.md");
_Static_assert(FIX_PARAVIRT_BOOTMAP == 15 && FIX_BTMAP_END == 16 && FIX_BTMAP_BEGIN == 30 &&
	       FIX_WP_TEST == 31, "docs/xen.md");
_Static_assert(__end_of_fixed_addresses == 32, "the minimal config of kernel-facts.md");

/* __FIXADDR_TOP: 0xfffff000, lowered by reservetop= (reserve_top_address). */
extern unsigned long fixaddr_top;
#define FIXADDR_TOP (fixaddr_top)
#define __fix_to_virt(x) (FIXADDR_TOP - ((unsigned long)(x) << PAGE_SHIFT))
#define __FIXADDR_BOOT_SIZE ((unsigned long)__end_of_fixed_addresses << PAGE_SHIFT)
#define FIXADDR_BOOT_START (FIXADDR_TOP - __FIXADDR_BOOT_SIZE)

/* HIGHMEM's permanent kmap area: one pmd's worth of ptes below the fixmap. */
#define LAST_PKMAP PTRS_PER_PTE
#ifdef MUTANT_PKMAP_BASE_OFF
#define PKMAP_BASE ((FIXADDR_BOOT_START - PAGE_SIZE * LAST_PKMAP) & PMD_MASK) /* mutant: no guard page */
#else
#define PKMAP_BASE ((FIXADDR_BOOT_START - PAGE_SIZE * (LAST_PKMAP + 1)) & PMD_MASK)
#endif

/* Map physical address phys at fixmap slot idx (pgtable.c). */
void __set_fixmap(enum fixed_addresses idx, unsigned long phys, pgprot_t flags);
#define set_fixmap(idx, phys) __set_fixmap(idx, phys, PAGE_KERNEL)

/* Set by paging_init: the pte of FIX_KMAP_BEGIN, and the pkmap pte table. */
extern pte_t *kmap_pte;
extern pte_t *pkmap_page_table;

#endif
