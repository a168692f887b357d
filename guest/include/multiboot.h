/* Multiboot (v1) header and information structure, as far as the guest uses them. */
#ifndef GUEST_MULTIBOOT_H
#define GUEST_MULTIBOOT_H

#define MULTIBOOT_HEADER_MAGIC 0x1BADB002
#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002
#define MULTIBOOT_HEADER_WANT_MEMINFO 0x00000002

#define MULTIBOOT_INFO_MEMORY 0x00000001
#define MULTIBOOT_INFO_CMDLINE 0x00000004

/* Bytes of the info structure head.S saves (up to and including mmap). */
#define MULTIBOOT_INFO_SAVED 52
#define COMMAND_LINE_SIZE 512

#ifndef __ASSEMBLER__
#include "types.h"

struct multiboot_info {
	u32 flags;
	u32 mem_lower; /* KiB below 1 MiB */
	u32 mem_upper; /* KiB above 1 MiB */
	u32 boot_device;
	u32 cmdline; /* physical address of a NUL-terminated string */
	u32 mods_count, mods_addr;
	u32 syms[4];
	u32 mmap_length, mmap_addr;
};
_Static_assert(sizeof(struct multiboot_info) == MULTIBOOT_INFO_SAVED, "head.S copies this much");

extern struct multiboot_info multiboot_info; /* copy saved by head.S */
#endif

#endif
