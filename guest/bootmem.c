/*
 * The boot-page allocator (alloc_bootmem_low_pages of this guest).
 *
 * Pages go out strictly in ascending physical order from boot_alloc_start,
 * one 4 KiB page per call, zeroed through their PAGE_OFFSET address. That
 * address must already be mapped: in a native PAE boot the CPU still runs on
 * head.S's non-PAE tables, which is why head.S maps INIT_MAP_BEYOND_END past
 * its own tables. boot_alloc_limit enforces that (and stays below lowmem).
 */
#include "bootmem.h"
#include "guest.h"
#include "page.h"
#include "string.h"

unsigned long boot_alloc_start;
unsigned long boot_alloc_cursor;
unsigned long boot_alloc_limit;

void bootmem_init(unsigned long start, unsigned long limit)
{
	boot_alloc_start = boot_alloc_cursor = PAGE_ALIGN(start);
	boot_alloc_limit = limit & PAGE_MASK;
}

void *alloc_bootmem_low_pages(unsigned long size)
{
	BUG_ON(size != PAGE_SIZE); /* the page-table code only asks for single pages */
	if (boot_alloc_cursor >= boot_alloc_limit) {
		printk("bootmem exhausted cursor=0x%08lx limit=0x%08lx\n", boot_alloc_cursor,
		       boot_alloc_limit);
		BUG_ON(boot_alloc_cursor >= boot_alloc_limit);
	}
	void *page = __va(boot_alloc_cursor);
	boot_alloc_cursor += PAGE_SIZE;
#ifndef MUTANT_ALLOC_NOZERO /* mutant: the page goes out as it was */
	memset(page, 0, PAGE_SIZE);
#endif
	return page;
}
