/*
 * SMP bring-up, shaped like Linux 2.6.22 (arch/i386/kernel/apic.c
 * init_apic_mappings, smpboot.c do_boot_cpu / wakeup_secondary_cpu;
 * kernel-facts.md section 8): map the local APIC at FIX_APIC_BASE, copy the
 * real-mode trampoline below 1 MiB, INIT-SIPI-SIPI each AP through the
 * fixmap mapping of the ICR, and wait for its record. The APs' side is
 * trampoline.S. The BSP goes on whatever the APs did: the harness judges the
 * records (docs/guest-contract.md "SMP").
 */
#include "apic.h"
#include "desc.h"
#include "fixmap.h"
#include "guest.h"
#include "io.h"
#include "processor.h"
#include "setup.h"
#include "smp.h"
#include "string.h"
#include "work.h"

/* Zeroed bss: state 0 ("never started") until a CPU writes its record. */
struct smp_cpu_record smp_cpu_records[NR_CPUS] __aligned(64);
u32 smp_nr_cpus = 1;
u32 smp_cpus_up;
u32 smp_trampoline_pa = SMP_TRAMPOLINE_PA;

static bool apic_mapped;

/* The fixmap slot numbers as absolute ELF symbols, so that the harness reads
 * them from the symbol table (gcc 12 has no top-level asm with operands,
 * hence a function that is never called; .set makes the symbols absolute). */
static void __attribute__((used)) export_fixmap_symbols(void)
{
	asm(".globl __end_of_fixed_addresses\n\t.set __end_of_fixed_addresses, %c0\n\t"
	    ".globl FIX_APIC_BASE\n\t.set FIX_APIC_BASE, %c1\n\t"
	    ".globl FIX_KMAP_BEGIN\n\t.set FIX_KMAP_BEGIN, %c2\n\t"
	    ".globl FIX_VDSO\n\t.set FIX_VDSO, %c3"
	    :
	    : "i"(__end_of_fixed_addresses), "i"(FIX_APIC_BASE), "i"(FIX_KMAP_BEGIN), "i"(FIX_VDSO));
}

/* ---- Time: PIT channel 2 as a free-running 1.193182 MHz down counter. ----
 * Interrupts stay off, so no timer interrupt can be used; the PIT counts in
 * QEMU's virtual time, which under TCG follows the host clock. Channel 2 is
 * the speaker's: its gate is ours, the speaker output stays off. */
#define PIT_HZ 1193182u
#define PIT_CH2 0x42
#define PIT_MODE 0x43
#define PIT_PORT_B 0x61 /* bit 0: gate 2, bit 1: speaker data */

struct pit_clock {
	u16 last;
	u32 ticks;
};

static u16 pit_read(void)
{
	outb(0x80, PIT_MODE); /* latch channel 2 */
	u8 lo = inb(PIT_CH2);
	u8 hi = inb(PIT_CH2);
	return (u16)(lo | hi << 8);
}

static void pit_start(void)
{
	outb((u8)((inb(PIT_PORT_B) & ~0x02) | 0x01), PIT_PORT_B);
	outb(0xb4, PIT_MODE); /* channel 2, lo/hi byte, mode 2 (rate generator), binary */
	outb(0, PIT_CH2);     /* reload 0 = 65536: wraps every 55 ms */
	outb(0, PIT_CH2);
}

static void clock_init(struct pit_clock *c)
{
	c->last = pit_read();
	c->ticks = 0;
}

/* Ticks since clock_init; called more often than every 55 ms. */
static u32 clock_ticks(struct pit_clock *c)
{
	u16 now = pit_read();
	c->ticks += (u16)(c->last - now);
	c->last = now;
	return c->ticks;
}

static u32 us_to_ticks(u32 us) { return us * (PIT_HZ / 1000) / 1000 + 1; }
static u32 ticks_to_us(u32 t) { return t / (PIT_HZ / 1000) * 1000 + t % (PIT_HZ / 1000) * 1000 / (PIT_HZ / 1000); }

static void udelay(u32 us)
{
	struct pit_clock c;
	u32 want = us_to_ticks(us);
	clock_init(&c);
	while (clock_ticks(&c) < want)
		asm volatile("pause");
}

