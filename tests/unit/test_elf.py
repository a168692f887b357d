"""harness.elf on real ELF files built here with gcc/ld, laid out like the guest
(linked at PAGE_OFFSET + 1 MiB, loaded at 1 MiB).  Every expected value below is
fixed by the linker script and the assembly source, not read back by the code
under test."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.elf import ElfError, KernelImage

LINKER_SCRIPT = """
ENTRY(_start)
SECTIONS {
  . = 0xC0100000;
  _text = .;
  .text : AT(ADDR(.text) - 0xC0000000) { *(.text) }
  _etext = .;
  . = ALIGN(4096);
  .data : AT(ADDR(.data) - 0xC0000000) { *(.data) }
  .note.gnu.build-id : AT(ADDR(.note.gnu.build-id) - 0xC0000000) { *(.note.gnu.build-id) }
  . = ALIGN(4096);
  __init_end = .;
  .bss : AT(ADDR(.bss) - 0xC0000000) { *(.bss) }
  _end = .;
}
"""

# 8 bytes of known text, one data word, 8 KiB of bss, a local `dup` here and a
# global `dup` in the second file (the global one must win).
MAIN_S = """
    .section .text, "ax"
    .globl _start
_start:
    .byte 0x90, 0x90, 0xcc, 0xf4, 0x0f, 0x0b, 0xeb, 0xfe
dup:
    .byte 0xc3
    .section .data, "aw"
    .globl data_word
data_word:
    .long 0x11223344
    .section .bss, "aw", @nobits
    .globl bss_var
bss_var:
    .skip 0x2000
"""
OTHER_S = """
    .section .data, "aw"
    .globl dup
dup:
    .long 0x55667788
"""
BUILD_ID = "0123456789abcdef0123456789abcdef01234567"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


@pytest.fixture(scope="module")
def elf_path(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("elf")
    (d / "link.lds").write_text(LINKER_SCRIPT)
    (d / "main.S").write_text(MAIN_S)
    (d / "other.S").write_text(OTHER_S)
    gcc = _need("gcc")
    for name in ("main", "other"):
        subprocess.run([gcc, "-m32", "-c", f"{name}.S", "-o", f"{name}.o"], cwd=d, check=True)
    subprocess.run([gcc, "-m32", "-nostdlib", "-static", "-Wl,-T,link.lds",
                    f"-Wl,--build-id=0x{BUILD_ID}", "-Wl,-z,noexecstack",
                    "main.o", "other.o", "-o", "kernel.elf"], cwd=d, check=True)
    return d / "kernel.elf"


def test_layout_symbols(elf_path):
    img = KernelImage.from_elf(elf_path)
    # .text holds 9 bytes from 0xC0100000; .data starts at the next page;
    # __init_end is the page after .data; bss is 0x2000 bytes from there.
    assert img.symbols["_text"] == 0xC0100000
    assert img.symbols["_start"] == 0xC0100000
    assert img.symbols["_etext"] == 0xC0100009
    assert img.symbols["data_word"] == 0xC0101000
    assert img.symbols["__init_end"] == 0xC0102000
    assert img.symbols["bss_var"] == 0xC0102000
    assert img.symbols["_end"] == 0xC0104000
    assert img.symbol("_end") == 0xC0104000


def test_global_symbol_wins_over_local_of_same_name(elf_path):
    img = KernelImage.from_elf(elf_path)
    # other.o's global `dup` is the first word of other.o's .data, after data_word.
    assert img.symbols["dup"] == 0xC0101004


def test_build_id(elf_path):
    assert KernelImage.from_elf(elf_path).build_id == BUILD_ID


def test_segments_linked_at_page_offset_loaded_at_1mib(elf_path):
    img = KernelImage.from_elf(elf_path)
    text = img.segment_at(0xC0100000)
    assert text is not None and text.executable
    assert text.paddr == text.vaddr - 0xC0000000 == 0x100000
    for seg in img.segments:
        assert seg.paddr == seg.vaddr - 0xC0000000
        assert seg.memsz >= seg.filesz
    bss = img.segment_at(0xC0102000)
    assert bss is not None and bss.vaddr + bss.memsz >= 0xC0104000


def test_read_virtual(elf_path):
    img = KernelImage.from_elf(elf_path)
    assert img.read_virtual(0xC0100000, 9) == bytes.fromhex("9090ccf40f0bebfec3")
    assert img.read_virtual(0xC0100002, 2) == bytes.fromhex("ccf4")
    assert img.read_virtual(0xC0101000, 8) == bytes.fromhex("4433221188776655")
    assert img.read_virtual(0xC0102000, 0x2000) == bytes(0x2000)  # bss is zeros


def test_read_outside_every_segment_is_an_error(elf_path):
    img = KernelImage.from_elf(elf_path)
    with pytest.raises(ElfError, match=r"0xc0104000 is in no loadable segment"):
        img.read_virtual(0xC0103FF0, 0x20)
    with pytest.raises(ElfError, match="0xc0000000"):
        img.read_virtual(0xC0000000, 4)


def test_missing_symbol_is_named(elf_path):
    img = KernelImage.from_elf(elf_path)
    with pytest.raises(ElfError, match="'swapper_pg_dir' not found in .*kernel.elf"):
        img.symbol("swapper_pg_dir")


def test_missing_file(tmp_path):
    with pytest.raises(ElfError, match="no such file"):
        KernelImage.from_elf(tmp_path / "absent.elf")


def test_not_an_elf(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, not an ELF\n")
    with pytest.raises(ElfError, match="not an ELF file"):
        KernelImage.from_elf(p)


def test_truncated_elf(tmp_path, elf_path):
    p = tmp_path / "cut.elf"
    p.write_bytes(elf_path.read_bytes()[:40])
    with pytest.raises(ElfError, match="cut.elf"):
        KernelImage.from_elf(p)


def test_elf64_is_refused(tmp_path):
    gcc = _need("gcc")
    (tmp_path / "a.S").write_text(".globl _start\n_start: ret\n")
    subprocess.run([gcc, "-m64", "-nostdlib", "-static", "a.S", "-o", "a64"], cwd=tmp_path,
                   check=True)
    with pytest.raises(ElfError, match="ELF64, not an ELF32 i386"):
        KernelImage.from_elf(tmp_path / "a64")


def test_other_32bit_machine_is_refused(tmp_path, elf_path):
    # Same file with e_machine (offset 18, 2 bytes) changed to EM_ARM (40).
    data = bytearray(elf_path.read_bytes())
    data[18:20] = (40).to_bytes(2, "little")
    p = tmp_path / "arm.elf"
    p.write_bytes(bytes(data))
    with pytest.raises(ElfError, match="not an ELF32 i386"):
        KernelImage.from_elf(p)
