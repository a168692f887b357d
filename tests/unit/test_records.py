"""harness.records on a memory image: every record is read through __pa of its
symbol (and of the start-info pointer), never through a virtual address, so a
guest whose kernel mapping broke still yields the records that explain it."""
from __future__ import annotations

import struct

import pytest

from harness import records

SYMS = {
    "boot_alloc_start": 0xC0201000, "boot_alloc_cursor": 0xC0201004,
    "init_pg_tables_end": 0xC0201008, "init_map_end": 0xC020100C, "kmap_pte": 0xC0201010,
    "hyp_mmu_update_count": 0xC0201014, "multiboot_info": 0xC0201100,
    "xen_start_info": 0xC0201200, "hyp_violation_count": 0xC0201204,
    "hyp_violations": 0xC0202000, "pv_hook_log_len": 0xC0201208, "pv_hook_log": 0xC0203000,
}


class PhysicalImage:
    """Physical memory only: a virtual address read is a bug in the reader."""

    def __init__(self):
        self.mem = bytearray(0x400000)
        self.reads: list[int] = []

    def put(self, pa: int, data: bytes) -> None:
        self.mem[pa:pa + len(data)] = data

    def read(self, addr: int, size: int) -> bytes:
        assert addr + size <= len(self.mem), f"read at {addr:#x} is not physical"
        self.reads.append(addr)
        return bytes(self.mem[addr:addr + size])


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


@pytest.fixture
def image() -> PhysicalImage:
    img = PhysicalImage()
    pa = {k: v - 0xC0000000 for k, v in SYMS.items()}
    img.put(pa["boot_alloc_start"], u32(0x16C000))
    img.put(pa["boot_alloc_cursor"], u32(0x16E000))
    img.put(pa["init_map_end"], u32(0x800000))
    img.put(pa["kmap_pte"], u32(0xC017DFF4))
    img.put(pa["hyp_mmu_update_count"], u32(32803))
    img.put(pa["multiboot_info"] + records.MB_MEM_UPPER, u32(129920))
    img.put(pa["xen_start_info"], u32(0xC0300000))          # a pointer: read at its __pa
    img.put(0x300000, struct.pack("<8I", 0x584E4558, 32736, 0x160000, 0xC0164000, 3,
                                  0xFC000000, 0x04002000, 0))
    img.put(pa["hyp_violation_count"], u32(2))
    img.put(pa["hyp_violations"], struct.pack("<IIQII", 2, 0x161008, 0x63, 0x161000, 0xFC002000)
            + struct.pack("<IIQII", 2, 0x161008, 0x63, 0x161000, 0xFC002000))
    img.put(pa["pv_hook_log_len"], u32(2))
    img.put(pa["pv_hook_log"], struct.pack("<4I", 1, 0x108, 2, 0x16C))
    return img


def test_records_decoded_through_physical_addresses(image):
    state = records.read(image.read, SYMS)
    assert all(a < 0xC0000000 for a in image.reads)
    assert state["boot_alloc_start"] == 0x16C000 and state["boot_alloc_cursor"] == 0x16E000
    assert state["init_map_end"] == 0x800000 and state["kmap_pte"] == 0xC017DFF4
    assert state["init_pg_tables_end"] == 0 and state["hyp_mmu_update_count"] == 32803
    assert state["mb_mem_upper"] == 129920
    assert state["start_info_va"] == 0xC0300000
    assert state["start_info"]["nr_pages"] == 32736 and state["start_info"]["pt_base"] == 0xC0164000
    assert state["violation_count"] == 2
    assert state["violations"][0] == {"kind": 2, "entry_pa": 0x161008, "value": 0x63,
                                      "frame": 0x161000, "va": 0xFC002000}
    assert state["hook_log"] == [[1, 0x108], [2, 0x16C]]
    assert records.hook_name(state["hook_log"][1]) == "alloc_pt(pfn 0x16c)"


def test_native_guest_has_no_start_info_and_a_wild_count_is_capped(image):
    image.put(SYMS["xen_start_info"] - 0xC0000000, u32(0))
    image.put(SYMS["pv_hook_log_len"] - 0xC0000000, u32(0xFFFFFFFF))
    state = records.read(image.read, SYMS)
    assert "start_info" not in state
    assert len(state["hook_log"]) == records.HOOK_LOG_MAX
