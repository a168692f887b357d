/*
 * IDT for the 32 CPU exceptions. Every one ends in exception_report(), which
 * logs vector, EIP, CR2 and error code and exits with GUEST_EXIT_EXCEPTION,
 * so a broken mapping shows up as one clear line instead of a triple fault,
 * unless an armed probe expected the fault (entry.S asks probe_fixup first).
 */
#include "desc.h"
#include "guest.h"
#include "probes.h" /* struct exception_frame */
#include "processor.h"

#define KERNEL_CS 0x10
#define GATE_INTERRUPT_RING0 0x8e /* present, DPL 0, 32-bit interrupt gate */


extern const u32 exception_stubs[32];
static struct idt_gate idt[32] __aligned(8);

static const char *const exception_mnemonics[32] = {
	"DE", "DB", "NMI", "BP", "OF", "BR", "UD", "NM", "DF", "CSO", "TS", "NP",
	"SS", "GP", "PF", "15", "MF", "AC", "MC", "XM", "VE", "CP", "22", "23",
	"24", "25", "26", "27", "HV", "VC", "SX", "31",
};

void fill_idt(struct idt_gate idt[32], const u32 stubs[32], u16 selector)
{
	for (unsigned v = 0; v < 32; v++) {
		idt[v] = (struct idt_gate){
			.offset_low = (u16)stubs[v],
			.selector = selector,
			.type_attr = GATE_INTERRUPT_RING0,
			.offset_high = (u16)(stubs[v] >> 16),
		};
	}
}

/* pv=xen: the gates the hypervisor copies into the IDT it owns. */
const struct idt_gate *exception_gates(void)
{
	return idt;
}

void trap_init(void)
{
	fill_idt(idt, exception_stubs, KERNEL_CS);
	struct {
		u16 limit;
		u32 base;
	} __attribute__((packed)) descr = { sizeof(idt) - 1, (u32)idt };
	asm volatile("lidt %0" : : "m"(descr));
}

void __stop_point exception_report(struct exception_frame *f)
{
	static int reporting;
	barrier();
	if (reporting++) /* faulted while reporting: don't loop, just leave */
		guest_exit(GUEST_EXIT_EXCEPTION);
	printk("exception vector=%u (#%s) eip=0x%08x cr2=0x%08lx error=0x%x\n",
	       f->vector, exception_mnemonics[f->vector & 31], f->eip, read_cr2(), f->error_code);
	printk("exception regs eax=0x%08x ebx=0x%08x ecx=0x%08x edx=0x%08x esi=0x%08x edi=0x%08x "
	       "ebp=0x%08x cs=0x%x eflags=0x%08x cr3=0x%08lx cr4=0x%08lx\n",
	       f->eax, f->ebx, f->ecx, f->edx, f->esi, f->edi, f->ebp, f->cs, f->eflags,
	       read_cr3(), read_cr4());
	guest_exit(GUEST_EXIT_EXCEPTION);
}
