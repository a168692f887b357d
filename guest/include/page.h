/* Page geometry and the kernel's virtual layout (kernel-facts.md section 1). */
#ifndef GUEST_PAGE_H
#define GUEST_PAGE_H

/* Constants usable from both C and head.S. */
#ifdef __ASSEMBLER__
#define _AC(x, suffix) x
#else
#define _AC(x, suffix) (x##suffix)
#endif

#define PAGE_SHIFT 12
#define PAGE_SIZE (_AC(1, UL) << PAGE_SHIFT)
#define PAGE_MASK (~(PAGE_SIZE - 1))
#define __PAGE_OFFSET _AC(0xC0000000, UL)
#define PAGE_OFFSET __PAGE_OFFSET

/* Where multiboot loads the image (physical) and where it is linked. */
#define LOAD_PHYSICAL_ADDR _AC(0x100000, UL)

/* head.S maps this much beyond the end of its own tables so that boot-time
 * allocations of the final tables are reachable through PAGE_OFFSET before
 * they are used (2.6.22 values, kernel-facts.md section 4). */
#ifdef CONFIG_X86_PAE
#define INIT_MAP_BEYOND_END _AC(0x828000, UL)
#else
#define INIT_MAP_BEYOND_END _AC(0x424000, UL)
#endif

#ifndef __ASSEMBLER__
#include "types.h"

#define __pa(x) ((unsigned long)(x) - PAGE_OFFSET)
#define __va(x) ((void *)((unsigned long)(x) + PAGE_OFFSET))
#define PAGE_ALIGN(x) (((x) + PAGE_SIZE - 1) & PAGE_MASK)
#define PFN_UP(x) (((x) + PAGE_SIZE - 1) >> PAGE_SHIFT)
#define PFN_DOWN(x) ((x) >> PAGE_SHIFT)

/* __VMALLOC_RESERVE (128 MiB, raised by reservetop=) and the lowmem limit. */
extern unsigned long vmalloc_reserve;
#define __VMALLOC_RESERVE vmalloc_reserve
#define MAXMEM (-__PAGE_OFFSET - __VMALLOC_RESERVE)

#endif /* !__ASSEMBLER__ */
#endif
