/*
 * Exception entry: one stub per vector 0-31. Each pushes a dummy error code
 * where the CPU pushes none, then the vector, saves the registers and asks
 * probe_fixup (probes.c) whether a probe is armed: if so the fault was
 * expected, it is recorded and execution resumes at the probe's recovery
 * point (probe_resume). Otherwise exception_report(frame) logs and exits
 * (traps.c): an unexpected fault still ends the boot with exit code 2.
 *
 * Also here: the probe harness itself (probe_call / probe_resume) and the
 * small access routines the probes run, each with its one faulting
 * instruction at a known place.
 */
	.text
	.code32

.macro exception_stub vec
	.balign 16
exception_stub_\vec:
	/* Vectors where the CPU pushes an error code itself. */
	.if !((\vec == 8) || ((\vec >= 10) && (\vec <= 14)) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30))
	pushl $0
	.endif
	pushl $\vec
	jmp exception_common
.endm

.irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	exception_stub \vec
.endr

exception_common:
	pushal
	pushl %esp			/* struct exception_frame * */
	call probe_fixup		/* 1: an armed probe took it (recorded, disarmed) */
	testl %eax, %eax
	jnz probe_resume
	addl $4, %esp			/* the callee may have changed its argument slot */
	pushl %esp
	call exception_report
1:	cli				/* exception_report does not return */
	hlt
	jmp 1b

/*
 * int probe_call(void (*fn)(unsigned long), unsigned long arg)
 *
 * Calls fn(arg) with probe_armed set and returns 0. If fn faults, the
 * exception path ends in probe_resume instead: the exception frame and
 * whatever fn had pushed (for a fetch fault, the return address of the call)
 * are abandoned, ESP goes back to where it was at the call, and probe_call
 * returns 1. Interrupt gates run on the same stack at the same privilege,
 * so nothing else needs undoing (IF is off throughout the guest).
 */
	.globl probe_call
probe_call:
	pushl %ebp
	movl %esp, %ebp
	pushl %ebx
	pushl %esi
	pushl %edi
	movl %esp, probe_resume_esp
	pushl 12(%ebp)			/* arg */
	movl $1, probe_armed
	call *8(%ebp)
	movl $0, probe_armed
	addl $4, %esp
	xorl %eax, %eax
probe_call_out:
	popl %edi
	popl %esi
	popl %ebx
	popl %ebp
	ret

probe_resume:
	movl probe_resume_esp, %esp
	movl $1, %eax
	jmp probe_call_out

/* The probes' access routines (cdecl, one argument). The labels name the
 * instruction that faults when the access is refused. */
	.balign 16
	.globl probe_text_ret
probe_text_ret:				/* exec-text: a fetch from .text */
	ret

	.balign 16
	.globl probe_read_word, probe_insn_read
probe_read_word:
	movl 4(%esp), %edx
probe_insn_read:
	movl (%edx), %eax
	ret

	.balign 16
	.globl probe_rewrite_word, probe_insn_rewrite
probe_rewrite_word:			/* write back what was read: a write that */
	movl 4(%esp), %edx		/* wrongly succeeds changes nothing */
	movl (%edx), %eax
probe_insn_rewrite:
	movl %eax, (%edx)
	ret

	.balign 16
	.globl probe_copy16
probe_copy16:				/* arg: struct probe_copy { dst; src; } * */
	movl 4(%esp), %ecx
	movl 4(%ecx), %edx		/* src */
	movl 0(%ecx), %ecx		/* dst */
	movl 0(%edx), %eax
	movl %eax, 0(%ecx)
	movl 4(%edx), %eax
	movl %eax, 4(%ecx)
	movl 8(%edx), %eax
	movl %eax, 8(%ecx)
	movl 12(%edx), %eax
	movl %eax, 12(%ecx)
	ret

	.section .rodata
	.balign 4
	.globl exception_stubs
exception_stubs:
.irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.long exception_stub_\vec
.endr

	.section .bss
	.balign 4
probe_resume_esp:			/* ESP of probe_call at the call of fn */
	.long 0
