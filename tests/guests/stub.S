/* A tiny multiboot guest for the harness-core tests: it boots, stops at
 * stub_ready (tests break there, write page tables into physical memory and
 * set CR0/CR3/CR4/EFER through gdb), then spins until exit_request is set,
 * and exits through isa-debug-exit with exit_request - 1. */
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0
    .text
    .code32
    .align 4
mb_header:
    .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

    .globl _start
_start:
    cli
    movl $stack_top, %esp
    .globl stub_ready
stub_ready:
    nop
    .globl spin
spin:
    pause
    movl exit_request, %eax
    testl %eax, %eax
    jz spin
    decl %eax
    movw $0xf4, %dx
    outb %al, %dx
1:  hlt
    jmp 1b

    .data
    .globl exit_request
exit_request:
    .long 0

    .bss
    .align 16
    .space 4096
stack_top:
