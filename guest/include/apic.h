/*
 * The local APIC, as far as starting APs needs it (Intel SDM vol. 3 ch. 10;
 * Linux 2.6.22 include/asm-i386/apicdef.h). The kernel reaches the APIC only
 * through its fixmap slot FIX_APIC_BASE (mapped uncached by
 * init_apic_mappings), never through the physical address.
 */
#ifndef GUEST_APIC_H
#define GUEST_APIC_H

#include "fixmap.h"

#define APIC_DEFAULT_PHYS_BASE 0xFEE00000UL

/* CPUID.1:EDX bit 9: the CPU has a local APIC. CPUID.1:EBX[31:24]: its id. */
#define X86_FEATURE_APIC_BIT 9

/* Register offsets. */
#define APIC_ID 0x020
#define APIC_ESR 0x280
#define APIC_ICR 0x300  /* interrupt command, low word: writing it sends */
#define APIC_ICR2 0x310 /* high word: destination in bits 24-31 */

/* ICR bits. */
#define APIC_DEST_FIELD(apicid) ((u32)(apicid) << 24)
#define APIC_ICR_BUSY 0x01000 /* delivery status: send pending */
#define APIC_INT_ASSERT 0x04000
#define APIC_INT_LEVELTRIG 0x08000
#define APIC_DM_INIT 0x00500
#define APIC_DM_STARTUP 0x00600

#define APIC_BASE_VA (__fix_to_virt(FIX_APIC_BASE))

static inline u32 apic_read(u32 reg)
{
	return *(volatile u32 *)(APIC_BASE_VA + reg);
}

static inline void apic_write(u32 reg, u32 v)
{
	*(volatile u32 *)(APIC_BASE_VA + reg) = v;
}

#endif
