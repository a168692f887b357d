/*
 * The hypervisor builds the domain's start-of-day pagetable the way Xen does
 * (docs/xen.md "The start-of-day pagetable"): already in the kernel's paging
 * mode, the kernel mapped at PAGE_OFFSET with 4 KiB pages only, every
 * page-table page mapped read-only, and an area from HYPERVISOR_VIRT_START up
 * with mappings of its own. Then it moves the CPU onto it and starts the
 * domain with a start-info block.
 *
 * It runs on head.S's boot tables, which map [0, init_map_end) at PAGE_OFFSET
 * and are only the vehicle that got it into protected mode with paging; what
 * it needs of them comes in struct hyp_boot_params, not through symbols.
 */
#include "hyp.h"
#include "multiboot.h"
#include "processor.h"
#include "string.h"

/* Xen maps at least this far past its bootstrap tables, in these units. */
#define XEN_MAP_SLACK (4UL << 20)
#define XEN_MAP_ALIGN (4UL << 20)

#ifdef MUTANT_HYP_LEAF_FLAGS
#define HYP_LEAF_RW 0x067 /* mutant: USER set too */
#else
#define HYP_LEAF_RW 0x063 /* P RW A D */
#endif
#define HYP_LEAF_RO 0x061 /* P A D: page-table pages, the start-info page, the hypervisor's own */
#define HYP_DIR_ENTRY 0x067 /* _PAGE_TABLE */
#define HYP_PDPT_ENTRY 0x001

struct hyp_domain hyp_domain;
u32 hyp_poisoned_entries;
/* The kernel's hand-over at the entry, kept in the hypervisor's own pages. */
static struct hyp_boot_params boot;

bool hyp_own_frame(u32 pfn)
{
	return pfn >= __pa(__hyp_start) >> PAGE_SHIFT && pfn < PFN_UP(__pa(__hyp_end));
}

static pteval_t *frame(u32 pfn)
{
	return __va((unsigned long)pfn << PAGE_SHIFT);
}

static pteval_t entry_to(u32 pfn, pteval_t flags)
{
	return ((pteval_t)pfn << PAGE_SHIFT) | flags;
}

u64 hyp_built_area_entry(unsigned i)
{
	if (i == 0)
		return entry_to(hyp_domain.area_pte_pfn[0], HYP_DIR_ENTRY);
	if (i == HYP_AREA_CHUNKS - 1)
		return entry_to(hyp_domain.area_pte_pfn[1], HYP_DIR_ENTRY);
	return 0;
}

/* A maps the start-info and shared-info frames from HVS; B maps A at the
 * first page of the last chunk. */
u64 hyp_built_area_pte(unsigned which, unsigned idx)
{
	if (which == 0 && idx == 0)
		return entry_to(hyp_domain.start_info_pfn, HYP_LEAF_RO);
	if (which == 0 && idx == 1)
		return entry_to(hyp_domain.shared_info_pfn, HYP_LEAF_RO);
	if (which == 1 && idx == 0)
		return entry_to(hyp_domain.area_pte_pfn[0], HYP_LEAF_RO);
	return 0;
}

static void __noreturn refuse(enum guest_exit_code code, const char *reason)
{
	printk("xen hypervisor error reason=\"%s\"\n", reason);
	guest_exit(code);
}

/* RAM as the multiboot loader reports it, in pages (capped at 4 GiB). */
static u32 ram_pages(void)
{
	if (!(boot.mb_flags & MULTIBOOT_INFO_MEMORY))
		refuse(GUEST_EXIT_BAD_CMDLINE, "the multiboot info has no memory size");
	u64 end = 0x100000ULL + ((u64)boot.mb_mem_upper << 10);
	if (end > 0x100000000ULL)
		end = 0x100000000ULL;
	return (u32)(end >> PAGE_SHIFT);
}

/*
 * Place the frames: one run from PAGE_ALIGN(init_pg_tables_end) holding the
 * start-info page, the shared-info page, PTE pages A and B, then pt_base
 * (the PGD, or the PDPT page and the slot-3 pmd page), then the PTE pages of
 * the kernel mapping. The mapping must cover the run plus 4 MiB, rounded to
 * 4 MiB, and the run holds the PTE pages of that mapping: take the least
 * count that satisfies both (iterating from zero only ever grows it).
 */
