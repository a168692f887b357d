"""The harness-core test guest (stub.S) and the page-table layouts the tests
build with it.

A layout is page tables as physical pages plus the control registers that
select them. Unit tests load a layout into an ImageMemory; hardware tests
write the same bytes into a booted stub's physical memory through gdb and set
the registers through gdb, so every corner case runs on emulated hardware.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
from array import array
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness import x86  # noqa: E402
from harness.walker import CpuState, ImageMemory  # noqa: E402

CR0_PE_ET = 0x11  # protected mode, as the stub runs
CR0_PAGING = x86.CR0_PG | CR0_PE_ET
NX = x86.NX


def build(out_dir: Path) -> Path:
    """Assemble and link stub.S into out_dir/stub.elf (gcc -m32)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    elf = out_dir / "stub.elf"
    cmd = ["gcc", "-m32", "-nostdlib", "-static", "-no-pie", "-Wl,--build-id",
           "-Wl,--no-warn-rwx-segments", "-T", str(HERE / "stub.ld"), "-o", str(elf),
           str(HERE / "stub.S")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"building the stub guest failed: {' '.join(cmd)}\n{res.stderr}")
    return elf


@dataclass
class Layout:
    """Page tables and the registers that select them."""

    name: str
    cr3: int
    cr4: int
    efer: int = 0
    cpu_flags: dict[str, bool] = field(default_factory=dict)  # QEMU -cpu flags it needs
    pages: dict[int, bytearray] = field(default_factory=dict)

    def put(self, addr: int, value: int, size: int) -> None:
        page = self.pages.setdefault(addr & ~0xFFF, bytearray(4096))
        off = addr & 0xFFF
        page[off:off + size] = value.to_bytes(size, "little")

    def put32(self, addr: int, value: int) -> None:
        self.put(addr, value, 4)

    def put64(self, addr: int, value: int) -> None:
        self.put(addr, value, 8)

    def fill(self, addr: int, values: list[int], size: int) -> None:
        page = self.pages.setdefault(addr & ~0xFFF, bytearray(4096))
        data = array("Q" if size == 8 else "I", values).tobytes()
        off = addr & 0xFFF
        page[off:off + len(data)] = data

    @property
    def cpu(self) -> CpuState:
        return CpuState(cr0=CR0_PAGING, cr3=self.cr3, cr4=self.cr4, efer=self.efer)

    def memory(self) -> ImageMemory:
        return ImageMemory({a: bytes(p) for a, p in self.pages.items()})

    def install(self, session) -> None:
        """Write the pages into guest-physical memory and load the registers
        (EFER and CR4 before CR3 and CR0, as an OS would)."""
        with session.physical_mode():
            for addr, page in sorted(self.pages.items()):
                session.write_memory(addr, bytes(page))
        session.set_register("efer", self.efer)
        session.set_register("cr4", self.cr4)
        session.set_register("cr3", self.cr3)
        session.set_register("cr0", CR0_PAGING)


# --------------------------------------------------------------------------------------
# The corner cases. Table pages live between 0x10000 and 0x80000 (below the
# stub at 1 MiB); comments state what the CPU must make of each entry.
# --------------------------------------------------------------------------------------

