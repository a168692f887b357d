/*
 * The boot-page allocator: zeroed 4 KiB low pages, strictly ascending from
 * boot_alloc_start, one page per call (docs/guest.md lists the call order).
 */
#ifndef GUEST_BOOTMEM_H
#define GUEST_BOOTMEM_H

extern unsigned long boot_alloc_start;  /* physical: first page handed out */
extern unsigned long boot_alloc_cursor; /* physical: next page to hand out */
extern unsigned long boot_alloc_limit;  /* physical: first page it may not hand out */

void bootmem_init(unsigned long start, unsigned long limit);
void *alloc_bootmem_low_pages(unsigned long size);

#endif
