/*
 * The kernel's Xen-like side (docs/xen.md; Linux 2.6.23 arch/i386/xen):
 * xen_start_kernel, the domain's entry from the hypervisor stage, and the
 * paravirt_ops backend that builds the kernel's pagetable on top of the
 * hypervisor's while every page-table page stays mapped read-only.
 *
 * The backend never stores into a table itself: once a frame is a table it
 * is read-only (and CR0.WP is set), so every change is a hypercall - a trap
 * through vector 0x82 (include/hypercall.h): the kernel has no symbol of the
 * hypervisor stage but its entry.
 */
#include "bootmem.h"
#include "fixmap.h"
#include "desc.h"
#include "guest.h"
#include "hypercall.h"
#include "paravirt.h"
#include "processor.h"
#include "sections.h"
#include "setup.h"
#include "string.h"
#include "xen.h"

struct start_info *xen_start_info;

/* pvbug= (docs/xen.md), each a one-shot bug of this backend:
 *   writable-pt     alloc_pt leaves the first PTE page it gets writable
 *   writable-root   setup_start does not make swapper_pg_dir read-only
 *   unannounced-pt  alloc_pt does not announce the first PTE page it gets
 *   batch-hv-write  the first setup-time set_pte also queues a write into
 *                   the hypervisor's PTE page A */
static bool bug_writable_pt, bug_writable_root, bug_unannounced_pt, bug_batch_hv_write;

/*
 * Setup-time set_pte calls are queued and sent as one batch (Xen's kernels
 * batch them too): kernel_physical_mapping_init writes every lowmem pte once,
 * in ascending order. The queue goes out before any other hypercall or hook,
 * and before an entry at or below the last queued one, so nothing ever reads
 * an entry whose write is still waiting and the hypervisor sees the same
 * updates in the same order as unbatched.
 */
#define MMU_QUEUE_MAX 1024
static struct mmu_update mmu_queue[MMU_QUEUE_MAX];
static unsigned mmu_queued;

static void xen_mc_flush(void)
{
	if (mmu_queued)
		HYPERVISOR_mmu_update(mmu_queue, mmu_queued);
	mmu_queued = 0;
}

static void xen_mc_queue(pte_t *ptep, pteval_t v)
{
	if (mmu_queued == MMU_QUEUE_MAX || (mmu_queued && (void *)ptep <= mmu_queue[mmu_queued - 1].ptr))
		xen_mc_flush();
	mmu_queue[mmu_queued++] = (struct mmu_update){ .ptr = &ptep->pte, .val = v };
}

/* The linear-map leaf of a lowmem frame, found through the current tables. */
static pte_t *linear_pte(unsigned long pa)
{
	pte_t *pte = lookup_address((pgd_t *)__va(read_cr3() & PAGE_MASK), (unsigned long)__va(pa));
	BUG_ON(!pte || !(pte_val(*pte) & _PAGE_PRESENT));
	return pte;
}

/* Written by hypercall, not set_pte: the early set_pte would keep RW. */
static void make_lowmem_page_readonly(unsigned long pa)
{
	xen_mc_flush();
	pte_t *pte = linear_pte(pa);
	HYPERVISOR_update_entry(&pte->pte, pte_val(*pte) & ~(pteval_t)_PAGE_RW);
	HYPERVISOR_mmuext_op(MMUEXT_INVLPG, (unsigned long)__va(pa), 0);
}

static void xen_alloc_pt(u32 pfn)
{
	xen_mc_flush();
	if (bug_unannounced_pt) {
		bug_unannounced_pt = false;
		printk("xen pvbug unannounced-pt pfn=0x%x\n", pfn);
	} else {
		HYPERVISOR_mmuext_op(MMUEXT_ANNOUNCE, pfn, HYP_TABLE_PTE);
	}
	if (bug_writable_pt) {
		bug_writable_pt = false;
		printk("xen pvbug writable-pt pfn=0x%x\n", pfn);
		return;
	}
	make_lowmem_page_readonly((unsigned long)pfn << PAGE_SHIFT); /* before it is linked */
}

/*
 * PAE: a pmd page, announced and made read-only before the caller links it
 * (2.6.23's xen_alloc_pd makes it read-only too). 2-level: swapper_pg_dir,
 * which pagetable_setup_start announces first and fills after, so it makes
 * it read-only itself once the copy is done.
 */
static void xen_alloc_pd(u32 pfn)
{
	xen_mc_flush();
	HYPERVISOR_mmuext_op(MMUEXT_ANNOUNCE, pfn, HYP_TABLE_PMD);
#ifdef CONFIG_X86_PAE
	make_lowmem_page_readonly((unsigned long)pfn << PAGE_SHIFT);
#endif
}

/* pgd_alloc's 2-level pgd, its kernel entries already copied (a plain write:
 * not a table yet): from now on a table, so announced and read-only. */