/* ---- Registers of this CPU, for its record. ---- */

static u32 this_apic_id(void) { return cpuid(1).ebx >> 24; }

/* IA32_EFER exists iff CPUID 0x80000001 EDX has NX or LM (Intel SDM); QEMU's
 * qemu32 has it with nx=on only. */
static bool cpu_has_efer(void)
{
	if (cpuid_eax(0x80000000) < 0x80000001)
		return false;
	return !!(cpuid_edx(0x80000001) & ((1u << X86_FEATURE_NX_BIT) | (1u << 29)));
}

static const char *state_name(u32 state)
{
	switch (state) {
	case SMP_STATE_NONE: return "none";
	case SMP_STATE_PROTECTED: return "protected-mode";
	case SMP_STATE_PAGE_OFFSET: return "running"; /* at PAGE_OFFSET, halted */
	case SMP_STATE_FAULTED: return "faulted";
	case SMP_STATE_BOOT_CPU: return "boot-cpu";
	}
	return "unknown";
}

static void print_record(u32 cpu)
{
	const volatile struct smp_cpu_record *r = &smp_cpu_records[cpu];
	u32 state = r->state;
	/* A CPU that never wrote its record is reported under the id it was sent. */
	u32 apic = state == SMP_STATE_NONE ? cpu : r->apic_id;
	printk("smp cpu=%u apic=%u state=%s cr0=0x%08x cr3=0x%08x cr4=0x%08x efer=0x%08x", cpu, apic,
	       state_name(state), r->cr0, r->cr3, r->cr4, r->efer_lo);
	if (state == SMP_STATE_FAULTED)
		printk(" vector=%u error=0x%x eip=0x%08x cr2=0x%08x", r->fault_vector, r->fault_error,
		       r->fault_eip, r->fault_cr2);
	printk("\n");
}

/*
 * Natively, after the self-check (setup.c): map the local APIC uncached at
 * FIX_APIC_BASE as 2.6.22 does for every CONFIG_X86_LOCAL_APIC kernel, and
 * fill the boot CPU's record (state 4), also when no AP is started.
 */
void init_apic_mappings(void)
{
	u32 ncpus = boot_options.smp_cpus ? boot_options.smp_cpus : 1;
	smp_nr_cpus = ncpus;

	if (cpuid_eax(0) >= 1 && (cpuid_edx(1) & (1u << X86_FEATURE_APIC_BIT))) {
		set_fixmap_nocache(FIX_APIC_BASE, APIC_DEFAULT_PHYS_BASE);
		apic_mapped = true;
		printk("apic base=0x%08lx va=0x%08lx\n", APIC_DEFAULT_PHYS_BASE, APIC_BASE_VA);
	} else {
		printk("apic none reason=\"CPUID.1:EDX.APIC clear\"\n");
	}

	u32 id = this_apic_id();
	if (id < NR_CPUS) {
		u64 efer = cpu_has_efer() ? rdmsr(MSR_EFER) : 0;
		smp_cpu_records[id] = (struct smp_cpu_record){
			.state = SMP_STATE_BOOT_CPU,
			.apic_id = id,
			.cr0 = read_cr0(),
			.cr3 = read_cr3(),
			.cr4 = read_cr4(),
			.efer_lo = (u32)efer,
			.efer_hi = (u32)(efer >> 32),
		};
		print_record(id);
	}
	smp_cpus_up = 1;
	/* smp_boot_cpus ends with this line; with smp=1 it is not called. */
	if (ncpus <= 1)
		printk("smp done cpus=1 up=1\n");
}

/* ---- The BSP's side of the start-up ---- */

/* Delays QEMU needs (measured, docs/guest.md "SMP"): none, INIT and STARTUP
 * are handled in order by the target vCPU. Real hardware wants 10 ms after
 * INIT and 200 us after each STARTUP; a token delay is kept for the shape. */
