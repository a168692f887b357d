/*
 * Small page-table helpers of the kernel outside init.c (in Linux:
 * arch/i386/mm/pgtable.c and pageattr.c): set_fixmap and a lookup of the
 * pte that maps an address. (pgd_alloc is in pgd.c.)
 */
#include "bootmem.h"
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

#ifdef MUTANT_LAZY_FIXMAP_PTE
/*
 * mutant: pagetable_init made no fixmap pte tables, so the first set_fixmap
 * in a pmd makes one here, as one_page_table_init would (hooks included) -
 * but only in swapper_pg_dir. A pagetable copied from it before this (a
 * 2-level pgd, or a PAE kernel pmd page that is not shared) never sees it.
 */
static pte_t *lazy_fixmap_pte(unsigned long vaddr)
{
	pgd_t *pgd = swapper_pg_dir + pgd_index(vaddr);
#ifdef CONFIG_X86_PAE
	BUG_ON(!(pgd_val(*pgd) & _PAGE_PRESENT)); /* the kernel slot always has its pmd page */
#endif
	pmd_t *pmd = pmd_offset(pud_offset(pgd, vaddr), vaddr);
	pte_t *page_table = alloc_bootmem_low_pages(PAGE_SIZE);

	paravirt_alloc_pt(__pa(page_table) >> PAGE_SHIFT);
	set_pmd(pmd, __pmd(__pa(page_table) | _PAGE_TABLE));
	return lookup_address(swapper_pg_dir, vaddr);
}
#endif

/* The fixmap's pte tables exist since pagetable_init; a missing one is a bug. */
static void set_pte_pfn(unsigned long vaddr, unsigned long pfn, pgprot_t flags)
{
	pte_t *pte = lookup_address(swapper_pg_dir, vaddr);
#ifdef MUTANT_LAZY_FIXMAP_PTE
	if (!pte)
		pte = lazy_fixmap_pte(vaddr);
#endif
	BUG_ON(!pte);
	set_pte(pte, pfn_pte(pfn, flags));
	asm volatile("invlpg (%0)" : : "r"(vaddr) : "memory"); /* __flush_tlb_one */
}

void __set_fixmap(enum fixed_addresses idx, unsigned long phys, pgprot_t flags)
{
	BUG_ON(idx >= __end_of_fixed_addresses);
	set_pte_pfn(__fix_to_virt(idx), phys >> PAGE_SHIFT, flags);
}
