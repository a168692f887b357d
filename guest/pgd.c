/*
 * The tables at work after paging_init (kernel-facts.md sections 8-9):
 * zap_low_mappings, then a second pagetable as the first process's
 * pgd_alloc would make it, the CPU moved onto it, and two late changes of
 * the kernel's mappings - a fixmap slot and a kmap - read through it. Both
 * must be visible there: the kernel pte pages are shared between pagetables,
 * which is why the fixmap and pkmap pte tables are made at boot.
 *
 * Every page comes from the boot allocator (zeroed, ascending), in the
 * order docs/guest-contract.md lists, so the harness's model can name them.
 */
#include "bootmem.h"
#include "fixmap.h"
#include "guest.h"
#include "paravirt.h"
#include "pgd.h"
#include "probes.h"
#include "processor.h"
#include "sections.h"
#include "setup.h"
#include "string.h"
#include "work.h"

struct pgd2_record pgd2_record;

/*
 * The user part of swapper_pg_dir goes: the low identity mapping (head.S's
 * PDEs natively, PAE's slot 0 sharing the kernel pmd) was only there for
 * the switch to paging and the APs' start. PAE slots are pointed at the
 * empty zero page rather than cleared, as 2.6.22 does; under pv=xen that
 * page is read-only and empty, so the hypervisor accepts it as a pmd page.
 */
void zap_low_mappings(void)
{
	for (unsigned i = 0; i < USER_PTRS_PER_PGD; i++) {
#ifdef CONFIG_X86_PAE
		set_pgd(swapper_pg_dir + i, __pgd(1 + __pa(empty_zero_page)));
#else
		set_pgd(swapper_pg_dir + i, __pgd(0));
#endif
	}
	/* flush_tlb_all: the CR3 reload also makes a PAE CPU reload the PDPT;
	 * with PGE, toggling CR4.PGE drops global entries too. */
	__flush_tlb_all();
	printk("zap user_entries=%u\n", (u32)USER_PTRS_PER_PGD);
}

/* clone_pgd_range: copy count entries (the kernel's, whatever they are). */
static void clone_pgd_range(pgd_t *dst, const pgd_t *src, unsigned count)
{
	memcpy(dst, src, count * sizeof(pgd_t));
}

/* pgd_ctor: the new pgd's own page, still a plain writable page. */
static void pgd_ctor(pgd_t *pgd)
{
#ifdef CONFIG_X86_PAE
	if (paravirt_ops.shared_kernel_pmd) /* the kernel slot shares swapper's pmd page */
		clone_pgd_range(pgd + USER_PTRS_PER_PGD, swapper_pg_dir + USER_PTRS_PER_PGD,
				KERNEL_PGD_PTRS);
	else
		memset(pgd, 0, USER_PTRS_PER_PGD * sizeof(pgd_t));
#else
	memset(pgd, 0, USER_PTRS_PER_PGD * sizeof(pgd_t));
	/* Kernel PDEs 768..1023 copied: the pte pages behind them are shared. A
	 * PDE swapper_pg_dir gains later is not seen here. */
	clone_pgd_range(pgd + USER_PTRS_PER_PGD, swapper_pg_dir + USER_PTRS_PER_PGD, KERNEL_PGD_PTRS);
	paravirt_alloc_pd_clone(__pa(pgd) >> PAGE_SHIFT, __pa(swapper_pg_dir) >> PAGE_SHIFT,
				USER_PTRS_PER_PGD, KERNEL_PGD_PTRS);
#endif
}

#ifdef CONFIG_X86_PAE
/* 2.6.23's pmd_cache_alloc: a zeroed pmd page for a user slot; for the
 * kernel slot (no shared kernel pmd) a copy of swapper's whole kernel pmd
 * page, so only the pte pages are shared. The copy includes the
 * hypervisor's entries (docs/xen.md "The work phase"). */
