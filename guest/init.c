/*
 * Early page-table construction of Linux 2.6.22 arch/i386/mm/init.c, to be
 * read side by side with the seed patch "i386: PARAVIRT: Hooks to set up
 * initial pagetable". Function and variable names are the kernel's.
 *
 * Build switches (guest/Makefile):
 *   CONFIG_X86_PAE  3-level PAE tables (otherwise 2-level)
 *   PREPATCH        the '-' side of the seed patch (2.6.21); every place the
 *                   patch changes is an #ifdef PREPATCH right here.
 * HIGHMEM is on (permanent_kmaps_init runs); NUMA is off (no remap_numa_kva).
 */
#include "bootmem.h"
#include "fixmap.h"
#include "guest.h"
#include "paravirt.h"
#include "processor.h"
#include "sections.h"
#include "setup.h"
#include "string.h"

unsigned long vmalloc_reserve = 128 << 20; /* __VMALLOC_RESERVE */

/* Kernel protections; pagetable_init ORs _PAGE_GLOBAL in when the CPU has PGE. */
pteval_t __PAGE_KERNEL = _PAGE_KERNEL;
pteval_t __PAGE_KERNEL_EXEC = _PAGE_KERNEL_EXEC;
/* NX is masked off every PAE leaf until set_nx() finds it usable. */
pteval_t __supported_pte_mask = ~_PAGE_NX;

int nx_enabled;
int disable_nx;

pte_t *kmap_pte;
pgprot_t kmap_prot;
pte_t *pkmap_page_table;

/*
 * Return the pmd table of a pgd entry. In PAE the pgd entry is a PDPT slot
 * that needs its own pmd page; in 2-level mode the pgd entry is the pmd.
 */
static pmd_t *one_md_table_init(pgd_t *pgd)
{
	pud_t *pud;
	pmd_t *pmd_table;

#ifdef CONFIG_X86_PAE
#ifdef PREPATCH
	/* 2.6.21: always a fresh pmd page, whatever the slot held. */
	pmd_table = alloc_bootmem_low_pages(PAGE_SIZE);
	paravirt_alloc_pd(__pa(pmd_table) >> PAGE_SHIFT);
	set_pgd(pgd, __pgd(__pa(pmd_table) | _PAGE_PRESENT));
	pud = pud_offset(pgd, 0);
	BUG_ON(pmd_table != pmd_offset(pud, 0));
	return pmd_table;
#else
	/* 2.6.22: only if the slot is not present (a hypervisor may have set it). */
	if (!(pgd_val(*pgd) & _PAGE_PRESENT)) {
		pmd_table = alloc_bootmem_low_pages(PAGE_SIZE);
		paravirt_alloc_pd(__pa(pmd_table) >> PAGE_SHIFT);
		set_pgd(pgd, __pgd(__pa(pmd_table) | _PAGE_PRESENT));
		pud = pud_offset(pgd, 0);
		BUG_ON(pmd_table != pmd_offset(pud, 0));
	}
#endif
#endif
	pud = pud_offset(pgd, 0);
	pmd_table = pmd_offset(pud, 0);
	return pmd_table;
}

/*
 * Return the pte table of a pmd entry, allocating it if there is none. An
 * existing table is reused as it is (head.S's pg0 pages included).
 */