static void place_frames(void)
{
	struct hyp_domain *d = &hyp_domain;
	u32 first = PFN_UP(boot.pg_tables_end);
	const u32 dir_frames = PTRS_PER_PMD > 1 ? 2 : 1;
	u64 ram = (u64)d->nr_pages << PAGE_SHIFT;
	u32 ptes = 0;

	d->start_info_pfn = first;
	d->shared_info_pfn = first + 1;
	d->area_pte_pfn[0] = first + 2;
	d->area_pte_pfn[1] = first + 3;
	d->pt_base_pfn = first + 4;
	d->kernel_pmd_pfn = PTRS_PER_PMD > 1 ? first + 5 : 0;
	d->kernel_pte_pfn = d->pt_base_pfn + dir_frames;
	for (;;) {
		u64 run_end = (u64)(d->kernel_pte_pfn + ptes) << PAGE_SHIFT;
		u64 map_end = (run_end + XEN_MAP_SLACK + XEN_MAP_ALIGN - 1) & ~(u64)(XEN_MAP_ALIGN - 1);
		if (map_end > ram)
			map_end = ram;
		if (map_end < run_end)
			refuse(GUEST_EXIT_BAD_CMDLINE, "RAM ends inside the hypervisor's bootstrap tables");
		u32 need = (u32)((map_end + PMD_SIZE - 1) >> PMD_SHIFT); /* a PTE page per pmd */
		if (need == ptes) {
			d->map_end = (unsigned long)map_end;
			break;
		}
		ptes = need;
	}
	d->tables_end_pfn = d->kernel_pte_pfn + ptes;
	/* The run is written through head.S's mapping. */
	BUG_ON(((unsigned long)d->tables_end_pfn << PAGE_SHIFT) > boot.map_end);
}

static bool read_only_frame(u32 pfn)
{
	const struct hyp_domain *d = &hyp_domain;
	return pfn == d->start_info_pfn || (pfn >= d->area_pte_pfn[0] && pfn < d->tables_end_pfn) ||
	       hyp_own_frame(pfn);
}

static void build_tables(void)
{
	struct hyp_domain *d = &hyp_domain;
	const u32 pte_first = d->kernel_pte_pfn;
	pteval_t *dir;

	for (u32 pfn = d->start_info_pfn; pfn < d->tables_end_pfn; pfn++)
		memset(frame(pfn), 0, PAGE_SIZE);

	/* The kernel mapping: every frame below map_end, 4 KiB pages. */
	for (u32 pfn = 0; pfn < PFN_UP(d->map_end); pfn++)
		frame(pte_first + pfn / HYP_ENTRIES)[pfn % HYP_ENTRIES] =
			entry_to(pfn, read_only_frame(pfn) ? HYP_LEAF_RO : HYP_LEAF_RW);

#ifdef CONFIG_X86_PAE
	frame(d->pt_base_pfn)[HYP_KERNEL_SLOT] = entry_to(d->kernel_pmd_pfn, HYP_PDPT_ENTRY);
	dir = frame(d->kernel_pmd_pfn);
	const u32 kernel_first = 0; /* PAGE_OFFSET is the start of slot 3 */
#else
	dir = frame(d->pt_base_pfn);
	const u32 kernel_first = PAGE_OFFSET >> PGDIR_SHIFT;
#endif
	for (u32 i = 0; pte_first + i < d->tables_end_pfn; i++)
		dir[kernel_first + i] = entry_to(pte_first + i, HYP_DIR_ENTRY);
	BUG_ON(kernel_first + (d->tables_end_pfn - pte_first) > HYP_AREA_FIRST);

	/* The hypervisor's area. */
	for (unsigned i = 0; i < HYP_AREA_CHUNKS; i++)
		dir[HYP_AREA_FIRST + i] = hyp_built_area_entry(i);
	for (unsigned which = 0; which < 2; which++)
		for (unsigned idx = 0; idx < 2; idx++)
			frame(d->area_pte_pfn[which])[idx] = hyp_built_area_pte(which, idx);

	/* Its own table frames. */
	hyp_set_frame_type(d->area_pte_pfn[0], HYP_FRAME_L1);
	hyp_set_frame_type(d->area_pte_pfn[1], HYP_FRAME_L1);
	for (u32 pfn = pte_first; pfn < d->tables_end_pfn; pfn++)
		hyp_set_frame_type(pfn, HYP_FRAME_L1);
#ifdef CONFIG_X86_PAE
	hyp_set_frame_type(d->kernel_pmd_pfn, HYP_FRAME_L2);
	hyp_set_frame_type(d->pt_base_pfn, HYP_FRAME_L3);
#else
	hyp_set_frame_type(d->pt_base_pfn, HYP_FRAME_L2);
#endif
}