static pmd_t *pmd_cache_alloc(unsigned idx)
{
	pmd_t *pmd = alloc_bootmem_low_pages(PAGE_SIZE);
	if (idx >= USER_PTRS_PER_PGD)
		memcpy(pmd, pmd_offset(pud_offset(swapper_pg_dir + idx, 0), 0), PAGE_SIZE);
	return pmd;
}
#endif

pgd_t *pgd_alloc(void)
{
	pgd_t *pgd = alloc_bootmem_low_pages(PAGE_SIZE);

	pgd_ctor(pgd);
	pgd2_record.nr_pmds = 0;
#ifdef CONFIG_X86_PAE
	/* UNSHARED_PTRS_PER_PGD: the user slots, plus the kernel slot when its
	 * pmd page cannot be shared. Each pmd page is announced (and, under
	 * pv=xen, made read-only) before it is linked. */
	unsigned unshared = paravirt_ops.shared_kernel_pmd ? USER_PTRS_PER_PGD : PTRS_PER_PGD;
	for (unsigned i = 0; i < unshared; i++) {
		pmd_t *pmd = pmd_cache_alloc(i);
		paravirt_alloc_pd(__pa(pmd) >> PAGE_SHIFT);
		set_pgd(&pgd[i], __pgd(1 + __pa(pmd)));
		pgd2_record.nr_pmds++;
	}
#endif
	return pgd;
}

/* A 16-byte copy under the probe mechanism: 1 if it faulted. */
static u32 copy16_probed(void *dst, const void *src)
{
	struct probe_copy req = { .dst = dst, .src = src };
	return (u32)probe_run(probe_copy16, (unsigned long)&req, 0);
}

void second_pagetable(void)
{
	struct pgd2_record *r = &pgd2_record;

	pgd_t *pgd = pgd_alloc();
	r->root_pa = __pa(pgd);
	paravirt_activate_mm(pgd); /* CR3 = __pa(pgd) */

	/*
	 * A fixmap slot that was empty when the pgd was copied: set_fixmap
	 * writes swapper_pg_dir's pte, and the new pagetable sees it only
	 * through a shared pte page. The first page of text has known bytes.
	 */
	r->fix_idx = FIX_VDSO;
	r->fix_va = __fix_to_virt(FIX_VDSO);
	r->fix_pa = __pa(_text);
	set_fixmap(FIX_VDSO, r->fix_pa);
	r->fix_faulted = copy16_probed(r->fix_bytes, (const void *)r->fix_va);
	if (r->fix_faulted)
		memset(r->fix_bytes, 0, sizeof(r->fix_bytes));

	/*
	 * kmap of the first highmem page into pkmap slot 0, as 2.6.22's
	 * map_new_virtual does (the pkmap pte table is swapper's, shared): write
	 * a pattern through it and read it back.
	 */
	if (max_pfn > max_low_pfn) {
		static const u8 pattern[16] = PGD2_KMAP_PATTERN;
		r->kmap_va = PKMAP_BASE;
		r->kmap_pa = max_low_pfn << PAGE_SHIFT;
		set_pte(&pkmap_page_table[0], pfn_pte(max_low_pfn, kmap_prot));
		asm volatile("invlpg (%0)" : : "r"(r->kmap_va) : "memory"); /* flush_tlb_one */
		r->kmap_faulted = copy16_probed((void *)r->kmap_va, pattern) ||
				  copy16_probed(r->kmap_bytes, (const void *)r->kmap_va);
		if (r->kmap_faulted)
			memset(r->kmap_bytes, 0, sizeof(r->kmap_bytes));
	}

	printk("pgd2 root=0x%08x pmds=%u fix_va=0x%08x fix_pa=0x%08x fix_faulted=%u kmap_va=0x%08x "
	       "kmap_pa=0x%08x kmap_faulted=%u\n",
	       r->root_pa, r->nr_pmds, r->fix_va, r->fix_pa, r->fix_faulted, r->kmap_va, r->kmap_pa,
	       r->kmap_faulted);
}