static pte_t *one_page_table_init(pmd_t *pmd)
{
#if defined(PREPATCH) || defined(MUTANT_PMD_NONE)
	if (pmd_none(*pmd)) { /* 2.6.21: only the low 32 bits all zero count as empty */
#else
	if (!(pmd_val(*pmd) & _PAGE_PRESENT)) {
#endif
		pte_t *page_table = alloc_bootmem_low_pages(PAGE_SIZE);

		paravirt_alloc_pt(__pa(page_table) >> PAGE_SHIFT);
		set_pmd(pmd, __pmd(__pa(page_table) | _PAGE_TABLE));
		BUG_ON(page_table != pte_offset_kernel(pmd, 0));
	}
	return pte_offset_kernel(pmd, 0);
}

/*
 * Make sure pte tables exist for [start, end); the entries themselves are
 * filled later (set_fixmap, kmap). start and end are pmd aligned, end 0
 * means "up to the 32-bit wrap".
 */
static __noinline void page_table_range_init(unsigned long start, unsigned long end, pgd_t *pgd_base)
{
	pgd_t *pgd;
	pmd_t *pmd;
	int pgd_idx, pmd_idx;
	unsigned long vaddr;

	vaddr = start;
	pgd_idx = pgd_index(vaddr);
	pmd_idx = pmd_index(vaddr);
	pgd = pgd_base + pgd_idx;

	for (; pgd_idx < PTRS_PER_PGD && vaddr != end; pgd++, pgd_idx++) {
#ifdef PREPATCH
		if (pgd_none(*pgd)) /* folded pud: never true on i386 */
			one_md_table_init(pgd);
		pmd = pmd_offset(pud_offset(pgd, vaddr), vaddr);
#else
		pmd = one_md_table_init(pgd);
		pmd = pmd + pmd_index(vaddr);
#endif
		for (; pmd_idx < PTRS_PER_PMD && vaddr != end; pmd++, pmd_idx++) {
#ifdef PREPATCH
			if (pmd_none(*pmd))
#endif
				one_page_table_init(pmd);
			vaddr += PMD_SIZE;
		}
		pmd_idx = 0;
	}
}

/* Inclusive at __init_end and starting at PAGE_OFFSET, as in the kernel: low
 * BIOS memory, text, data and the page at __init_end are all "text". */
static inline int is_kernel_text(unsigned long addr)
{
	return addr >= PAGE_OFFSET && addr <= (unsigned long)__init_end;
}

/*
 * Map all lowmem (pfn 0 .. max_low_pfn) at PAGE_OFFSET: large pages when the
 * CPU has PSE, else 4 KiB ptes. Leaves are always (re)written; only the
 * intermediate tables are reused.
 */
static __noinline void kernel_physical_mapping_init(pgd_t *pgd_base)
{
	unsigned long pfn;
	pgd_t *pgd;
	pmd_t *pmd;
	pte_t *pte;
	int pgd_idx, pmd_idx, pte_ofs;

	pgd_idx = pgd_index(PAGE_OFFSET);
	pgd = pgd_base + pgd_idx;
	pfn = 0;

	for (; pgd_idx < PTRS_PER_PGD; pgd++, pgd_idx++) {
		pmd = one_md_table_init(pgd);
		if (pfn >= max_low_pfn)
			continue;
		for (pmd_idx = 0; pmd_idx < PTRS_PER_PMD && pfn < max_low_pfn; pmd++, pmd_idx++) {
			unsigned int address = pfn * PAGE_SIZE + PAGE_OFFSET;

			if (cpu_has_pse) {
				/* last byte of this large page */
				unsigned int address2 = (pfn + PTRS_PER_PTE - 1) * PAGE_SIZE +
							PAGE_OFFSET + PAGE_SIZE - 1;

				if (is_kernel_text(address) || is_kernel_text(address2))
					set_pmd(pmd, pfn_pmd(pfn, PAGE_KERNEL_LARGE_EXEC));
				else
					set_pmd(pmd, pfn_pmd(pfn, PAGE_KERNEL_LARGE));

				pfn += PTRS_PER_PTE;
			} else {
				pte = one_page_table_init(pmd);

#ifdef PREPATCH
				/* 2.6.21 never advanced address: the whole pte table
				 * gets the protection of its first page. */
				for (pte_ofs = 0; pte_ofs < PTRS_PER_PTE && pfn < max_low_pfn;
				     pte++, pfn++, pte_ofs++) {
#else
				for (pte_ofs = 0; pte_ofs < PTRS_PER_PTE && pfn < max_low_pfn;
				     pte++, pfn++, pte_ofs++, address += PAGE_SIZE) {
#endif
					if (is_kernel_text(address))
						set_pte(pte, pfn_pte(pfn, PAGE_KERNEL_EXEC));
					else
						set_pte(pte, pfn_pte(pfn, PAGE_KERNEL));
				}
			}
		}
	}
}

/* HIGHMEM: the pte table for kmap()'s window, one pmd below the fixmap. */
static __noinline void permanent_kmaps_init(pgd_t *pgd_base)
{
	unsigned long vaddr = PKMAP_BASE;
	pgd_t *pgd;
	pud_t *pud;
	pmd_t *pmd;

	page_table_range_init(vaddr, vaddr + PAGE_SIZE * LAST_PKMAP, pgd_base);

	pgd = swapper_pg_dir + pgd_index(vaddr);
	pud = pud_offset(pgd, vaddr);
	pmd = pmd_offset(pud, vaddr);
	pkmap_page_table = pte_offset_kernel(pmd, vaddr);
}

#ifdef PREPATCH
/*
 * 2.6.21 had no setup hooks: this is its inline code from the start and the
 * end of pagetable_init, moved into the native backend's hooks so that the
 * Xen-like backend can be tried on the old code (docs/xen.md). Natively the
 * stores are the same, in the same order.
 */
void native_pagetable_setup_start(pgd_t *base)
{
#ifdef CONFIG_X86_PAE
	/* All four PDPT slots, the kernel one included, to the zero page. */
	for (int i = 0; i < PTRS_PER_PGD; i++)
		set_pgd(base + i, __pgd(__pa(empty_zero_page) | _PAGE_PRESENT));
#else
	(void)base;
	paravirt_alloc_pd(__pa(swapper_pg_dir) >> PAGE_SHIFT);
#endif
}

/* 2.6.21 added the PAE low identity slot at the very end of pagetable_init. */
void native_pagetable_setup_done(pgd_t *base)
{
#ifdef CONFIG_X86_PAE
	set_pgd(&base[0], base[USER_PTRS_PER_PGD]);
#else
	(void)base;
#endif
}
#else /* !PREPATCH */
/*
 * Native setup before pagetable_init builds anything. In PAE the CPU is still
 * running non-PAE on swapper_pg_dir: its first 32 bytes become the PDPT in
 * place (user slots -> empty_zero_page, kernel slot empty), which clobbers
 * only low identity PDEs 0..7; the PAGE_OFFSET PDEs at 768+ stay usable.
 */
void native_pagetable_setup_start(pgd_t *base)
{
#ifdef CONFIG_X86_PAE
	for (unsigned i = 0; i < USER_PTRS_PER_PGD; i++)
		set_pgd(&base[i], __pgd(__pa(empty_zero_page) | _PAGE_PRESENT));
	/* Empty kernel slot, so that a pmd page is allocated for it. */
	memset(&base[USER_PTRS_PER_PGD], 0, KERNEL_PGD_PTRS * sizeof(pgd_t));
#else
	(void)base;
	paravirt_alloc_pd(__pa(swapper_pg_dir) >> PAGE_SHIFT);
#endif
}

/* PAE: slot 0 shares the kernel pmd page, a low identity mapping (for SMP
 * trampolines). Non-PAE: head.S's identity mapping is still there. */
void native_pagetable_setup_done(pgd_t *base)
{
#ifdef CONFIG_X86_PAE
#ifdef MUTANT_NO_IDENTITY_SLOT
	(void)base; /* mutant: slot 0 stays on the zero page, no identity mapping for the APs */
#else
	set_pgd(&base[0], base[USER_PTRS_PER_PGD]);
#endif
#else
	(void)base;
#endif
}
#endif /* !PREPATCH */

/*
 * Build the kernel's page tables in swapper_pg_dir. The harness takes its
 * "before" snapshot on the first instruction, so this stays a real function.
 */
void __stop_point pagetable_init(void)
{
	unsigned long vaddr;
#ifndef PREPATCH
	unsigned long end;
#endif
	pgd_t *pgd_base = swapper_pg_dir;

	barrier();
	/* PREPATCH: 2.6.21's inline setup, now behind the same hook (see above). */
	paravirt_pagetable_setup_start(pgd_base);

	if (cpu_has_pse)
		set_in_cr4(X86_CR4_PSE);

	if (cpu_has_pge) {
		set_in_cr4(X86_CR4_PGE);
		__PAGE_KERNEL |= _PAGE_GLOBAL;
		__PAGE_KERNEL_EXEC |= _PAGE_GLOBAL;
	}

	kernel_physical_mapping_init(pgd_base);

	/* Fixmap: only the pte tables; set_fixmap() fills them later. */
#ifdef MUTANT_FIXMAP_START_OFF
	vaddr = __fix_to_virt(__end_of_fixed_addresses) & PMD_MASK; /* mutant: one slot past */
#else
	vaddr = __fix_to_virt(__end_of_fixed_addresses - 1) & PMD_MASK;
#endif
#ifdef PREPATCH
#ifdef MUTANT_LAZY_FIXMAP_PTE
	(void)vaddr; /* mutant: no fixmap pte tables at boot (__set_fixmap makes them on demand) */
#else
	page_table_range_init(vaddr, 0, pgd_base); /* all the way to 4 GiB */
#endif
#else
#ifdef MUTANT_FIXMAP_END_OFF
	end = (FIXADDR_TOP + PMD_SIZE) & PMD_MASK; /* mutant: off by one byte */
#else
	end = (FIXADDR_TOP + PMD_SIZE - 1) & PMD_MASK;
#endif
#ifdef MUTANT_LAZY_FIXMAP_PTE
	(void)vaddr, (void)end; /* mutant: no fixmap pte tables at boot (__set_fixmap makes them on demand) */
#else
	page_table_range_init(vaddr, end, pgd_base);
#endif
#endif

	permanent_kmaps_init(pgd_base);

	paravirt_pagetable_setup_done(pgd_base);
}

#ifdef CONFIG_X86_PAE
/*
 * Turn on EFER.NX when the CPU has it and noexec=off was not given; only then
 * do PAE leaves keep their NX bit. The "> 0x80000001" test is the kernel's.
 */
static void set_nx(void)
{
	if (cpu_has_pae && cpuid_eax(0x80000000) > 0x80000001) {
		u32 edx = cpuid_edx(0x80000001);
		if ((edx & (1u << X86_FEATURE_NX_BIT)) && !disable_nx) {
			wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_NX);
#ifndef MUTANT_NX_ENABLED_OFF /* mutant: NX on, the variable forgotten */
			nx_enabled = 1;
#endif
			__supported_pte_mask |= _PAGE_NX;
		}
	}
}
#endif

static pte_t *kmap_get_fixmap_pte(unsigned long vaddr)
{
	return pte_offset_kernel(pmd_offset(pud_offset(pgd_offset_k(vaddr), vaddr), vaddr), vaddr);
}

static void kmap_init(void)
{
#ifdef MUTANT_KMAP_PTE_OFF
	unsigned long kmap_vstart = __fix_to_virt(FIX_KMAP_BEGIN + 1); /* mutant: the next slot */
#else
	unsigned long kmap_vstart = __fix_to_virt(FIX_KMAP_BEGIN);
#endif

#ifdef MUTANT_LAZY_FIXMAP_PTE
	(void)kmap_vstart, (void)kmap_get_fixmap_pte;
	kmap_pte = 0; /* mutant: looked up when first needed, so no pte table is made now */
#else
	kmap_pte = kmap_get_fixmap_pte(kmap_vstart);
#endif
	kmap_prot = PAGE_KERNEL;
}

void paging_init(void)
{
#ifdef CONFIG_X86_PAE
	set_nx();
#endif
	printk("nx enabled=%d supported_pte_mask=0x%016llx\n", nx_enabled,
	       (unsigned long long)__supported_pte_mask);

	pagetable_init();
	printk("pagetable_init done boot_alloc_cursor=0x%08lx pages=%lu hook_calls=%u\n",
	       boot_alloc_cursor, (boot_alloc_cursor - boot_alloc_start) >> PAGE_SHIFT,
	       pv_hook_log_len);

	load_cr3(swapper_pg_dir);
#ifdef CONFIG_X86_PAE
	/* The switch to PAE: the CPU now loads the PDPT from swapper_pg_dir.
	 * (start_kernel has refused a CPU without PAE already.) */
	if (cpu_has_pae)
		set_in_cr4(X86_CR4_PAE);
#endif
	__flush_tlb_all();

	kmap_init();
}