static void xen_alloc_pd_clone(u32 pfn, u32 clonepfn, u32 start, u32 count)
{
	(void)clonepfn, (void)start, (void)count;
	xen_mc_flush();
	HYPERVISOR_mmuext_op(MMUEXT_ANNOUNCE, pfn, HYP_TABLE_PMD);
	make_lowmem_page_readonly((unsigned long)pfn << PAGE_SHIFT);
}

/*
 * The second pagetable becomes the CPU's (2.6.23: xen_activate_mm pins, then
 * the CR3 load is MMUEXT_NEW_BASEPTR). A PAE root is never announced, so it
 * is made read-only here; a 2-level one already is (alloc_pd_clone). Pinning
 * makes the hypervisor validate the new tree before the CPU may use it.
 */
static void xen_activate_mm(pgd_t *pgd)
{
	u32 pfn = __pa(pgd) >> PAGE_SHIFT;

	xen_mc_flush();
#ifdef CONFIG_X86_PAE
	make_lowmem_page_readonly(__pa(pgd));
#endif
	pv_hook_log_add(PV_HOOK_PIN, pfn);
	HYPERVISOR_mmuext_op(MMUEXT_PIN_TABLE, pfn, 0);
	HYPERVISOR_mmuext_op(MMUEXT_NEW_BASEPTR, __pa(pgd), 0);
}

/* During setup: rewriting a present leaf keeps its RW bit, so the leaves of
 * page-table pages stay read-only while the kernel remaps all of lowmem. */
static void xen_set_pte_init(pte_t *ptep, pte_t pte)
{
	pteval_t old = pte_val(*ptep);
	pteval_t v = pte_val(pte);
	if (old & _PAGE_PRESENT)
		v = (v & ~(pteval_t)_PAGE_RW) | (old & _PAGE_RW);
	xen_mc_queue(ptep, v);
	if (bug_batch_hv_write) {
		/* The same value into entry 2 of PTE page A (VA HVS + 2 pages). */
		pte_t *a = lookup_address((pgd_t *)__va(read_cr3() & PAGE_MASK),
					  HYPERVISOR_VIRT_START + 2 * PAGE_SIZE);
		BUG_ON(!a);
		bug_batch_hv_write = false;
		printk("xen pvbug batch-hv-write entry=%p value=0x%llx\n", (void *)a,
		       (unsigned long long)v);
		xen_mc_queue(a, v);
	}
}

static void xen_set_pte(pte_t *ptep, pte_t pte)
{
	xen_mc_flush();
	HYPERVISOR_update_entry(&ptep->pte, pte_val(pte));
}

static void xen_set_pmd(pmd_t *pmdp, pmd_t pmd)
{
	xen_mc_flush();
	HYPERVISOR_update_entry(&pmdp->pmd, pmd_val(pmd));
}

/* A refused update (the hypervisor records it) is not a BUG here: the
 * kernel's own checks notice that the entry did not change. */
static void xen_set_pgd(pgd_t *pgdp, pgd_t pgd)
{
	xen_mc_flush();
	HYPERVISOR_update_entry(&pgdp->pgd, pgd_val(pgd));
}

/*
 * Copy the hypervisor's pagetable into swapper_pg_dir, sharing its PTE pages
 * (PAE: each present pmd page is copied into a new one), make the new tables
 * read-only and move CR3 onto base before anything else changes.
 */
static void xen_pagetable_setup_start(pgd_t *base)
{
	pgd_t *old = (pgd_t *)xen_start_info->pt_base;

#ifdef CONFIG_X86_PAE
	for (int i = 0; i < PTRS_PER_PGD; i++) {
		if (pgd_val(old[i]) & _PAGE_PRESENT) {
			pmd_t *pmd = alloc_bootmem_low_pages(PAGE_SIZE);
			memcpy(pmd, __va((unsigned long)pgd_val(old[i]) & PAGE_MASK), PAGE_SIZE);
			paravirt_alloc_pd(__pa(pmd) >> PAGE_SHIFT); /* also makes it read-only */
			set_pgd(&base[i], __pgd(__pa(pmd) | _PAGE_PRESENT));
		} else {
			set_pgd(&base[i], __pgd(0));
		}
	}
#else
	paravirt_alloc_pd(__pa(base) >> PAGE_SHIFT);
	memcpy(base, old, PAGE_SIZE); /* base is not a table yet: still writable */
#endif
	make_lowmem_page_readonly(__pa(empty_zero_page));
	if (bug_writable_root)
		printk("xen pvbug writable-root pfn=0x%lx\n", __pa(base) >> PAGE_SHIFT);
	else
		make_lowmem_page_readonly(__pa(base));
	HYPERVISOR_mmuext_op(MMUEXT_NEW_BASEPTR, __pa(base), 0);
}

