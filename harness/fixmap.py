"""The guest's fixmap enum, as docs/guest-contract.md states it: 2.6.22's order
for CONFIG_X86_LOCAL_APIC, CONFIG_SMP (NR_CPUS 4), HIGHMEM and CONFIG_PARAVIRT.

Scenarios, the model and the checks take the slots from here; `check_image`
holds a guest ELF to the same numbers (the guest exports them as absolute
symbols), so a guest whose enum moved is one clear error, not a matrix of
layout findings.
"""
from __future__ import annotations

KM_TYPE_NR = 13           # kmap_types.h of 2.6.22
NR_CPUS = 4
NR_FIX_BTMAPS = 15        # boot-time slots (one fewer than 2.6.22: the paravirt boot map)

FIX_HOLE = 0
FIX_VDSO = 1
FIX_APIC_BASE = 2         # the local APIC, uncached
FIX_KMAP_BEGIN = 3        # kmap_pte is the PTE of this slot
FIX_KMAP_END = FIX_KMAP_BEGIN + KM_TYPE_NR * NR_CPUS - 1
FIX_PARAVIRT_BOOTMAP = FIX_KMAP_END + 1   # the Xen-like backend's shared-info page
FIX_BTMAP_END = FIX_PARAVIRT_BOOTMAP + 1  # __end_of_permanent_fixed_addresses
FIX_BTMAP_BEGIN = FIX_BTMAP_END + NR_FIX_BTMAPS - 1
FIX_WP_TEST = FIX_BTMAP_BEGIN + 1
END = FIX_WP_TEST + 1     # __end_of_fixed_addresses

APIC_PHYS = 0xFEE00000    # the local APIC's registers (IA32_APIC_BASE's default)

# The enum values the guest exports as absolute ELF symbols.
EXPORTED = {"__end_of_fixed_addresses": END, "FIX_APIC_BASE": FIX_APIC_BASE,
            "FIX_KMAP_BEGIN": FIX_KMAP_BEGIN, "FIX_VDSO": FIX_VDSO}


def check_image(symbols: dict[str, int]) -> str:
    """Why the guest's fixmap differs from the contract's, or ''."""
    wrong = [f"{name}={symbols[name]} (contract: {value})" for name, value in EXPORTED.items()
             if name in symbols and symbols[name] != value]
    missing = [name for name in EXPORTED if name not in symbols]
    if missing:
        return f"the guest ELF lacks the fixmap symbols {', '.join(missing)}"
    if wrong:
        return "the guest's fixmap enum differs from docs/guest-contract.md: " + ", ".join(wrong)
    return ""
