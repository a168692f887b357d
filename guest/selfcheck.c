/*
 * The guest's own check after paging_init, on the tables the CPU now uses
 * (walked from CR3, not from what init.c meant to build):
 *   - every lowmem page is mapped at PAGE_OFFSET + pa, present, writable,
 *     supervisor-only; then one word of it is read through that address, so
 *     a mapping the software walk missed faults on the spot (exception exit);
 *   - the fixmap and pkmap ranges have pte tables, reachable in lowmem, and
 *     kmap_pte / pkmap_page_table point into them; one word of each table is
 *     read through its entry.
 * Under pv=xen, page-table pages and the frames the hypervisor keeps for
 * itself (asked by hypercall) must be mapped read-only instead, and the
 * paravirt boot map must show the shared-info page.
 * Only reads: writing every page would make QEMU allocate all guest RAM.
 */
#include "bootmem.h"
#include "fixmap.h"
#include "guest.h"
#include "hypercall.h"
#include "processor.h"
#include "sections.h"
#include "setup.h"
#include "xen.h"

#define MAX_REPORTED 8

static u32 errors;
static u32 read_only_pages;
static u32 hyp_pages;
/* pv=xen: [start, end) physical, the hypervisor's own frames (DOMINFO_HYP_FRAMES_*). */
static unsigned long hyp_frames_start, hyp_frames_end;
static volatile u32 touch_sink;

/* Where a walk ended: a leaf (4 KiB page or large page) or a problem. */
enum level { LEVEL_PGD, LEVEL_PMD, LEVEL_PTE };
static const char *const level_names[] = { "pgd", "pmd", "pte" };

struct lookup {
	enum level level;  /* how far the walk got */
	pteval_t entry;    /* the entry at that level */
	const char *problem;
	unsigned shift;    /* leaf size when no problem: 12, 21 or 22 */
	pte_t *pte;        /* the pte, once the walk reached a pte table */
};

static void report(unsigned long va, const struct lookup *l, const char *expected)
{
	if (errors++ < MAX_REPORTED)
		printk("selfcheck error va=0x%08lx level=%s entry=0x%llx problem=\"%s\" expected=\"%s\"\n",
		       va, level_names[l->level], (unsigned long long)l->entry, l->problem, expected);
}

/* A table page must be in lowmem to be reachable through __va(). */
static bool table_reachable(pteval_t entry)
{
	return (u64)(entry & (pteval_t)PAGE_MASK) < ((u64)max_low_pfn << PAGE_SHIFT) &&
	       !((u64)entry >> 32 & 0x7fffffff);
}

static void *table_of(pteval_t entry)
{
	return __va((unsigned long)entry & PAGE_MASK);
}

/* Walk va down the live tables (the build's paging mode). */
static bool lookup(unsigned long va, struct lookup *l)
{
	pmd_t *pmd;
	*l = (struct lookup){ .level = LEVEL_PGD };

	pgd_t *pgd = (pgd_t *)__va(read_cr3() & PAGE_MASK) + pgd_index(va);
	l->entry = pgd_val(*pgd);
	if (!(l->entry & _PAGE_PRESENT)) {
		l->problem = "not present";
		return false;
	}
#ifdef CONFIG_X86_PAE
	if (!table_reachable(l->entry)) {
		l->problem = "pmd table outside lowmem";
		return false;
	}
	pmd = (pmd_t *)table_of(l->entry) + pmd_index(va);
	l->level = LEVEL_PMD;
	l->entry = pmd_val(*pmd);
	if (!(l->entry & _PAGE_PRESENT)) {
		l->problem = "not present";
		return false;
	}
	if (l->entry & _PAGE_PSE) { /* PAE honours PS without CR4.PSE */
		l->shift = PMD_SHIFT;
		return true;
	}
#else
	pmd = (pmd_t *)pgd;
	if ((l->entry & _PAGE_PSE) && (read_cr4() & X86_CR4_PSE)) {
		l->shift = PMD_SHIFT;
		return true;
	}
#endif
	if (!table_reachable(l->entry)) {
		l->problem = "pte table outside lowmem";
		return false;
	}
	l->pte = (pte_t *)table_of(l->entry) + pte_index(va);
	l->level = LEVEL_PTE;
	l->entry = pte_val(*l->pte);
	if (!(l->entry & _PAGE_PRESENT)) {
		l->problem = "not present";
		return false;
	}
	l->shift = PAGE_SHIFT;
	(void)pmd;
	return true;
}

