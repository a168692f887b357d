/*
 * start_kernel: what runs between head.S and paging_init, then the status
 * contract (docs/guest-contract.md): the command line; under pv=xen the
 * hypervisor stage, which enters the kernel again at xen_start_kernel; then
 * (setup_arch) CPU features from CPUID, the memory size, paging_init, the
 * "after" point, the optional fault probe, the self-check and the exit code.
 */
#include "bootmem.h"
#include "fixmap.h"
#include "guest.h"
#include "hypercall.h"
#include "multiboot.h"
#include "paravirt.h"
#include "processor.h"
#include "sections.h"
#include "setup.h"
#include "string.h"
#include "xen.h"
#include "work.h"

#ifndef GUEST_VARIANT
#error "the Makefile names the variant (GUEST_VARIANT)"
#endif
#ifndef GUEST_MUTANT
#define GUEST_MUTANT "none" /* MUTANT= of the Makefile: test-only builds */
#endif

struct boot_options boot_options = { .pv_backend = "native" };
u32 guest_cpu_features;
u32 cpuid_leaf1_edx_mask = ~0u;
unsigned long mmu_cr4_features;
unsigned long max_pfn;
unsigned long max_low_pfn;
#ifdef MUTANT_FIXADDR_TOP_OFF
unsigned long fixaddr_top = 0xffffe000; /* mutant: one page low */
#else
unsigned long fixaddr_top = 0xfffff000; /* __FIXADDR_TOP */
#endif

void detect_cpu_features(void)
{
	u32 features = 0;
	if (cpuid_eax(0) >= 1) {
		u32 edx = cpuid_edx(1) & cpuid_leaf1_edx_mask;
		if (edx & (1u << X86_FEATURE_PSE_BIT))
			features |= GUEST_CPU_PSE;
		if (edx & (1u << X86_FEATURE_PGE_BIT))
			features |= GUEST_CPU_PGE;
		if (edx & (1u << X86_FEATURE_PAE_BIT))
			features |= GUEST_CPU_PAE;
	}
	if (cpuid_eax(0x80000000) >= 0x80000001 &&
	    (cpuid_edx(0x80000001) & (1u << X86_FEATURE_NX_BIT)))
		features |= GUEST_CPU_NX;
	guest_cpu_features = features;
}

/* reservetop= natively, the hypervisor's area under pv=xen. */
void reserve_top_address(unsigned long reserve)
{
	fixaddr_top = -reserve - PAGE_SIZE;
	__VMALLOC_RESERVE += reserve;
}

/* noexec= as the kernel reads it: "on" only counts if the CPU has NX. */
static void noexec_setup(const struct boot_options *opts)
{
	if (opts->noexec == NOEXEC_ON && cpu_has_nx) {
		__supported_pte_mask |= _PAGE_NX;
		disable_nx = 0;
	} else if (opts->noexec == NOEXEC_OFF) {
		disable_nx = 1;
		__supported_pte_mask &= ~_PAGE_NX;
	}
}

static void __noreturn bad_boot(const char *reason)
{
	printk("boot error reason=\"%s\"\n", reason);
	guest_exit(GUEST_EXIT_BAD_CMDLINE);
}

/* max_pfn from the loader's mem_upper (KiB above 1 MiB) or, under pv=xen,
 * the start info's nr_pages; capped by mem=;
 * max_low_pfn = min(max_pfn, MAXMEM >> PAGE_SHIFT). */
static void setup_memory(const struct boot_options *opts)
{
	u64 ram_end;
	if (xen_start_info) {
		ram_end = (u64)xen_start_info->nr_pages << PAGE_SHIFT;
	} else {
		if (!(multiboot_info.flags & MULTIBOOT_INFO_MEMORY))
			bad_boot("the multiboot info has no memory size");
		ram_end = 0x100000ULL + ((u64)multiboot_info.mem_upper << 10);
	}
	if (opts->have_mem_limit && opts->mem_limit < ram_end)
		ram_end = opts->mem_limit;
	if (ram_end > 0x100000000ULL)
		ram_end = 0x100000000ULL; /* a 32-bit pfn space without PAE highmem above 4G */
	max_pfn = (unsigned long)(ram_end >> PAGE_SHIFT);
#ifdef MUTANT_MAX_PFN_OFF
	max_pfn--; /* mutant: one page short of the RAM end */
#endif
	max_low_pfn = max_pfn;
	if (max_low_pfn > (MAXMEM >> PAGE_SHIFT))
		max_low_pfn = MAXMEM >> PAGE_SHIFT;
	printk("mem mem_upper_kb=%u max_pfn=0x%lx max_low_pfn=0x%lx maxmem=0x%lx highmem_pages=%lu\n",
	       multiboot_info.mem_upper, max_pfn, max_low_pfn, MAXMEM, max_pfn - max_low_pfn);

	/* The boot tables and the pages allocated while the CPU still runs on
	 * them live in head.S's (or the hypervisor's) mapping; lowmem must at
	 * least cover it. */
	if ((max_low_pfn << PAGE_SHIFT) < init_map_end) {
		printk("boot error reason=\"lowmem ends at 0x%lx, below the boot mapping end 0x%lx\"\n",
		       max_low_pfn << PAGE_SHIFT, init_map_end);
		guest_exit(GUEST_EXIT_BAD_CMDLINE);
	}
}

