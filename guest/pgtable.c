/*
 * Small page-table helpers of the kernel outside init.c (in Linux:
 * arch/i386/mm/pgtable.c and pageattr.c): set_fixmap and a lookup of the
 * pte that maps an address.
 */
#include "fixmap.h"
#include "guest.h"
#include "paravirt.h"

/* The pte mapping va under pgd_base, or NULL if no pte table maps it (not
 * present at a directory level, or a large page). */
pte_t *lookup_address(pgd_t *pgd_base, unsigned long va)
{
	pgd_t *pgd = pgd_base + pgd_index(va);
	if (!(pgd_val(*pgd) & _PAGE_PRESENT))
		return 0;
	pmd_t *pmd = pmd_offset(pud_offset(pgd, va), va);
	if (!(pmd_val(*pmd) & _PAGE_PRESENT) || (pmd_val(*pmd) & _PAGE_PSE))
		return 0;
	return pte_offset_kernel(pmd, va);
}

/* The fixmap's pte tables exist since pagetable_init; a missing one is a bug. */
static void set_pte_pfn(unsigned long vaddr, unsigned long pfn, pgprot_t flags)
{
	pte_t *pte = lookup_address(swapper_pg_dir, vaddr);
	BUG_ON(!pte);
	set_pte(pte, pfn_pte(pfn, flags));
	asm volatile("invlpg (%0)" : : "r"(vaddr) : "memory"); /* __flush_tlb_one */
}

void __set_fixmap(enum fixed_addresses idx, unsigned long phys, pgprot_t flags)
{
	BUG_ON(idx >= __end_of_fixed_addresses);
	set_pte_pfn(__fix_to_virt(idx), phys >> PAGE_SHIFT, flags);
}