/* Empty entries of table t below index end become the pattern, so that a
 * kernel which takes "not all zero" for "present" trips over them. */
static void poison_entries(pteval_t *t, unsigned end, u32 pattern)
{
	for (unsigned i = 0; i < end; i++) {
		if (!(t[i] & _PAGE_PRESENT)) {
			t[i] = pattern;
			hyp_poisoned_entries++;
		}
	}
}

/* poison=: the directory below the area (never the PDPT), then the PTE
 * pages of the kernel mapping (never A or B). */
static void poison_tables(u32 pattern)
{
	const struct hyp_domain *d = &hyp_domain;
#ifdef CONFIG_X86_PAE
	poison_entries(frame(d->kernel_pmd_pfn), HYP_AREA_FIRST, pattern);
#else
	poison_entries(frame(d->pt_base_pfn), HYP_AREA_FIRST, pattern);
#endif
	for (u32 pfn = d->kernel_pte_pfn; pfn < d->tables_end_pfn; pfn++)
		poison_entries(frame(pfn), HYP_ENTRIES, pattern);
}

static struct start_info *fill_start_info(void)
{
	const struct hyp_domain *d = &hyp_domain;
	struct start_info *si = (struct start_info *)frame(d->start_info_pfn);
	*si = (struct start_info){
		.magic = XEN_START_INFO_MAGIC,
		.nr_pages = d->nr_pages,
		.shared_info = d->shared_info_pfn << PAGE_SHIFT,
		.pt_base = (u32)(unsigned long)frame(d->pt_base_pfn),
		.nr_pt_frames = d->tables_end_pfn - d->pt_base_pfn,
		.hypervisor_virt_start = HYPERVISOR_VIRT_START,
		.reserve_top = XEN_RESERVE_TOP,
		.flags = 0,
	};
	return si;
}

/* Move the CPU from head.S's tables onto pt_base, then enforce read-only in
 * ring 0 too (CR0.WP). head.S's directory (swapper_pg_dir, found through CR3)
 * is left empty for the kernel. */
static void switch_to_domain_tables(void)
{
	unsigned long pt_base_pa = (unsigned long)hyp_domain.pt_base_pfn << PAGE_SHIFT;
	pteval_t *boot_dir = __va(read_cr3() & PAGE_MASK);
#ifdef CONFIG_X86_PAE
	/* Still non-PAE on swapper_pg_dir: its first 32 bytes become the PDPT the
	 * CPU loads when CR4.PAE goes on (only identity PDEs 0..7 are clobbered;
	 * PAGE_OFFSET stays mapped), then CR3 moves to pt_base. */
	for (unsigned i = 0; i < PTRS_PER_PGD; i++)
		((volatile u64 *)boot_dir)[i] = frame(hyp_domain.pt_base_pfn)[i];
	write_cr4(read_cr4() | X86_CR4_PAE);
#endif
	write_cr3(pt_base_pa);
	memset(boot_dir, 0, PAGE_SIZE);
	write_cr0(read_cr0() | X86_CR0_WP);
}

void __noreturn hyp_start_domain(const struct hyp_boot_params *params)
{
	struct hyp_domain *d = &hyp_domain;

	boot = *params;
	hyp_trap_init();
#ifdef CONFIG_X86_PAE
	/* A PAE domain runs in PAE from its first instruction. */
	if (!(cpuid_edx(1) & (1u << X86_FEATURE_PAE_BIT)))
		refuse(GUEST_EXIT_UNSUPPORTED, "a PAE domain needs a CPU with PAE");
#endif
	d->nr_pages = ram_pages();
	place_frames();
	build_tables();
	if (boot.poison)
		poison_tables(boot.poison);
	struct start_info *si = fill_start_info();
	printk("xen hypervisor hvs=0x%08lx nr_pages=0x%x start_info=0x%08x shared_info=0x%08x "
	       "area_pte=0x%08x,0x%08x pt_base=0x%08x nr_pt_frames=%u xen_map_end=0x%08lx "
	       "tables_end=0x%08x\n",
	       HYPERVISOR_VIRT_START, d->nr_pages, d->start_info_pfn << PAGE_SHIFT,
	       si->shared_info, d->area_pte_pfn[0] << PAGE_SHIFT, d->area_pte_pfn[1] << PAGE_SHIFT,
	       si->pt_base, si->nr_pt_frames, d->map_end, d->tables_end_pfn << PAGE_SHIFT);

	hyp_mm_start(); /* its last store into its own pages before WP goes on */
	switch_to_domain_tables();
	xen_start_kernel(si);
}