/*
 * poison=: every u32 of the free pages [boot_alloc_start, init_map_end) and
 * (natively) every zero u32 of swapper_pg_dir past the 32 bytes a PAE build
 * turns into its PDPT. The boot allocator must still hand out zeroed pages;
 * code that takes "not all zero" for "present" now finds junk. Returns the
 * table words poisoned.
 */
static u32 poison_boot_memory(u32 pattern)
{
	u32 words = 0;
	/* Natively through head.S's identity mapping, which covers all of
	 * pg0's reach; under pv=xen through the hypervisor's PAGE_OFFSET one. */
	for (unsigned long pa = boot_alloc_start; pa < init_map_end; pa += PAGE_SIZE) {
		u32 *p = xen_start_info ? (u32 *)__va(pa) : (u32 *)pa;
		for (unsigned i = 0; i < PAGE_SIZE / 4; i++)
			p[i] = pattern;
	}
	if (!xen_start_info) {
		u32 *pgd = (u32 *)swapper_pg_dir;
		for (unsigned i = 32 / 4; i < PAGE_SIZE / 4; i++) {
			if (!pgd[i]) {
				pgd[i] = pattern;
				words++;
			}
		}
	}
	return words;
}

/* The build's two sides as absolute ELF symbols (docs/guest-contract.md), so a
 * harness given one kernel.elf knows which variant it is (gcc 12 has no
 * top-level asm with operands, hence a function never called). */
#ifdef CONFIG_X86_PAE
#define GUEST_PAE_VALUE 1
#else
#define GUEST_PAE_VALUE 0
#endif
#ifdef PREPATCH
#define GUEST_PREPATCH_VALUE 1
#else
#define GUEST_PREPATCH_VALUE 0
#endif
static void __attribute__((used)) export_variant_symbols(void)
{
	asm(".globl GUEST_PAE\n\t.set GUEST_PAE, %c0\n\t"
	    ".globl GUEST_PREPATCH\n\t.set GUEST_PREPATCH, %c1"
	    :
	    : "i"(GUEST_PAE_VALUE), "i"(GUEST_PREPATCH_VALUE));
}

static void print_banner(void)
{
	/* ELF note: namesz, descsz, type, "GNU\0", then the id bytes. */
	const u32 *note = (const u32 *)__build_id_start;
	const u8 *id = (const u8 *)(note + 3) + ((note[0] + 3) & ~3u);
	printk("guest variant=%s pae=%d prepatch=%d build_id=",
	       GUEST_VARIANT,
#ifdef CONFIG_X86_PAE
	       1,
#else
	       0,
#endif
#ifdef PREPATCH
	       1
#else
	       0
#endif
	);
	if (__build_id_end - __build_id_start >= 16)
		for (u32 i = 0; i < note[1]; i++)
			printk("%02x", id[i]);
	else
		printk("none");
	printk(" mutant=%s\n", GUEST_MUTANT);
}

/* The "after" snapshot point: called once, right after paging_init(). */
void __stop_point paging_init_done(void)
{
	barrier();
}

/* The "work" snapshot point: APs up, low mappings zapped, probes run, CR3 on
 * the second pagetable. */
void __stop_point work_done(void)
{
	barrier();
}

/* hang=early|late: spin for ever (before pagetable_init, or after paging_init_done),
 * so the harness's handling of a guest that never ends can be tested for real. */
static void __noreturn hang(const char *where)
{
	printk("hang at=%s\n", where);
	for (;;)
		asm volatile("pause");
}

/* fault=ADDR: read one word there; an unmapped ADDR proves the exception path. */
void __noinline fault_probe(unsigned long addr)
{
	printk("fault probe va=0x%08lx\n", addr);
	u32 value = *(volatile u32 *)addr;
	printk("fault probe va=0x%08lx value=0x%08x faulted=0\n", addr, value);
}

/* What the hypervisor stage needs from the boot, handed over at its entry. */
static void __noreturn start_hypervisor(const struct boot_options *opts)
{
	const struct hyp_boot_params params = {
		.poison = opts->poison,
		.mb_flags = multiboot_info.flags,
		.mb_mem_upper = multiboot_info.mem_upper,
		.pg_tables_end = init_pg_tables_end,
		.map_end = init_map_end,
	};
	hyp_start_domain(&params);
}

/* poke=ADDR (test-only): write one word at ADDR, the value it holds, so a
 * write the tables allow changes nothing. Under pv=xen the hypervisor's own
 * frames are read-only: a poke there must fault (docs/guest-contract.md). */
void __noinline poke_probe(unsigned long addr)
{
	printk("poke probe va=0x%08lx\n", addr);
	volatile u32 *p = (volatile u32 *)addr;
	*p = *p;
	printk("poke probe va=0x%08lx faulted=0\n", addr);
}

