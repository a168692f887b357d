/* Interrupt descriptors: the BSP's IDT (traps.c) and the APs' (smp.c). */
#ifndef GUEST_DESC_H
#define GUEST_DESC_H

#include "types.h"

struct idt_gate {
	u16 offset_low;
	u16 selector;
	u8 zero;
	u8 type_attr;
	u16 offset_high;
} __attribute__((packed));

/* Point the 32 exception vectors of idt at stubs[v] through code segment selector,
 * as present, DPL 0, 32-bit interrupt gates. */
void fill_idt(struct idt_gate idt[32], const u32 stubs[32], u16 selector);

/* The BSP's 32 exception gates (traps.c), as trap_init loaded them. */
const struct idt_gate *exception_gates(void);

#endif