def two_level(pse: bool) -> Layout:
    """2-level paging. With pse=False the PS bit of PDE 0x301 must be ignored
    (it points to a page table); with pse=True it maps a 4 MiB page, and PDE
    0x302 maps a 4 MiB page above 4 GiB through the PSE-36 bits."""
    lay = Layout("2level-pse" if pse else "2level-nopse", cr3=0x10000,
                 cr4=(x86.CR4_PSE if pse else 0) | x86.CR4_PGE, cpu_flags={"pse": pse})
    pgd = 0x10000
    # PDE 0x300 (VA 0xC0000000): page table at 0x11000, RW user parent.
    lay.put32(pgd + 0x300 * 4, 0x11000 | 0x067)
    lay.put32(0x11000 + 0 * 4, 0x00100000 | 0x163)   # RW, global
    lay.put32(0x11000 + 1 * 4, 0x00101000 | 0x061)   # read-only
    lay.put32(0x11000 + 3 * 4, 0x00200000 | 0x067)   # user RW
    lay.put32(0x11000 + 4 * 4, 0x00201000 | 0x0E7)   # bit 7 = PAT in a PTE, not a size
    # PDE 0x301 (VA 0xC0400000): PS set. PSE off: page table at 0x12000. PSE on:
    # a 4 MiB page whose PSE-36 bits (13 and 16 of 0x12000) put it at 0x9_00000000.
    lay.put32(pgd + 0x301 * 4, 0x12000 | 0x0E3)
    lay.put32(0x12000 + 5 * 4, 0x00300000 | 0x003)
    # PDE 0x302 (VA 0xC0800000): 4 MiB page at 0x1_00800000 (PSE-36 bit 13 = PA bit 32).
    lay.put32(pgd + 0x302 * 4, 0x00800000 | (1 << 13) | 0x0E3)
    # Page table at 0x13000 reached from PDE 0x303.
    lay.put32(pgd + 0x303 * 4, 0x13000 | 0x063)
    lay.put32(0x13000 + 0, 0x00500000 | 0x003)
    return lay


def two_level_parent_permissions() -> Layout:
    """A read-only supervisor PDE over RW user PTEs: the leaves are read-only
    supervisor; a RW user PDE over a read-only PTE: read-only user."""
    lay = Layout("2level-parent-perms", cr3=0x20000, cr4=0)
    lay.put32(0x20000 + 0x100 * 4, 0x21000 | 0x001)       # P only: RO, supervisor
    lay.fill(0x21000, [0x00400000 + k * 0x1000 | 0x007 for k in range(16)], 4)
    lay.put32(0x20000 + 0x101 * 4, 0x22000 | 0x007)       # RW user
    lay.put32(0x22000, 0x00600000 | 0x005)                # RO user
    return lay


def pae(nxe: bool, root_offset: int = 0x20) -> Layout:
    """PAE with the PDPT 32 bytes into its page (a decoy PDPT at offset 0),
    4 KiB and 2 MiB pages, NX on a PTE and on a PDE, permissions ANDed."""
    base = 0x30000
    lay = Layout("pae-nx" if nxe else "pae", cr3=base + root_offset,
                 cr4=x86.CR4_PAE | x86.CR4_PGE, efer=x86.EFER_NXE if nxe else 0,
                 cpu_flags={"pae": True, "nx": True})
    pdpt = base + root_offset
    if root_offset:
        # Decoy: what a walker that page-aligns CR3 would use.
        lay.put64(base + 3 * 8, 0x3F000 | 1)
        lay.put64(0x3F000, 0x00A00000 | 0x0E3)
    lay.put64(pdpt + 3 * 8, 0x31000 | 1)                  # slot 3: VA 0xC0000000
    pd = 0x31000
    lay.put64(pd + 0 * 8, 0x32000 | 0x063)                # RW supervisor
    pt = 0x32000
    lay.put64(pt + 0 * 8, 0x00100000 | 0x163)
    lay.put64(pt + 1 * 8, 0x00101000 | 0x063 | (NX if nxe else 0))
    lay.put64(pt + 2 * 8, 0x00102000 | 0x061)             # read-only
    lay.put64(pt + 3 * 8, 0x00103000 | 0x067)             # user bit, supervisor parent
    lay.put64(pd + 1 * 8, 0x00400000 | 0x1E3)             # 2 MiB, global
    lay.put64(pd + 2 * 8, 0x00600000 | 0x0E3 | (NX if nxe else 0))
    lay.put64(pd + 3 * 8, 0x33000 | 0x061 | (NX if nxe else 0))  # RO, NX parent
    lay.put64(0x33000, 0x00800000 | 0x067)                # RW user child
    return lay


