"""The model and invariant layers on snapshots recorded from real QEMU runs
(tests/data/record_snapshots.py re-records them): the patched guest passes,
the pre-patch guest is flagged exactly where kernel-facts.md section 6 says,
and a single bit changed in a real snapshot is caught where it was changed.

Expected ranges are worked out here from the recorded symbols and the spec."""
import copy
import gzip
import json
from pathlib import Path

import pytest

from harness import checks, elf, report, runner, scenarios
from harness.snapshot import Snapshot

DATA = Path(__file__).resolve().parents[1] / "data" / "snapshots"


def load(case: str):
    sid, variant = case.split("@")
    d = DATA / case
    snaps = [Snapshot.from_dict(json.loads(gzip.open(d / f"{n}.json.gz").read()))
             for n in ("before", "after")]
    syms = json.loads((d / "symbols.json").read_text())["symbols"]
    image = elf.KernelImage(symbols={k: int(v, 16) for k, v in syms.items()})
    return scenarios.get(sid), image, *snaps


def judge(case: str, before=None, after=None):
    s, image, b, a = load(case)
    return runner.judge_tables(s, runner.RunOptions(), image, before or b, after or a)


def groups(v: checks.Verdict, check: str):
    return report.group([f for f in v.findings if f.check == check])


@pytest.mark.parametrize("case", ["pae-nopse-pge-nx-16M@patched", "nopae-nopse-pge-16M@patched",
                                  "xen-nopae-16M@patched"])
def test_patched_recordings_pass(case):
    v = judge(case)
    assert v.ok, report.render(case, v)
    s, _, _, after = load(case)
    assert checks.check_hypervisor_audit(after.guest or {}, s.pae) == []


def test_bug_a_in_a_recording():
    s, image, _, _ = load("pae-nopse-pge-nx-16M@prepatch")
    v = judge("pae-nopse-pge-nx-16M@prepatch")
    init_end = image.symbols["__init_end"]
    first, end = init_end + 0x1000, (init_end & ~0x1FFFFF) + 0x200000
    assert [(g.rule, g.va, g.end, g.count) for g in groups(v, "model")] == \
        [("entries", first, end, (end - first) // 0x1000)]
    assert [(g.rule, g.va, g.end) for g in groups(v, "invariants")] == [("nx", first, end)]
    assert groups(v, "model")[0].expected == "NX" and groups(v, "model")[0].actual == "executable"


def test_bug_b_in_a_recording():
    v = judge("nopae-pse-pge-128M-reservetop64M@prepatch")
    inv = [(g.rule, g.level, g.va, g.end, g.count) for g in groups(v, "invariants")]
    assert inv == [("tables-beyond", "pgd", 0xFC000000, 1 << 32, 16)]
    model_rules = {g.rule for g in groups(v, "model")}
    assert {"entries", "allocations", "hook-log"} <= model_rules


def test_bug_b_under_xen_in_a_recording():
    v = judge("xen-nopae-16M@prepatch")
    area = [(g.rule, g.va, g.end, g.count, g.actual) for g in groups(v, "invariants")]
    # PGD 1009..1022: the 14 empty chunks of the hypervisor's area (docs/xen.md)
    assert ("hypervisor-area", 1009 << 22, 1023 << 22, 14, "new entry") in area
    _, _, _, after = load("xen-nopae-16M@prepatch")
    audit = report.group(checks.check_hypervisor_audit(after.guest, pae=False))
    assert [(g.rule, g.va, g.end, g.count) for g in audit] == \
        [("hypervisor-area-write", 1009 << 22, 1023 << 22, 14)]


def test_one_bit_changed_in_a_real_snapshot_is_caught_there():
    s, image, before, after = load("pae-nopse-pge-nx-16M@patched")
    mutated = copy.deepcopy(after)
    # Make one lowmem page above the kernel image writable -> read-only: pick the
    # PTE of VA 0xc0800000 (pfn 0x800) in whichever PTE page maps it.
    va = 0xC0800000
    cpu = mutated.cpu
    pages = checks.pages_by_va(mutated.tables, cpu)
    pte_page = pages[("pte", va & ~0x1FFFFF)]
    idx = (va >> 12) & 511
    pte_page.entries[idx] &= ~0x2
    from harness import walker
    mutated.ranges = walker.merge(walker.walk(mutated.memory(), cpu).leaves)
    v = runner.judge_tables(s, runner.RunOptions(), image, before, mutated)
    got = {(g.check, g.rule, g.va, g.end, g.expected, g.actual) for g in report.group(v.findings)}
    assert got == {("model", "entries", va, va + 0x1000, "writable", "read-only"),
                   ("invariants", "protections", va, va + 0x1000, "writable", "read-only")}


def test_the_invariants_are_a_table_of_stated_facts():
    """checks.INVARIANTS: one row per invariant, each naming the fact of the spec it
    states, and every rule of the recorded pre-patch findings comes from one."""
    names = [name for name, _, _ in checks.INVARIANTS]
    assert len(names) == len(set(names))
    assert all(("kernel-facts §" in fact or "docs/xen.md" in fact) for _, fact, _ in checks.INVARIANTS)
    v = judge("nopae-pse-pge-128M-reservetop64M@prepatch")
    assert {f.rule for f in v.findings if f.check == "invariants"} == {"tables-beyond"}