/*
 * pv=xen: the frames that are page tables (or the start-info page) and so
 * mapped read-only. The hypervisor's run is start-info, shared-info, then
 * only tables (docs/xen.md), and every page the boot allocator handed out
 * became a table; plus swapper_pg_dir and empty_zero_page.
 */
static bool hyp_frame(unsigned long pa)
{
	return pa >= hyp_frames_start && pa < hyp_frames_end;
}

static bool xen_read_only(unsigned long pa)
{
	if (hyp_frame(pa))
		return true;
	unsigned long start_info = __pa(xen_start_info) & PAGE_MASK;
	return pa == start_info || (pa > xen_start_info->shared_info && pa < boot_alloc_cursor) ||
	       pa == __pa(swapper_pg_dir) || pa == __pa(empty_zero_page);
}

/* A lowmem leaf must map va to va - PAGE_OFFSET, supervisor-only, writable
 * (read-only for a pv=xen page table). */
static bool leaf_ok(unsigned long va, struct lookup *l)
{
	unsigned long want = __pa(va) & ~((1UL << l->shift) - 1);
	bool read_only = xen_start_info && xen_read_only(want);
	if ((unsigned long)(l->entry & (pteval_t)PAGE_MASK & ~((1ULL << l->shift) - 1)) != want ||
	    ((u64)l->entry >> 32 & 0x7fffffff))
		l->problem = "wrong physical address";
	else if (!(l->entry & _PAGE_RW) && !read_only)
		l->problem = "read-only";
	else if ((l->entry & _PAGE_RW) && read_only)
		l->problem = "page-table page writable";
	else if (l->entry & _PAGE_USER)
		l->problem = "user-accessible";
	else {
		bool hyp = read_only && hyp_frame(want);
		read_only_pages += read_only && !hyp;
		hyp_pages += hyp;
		return true;
	}
	report(va, l, read_only ? "present read-only !user, pa = va - PAGE_OFFSET (a pv=xen table "
				  "or hypervisor frame)"
				: "present rw !user, pa = va - PAGE_OFFSET");
	return false;
}

static void touch(unsigned long va)
{
	touch_sink += *(volatile u32 *)va;
}

static void check_lowmem(void)
{
	unsigned long pfn = 0;
	while (pfn < max_low_pfn) {
		unsigned long va = PAGE_OFFSET + (pfn << PAGE_SHIFT);
		struct lookup l;
		if (!lookup(va, &l)) {
			report(va, &l, "a mapping for every lowmem page");
			pfn++;
			continue;
		}
		if (l.shift > PAGE_SHIFT) {
			/* A large page: one entry covers the rest of this pmd. */
			unsigned long n = (1UL << (l.shift - PAGE_SHIFT)) - (pfn & ((1UL << (l.shift - PAGE_SHIFT)) - 1));
			bool ok = leaf_ok(va, &l);
			for (; n && pfn < max_low_pfn; n--, pfn++)
				if (ok)
					touch(PAGE_OFFSET + (pfn << PAGE_SHIFT));
			continue;
		}
		/* 4 KiB pages: check the rest of this pte table in one go. */
		pte_t *pte = l.pte;
		for (unsigned idx = pte_index(va); idx < PTRS_PER_PTE && pfn < max_low_pfn;
		     idx++, pte++, pfn++) {
			va = PAGE_OFFSET + (pfn << PAGE_SHIFT);
			l.entry = pte_val(*pte);
			if (!(l.entry & _PAGE_PRESENT)) {
				l.problem = "not present";
				report(va, &l, "a mapping for every lowmem page");
				continue;
			}
			if (leaf_ok(va, &l))
				touch(va);
		}
	}
	printk("selfcheck lowmem pages=%lu va_end=0x%08lx\n", max_low_pfn,
	       PAGE_OFFSET + (max_low_pfn << PAGE_SHIFT));
}

/* The pte table that maps va: the walk must reach one (the fixmap and
 * pkmap ptes themselves are still empty). */
