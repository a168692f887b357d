/* Layout symbols defined by kernel.lds and head.S. */
#ifndef GUEST_SECTIONS_H
#define GUEST_SECTIONS_H

extern char _text[], _etext[], __init_end[], __bss_start[], _end[];
extern char __build_id_start[], __build_id_end[];

/* Physical end of head.S's pg0 tables (set by head.S). */
extern unsigned long init_pg_tables_end;
/* Physical end of what head.S mapped (identity and at PAGE_OFFSET). */
extern unsigned long init_map_end;

/* Saved by head.S before it builds pg0 over the loader's data. */
extern unsigned long multiboot_magic;
extern char boot_command_line[];
extern unsigned long boot_command_line_truncated;

#endif