/* PTE pages of the kernel's tree that came from the hypervisor's run. */
static u32 count_reused_pte_pages(pgd_t *base)
{
	unsigned long first = __pa(xen_start_info->pt_base);
	unsigned long end = first + xen_start_info->nr_pt_frames * PAGE_SIZE;
	u32 reused = 0;
#ifdef CONFIG_X86_PAE
	pmd_t *dir = pmd_offset(pud_offset(&base[USER_PTRS_PER_PGD], 0), 0); /* slot 3's pmd page */
	const unsigned n = PTRS_PER_PMD;
#else
	pmd_t *dir = (pmd_t *)&base[USER_PTRS_PER_PGD];
	const unsigned n = KERNEL_PGD_PTRS;
#endif
	for (unsigned i = 0; i < n; i++) {
		unsigned long pa = (unsigned long)pmd_val(dir[i]) & PAGE_MASK;
		if ((pmd_val(dir[i]) & _PAGE_PRESENT) && pa >= first && pa < end)
			reused++;
	}
	return reused;
}

static void xen_pagetable_setup_done(pgd_t *base)
{
	u32 pfn = __pa(base) >> PAGE_SHIFT;
	u32 allocated = 0;

	xen_mc_flush();
	paravirt_ops.set_pte = xen_set_pte; /* the run-time op writes the value as given */
	set_fixmap(FIX_PARAVIRT_BOOTMAP, xen_start_info->shared_info);

	for (u32 i = 0; i < pv_hook_log_len; i++)
		allocated += pv_hook_log[i].op == PV_HOOK_ALLOC_PT;
	printk("xen pagetable_setup_done pte_reused=%u pte_allocated=%u shared_info_va=0x%08lx "
	       "pin_pfn=0x%x\n",
	       count_reused_pte_pages(base), allocated, __fix_to_virt(FIX_PARAVIRT_BOOTMAP), pfn);

	pv_hook_log_add(PV_HOOK_PIN, pfn);
	HYPERVISOR_mmuext_op(MMUEXT_PIN_TABLE, pfn, 0);
}

const struct paravirt_ops xen_paravirt_ops = {
	.name = "xen",
	.shared_kernel_pmd = false,
	.pagetable_setup_start = xen_pagetable_setup_start,
	.pagetable_setup_done = xen_pagetable_setup_done,
	.alloc_pt = xen_alloc_pt,
	.alloc_pd = xen_alloc_pd,
	.set_pte = xen_set_pte_init,
	.set_pmd = xen_set_pmd,
	.set_pgd = xen_set_pgd,
	.alloc_pd_clone = xen_alloc_pd_clone,
	.activate_mm = xen_activate_mm,
};

/*
 * The domain's first instruction: the CPU already runs on the hypervisor's
 * tables (CR3 = __pa(pt_base), in the build's paging mode, CR0.WP set).
 */
/* guest_exit's notifier: the hypervisor prints its record before the exit line. */
static void xen_domain_exit(void)
{
	HYPERVISOR_domain_exit();
}

void __noreturn xen_start_kernel(struct start_info *si)
{
	guest_exit_notifier = xen_domain_exit;
	/* As 2.6.23's xen_start_kernel: the exception handlers go to the
	 * hypervisor, which owns the IDT (and the hypercall gate in it). */
	HYPERVISOR_set_trap_table(exception_gates());
	if (si->magic != XEN_START_INFO_MAGIC) {
		printk("boot error reason=\"start info magic 0x%08x\"\n", si->magic);
		guest_exit(GUEST_EXIT_BAD_CMDLINE);
	}
	xen_start_info = si;
	printk("xen start_info magic=0x%08x nr_pages=0x%x shared_info=0x%08x pt_base=0x%08x "
	       "nr_pt_frames=%u hypervisor_virt_start=0x%08x reserve_top=0x%08x flags=%u\n",
	       si->magic, si->nr_pages, si->shared_info, si->pt_base, si->nr_pt_frames,
	       si->hypervisor_virt_start, si->reserve_top, si->flags);

	/* The boot allocator starts after the bootstrap tables; the mapping
	 * reaches 4 MiB past them, in 4 MiB units (docs/xen.md). */
	init_pg_tables_end = __pa(si->pt_base) + si->nr_pt_frames * PAGE_SIZE;
	u64 map_end = ((u64)init_pg_tables_end + (8ULL << 20) - 1) & ~((4ULL << 20) - 1);
	if (map_end > (u64)si->nr_pages << PAGE_SHIFT)
		map_end = (u64)si->nr_pages << PAGE_SHIFT;
	init_map_end = (unsigned long)map_end;

	paravirt_select("xen");
	bug_writable_pt = boot_options.pvbug == PVBUG_WRITABLE_PT;
	bug_writable_root = boot_options.pvbug == PVBUG_WRITABLE_ROOT;
	bug_unannounced_pt = boot_options.pvbug == PVBUG_UNANNOUNCED_PT;
	bug_batch_hv_write = boot_options.pvbug == PVBUG_BATCH_HV_WRITE;
	reserve_top_address(si->reserve_top);
	/* Xen hides PSE and PGE from PV guests: the kernel's CPUID never shows them. */
	cpuid_leaf1_edx_mask &= ~((1u << X86_FEATURE_PSE_BIT) | (1u << X86_FEATURE_PGE_BIT));
	setup_arch();
}