#ifndef INIT_DELAY_US /* (overridable for measurements) */
#define INIT_DELAY_US 10
#endif
#ifndef STARTUP_DELAY_US
#define STARTUP_DELAY_US 10
#endif
/* TCG starts an AP in well under 10 ms; with QEMU -smp 1 nobody answers. */
#ifndef AP_TIMEOUT_US
#define AP_TIMEOUT_US 100000
#endif

/* QEMU delivers at once (the busy bit reads 0); bounded anyway. */
static void apic_wait_icr_idle(void)
{
	for (u32 i = 0; i < 100000 && (apic_read(APIC_ICR) & APIC_ICR_BUSY); i++)
		asm volatile("pause");
}

static void send_ipi(u32 apicid, u32 icr)
{
	apic_write(APIC_ICR2, APIC_DEST_FIELD(apicid));
	apic_write(APIC_ICR, icr); /* the write of the low word sends */
	apic_wait_icr_idle();
}

/* INIT (assert, then deassert), then STARTUP twice with the trampoline's page
 * number as vector (2.6.22 wakeup_secondary_cpu, integrated APIC). */
static void wakeup_secondary_cpu(u32 apicid, u32 start_pa)
{
	send_ipi(apicid, APIC_INT_LEVELTRIG | APIC_INT_ASSERT | APIC_DM_INIT);
	send_ipi(apicid, APIC_INT_LEVELTRIG | APIC_DM_INIT);
	udelay(INIT_DELAY_US);
	for (int j = 0; j < 2; j++) {
		send_ipi(apicid, APIC_DM_STARTUP | (start_pa >> PAGE_SHIFT));
		udelay(STARTUP_DELAY_US);
	}
}

/* Wait until the AP's record says "at PAGE_OFFSET" or "faulted", or time out.
 * Returns the ticks waited. */
static u32 wait_for_ap(u32 apicid)
{
	const volatile u32 *state = &smp_cpu_records[apicid].state;
	struct pit_clock c;
	u32 timeout = us_to_ticks(AP_TIMEOUT_US);
	clock_init(&c);
	for (;;) {
		u32 s = *state;
		u32 t = clock_ticks(&c);
		if (s == SMP_STATE_PAGE_OFFSET || s == SMP_STATE_FAULTED || t >= timeout)
			return t;
		asm volatile("pause");
	}
}

extern struct idt_gate smp_ap_idt[32]; /* trampoline.S, bss */

/* The APs' IDT (PAGE_OFFSET address): every exception to the recording stub. */
static void setup_ap_idt(void)
{
	fill_idt(smp_ap_idt, smp_ap_exception_stubs, SMP_CS);
}

u32 smp_ap_wait_us[NR_CPUS]; /* how long the BSP waited for each AP */

void smp_boot_cpus(u32 ncpus)
{
	if (ncpus > NR_CPUS)
		ncpus = NR_CPUS; /* the command line refuses more */
	smp_nr_cpus = ncpus;

	if (apic_mapped) {
		/* startup_32_smp ORs these into the AP's CR4 (paging_init's choice). */
		mmu_cr4_features = read_cr4() & (X86_CR4_PSE | X86_CR4_PGE | X86_CR4_PAE);
		setup_ap_idt();
		size_t size = (size_t)(trampoline_end - trampoline_data);
		BUG_ON(size > PAGE_SIZE);
		memcpy(__va(SMP_TRAMPOLINE_PA), trampoline_data, size);
		pit_start();
		for (u32 apicid = 1; apicid < ncpus; apicid++) {
			if (apicid == this_apic_id())
				continue;
			wakeup_secondary_cpu(apicid, SMP_TRAMPOLINE_PA);
			smp_ap_wait_us[apicid] = ticks_to_us(wait_for_ap(apicid));
		}
	}

	u32 up = 0;
	for (u32 cpu = 0; cpu < ncpus; cpu++) {
		u32 s = smp_cpu_records[cpu].state;
		up += s == SMP_STATE_PAGE_OFFSET || s == SMP_STATE_BOOT_CPU;
		if (s != SMP_STATE_BOOT_CPU) /* the BSP's line came with init_apic_mappings */
			print_record(cpu);
	}
	smp_cpus_up = up;
	printk("smp done cpus=%u up=%u\n", ncpus, up);
}
