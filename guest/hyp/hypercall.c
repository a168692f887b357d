/*
 * The hypervisor's way in (docs/xen.md "Hypercalls"): it owns the IDT, which
 * lies in its own read-only pages, with the hypercall gate at 0x82 and the
 * kernel's exception gates copied in (HYPERVISOR_set_trap_table, as a Xen PV
 * kernel hands its trap table over). Every hypercall runs with CR0.WP cleared,
 * so the hypervisor can store into table pages and into its own state; the
 * domain runs with it set and cannot.
 */
#include "desc.h"
#include "hyp.h"
#include "processor.h"
#include "string.h"

#define HYP_IDT_GATES 256
#define EXCEPTION_GATES 32
#define GATE_INTERRUPT_RING0 0x8e /* present, DPL 0 (the domain runs in ring 0), 32-bit */

/*
 * The gate's entry: the number in %eax, arguments in %ebx, %ecx, %edx, the
 * result back in %eax, every other register as it was (pushal/popal, with the
 * result stored into pushal's %eax slot). The arguments are pushed again as
 * copies: the C side may clobber its argument slots. An interrupt gate: IF is
 * clear inside.
 */
extern char hyp_hypercall_entry[];
asm(".pushsection .text\n"
    ".type hyp_hypercall_entry, @function\n"
    "hyp_hypercall_entry:\n\t"
    "pushal\n\t"
    "cld\n\t"
    "pushl %edx\n\t"
    "pushl %ecx\n\t"
    "pushl %ebx\n\t"
    "pushl %eax\n\t"
    "call hyp_do_hypercall\n\t"
    "addl $16, %esp\n\t"
    "movl %eax, 28(%esp)\n\t"
    "popal\n\t"
    "iret\n"
    ".size hyp_hypercall_entry, . - hyp_hypercall_entry\n"
    ".popsection");
static struct idt_gate hyp_idt[HYP_IDT_GATES] __aligned(8);

struct idt_descr {
	u16 limit;
	u32 base;
} __attribute__((packed));

static void __noreturn crash(const char *reason, u32 value)
{
	printk("xen crash reason=\"%s\" addr=0x%x\n", reason, value);
	guest_exit(GUEST_EXIT_SELFCHECK);
}

/*
 * Before the domain starts: the exception gates of the IDT the CPU has now
 * (the boot's, read through sidt: memory, not a kernel symbol) so a fault in
 * between is still reported, and the hypercall gate; then the CPU's IDT is
 * this one for good.
 */
void hyp_trap_init(void)
{
	struct idt_descr cur, mine = { sizeof(hyp_idt) - 1, (u32)hyp_idt };
	u16 cs;

	asm volatile("sidt %0" : "=m"(cur));
	asm volatile("mov %%cs, %0" : "=r"(cs));
	unsigned bytes = cur.limit + 1u;
	if (bytes > EXCEPTION_GATES * sizeof(struct idt_gate))
		bytes = EXCEPTION_GATES * sizeof(struct idt_gate);
	memcpy(hyp_idt, (const void *)cur.base, bytes);
	u32 entry = (u32)hyp_hypercall_entry;
	hyp_idt[HYPERCALL_VECTOR] = (struct idt_gate){
		.offset_low = (u16)entry,
		.selector = cs,
		.type_attr = GATE_INTERRUPT_RING0,
		.offset_high = (u16)(entry >> 16),
	};
	asm volatile("lidt %0" : : "m"(mine));
}

/* The domain's 32 exception gates; the hypercall gate is not the domain's to set. */
static u32 set_trap_table(u32 gates_va)
{
	if (gates_va < PAGE_OFFSET || __pa(gates_va) + EXCEPTION_GATES * sizeof(struct idt_gate) >
					     hyp_domain.map_end)
		crash("set_trap_table of a table outside the domain's memory", gates_va);
	memcpy(hyp_idt, (const void *)gates_va, EXCEPTION_GATES * sizeof(struct idt_gate));
	return 0;
}

static u32 mmuext_op(u32 cmd, u32 arg1, u32 arg2)
{
	switch (cmd) {
	case MMUEXT_PIN_TABLE:
		hyp_pin(arg1);
		return 0;
	case MMUEXT_NEW_BASEPTR:
		hyp_new_baseptr(arg1);
		return 0;
	case MMUEXT_INVLPG:
		hyp_invlpg(arg1);
		return 0;
	case MMUEXT_ANNOUNCE:
		hyp_announce(arg1, (enum hyp_table_level)arg2);
		return 0;
	}
	crash("unknown mmuext_op", cmd);
}

static u32 domain_info(u32 what)
{
	switch (what) {
	case DOMINFO_POISONED_ENTRIES:
		return hyp_poisoned_entries;
	case DOMINFO_HYP_FRAMES_START:
		return __pa(__hyp_start);
	case DOMINFO_HYP_FRAMES_END:
		return __pa(__hyp_end);
	}
	crash("unknown domain_info query", what);
}

static u32 dispatch(u32 nr, u32 a1, u32 a2, u32 a3)
{
	switch (nr) {
	case __HYPERVISOR_mmu_update:
		return hyp_mmu_update_batch((const struct mmu_update *)a1, a2);
	case __HYPERVISOR_update_entry:
		return (u32)hyp_mmu_update((void *)a1, ((u64)a3 << 32) | a2);
	case __HYPERVISOR_mmuext_op:
		return mmuext_op(a1, a2, a3);
	case __HYPERVISOR_set_trap_table:
		return set_trap_table(a1);
	case __HYPERVISOR_domain_info:
		return domain_info(a1);
	case __HYPERVISOR_domain_exit:
		hyp_report();
		return 0;
	}
	crash("unknown hypercall", nr);
}

/* The gate entry's C side. WP is off for the whole call, on again before the iret;
 * an invlpg stores nothing and skips the two CR0 writes (each flushes the TLB
 * under TCG). */
u32 hyp_do_hypercall(u32 nr, u32 a1, u32 a2, u32 a3)
{
	if (nr == __HYPERVISOR_mmuext_op && a1 == MMUEXT_INVLPG) {
		hyp_invlpg(a2);
		return 0;
	}
	unsigned long cr0 = read_cr0();
	write_cr0(cr0 & ~X86_CR0_WP);
	u32 ret = dispatch(nr, a1, a2, a3);
	write_cr0(cr0);
	return ret;
}