def pae_nx_without_nxe() -> Layout:
    """Bit 63 set while EFER.NXE=0: reserved, the CPU faults on the access."""
    lay = Layout("pae-nx-reserved", cr3=0x40000, cr4=x86.CR4_PAE, cpu_flags={"pae": True})
    lay.put64(0x40000 + 3 * 8, 0x41000 | 1)
    lay.put64(0x41000, 0x42000 | 0x063)
    lay.put64(0x42000 + 0 * 8, 0x00100000 | 0x063)
    lay.put64(0x42000 + 1 * 8, 0x00101000 | 0x063 | NX)   # reserved without NXE
    lay.put64(0x41000 + 1 * 8, 0x43000 | 0x063 | NX)      # a PDE with it: 2 MiB gone
    lay.put64(0x43000, 0x00200000 | 0x063)
    return lay


def pae_reserved() -> Layout:
    """Reserved bits: RW in a PDPT entry, bit 13 in a 2 MiB PDE, bit 40 in a
    PTE (above MAXPHYADDR 36). QEMU's TCG walks the first; a CPU would not."""
    lay = Layout("pae-reserved", cr3=0x50000, cr4=x86.CR4_PAE, cpu_flags={"pae": True})
    lay.put64(0x50000 + 0 * 8, 0x51000 | 0x003)           # RW is reserved in a PDPTE
    lay.put64(0x51000, 0x00200000 | 0x0E3)
    lay.put64(0x50000 + 3 * 8, 0x52000 | 1)
    lay.put64(0x52000 + 0 * 8, 0x00400000 | (1 << 13) | 0x0E3)  # 2 MiB with bit 13
    lay.put64(0x52000 + 1 * 8, 0x53000 | 0x063)
    lay.put64(0x53000 + 0 * 8, 0x00100000 | 0x063)
    lay.put64(0x53000 + 1 * 8, (1 << 40) | 0x00101000 | 0x063)
    return lay


def kernel_map_4k(mib: int = 896, pt_base: int = 0x200000) -> Layout:
    """The benchmark state: `mib` MiB at 0xC0000000 with 4 KiB pages in PAE,
    one PTE page per 2 MiB (448 for 896 MiB), kernel protections with NX."""
    n = mib // 2
    lay = Layout(f"pae-{mib}M-4k", cr3=0x1020, cr4=x86.CR4_PAE | x86.CR4_PGE,
                 efer=x86.EFER_NXE, cpu_flags={"pae": True, "nx": True})
    lay.put64(0x1020 + 3 * 8, 0x2000 | 1)
    pd = [(pt_base + j * 0x1000) | 0x063 for j in range(n)]
    lay.fill(0x2000, pd, 8)
    for j in range(n):
        start = j * 0x200000 | 0x163 | NX
        lay.pages[pt_base + j * 0x1000] = bytearray(
            array("Q", range(start, start + 512 * 0x1000, 0x1000)).tobytes())
    return lay


CORNER_CASES = {
    "2level-nopse": lambda: two_level(False),
    "2level-pse": lambda: two_level(True),
    "2level-parent-perms": two_level_parent_permissions,
    "pae": lambda: pae(False),
    "pae-nx": lambda: pae(True),
    "pae-nx-reserved": pae_nx_without_nxe,
    "pae-reserved": pae_reserved,
}


@contextlib.contextmanager
def booted(elf: Path, run_dir: Path, cpu: dict[str, bool] | None = None, memory: str = "128M",
           transcript: bool = True):
    """QEMU running the stub, stopped at stub_ready, with an MI session attached."""
    from harness.gdbmi import MiSession
    from harness.qemu import Machine, QemuProcess

    machine = Machine(kernel=elf, memory=memory, cpu=dict(cpu or {}))
    with QemuProcess(machine, run_dir) as qemu, \
            MiSession(transcript=run_dir / "gdb.mi" if transcript else None) as gdb:
        gdb.connect(qemu.gdb_endpoint)
        gdb.load_elf(elf)
        gdb.break_at("stub_ready")
        stop = gdb.continue_until_stop(30)
        if stop.get("reason") != "breakpoint-hit":
            raise RuntimeError(f"the stub did not reach stub_ready: {stop}")
        yield qemu, gdb
