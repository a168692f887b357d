"""The guest kernel image as the ELF file describes it (pyelftools).

The model needs the layout symbols (swapper_pg_dir, __init_end, ...), the
provenance wants the GNU build id, and the content check compares kernel text
read through the CPU's mappings with the bytes of the loadable segments.
Only ELF32 i386 files are accepted: anything else is not our guest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection, SymbolTableSection


class ElfError(Exception):
    """The file is missing, unreadable, or not an ELF32 i386 image."""


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD program header: `data` holds the file bytes (p_filesz of them);
    the rest up to `memsz` is bss, which the loader fills with zeros."""

    vaddr: int
    paddr: int
    memsz: int
    data: bytes
    flags: int  # P_FLAGS bits: PF_X 1, PF_W 2, PF_R 4

    @property
    def filesz(self) -> int:
        return len(self.data)

    @property
    def executable(self) -> bool:
        return bool(self.flags & P_FLAGS.PF_X)

    def contains(self, va: int) -> bool:
        return self.vaddr <= va < self.vaddr + self.memsz


@dataclass
class KernelImage:
    """Symbols, build id and loadable segments of one guest ELF.

    Tests may construct one directly with just `symbols` (the model reads
    nothing else); `from_elf` is how the harness gets one.
    """

    symbols: dict[str, int]
    build_id: str | None = None
    segments: list[Segment] = field(default_factory=list)
    path: Path | None = None

    @classmethod
    def from_elf(cls, path: str | Path) -> "KernelImage":
        path = Path(path)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise ElfError(f"{path}: no such file (was the guest built?)") from None
        except OSError as e:
            raise ElfError(f"{path}: cannot open: {e.strerror}") from None
        with f:
            magic = f.read(4)
            if magic != b"\x7fELF":
                raise ElfError(f"{path}: not an ELF file (starts with {magic!r})")
            f.seek(0)
            try:
                elf = ELFFile(f)
                _check_i386(path, elf)
                return cls(symbols=_symbols(elf), build_id=_build_id(elf),
                           segments=_segments(elf), path=path)
            except ELFError as e:
                raise ElfError(f"{path}: malformed ELF: {e}") from None

    def symbol(self, name: str) -> int:
        """The value of `name`; a clear error when the image lacks it."""
        try:
            return self.symbols[name]
        except KeyError:
            where = f" in {self.path}" if self.path else ""
            raise ElfError(f"symbol {name!r} not found{where}") from None

    def segment_at(self, va: int) -> Segment | None:
        for s in self.segments:
            if s.contains(va):
                return s
        return None

    def read_virtual(self, va: int, size: int) -> bytes:
        """The image's bytes at virtual addresses [va, va+size), as the loader
        places them (bss reads as zeros). Every byte must lie in a PT_LOAD
        segment; a gap is an error, never silently zero."""
        if size < 0:
            raise ValueError(f"negative size {size}")
        out = bytearray()
        cur, end = va, va + size
        while cur < end:
            seg = self.segment_at(cur)
            if seg is None:
                raise ElfError(f"virtual address {cur:#x} is in no loadable segment"
                               f" (reading {size:#x} bytes at {va:#x})")
            stop = min(end, seg.vaddr + seg.memsz)
            off = cur - seg.vaddr
            chunk = seg.data[off:stop - seg.vaddr]
            out += chunk
            out += bytes((stop - cur) - len(chunk))  # the bss part of the segment
            cur = stop
        return bytes(out)


def _check_i386(path: Path, elf: ELFFile) -> None:
    if elf.elfclass != 32:
        raise ElfError(f"{path}: ELF{elf.elfclass}, not an ELF32 i386 image")
    if elf["e_machine"] != "EM_386":
        raise ElfError(f"{path}: machine {elf['e_machine']}, not an ELF32 i386 image")
    if not elf.little_endian:
        raise ElfError(f"{path}: big-endian, not an ELF32 i386 image")


def _symbols(elf: ELFFile) -> dict[str, int]:
    """Every named symbol. When a name appears more than once (static symbols
    of different files), a global or weak definition wins over a local one."""
    out: dict[str, int] = {}
    binding_of: dict[str, str] = {}
    for sec in elf.iter_sections():
        if not isinstance(sec, SymbolTableSection):
            continue
        for sym in sec.iter_symbols():
            name = sym.name
            if not name or sym["st_info"]["type"] in ("STT_SECTION", "STT_FILE"):
                continue
            if sym["st_shndx"] == "SHN_UNDEF":
                continue
            bind = sym["st_info"]["bind"]
            if name in out and not (binding_of[name] == "STB_LOCAL" and bind != "STB_LOCAL"):
                continue
            out[name] = sym["st_value"]
            binding_of[name] = bind
    return out


def _build_id(elf: ELFFile) -> str | None:
    for sec in elf.iter_sections():
        if not isinstance(sec, NoteSection):
            continue
        for note in sec.iter_notes():
            if note["n_type"] == "NT_GNU_BUILD_ID":
                return note["n_desc"]
    return None


def _segments(elf: ELFFile) -> list[Segment]:
    segs = []
    for ph in elf.iter_segments():
        if ph["p_type"] != "PT_LOAD" or ph["p_memsz"] == 0:
            continue
        segs.append(Segment(vaddr=ph["p_vaddr"], paddr=ph["p_paddr"], memsz=ph["p_memsz"],
                            data=ph.data(), flags=ph["p_flags"]))
    return segs
