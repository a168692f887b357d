"""`ptharness walk --oracle` against QEMU in every paging mode and corner case.

Each case boots the stub guest, writes the layout's page tables into guest
physical memory and loads CR0/CR3/CR4/EFER through gdb (the gdbstub must take
the writes: set_register reads each back from QEMU), leaves the guest
stopped, and runs the real CLI against the gdbstub."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "guests"))
import stubguest as g  # noqa: E402

from harness import oracle, walker  # noqa: E402
from harness.gdbmi import GdbMemory  # noqa: E402

pytestmark = pytest.mark.qemu
PTHARNESS = [sys.executable, "-m", "harness.cli"]


@pytest.fixture(scope="module")
def stub_elf(tmp_path_factory):
    return g.build(tmp_path_factory.mktemp("stub"))


def run_cli(*args, timeout=120):
    return subprocess.run([*PTHARNESS, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=g.ROOT)


@pytest.mark.parametrize("case", sorted(g.CORNER_CASES))
def test_walk_agrees_with_qemu(case, stub_elf, tmp_path):
    lay = g.CORNER_CASES[case]()
    with g.booted(stub_elf, tmp_path, cpu=lay.cpu_flags) as (qemu, gdb):
        lay.install(gdb)  # raises if QEMU did not take a register as written
        regs = gdb.registers(["cr0", "cr3", "cr4", "efer"])
        assert regs == {"cr0": g.CR0_PAGING, "cr3": lay.cr3, "cr4": lay.cr4, "efer": lay.efer}
        gdb.disconnect()  # leave the guest stopped for the CLI
        snap_path = tmp_path / "snap.json"
        res = run_cli("walk", "--gdb", qemu.gdb_endpoint, "--oracle", "--json", str(snap_path),
                      "--va", "0xc0001abc", "--transcript", str(tmp_path / "cli.mi"))
        assert res.returncode == 0, f"{case}: ptharness walk failed:\n{res.stdout}\n{res.stderr}"
        assert "oracle: QEMU's info tlb and info mem agree with the walk" in res.stdout
        assert "walk of 0xc0001abc:" in res.stdout
        assert " table pages, " not in res.stdout  # --va alone: only the walk asked for

        # The snapshot taken through gdb is the walk of the layout itself.
        expect = walker.walk(lay.memory(), lay.cpu)
        snap = json.loads(snap_path.read_text())
        assert snap["mode"] == ("pae" if lay.cpu.pae else "2-level")
        assert [(int(r["va"], 16), int(r["pa"], 16), int(r["size"], 16), r["rwx"], r["user"])
                for r in snap["ranges"]] == [
            (r.va, r.pa, r.size, "r" + "-w"[r.writable] + "-x"[r.executable], r.user)
            for r in walker.merge(expect.leaves)]
        assert sorted((p["level"], int(p["va"], 16)) for p in snap["problems"]) == sorted(
            (p.level, p.va) for p in expect.problems)
        assert snap["provenance"]["qemu"].startswith("7.")


def test_oracle_catches_a_walker_that_page_aligns_cr3(stub_elf, tmp_path):
    """The comparison is not vacuous: a walk of the decoy PDPT (CR3 & ~0xfff,
    the classic mistake) disagrees with QEMU."""
    lay = g.pae(True)
    with g.booted(stub_elf, tmp_path, cpu=lay.cpu_flags) as (_, gdb):
        lay.install(gdb)
        tlb, mem = oracle.fetch(gdb)
        right = walker.walk(GdbMemory(gdb), lay.cpu)
        assert oracle.compare(right, tlb, mem) == []
        wrong_cpu = walker.CpuState(cr0=lay.cpu.cr0, cr3=lay.cr3 & ~0xFFF, cr4=lay.cr4,
                                    efer=lay.efer)
        wrong = walker.walk(GdbMemory(gdb), wrong_cpu)
        found = oracle.compare(wrong, tlb, mem)
        kinds = {d.kind for d in found}
        assert {"tlb-pa", "tlb-extra", "mem"} <= kinds, found
        # The decoy maps 0xC0000000 as a 2 MiB page at 0xa00000; QEMU a 4 KiB one at 0x100000.
        pa = [d for d in found if d.kind == "tlb-pa"]
        assert pa[0].va == 0xC0000000 and "0xa00000" in pa[0].walker and "0x100000" in pa[0].qemu


def test_phys_bits_32_rejects_pse36_pages(stub_elf, tmp_path):
    """With MAXPHYADDR 32 (a CPU without PSE-36) bits 13-20 of a 4 MiB PDE are
    reserved: both PSE-36 pages become problems, and QEMU (which maps them
    anyway) is not compared there."""
    lay = g.two_level(pse=True)
    with g.booted(stub_elf, tmp_path, cpu=lay.cpu_flags) as (qemu, gdb):
        lay.install(gdb)
        gdb.disconnect()
        res = run_cli("walk", "--gdb", qemu.gdb_endpoint, "--oracle", "--phys-bits", "32")
    assert res.returncode == 0, res.stdout + res.stderr
    problems = [ln for ln in res.stdout.splitlines() if ln.startswith("problem:")]
    assert len(problems) == 2 and "VA 0xc0400000" in problems[0] and "VA 0xc0800000" in problems[1]


def test_walk_of_paging_off(stub_elf, tmp_path):
    with g.booted(stub_elf, tmp_path) as (qemu, gdb):
        gdb.disconnect()
        res = run_cli("walk", "--gdb", qemu.gdb_endpoint, "--oracle")
    assert res.returncode == 0, res.stderr
    assert "paging is off" in res.stdout
