/*
 * Exception entry: one stub per vector 0-31. Each pushes a dummy error code
 * where the CPU pushes none, then the vector, saves the registers and calls
 * exception_report(frame), which logs and exits (traps.c).
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
	call exception_report
1:	cli				/* exception_report does not return */
	hlt
	jmp 1b

	.section .rodata
	.balign 4
	.globl exception_stubs
exception_stubs:
.irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.long exception_stub_\vec
.endr
