/*
 * How an application processor gets from real mode to PAGE_OFFSET, in the
 * shape of Linux 2.6.22's trampoline.S and head.S startup_32_smp
 * (kernel-facts.md section 8):
 *
 *   trampoline_data   16-bit template; smp_boot_cpus copies it to the page
 *                     SMP_TRAMPOLINE_PA, where the STARTUP IPI starts the AP
 *                     at CS = page << 8, IP = 0. GDT, CR0.PE, far jump to
 *                     startup_32_smp at its physical address.
 *   startup_32_smp    paging off, physical addresses: CR4 from the BSP,
 *                     EFER.NXE, CR3 = swapper_pg_dir; GDT, IDT and stack at
 *                     PAGE_OFFSET addresses; CR0.PG while still at the
 *                     identity address; far jump to the PAGE_OFFSET alias.
 *   ..._high          record the registers, state 2, halt for ever.
 *
 * The AP finds its record (smp_cpu_records[APIC id]) through CPUID, so it
 * needs no memory it has not been given. An AP never exits the machine.
 */
#include "page.h"
#include "smp.h"

#define PA(x) ((x) - __PAGE_OFFSET)

#define X86_CR0_PE 0x00000001
#define X86_CR0_PG 0x80000000
#define X86_CR4_PAE 0x00000020
#define MSR_EFER 0xC0000080
#define EFER_NX_BIT 11
#define CPUID_NX_BIT 20 /* CPUID 0x80000001 EDX */
#define CPUID_LM_BIT 29

/*
 * The real-mode trampoline. A template only: it runs at the copy in low
 * memory, never where it is linked, so it sits in .rodata and uses no
 * absolute address of its own (DS = CS = the trampoline page).
 */
	.section .rodata
	.balign 16
	.globl trampoline_data, trampoline_end
	.type trampoline_data, @object
	.code16
trampoline_data:
	cli
	movw %cs, %ax
	movw %ax, %ds
	/* 32-bit operand size: the full 32-bit GDT base (above 1 MiB). */
	lgdtl trampoline_gdt_descr - trampoline_data
	movl %cr0, %eax
	orl $X86_CR0_PE, %eax
	movl %eax, %cr0
	/* Paging is off: the kernel's code is at its physical address. */
	ljmpl $SMP_CS, $PA(startup_32_smp)

	.balign 4
trampoline_gdt_descr:
	.word smp_gdt_end - smp_gdt - 1
	.long PA(smp_gdt)
trampoline_end:
	.size trampoline_data, trampoline_end - trampoline_data
	.code32

	.text
	.code32

/* Every data segment register to the flat kernel data segment. */
.macro load_flat_data_segments
	movl $SMP_DS, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %fs
	movl %eax, %gs
	movl %eax, %ss
.endm

/* %ebx = this CPU's initial APIC id (CPUID.1:EBX[31:24]); an id without a
 * record halts at once, staying out of memory. Clobbers %eax, %ecx, %edx. */
.macro apic_id_or_halt
	movl $1, %eax
	cpuid
	shrl $24, %ebx
	cmpl $NR_CPUS, %ebx
	jae smp_ap_halt
.endm

/* CPUID leaf 0x80000001 into %eax..%edx, or on to \missing when the CPU has
 * no extended leaves that far. */
.macro cpuid_ext1 missing
	movl $0x80000000, %eax
	cpuid
	cmpl $0x80000000, %eax
	jbe \missing
	movl $0x80000001, %eax
	cpuid
.endm

/*
 * Entered from the trampoline: protected mode, flat segments, paging off,
 * every memory reference physical (PA(...)).
 *   %ebp: APIC id   %esi: byte offset of its record
 */
	.globl startup_32_smp
	.type startup_32_smp, @function
startup_32_smp:
	cld
	load_flat_data_segments
	apic_id_or_halt
	movl %ebx, %ebp
	imull $SMP_REC_SIZE, %ebp, %esi
	movl %ebp, PA(smp_cpu_records) + SMP_REC_APIC_ID(%esi)
	movl $SMP_STATE_PROTECTED, PA(smp_cpu_records) + SMP_REC_STATE(%esi)

	/* The BSP's paging features (PSE, PGE, PAE) before CR3 and PG. */
	movl PA(mmu_cr4_features), %eax
	movl %cr4, %edx
	orl %eax, %edx
	movl %edx, %cr4

	/* PAE and a CPU with NX: EFER.NXE, as 2.6.22's head.S decides it (CPUID,
	 * not nx_enabled), so with noexec=off an AP sets NXE where the BSP did
	 * not (kernel-facts.md section 8). Without it the NX bits of the
	 * kernel's leaves would be reserved bits. */
	testl $X86_CR4_PAE, %edx
	jz 1f
	cpuid_ext1 1f
	btl $CPUID_NX_BIT, %edx
	jnc 1f
	movl $MSR_EFER, %ecx
	rdmsr
	btsl $EFER_NX_BIT, %eax
	wrmsr
1:
	movl $PA(swapper_pg_dir), %eax
	movl %eax, %cr3

	/* Tables and stack at PAGE_OFFSET addresses, loaded now so that a fault
	 * on the very next fetch after CR0.PG (no identity mapping) is delivered
	 * through memory that is mapped. From here until PG is on: no segment
	 * load, no push (these bases mean nothing without paging). */
	lgdt PA(smp_gdt_descr)
	lidt PA(smp_ap_idt_descr)
	imull $SMP_AP_STACK_SIZE, %ebp, %esp
	addl $(smp_ap_stacks + SMP_AP_STACK_SIZE), %esp

	movl %cr0, %eax
	orl $X86_CR0_PG, %eax
	movl %eax, %cr0
	/* Fetched at its identity address (kernel-facts.md section 8): without
	 * the low identity mapping this is where the AP faults (#PF, CR2 =
	 * EIP = PA(startup_32_smp_after_pg)). */
	.globl startup_32_smp_after_pg
