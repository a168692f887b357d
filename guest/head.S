/*
 * The boot stage, in the spirit of Linux 2.6.22 arch/i386/kernel/head.S.
 *
 * QEMU's multiboot loader puts the image at physical 1 MiB and jumps to the
 * physical entry point start_phys with paging off. Until paging is on, every
 * memory reference is to the physical address PA(symbol).
 *
 * Steps: flat GDT; clear bss; save the multiboot info and command line (the
 * loader left them right after the image, where pg0 is about to go); build
 * the non-PAE boot tables (identity + PAGE_OFFSET, even in a PAE build);
 * turn paging on; continue at PAGE_OFFSET with start_kernel().
 */
#include "page.h"
#include "multiboot.h"

#define PA(x) ((x) - __PAGE_OFFSET)

#define BOOT_CS 0x10
#define BOOT_DS 0x18

/* head.S's boot tables are present + rw + user, in the PTEs and the PDEs. */
#define BOOT_PTE_FLAGS 0x007
#ifdef MUTANT_BOOT_PDE_FLAGS
#define BOOT_PDE_FLAGS 0x003 /* mutant: the PDEs lose USER */
#else
#define BOOT_PDE_FLAGS BOOT_PTE_FLAGS
#endif
/* Byte offset of the first PAGE_OFFSET PDE (index 768) in swapper_pg_dir. */
#define KERNEL_PDE_BYTES ((__PAGE_OFFSET >> 22) * 4)
#define BOOT_STACK_SIZE 16384

	.section .multiboot, "a"
	.balign 4
multiboot_header:
	.long MULTIBOOT_HEADER_MAGIC
	.long MULTIBOOT_HEADER_WANT_MEMINFO
	.long -(MULTIBOOT_HEADER_MAGIC + MULTIBOOT_HEADER_WANT_MEMINFO)

	.section .text.head, "ax"
	.code32
	.globl start
start:
	cli
	cld
	movl %eax, %ebp			/* loader magic; %ebx = info (physical) */
	lgdt PA(boot_gdt_descr)
	ljmp $BOOT_CS, $PA(1f)
1:	movl $BOOT_DS, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %fs
	movl %eax, %gs
	movl %eax, %ss

	/* Zero the bss: swapper_pg_dir must start empty. */
	movl $PA(__bss_start), %edi
	movl $PA(__bss_stop), %ecx
	subl %edi, %ecx
	shrl $2, %ecx
	xorl %eax, %eax
	rep stosl

	/* Save what the loader passed before pg0 overwrites it. Without the
	 * multiboot magic %ebx means nothing: start_kernel reports that. */
	movl %ebp, PA(multiboot_magic)
	cmpl $MULTIBOOT_BOOTLOADER_MAGIC, %ebp
	jne 3f
	movl %ebx, %esi
	movl $PA(multiboot_info), %edi
	movl $(MULTIBOOT_INFO_SAVED / 4), %ecx
	rep movsl
	testl $MULTIBOOT_INFO_CMDLINE, (%ebx)
	jz 3f
	movl 16(%ebx), %esi
	movl $PA(boot_command_line), %edi
	movl $(COMMAND_LINE_SIZE - 1), %ecx
2:	lodsb
	testb %al, %al
	jz 3f
	stosb
	loop 2b
	cmpb $0, (%esi)			/* buffer full: was that the end? */
	je 3f
	movl $1, PA(boot_command_line_truncated)
3:
	/*
	 * Boot tables: pg0 pages right after the image, filled with
	 * phys | 0x007 counting up from physical 0; each one entered at PDE i
	 * (identity) and PDE 768 + i (PAGE_OFFSET). Whole pg0 pages are added
	 * until the mapping covers the tables themselves plus
	 * INIT_MAP_BEYOND_END.
	 *   %edi: next PTE slot   %edx: next identity PDE   %eax: next PTE value
	 */
	movl $PA(pg0), %edi
	movl $PA(swapper_pg_dir), %edx
	movl $BOOT_PTE_FLAGS, %eax
