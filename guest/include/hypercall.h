/*
 * The kernel's hypercall stubs (docs/xen.md "Hypercalls"): each one traps into
 * the hypervisor stage through vector 0x82, whose gate the hypervisor owns.
 * The kernel has no other way in, and no symbol of the hypervisor.
 */
#ifndef GUEST_HYPERCALL_H
#define GUEST_HYPERCALL_H

#include "xen.h"

static inline u32 hypercall3(u32 nr, u32 a1, u32 a2, u32 a3)
{
	u32 ret;
	/* "memory": the hypervisor reads requests and writes tables. */
	asm volatile("int $0x82"
		     : "=a"(ret)
		     : "a"(nr), "b"(a1), "c"(a2), "d"(a3)
		     : "memory");
	return ret;
}

/* count updates, in order, each audited as one; returns how many were refused. */
static inline unsigned HYPERVISOR_mmu_update(const struct mmu_update *req, unsigned count)
{
	return hypercall3(__HYPERVISOR_mmu_update, (u32)req, count, 0);
}

/* One entry at entry_va: 0, or -1 if refused. */
static inline int HYPERVISOR_update_entry(void *entry_va, u64 value)
{
	return (int)hypercall3(__HYPERVISOR_update_entry, (u32)entry_va, (u32)value,
			       (u32)(value >> 32));
}

static inline void HYPERVISOR_mmuext_op(enum mmuext_cmd cmd, u32 arg1, u32 arg2)
{
	hypercall3(__HYPERVISOR_mmuext_op, cmd, arg1, arg2);
}

struct idt_gate;
/* The kernel's 32 exception gates, copied into the hypervisor's IDT. */
static inline void HYPERVISOR_set_trap_table(const struct idt_gate *gates)
{
	hypercall3(__HYPERVISOR_set_trap_table, (u32)gates, 0, 0);
}

static inline u32 HYPERVISOR_domain_info(enum dominfo_query what)
{
	return hypercall3(__HYPERVISOR_domain_info, what, 0, 0);
}

static inline void HYPERVISOR_domain_exit(void)
{
	hypercall3(__HYPERVISOR_domain_exit, 0, 0, 0);
}

#endif