startup_32_smp_after_pg:
	ljmp $SMP_CS, $startup_32_smp_high

startup_32_smp_high:
	load_flat_data_segments
	apic_id_or_halt
	imull $SMP_REC_SIZE, %ebx, %edi
	addl $smp_cpu_records, %edi
	call smp_ap_record_regs
	movl $SMP_STATE_PAGE_OFFSET, SMP_REC_STATE(%edi)	/* last: the BSP polls it */
smp_ap_halt:
	cli
	hlt
	jmp smp_ap_halt
	.size startup_32_smp, . - startup_32_smp

/*
 * %ebx = APIC id, %edi = its record (PAGE_OFFSET address): store APIC id,
 * CR0, CR3, CR4 and EFER (0 where the CPU has none: the SDM's condition is
 * CPUID 0x80000001 EDX NX or LM). Clobbers %eax, %ebx, %ecx, %edx, %esi.
 */
	.type smp_ap_record_regs, @function
smp_ap_record_regs:
	movl %ebx, SMP_REC_APIC_ID(%edi)
	movl %cr0, %eax
	movl %eax, SMP_REC_CR0(%edi)
	movl %cr3, %eax
	movl %eax, SMP_REC_CR3(%edi)
	movl %cr4, %eax
	movl %eax, SMP_REC_CR4(%edi)
	xorl %esi, %esi
	xorl %ebx, %ebx
	cpuid_ext1 1f
	testl $((1 << CPUID_NX_BIT) | (1 << CPUID_LM_BIT)), %edx
	jz 1f
	movl $MSR_EFER, %ecx
	rdmsr
	movl %eax, %esi
	movl %edx, %ebx
1:	movl %esi, SMP_REC_EFER_LO(%edi)
	movl %ebx, SMP_REC_EFER_HI(%edi)
	ret
	.size smp_ap_record_regs, . - smp_ap_record_regs

/*
 * The AP's exception entry (its own IDT, smp.c fills it from
 * smp_ap_exception_stubs): one stub per vector 0-31, a dummy error code
 * where the CPU pushes none, then record state 3 with vector, error code,
 * EIP, CR2 and the registers, and halt for ever.
 */
.macro ap_exception_stub vec
	.balign 8
smp_ap_exception_stub_\vec:
	.if !((\vec == 8) || ((\vec >= 10) && (\vec <= 14)) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30))
	pushl $0
	.endif
	pushl $\vec
	jmp smp_ap_exception_common
.endm

.irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	ap_exception_stub \vec
.endr

	.type smp_ap_exception_common, @function
smp_ap_exception_common:
	movl $SMP_DS, %eax		/* whatever DS was: the flat one */
	movl %eax, %ds
	movl %eax, %es
	apic_id_or_halt
	imull $SMP_REC_SIZE, %ebx, %edi
	addl $smp_cpu_records, %edi
	popl SMP_REC_FAULT_VECTOR(%edi)
	popl SMP_REC_FAULT_ERROR(%edi)
	popl SMP_REC_FAULT_EIP(%edi)
	movl %cr2, %eax
	movl %eax, SMP_REC_FAULT_CR2(%edi)
	call smp_ap_record_regs
	movl $SMP_STATE_FAULTED, SMP_REC_STATE(%edi)
	jmp smp_ap_halt
	.size smp_ap_exception_common, . - smp_ap_exception_common

	.section .rodata
	.balign 4
	.globl smp_ap_exception_stubs
	.type smp_ap_exception_stubs, @object
smp_ap_exception_stubs:
.irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.long smp_ap_exception_stub_\vec
.endr
	.size smp_ap_exception_stubs, . - smp_ap_exception_stubs

/*
 * The AP's GDT: head.S's flat layout (code 0x10, data 0x18). The trampoline
 * loads it through its physical address, startup_32_smp again through its
 * PAGE_OFFSET one just before paging goes on.
 */
	.section .data
	.balign 8
smp_gdt:
	.quad 0				/* null */
	.quad 0				/* unused */
	.quad 0x00cf9a000000ffff	/* 0x10: flat 4 GiB code, ring 0 */
	.quad 0x00cf92000000ffff	/* 0x18: flat 4 GiB data, ring 0 */
smp_gdt_end:

	.balign 4
	.word 0
smp_gdt_descr:
	.word smp_gdt_end - smp_gdt - 1
	.long smp_gdt
	.word 0
	.globl smp_ap_idt_descr
	.type smp_ap_idt_descr, @object
smp_ap_idt_descr:
	.word 32 * 8 - 1
	.long smp_ap_idt
	.size smp_ap_idt_descr, . - smp_ap_idt_descr

	.section .bss
	.balign 8
	.globl smp_ap_idt
	.type smp_ap_idt, @object
smp_ap_idt:
	.skip 32 * 8
	.size smp_ap_idt, . - smp_ap_idt
	.balign 16
	.globl smp_ap_stacks
	.type smp_ap_stacks, @object
smp_ap_stacks:			/* one per APIC id, indexed like the records */
	.skip NR_CPUS * SMP_AP_STACK_SIZE
	.size smp_ap_stacks, . - smp_ap_stacks
