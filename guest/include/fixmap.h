/*
 * Fixmap and pkmap layout (kernel-facts.md section 3).
 *
 * The enum is Linux 2.6.22's include/asm-i386/fixmap.h for a small SMP
 * HIGHMEM configuration with CONFIG_PARAVIRT: CONFIG_X86_LOCAL_APIC and
 * CONFIG_SMP with NR_CPUS = 4 (smp.h), no IO APIC, no ACPI, no PCI
 * MMCONFIG; KM_TYPE_NR = 13 kmap slots per CPU (2.6.22 kmap_types.h), so 52.
 * The paravirt boot map (the Xen-like backend maps the shared-info page
 * there) costs one boot-time slot: 15 instead of 16 (docs/xen.md).
 *
 *   index  name
 *   0      FIX_HOLE
 *   1      FIX_VDSO
 *   2      FIX_APIC_BASE       (the local APIC, uncached: init_apic_mappings)
 *   3      FIX_KMAP_BEGIN      (kmap_pte is the pte of this slot)
 *   54     FIX_KMAP_END        (KM_TYPE_NR * NR_CPUS = 52 slots)
 *   55     FIX_PARAVIRT_BOOTMAP
 *   56     __end_of_permanent_fixed_addresses = FIX_BTMAP_END
 *   70     FIX_BTMAP_BEGIN     (15 boot-time slots)
 *   71     FIX_WP_TEST
 *   72     __end_of_fixed_addresses
 *
 * smp.c exports __end_of_fixed_addresses, FIX_APIC_BASE, FIX_KMAP_BEGIN and
 * FIX_VDSO as absolute ELF symbols for the harness.
 */
#ifndef GUEST_FIXMAP_H
#define GUEST_FIXMAP_H

#include "pgtable.h"
#include "smp.h" /* NR_CPUS */

#define KM_TYPE_NR 13
#define NR_FIX_BTMAPS 15

enum fixed_addresses {
	FIX_HOLE,
	FIX_VDSO,
	FIX_APIC_BASE, /* CONFIG_X86_LOCAL_APIC */
	FIX_KMAP_BEGIN,
	FIX_KMAP_END = FIX_KMAP_BEGIN + (KM_TYPE_NR * NR_CPUS) - 1,
	FIX_PARAVIRT_BOOTMAP,
	__end_of_permanent_fixed_addresses,
	FIX_BTMAP_END = __end_of_permanent_fixed_addresses,
	FIX_BTMAP_BEGIN = FIX_BTMAP_END + NR_FIX_BTMAPS - 1,
	FIX_WP_TEST,
	__end_of_fixed_addresses
};

_Static_assert(FIX_VDSO == 1 && FIX_APIC_BASE == 2 && FIX_KMAP_BEGIN == 3 && FIX_KMAP_END == 54,
	       "documented in docs/guest.md");
_Static_assert(FIX_PARAVIRT_BOOTMAP == 55 && FIX_BTMAP_END == 56 && FIX_BTMAP_BEGIN == 70 &&
	       FIX_WP_TEST == 71, "docs/xen.md");
_Static_assert(__end_of_fixed_addresses == 72, "NR_CPUS = 4 with a local APIC");

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
/* 2.6.22's PAGE_KERNEL_NOCACHE: the run-time __PAGE_KERNEL (GLOBAL when the
 * CPU has PGE, NX kept only through __supported_pte_mask as pfn_pte applies
 * it) with PCD, for device memory such as the local APIC. */
#define PAGE_KERNEL_NOCACHE __pgprot(__PAGE_KERNEL | _PAGE_PCD)
#define set_fixmap_nocache(idx, phys) __set_fixmap(idx, phys, PAGE_KERNEL_NOCACHE)

/* Set by paging_init: the pte of FIX_KMAP_BEGIN, and the pkmap pte table. */
extern pte_t *kmap_pte;
extern pte_t *pkmap_page_table;

#endif