static pte_t *pte_table_for(unsigned long va)
{
	struct lookup l;
	lookup(va, &l);
	if (l.level != LEVEL_PTE) {
		if (!l.problem)
			l.problem = "large page where a pte table belongs";
		report(va, &l, "a pte table");
		return 0;
	}
	return l.pte - pte_index(va);
}

static void check_table_range(const char *name, unsigned long start, unsigned long end)
{
	unsigned long tables = 0, va = start;
	do {
		pte_t *table = pte_table_for(va);
		if (table) {
			touch((unsigned long)table); /* through the table's lowmem mapping */
			tables++;
		}
		va += PMD_SIZE;
	} while (va != end && va != 0);
	printk("selfcheck %s start=0x%08lx end=0x%08lx pte_tables=%lu\n", name, start, end, tables);
}

static void check_fixmap_and_pkmap(void)
{
	unsigned long fix_start = __fix_to_virt(__end_of_fixed_addresses - 1) & PMD_MASK;
	unsigned long fix_end = (FIXADDR_TOP + PMD_SIZE - 1) & PMD_MASK; /* 0: the wrap */
	check_table_range("fixmap", fix_start, fix_end);
	check_table_range("pkmap", PKMAP_BASE, PKMAP_BASE + PAGE_SIZE * LAST_PKMAP);

	struct lookup l;
	unsigned long kmap_va = __fix_to_virt(FIX_KMAP_BEGIN);
	lookup(kmap_va, &l);
	if (l.level != LEVEL_PTE || l.pte != kmap_pte) {
		l.problem = "kmap_pte is not the pte of FIX_KMAP_BEGIN";
		report(kmap_va, &l, "kmap_pte == walked pte");
	} else {
		touch((unsigned long)kmap_pte);
	}
	lookup(PKMAP_BASE, &l);
	if (l.level != LEVEL_PTE || l.pte != pkmap_page_table) {
		l.problem = "pkmap_page_table is not the pte of PKMAP_BASE";
		report(PKMAP_BASE, &l, "pkmap_page_table == walked pte");
	} else {
		touch((unsigned long)pkmap_page_table);
	}
}

/* pv=xen: the paravirt boot map shows the shared-info page. */
static void check_xen(void)
{
	unsigned long va = __fix_to_virt(FIX_PARAVIRT_BOOTMAP);
	struct lookup l;
	if (!lookup(va, &l)) {
		report(va, &l, "the shared-info page at FIX_PARAVIRT_BOOTMAP");
	} else if ((unsigned long)(l.entry & (pteval_t)PAGE_MASK) != xen_start_info->shared_info) {
		l.problem = "FIX_PARAVIRT_BOOTMAP maps another frame";
		report(va, &l, "the shared-info page");
	} else {
		touch(va);
	}
	printk("selfcheck xen read_only_pages=%u hyp_pages=%u shared_info_va=0x%08lx\n",
	       read_only_pages, hyp_pages, va);
}

/* The paging mode must be the build's: PG on, CR4.PAE iff CONFIG_X86_PAE. */
static bool check_mode(void)
{
#ifdef CONFIG_X86_PAE
	const bool want_pae = true;
#else
	const bool want_pae = false;
#endif
	if ((read_cr0() & X86_CR0_PG) && !!(read_cr4() & X86_CR4_PAE) == want_pae)
		return true;
	printk("selfcheck error cr0=0x%08lx cr4=0x%08lx problem=\"paging mode\" expected=\"PG=1 PAE=%d\"\n",
	       read_cr0(), read_cr4(), want_pae);
	errors++;
	return false;
}

int selfcheck(void)
{
	errors = 0;
	read_only_pages = hyp_pages = 0;
	if (xen_start_info) {
		hyp_frames_start = HYPERVISOR_domain_info(DOMINFO_HYP_FRAMES_START);
		hyp_frames_end = HYPERVISOR_domain_info(DOMINFO_HYP_FRAMES_END);
	}
	if (check_mode()) {
		check_lowmem();
		check_fixmap_and_pkmap();
		if (xen_start_info)
			check_xen();
	}
	if (errors) {
		printk("selfcheck failed errors=%u shown=%u\n", errors,
		       errors < MAX_REPORTED ? errors : MAX_REPORTED);
		return -1;
	}
	printk("selfcheck ok\n");
	return 0;
}