#ifdef MUTANT_BOOT_EXTRA_PG0
	xorl %esi, %esi
#endif
4:	leal BOOT_PDE_FLAGS(%edi), %ecx
	movl %ecx, (%edx)
	movl %ecx, KERNEL_PDE_BYTES(%edx)
	addl $4, %edx
	movl $1024, %ecx
5:	stosl
	addl $PAGE_SIZE, %eax
	loop 5b
	leal (INIT_MAP_BEYOND_END + BOOT_PTE_FLAGS)(%edi), %ecx
	cmpl %ecx, %eax
	jb 4b
#ifdef MUTANT_BOOT_EXTRA_PG0
	/* mutant: the loop test is off by one unit: one more pg0 page */
	testl %esi, %esi
	jnz 8f
	incl %esi
	jmp 4b
8:
#endif
#ifdef MUTANT_BOOT_NO_ALIAS
	/* mutant: the last pg0 page keeps only its identity PDE (its PAGE_OFFSET
	 * PDE is taken back before paging is on, as if never entered) */
	movl $0, (KERNEL_PDE_BYTES - 4)(%edx)
#endif
	movl %edi, PA(init_pg_tables_end)
	subl $BOOT_PTE_FLAGS, %eax
	movl %eax, PA(init_map_end)

	/* Paging on, then jump to the PAGE_OFFSET alias of the next line. */
	movl $PA(swapper_pg_dir), %eax
	movl %eax, %cr3
	movl %cr0, %eax
	orl $0x80000000, %eax
	movl %eax, %cr0
	ljmp $BOOT_CS, $6f
6:
	/* From here on only PAGE_OFFSET addresses: the low identity mapping
	 * goes away when a PAE build turns swapper_pg_dir into a PDPT. So the
	 * GDT is reloaded through its virtual address too. */
	lgdt gdt_descr
	movl $BOOT_DS, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %fs
	movl %eax, %gs
	movl %eax, %ss
	movl $boot_stack_top, %esp
	pushl $0
	popfl
	call start_kernel
7:	cli
	hlt
	jmp 7b

	.section .data
	.balign 8
gdt:
	.quad 0				/* null */
	.quad 0				/* unused (Linux's boot GDT starts at 0x10 too) */
	.quad 0x00cf9a000000ffff	/* 0x10: flat 4 GiB code, ring 0 */
	.quad 0x00cf92000000ffff	/* 0x18: flat 4 GiB data, ring 0 */
gdt_end:

	.balign 4
	.word 0
boot_gdt_descr:				/* for lgdt before paging */
	.word gdt_end - gdt - 1
	.long PA(gdt)
	.word 0
gdt_descr:				/* for lgdt after paging */
	.word gdt_end - gdt - 1
	.long gdt

/*
 * The bss opens with swapper_pg_dir and empty_zero_page, one page each,
 * as in the kernel: __init_end == __bss_start == swapper_pg_dir.
 */
	.section .bss.page_aligned, "aw", @nobits
	.balign PAGE_SIZE
	.globl swapper_pg_dir, empty_zero_page
swapper_pg_dir:
	.skip PAGE_SIZE
empty_zero_page:
	.skip PAGE_SIZE

	.section .bss
	.balign 16
boot_stack:
	.skip BOOT_STACK_SIZE
boot_stack_top:

	.balign 4
	.globl multiboot_magic, multiboot_info, boot_command_line
	.globl boot_command_line_truncated, init_pg_tables_end, init_map_end
multiboot_magic:
	.long 0
multiboot_info:
	.skip MULTIBOOT_INFO_SAVED
boot_command_line_truncated:
	.long 0
init_pg_tables_end:
	.long 0
init_map_end:
	.long 0
boot_command_line:
	.skip COMMAND_LINE_SIZE
