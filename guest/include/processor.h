/* CPU helpers: control registers, MSRs, CPUID and the features the guest uses. */
#ifndef GUEST_PROCESSOR_H
#define GUEST_PROCESSOR_H

#include "types.h"
#include "page.h"

#define X86_CR0_WP (1UL << 16) /* write protect: read-only pages bind ring 0 too */
#define X86_CR0_PG (1UL << 31)
#define X86_CR4_PSE (1UL << 4)
#define X86_CR4_PAE (1UL << 5)
#define X86_CR4_PGE (1UL << 7)

#define MSR_EFER 0xC0000080
#define EFER_NX (1UL << 11)

/* CPUID leaf 1 EDX and leaf 0x80000001 EDX bits. */
#define X86_FEATURE_PSE_BIT 3
#define X86_FEATURE_PAE_BIT 6
#define X86_FEATURE_PGE_BIT 13
#define X86_FEATURE_NX_BIT 20

/* guest_cpu_features: what the guest saw in CPUID (the harness reads it). */
#define GUEST_CPU_PSE (1u << 0)
#define GUEST_CPU_PGE (1u << 1)
#define GUEST_CPU_PAE (1u << 2)
#define GUEST_CPU_NX (1u << 3)
extern u32 guest_cpu_features;
#define cpu_has_pse (!!(guest_cpu_features & GUEST_CPU_PSE))
#define cpu_has_pge (!!(guest_cpu_features & GUEST_CPU_PGE))
#define cpu_has_pae (!!(guest_cpu_features & GUEST_CPU_PAE))
#define cpu_has_nx (!!(guest_cpu_features & GUEST_CPU_NX))

/* CPUID leaf 1 EDX bits the kernel may see (pv=xen hides PSE and PGE). */
extern u32 cpuid_leaf1_edx_mask;
void detect_cpu_features(void);

struct cpuid_regs {
	u32 eax, ebx, ecx, edx;
};

static inline struct cpuid_regs cpuid(u32 leaf)
{
	struct cpuid_regs r;
	asm volatile("cpuid" : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx) : "a"(leaf), "c"(0));
	return r;
}

static inline u32 cpuid_eax(u32 leaf) { return cpuid(leaf).eax; }
static inline u32 cpuid_edx(u32 leaf) { return cpuid(leaf).edx; }

#define DEFINE_CR(n)                                                          \
	static inline unsigned long read_cr##n(void)                          \
	{                                                                     \
		unsigned long v;                                              \
		asm volatile("mov %%cr" #n ", %0" : "=r"(v));                 \
		return v;                                                     \
	}                                                                     \
	static inline void write_cr##n(unsigned long v)                       \
	{                                                                     \
		asm volatile("mov %0, %%cr" #n : : "r"(v) : "memory");        \
	}
DEFINE_CR(0)
DEFINE_CR(2)
DEFINE_CR(3)
DEFINE_CR(4)
#undef DEFINE_CR

static inline u64 rdmsr(u32 msr)
{
	u32 lo, hi;
	asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((u64)hi << 32) | lo;
}

static inline void wrmsr(u32 msr, u64 v)
{
	asm volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}

/* CR4 bits the kernel has turned on (mmu_cr4_features), kept in step with CR4. */
extern unsigned long mmu_cr4_features;
static inline void set_in_cr4(unsigned long mask)
{
	mmu_cr4_features |= mask;
	write_cr4(read_cr4() | mask);
}

static inline void load_cr3(void *pgdir)
{
	write_cr3(__pa(pgdir));
}

/* Flush everything, global entries included: with PGE, clear CR4.PGE around a
 * CR3 reload; without it a CR3 reload is enough. */
static inline void __flush_tlb_all(void)
{
	if (cpu_has_pge) {
		unsigned long cr4 = read_cr4();
		write_cr4(cr4 & ~X86_CR4_PGE);
		write_cr3(read_cr3());
		write_cr4(cr4);
	} else {
		write_cr3(read_cr3());
	}
}

static inline void __noreturn halt_forever(void)
{
	for (;;)
		asm volatile("cli; hlt");
}

#endif