void __noreturn start_kernel(void)
{
	struct boot_options *opts = &boot_options;

	serial_init();
	trap_init();
	print_banner();

	if (multiboot_magic != MULTIBOOT_BOOTLOADER_MAGIC)
		bad_boot("not started by a multiboot loader");
	printk("cmdline text=\"%s\"\n", boot_command_line);
	if (boot_command_line_truncated)
		bad_boot("command line longer than the guest's buffer");
	if (parse_boot_options(boot_command_line, opts))
		guest_exit(GUEST_EXIT_BAD_CMDLINE);
	/* The hypervisor builds the domain and enters it at xen_start_kernel. */
	if (!strcmp(opts->pv_backend, "xen"))
		start_hypervisor(opts);
	if (paravirt_select(opts->pv_backend)) {
		printk("cmdline error word=\"pv=%s\" reason=\"unknown paravirt backend\"\n",
		       opts->pv_backend);
		guest_exit(GUEST_EXIT_BAD_CMDLINE);
	}
	setup_arch();
}

void __noreturn setup_arch(void)
{
	const struct boot_options *opts = &boot_options;

	detect_cpu_features();
	printk("cpu pse=%d pge=%d pae=%d nx=%d\n", cpu_has_pse, cpu_has_pge, cpu_has_pae, cpu_has_nx);
#ifdef CONFIG_X86_PAE
	/* The kernel refuses to run a PAE build on such a CPU. */
	if (!cpu_has_pae) {
		printk("unsupported cpu reason=\"PAE kernel on a CPU without PAE\"\n");
		guest_exit(GUEST_EXIT_UNSUPPORTED);
	}
#endif
	noexec_setup(opts);
	if (opts->have_reservetop)
		reserve_top_address(opts->reservetop);

	setup_memory(opts);
	bootmem_init(init_pg_tables_end, init_map_end);
	u32 poisoned = opts->poison ? poison_boot_memory(opts->poison) : 0;
	/* pg0_pages: head.S's tables, which are no part of a pv=xen domain's. */
	printk("boot init_pg_tables_end=0x%08lx init_map_end=0x%08lx pg0_pages=%lu "
	       "boot_alloc_start=0x%08lx init_end=0x%08lx\n",
	       init_pg_tables_end, init_map_end,
	       xen_start_info ? 0UL
			      : (init_pg_tables_end - __pa(PAGE_ALIGN((unsigned long)_end))) >> PAGE_SHIFT,
	       boot_alloc_start, (unsigned long)__init_end);
	printk("fixmap fixaddr_top=0x%08lx vmalloc_reserve=0x%08lx end_of_fixed_addresses=%u "
	       "fix_kmap_begin=%u pkmap_base=0x%08lx\n",
	       FIXADDR_TOP, __VMALLOC_RESERVE, (u32)__end_of_fixed_addresses, (u32)FIX_KMAP_BEGIN,
	       PKMAP_BASE);
	printk("pv backend=%s\n", paravirt_ops.name);
	if (opts->poison)
		printk("poison pattern=0x%08x pages=%lu entries=%u\n", opts->poison,
		       (init_map_end - boot_alloc_start) >> PAGE_SHIFT, poisoned + (xen_start_info ? HYPERVISOR_domain_info(DOMINFO_POISONED_ENTRIES) : 0));

	if (opts->hang == HANG_EARLY)
		hang("early");
	paging_init();
	paging_init_done();

	u32 alloc_pd = 0, alloc_pt = 0;
	for (u32 i = 0; i < pv_hook_log_len; i++) {
		alloc_pd += pv_hook_log[i].op == PV_HOOK_ALLOC_PD;
		alloc_pt += pv_hook_log[i].op == PV_HOOK_ALLOC_PT;
	}
	printk("paging_init done cr0=0x%08lx cr3=0x%08lx cr4=0x%08lx efer=0x%08lx alloc_pd=%u "
	       "alloc_pt=%u kmap_pte=%p pkmap_page_table=%p\n",
	       read_cr0(), read_cr3(), read_cr4(), cpu_has_nx ? (unsigned long)rdmsr(MSR_EFER) : 0UL,
	       alloc_pd, alloc_pt, (void *)kmap_pte, (void *)pkmap_page_table);

	if (opts->hang == HANG_LATE)
		hang("late");
	if (opts->have_fault)
		fault_probe(opts->fault_addr);
	if (opts->have_poke)
		poke_probe(opts->poke_addr);
	int selfcheck_failed = selfcheck();

	/* The tables at work, in the order a kernel uses them after paging_init:
	 * the APs start through the identity slot, then the low mappings go
	 * (mem_init / smp_cpus_done), then the first process's pgd_alloc. Also
	 * after a failed self-check: what the broken tables do is evidence too;
	 * the exit code still says the self-check failed. */
	if (!xen_start_info)
		init_apic_mappings();
	if (opts->smp_cpus > 1)
		smp_boot_cpus(opts->smp_cpus);
	zap_low_mappings();
	run_probes();
	second_pagetable();
	work_done();
	guest_exit(selfcheck_failed ? GUEST_EXIT_SELFCHECK : GUEST_EXIT_PASS);
}
