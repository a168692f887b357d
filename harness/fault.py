"""A CPU exception the guest reported, explained: the vector by name, CR2 and
the error code decoded, and the faulting instruction with its neighbours
disassembled (capstone) from the guest's ELF."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .elf import ElfError, KernelImage

# The guest's line (docs/guest-contract.md).
_LINE = re.compile(r"exception vector=(\d+) \(#?(\w+)\) eip=(0x[0-9a-f]+) cr2=(0x[0-9a-f]+) "
                   r"error=(0x[0-9a-f]+)")

VECTORS = {0: "divide error", 1: "debug", 2: "NMI", 3: "breakpoint", 4: "overflow",
           5: "bound range", 6: "invalid opcode", 7: "device not available",
           8: "double fault", 10: "invalid TSS", 11: "segment not present",
           12: "stack fault", 13: "general protection", 14: "page fault",
           16: "x87 error", 17: "alignment check", 18: "machine check", 19: "SIMD error"}


@dataclass(frozen=True)
class Fault:
    vector: int
    mnemonic: str
    eip: int
    cr2: int
    error: int


def parse(serial: str) -> Fault | None:
    m = _LINE.search(serial)
    if m is None:
        return None
    return Fault(int(m.group(1)), m.group(2), int(m.group(3), 16), int(m.group(4), 16),
                 int(m.group(5), 16))


def decode_error(f: Fault) -> str:
    if f.vector != 14:
        return f"error code {f.error:#x}"
    e = f.error
    parts = ["protection violation" if e & 1 else "page not present",
             "write" if e & 2 else "read", "user mode" if e & 4 else "supervisor mode"]
    if e & 8:
        parts.append("reserved bit set in a paging entry")
    if e & 16:
        parts.append("instruction fetch")
    return f"error code {e:#x}: " + ", ".join(parts)


def _function_at(image: KernelImage, addr: int) -> tuple[str, int] | None:
    """The nearest symbol at or below addr (the function holding it)."""
    best = None
    for name, value in image.symbols.items():
        if value <= addr and (best is None or value > best[1]) and not name.startswith("__"):
            best = (name, value)
    return best


def disassembly(image: KernelImage, eip: int, before: int = 4, after: int = 3) -> list[str]:
    """Instructions around eip, decoded from the start of its function so that
    x86's variable lengths line up; the faulting one is marked."""
    import capstone
    func = _function_at(image, eip)
    if func is None or eip - func[1] > 0x4000:
        return [f"(no symbol near {eip:#x})"]
    name, start = func
    try:
        code = image.read_virtual(start, eip - start + 64)
    except ElfError:
        return [f"({eip:#x} is not in the ELF's loaded image)"]
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    insns = list(md.disasm(code, start))
    at = next((i for i, ins in enumerate(insns) if ins.address == eip), None)
    if at is None:
        return [f"({eip:#x} is not on an instruction boundary of {name})"]
    lines = []
    for ins in insns[max(0, at - before):at + after + 1]:
        mark = "=>" if ins.address == eip else "  "
        lines.append(f"{mark} {ins.address:08x} <{name}+{ins.address - start:#x}>: "
                     f"{ins.bytes.hex():<16} {ins.mnemonic} {ins.op_str}".rstrip())
    return lines


def explain(serial: str, image: KernelImage | None) -> str:
    """The fault section of a report, or "" when the guest took no exception."""
    f = parse(serial)
    if f is None:
        return ""
    name = VECTORS.get(f.vector, "exception")
    lines = [f"  fault: vector {f.vector} (#{f.mnemonic}, {name}) at eip {f.eip:#010x}",
             f"         cr2 {f.cr2:#010x}; {decode_error(f)}"]
    if image is not None:
        lines += ["         " + ln for ln in disassembly(image, f.eip)]
    return "\n".join(lines)
