"""Reading a predicted memory image the way the CPU would, for the model tests.

A deliberately small translation (one VA at a time, Intel SDM vol. 3A §4.3 and
§4.4), independent of harness.model, so that the tests state what the CPU sees
rather than what the model wrote where.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.walker import CpuState, ImageMemory

ADDR_4K = 0x000F_FFFF_FFFF_F000  # address bits of a PAE entry (below bit 52)


def entry(mem: ImageMemory, table: int, idx: int, size: int) -> int:
    page = mem.pages.get(table & ~0xFFF)
    if page is None:
        return 0
    off = (table & 0xFFF) + idx * size
    return int.from_bytes(page[off:off + size], "little")


@dataclass(frozen=True)
class Translation:
    pa: int
    size: int  # 4 KiB, 2 MiB or 4 MiB
    leaf: int  # the raw leaf entry
    chain: tuple[int, ...]  # every entry on the way, top level first


def translate(mem: ImageMemory, cpu: CpuState, va: int) -> Translation | None:
    """The translation of va, or None when some level is not present."""
    if cpu.pae:
        pdpte = entry(mem, cpu.cr3 & ~0x1F, va >> 30, 8)
        if not pdpte & 1:
            return None
        pde = entry(mem, pdpte & ADDR_4K, (va >> 21) & 511, 8)
        if not pde & 1:
            return None
        if pde & 0x80:
            return Translation((pde & ADDR_4K & ~0x1FFFFF) | (va & 0x1FFFFF), 2 << 20, pde,
                               (pdpte, pde))
        pte = entry(mem, pde & ADDR_4K, (va >> 12) & 511, 8)
        if not pte & 1:
            return None
        return Translation((pte & ADDR_4K) | (va & 0xFFF), 4096, pte, (pdpte, pde, pte))
    pde = entry(mem, cpu.cr3 & ~0xFFF, va >> 22, 4)
    if not pde & 1:
        return None
    if pde & 0x80 and cpu.pse:
        return Translation((pde & 0xFFC00000) | (va & 0x3FFFFF), 4 << 20, pde, (pde,))
    pte = entry(mem, pde & 0xFFFFF000, (va >> 12) & 1023, 4)
    if not pte & 1:
        return None
    return Translation((pte & 0xFFFFF000) | (va & 0xFFF), 4096, pte, (pde, pte))
