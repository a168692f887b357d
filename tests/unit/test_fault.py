"""The fault section of a report: the guest's exception line decoded, and the
faulting instruction found in the guest's own ELF (built by scripts/bootstrap)."""
from pathlib import Path

import pytest

from harness import elf, fault

ROOT = Path(__file__).resolve().parents[2]
# A line as the guest prints it (recorded from a `fault=0xd0000000` boot).
LINE = "exception vector=14 (#PF) eip=0xc01022e8 cr2=0xd0000000 error=0x00000000"


def test_parse_and_decode_page_fault():
    f = fault.parse("mem ...\n" + LINE + "\nexit code=2 exception\n")
    assert (f.vector, f.mnemonic, f.eip, f.cr2, f.error) == (14, "PF", 0xC01022E8, 0xD0000000, 0)
    assert fault.decode_error(f) == "error code 0x0: page not present, read, supervisor mode"
    # P=1 W=1 U=0 RSVD=1 I/D=1
    f2 = fault.Fault(14, "PF", 0, 0, 0x1B)
    assert fault.decode_error(f2) == ("error code 0x1b: protection violation, write, "
                                      "supervisor mode, reserved bit set in a paging entry, "
                                      "instruction fetch")
    assert fault.decode_error(fault.Fault(13, "GP", 0, 0, 0x10)) == "error code 0x10"
    assert fault.parse("no exception here") is None


@pytest.fixture(scope="module")
def image():
    path = ROOT / "guest" / "build" / "nopae-patched" / "kernel.elf"
    assert path.is_file(), "guest not built: run scripts/bootstrap (or make -C guest)"
    return elf.KernelImage.from_elf(path)


def test_disassembly_marks_the_instruction_inside_its_function(image):
    start = image.symbols["fault_probe"]
    lines = fault.disassembly(image, start)
    marked = [ln for ln in lines if ln.startswith("=>")]
    assert len(marked) == 1 and f"{start:08x} <fault_probe+0x0>" in marked[0]
    # An address inside an instruction is not a boundary: said, not guessed.
    first_len = int(len(marked[0].split()[3]) / 2)
    if first_len > 1:
        assert "not on an instruction boundary" in fault.disassembly(image, start + 1)[0]


def test_explain_names_vector_cr2_and_instruction(image):
    eip = image.symbols["fault_probe"]
    text = fault.explain(f"exception vector=14 (#PF) eip={eip:#x} cr2=0xd0000000 error=0x2", image)
    assert "vector 14 (#PF, page fault)" in text
    assert "cr2 0xd0000000; error code 0x2: page not present, write, supervisor mode" in text
    assert "=> " in text and "<fault_probe+0x0>" in text
