"""The scenario matrix: one declarative table, every case a stable id.

A scenario names the guest build (PAE or not), the CPU QEMU emulates, the
memory size and the guest command line, and what must come out of the boot.
Ids work on the command line (`ptharness check --scenario ID`) and with
`pytest -k`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from . import fixmap, x86

MiB = 1 << 20
GiB = 1 << 30
VA_TOP = 1 << 32
DEFAULT_FIXADDR_TOP = 0xFFFFF000
POISON = "0xdead0002"  # non-present, address bits set (kernel-facts §6 C)


# The bounds the spec derives from FIXADDR_TOP, each as FIXADDR_TOP minus so many
# pages (kernel-facts §3, §5): a reservetop= that puts one on a PMD boundary, or
# a page to either side, is where an off-by-one in its formula shows.
def _bound_pages(pae: bool) -> dict[str, int]:
    last_pkmap = x86.geometry(pae).last_pkmap
    return {"top": 0,                                   # FIXADDR_TOP (range-init end)
            "fixstart": fixmap.END - 1,             # __fix_to_virt(end - 1): range-init start
            "bootstart": fixmap.END,                # FIXADDR_BOOT_START
            "pkmap": fixmap.END + last_pkmap + 1}   # PKMAP_BASE before its rounding


def bound_names(pae: bool) -> tuple[str, ...]:
    """The bounds boundary_reservetop() can put on a PMD boundary."""
    return tuple(_bound_pages(pae))


def boundary_reservetop(pae: bool, bound: str, offset_pages: int, near: int = 64 * MiB) -> int:
    """The smallest reservetop= at or above `near` that puts `bound` exactly on a
    PMD boundary, moved so that the bound lands `offset_pages` pages above it."""
    pmd = x86.geometry(pae).pmd_size
    below_top = (_bound_pages(pae)[bound] + 1) * x86.PAGE_SIZE  # VA_TOP - reservetop - bound
    r = near + ((VA_TOP - near - below_top) % pmd)
    return r - offset_pages * x86.PAGE_SIZE

# What a boot of the patched guest must end in.
PASS = "pass"                # all checks pass, guest exits through the pass code
UNSUPPORTED = "unsupported"  # PAE build on a CPU without PAE: refused before paging_init
EXCEPTION = "exception"      # a deliberate fault after paging_init: exception code, report
AUDIT = "audit"              # pv=xen with pvbug=: the hypervisor records what the model flags

# pvbug= values (docs/xen.md) -> the guest's exit status (QEMU's) and the
# rules that must fire, besides the audit record the model predicts: the
# invariants, and the CPU's own verdict where a page table is left writable
# (the write probe goes through).
PVBUGS = {
    "writable-pt": (3, frozenset({("invariants", "tables-read-only"), ("probes", "write-pte")})),
    "writable-root": (3, frozenset({("invariants", "tables-read-only"),
                                    ("probes", "write-root")})),
    "unannounced-pt": (1, frozenset()),
    "batch-hv-write": (1, frozenset({("invariants", "hypervisor-area")})),
}

VARIANTS = ("patched", "prepatch")


@dataclass(frozen=True)
class Scenario:
    id: str
    pae: bool                       # the guest build
    pse: bool = True                # QEMU -cpu flags
    pge: bool = True
    nx: bool = True
    cpu_pae: bool | None = None     # None: same as the build
    memory: int = 128 * MiB
    cmdline: tuple[str, ...] = ()
    pv: str = "native"
    expect: str = PASS
    sets: frozenset[str] = field(default=frozenset({"full"}))

    # -- derived ---------------------------------------------------------------
    @property
    def cpu_flags(self) -> dict[str, bool]:
        return {"pse": self.pse, "pge": self.pge,
                "pae": self.pae if self.cpu_pae is None else self.cpu_pae, "nx": self.nx}

    @property
    def memory_arg(self) -> str:
        return x86.size_text(self.memory)

    @property
    def append(self) -> str:
        return " ".join((f"pv={self.pv}",) + self.cmdline)

    def knob(self, name: str) -> str | None:
        for word in self.cmdline:
            key, _, value = word.partition("=")
            if key == name:
                return value
        return None

    @property
    def reservetop(self) -> int:
        v = self.knob("reservetop")
        return parse_size(v) if v else 0

    @property
    def mem_limit(self) -> int | None:
        v = self.knob("mem")
        return parse_size(v) if v else None

    @property
    def poison(self) -> int | None:
        """poison=0xPATTERN: free pages and unused boot-table entries hold it."""
        v = self.knob("poison")
        return int(v, 16) if v else None

    @property
    def pvbug(self) -> str | None:
        """pvbug=NAME (pv=xen): a kernel-side fault the hypervisor's audit must see."""
        return self.knob("pvbug")

    @property
    def fixmap_range_end(self) -> int:
        """The patched fixmap range-init end, (FIXADDR_TOP + PMD_SIZE - 1) & PMD_MASK,
        as a 33-bit number: 1 << 32 when it wraps to 0 (kernel-facts §5)."""
        pmd = x86.geometry(self.pae).pmd_size
        top = VA_TOP - self.reservetop - x86.PAGE_SIZE if self.reservetop else DEFAULT_FIXADDR_TOP
        return (top + pmd - 1) & ~(pmd - 1)

    @property
    def smp(self) -> int:
        """smp=N: CPUs the guest starts (QEMU gets -smp N); 1 without the knob."""
        v = self.knob("smp")
        return int(v) if v else 1

    @property
    def noexec_off(self) -> bool:
        return self.knob("noexec") == "off"

    @property
    def nx_active(self) -> bool:
        """NX is used by the kernel: PAE build, CPU with NX, not noexec=off."""
        return self.pae and self.nx and not self.noexec_off

    @property
    def weight(self) -> float:
        """Rough relative cost of a run: what dominates is the number of 4 KiB
        lowmem pages (walked, modelled and listed by `info tlb`). Used to start
        the heavy scenarios first, so that parallel runs end together."""
        lowmem = min(self.memory, 896 * MiB) >> 12
        small_pages = not self.pse or self.pv == "xen"
        return 1.0 + (lowmem / 50_000 if small_pages else 0.0)

    @property
    def spec(self) -> str:
        """The scenario spelled out as one id-like string that from_spec() reads back:
        [xen-]pae|nopae-pse|nopse-pge|nopge-nx|nonx-SIZE[-KNOB=VALUE...]. Scenarios
        that are in no table (`ptharness explore` makes them) are named by it."""
        parts = ["xen"] if self.pv == "xen" else []
        parts += ["pae" if self.pae else "nopae", "pse" if self.pse else "nopse",
                  "pge" if self.pge else "nopge", "nx" if self.nx else "nonx", self.memory_arg]
        return "-".join(parts + list(self.cmdline))

    def expected_findings(self) -> frozenset[tuple[str, str]]:
        """(check, rule) pairs that must fail, and no others: a deliberately broken
        kernel (pvbug=) is caught by exactly the layers that should see it."""
        if self.expect == AUDIT and self.pvbug in PVBUGS:
            return PVBUGS[self.pvbug][1]
        return frozenset()

    def guest_variant(self, variant: str = "patched") -> str:
        return f"{'pae' if self.pae else 'nopae'}-{variant}"

    def prepatch_bugs(self) -> tuple[str, ...]:
        """Where the pre-patch code must differ from the patched one in this
        scenario, by the letters of kernel-facts.md section 6."""
        if self.expect == UNSUPPORTED:  # refused before paging_init: no tables to differ
            return ()
        if self.pv == "xen":
            # Under Xen the 2.6.21 code runs the range init into the hypervisor's
            # area (B); in PAE it first hits its own BUG() replacing the kernel PMD (C).
            # A poisoned PGD adds C's pmd_none half in the non-PAE build.
            if self.pae:
                return ("C",)
            return ("B", "C") if self.poison is not None else ("B",)
        bugs = []
        if self.pae and self.nx_active and not self.pse:
            bugs.append("A")  # stale `address`: NX lost above __init_end
        if self.fixmap_range_end != VA_TOP:
            bugs.append("B")  # range init runs to the wrap, past FIXADDR_TOP
        if self.poison is not None and not self.pae:
            # pmd_none keeps the poisoned, non-present PDEs of swapper_pg_dir and
            # derives table pointers from them (the PAE PMD page is a fresh one).
            bugs.append("C")
        return tuple(bugs)


def parse_size(text: str) -> int:
    """Linux memparse: a number with an optional K/M/G suffix."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower()
    mult = units.get(t[-1:], 1)
    digits = t[:-1] if t[-1:] in units else t
    return int(digits, 0) * mult


def _id(pae: bool, pse: bool, pge: bool, nx: bool, memory: int, extra: str = "") -> str:
    parts = ["pae" if pae else "nopae", "pse" if pse else "nopse", "pge" if pge else "nopge"]
    if pae:
        parts.append("nx" if nx else "nonx")
    parts.append(x86.size_text(memory))
    if extra:
        parts.append(extra)
    return "-".join(parts)


def _sets(quick: bool) -> frozenset[str]:
    return frozenset({"quick", "full"} if quick else {"full"})


def _native(pae: bool, pse: bool, pge: bool, nx: bool, memory: int, *, cmdline=(), extra="",
            quick=False) -> Scenario:
    return Scenario(id=_id(pae, pse, pge, nx, memory, extra), pae=pae, pse=pse, pge=pge,
                    nx=nx if pae else False, memory=memory, cmdline=tuple(cmdline),
                    sets=_sets(quick))


def _feature_cross() -> list[Scenario]:
    """The full cross product of CPU features and memory sizes, both builds."""
    out: list[Scenario] = []
    for memory in (16 * MiB, 128 * MiB, 896 * MiB, 1 * GiB, 3 * GiB):
        for pse in (True, False):
            for pge in (True, False):
                out.append(_native(False, pse, pge, False, memory,
                                   quick=(memory == 128 * MiB)))
                for nx in (True, False):
                    quick = ((memory == 128 * MiB and pge)
                             or (memory == 896 * MiB and pge and nx and not pse))
                    out.append(_native(True, pse, pge, nx, memory, quick=quick))
    # Memory sizes beyond the quick core, one line each in the quick set.
    quick_extra = {
        _id(False, False, True, False, 16 * MiB), _id(False, True, True, False, 896 * MiB),
        _id(False, False, True, False, 1 * GiB), _id(False, True, False, False, 3 * GiB),
        _id(True, True, True, True, 16 * MiB), _id(True, True, True, True, 1 * GiB),
        _id(True, False, False, True, 3 * GiB),
    }
    return [replace(s, sets=_sets(True)) if s.id in quick_extra else s for s in out]


def _knobs() -> list[Scenario]:
    """Command-line knobs: reservetop=, mem=, noexec=off."""
    out: list[Scenario] = []
    for pae in (False, True):
        for pse in (True, False):
            out.append(_native(pae, pse, True, pae, 128 * MiB, cmdline=("reservetop=64M",),
                               extra="reservetop64M", quick=True))
        out.append(_native(pae, False, True, pae, 896 * MiB, cmdline=("reservetop=64M",),
                           extra="reservetop64M", quick=pae))
        out.append(_native(pae, True, True, pae, 1 * GiB, cmdline=("mem=512M",),
                           extra="mem512M", quick=True))
    out.append(_native(True, False, True, True, 128 * MiB, cmdline=("noexec=off",),
                       extra="noexecoff", quick=True))
    return out


def _boundaries() -> list[Scenario]:
    """Bounds on and next to a PMD boundary (computed from the geometry), both modes."""
    quick_bounds = {(False, "bootstart"), (True, "fixstart"), (False, "pkmap"), (True, "top")}
    out: list[Scenario] = []
    for pae in (False, True):
        for bound in _bound_pages(pae):
            for offset, name in ((0, "pmd"), (1, "pmd-above"), (-1, "pmd-below")):
                r = boundary_reservetop(pae, bound, offset)
                out.append(_native(pae, True, True, pae, 128 * MiB,
                                   cmdline=(f"reservetop={r >> 10}K",),
                                   extra=f"{bound}-{name}",
                                   quick=offset == 0 and (pae, bound) in quick_bounds))
    return out


def _poison_and_smp() -> list[Scenario]:
    """Poisoned memory (free pages and unused boot-table entries are not zero);
    SMP, whose APs start through the low identity slot before the zap
    (kernel-facts §8), natively only: under pv=xen VCPUs are the hypervisor's."""
    out: list[Scenario] = []
    for pae in (False, True):
        for pse in (True, False):
            out.append(_native(pae, pse, True, pae, 128 * MiB, cmdline=(f"poison={POISON}",),
                               extra="poison", quick=(pse != pae)))
        out.append(_native(pae, not pae, True, pae, 1 * GiB, cmdline=(f"poison={POISON}",),
                           extra="poison"))
    for pae, pse, memory, n, quick in ((False, True, 128 * MiB, 2, True),
                                       (True, True, 1 * GiB, 4, True),
                                       (True, False, 128 * MiB, 2, False),
                                       (False, False, 1 * GiB, 4, False),
                                       (True, False, 3 * GiB, 4, False)):
        out.append(_native(pae, pse, True, pae, memory, cmdline=(f"smp={n}",),
                           extra=f"smp{n}", quick=quick))
    return out


def _xen() -> list[Scenario]:
    """The Xen-like paravirt case (docs/xen.md): PSE/PGE are offered by QEMU and
    hidden by the hypervisor; Xen sets the top, so no reservetop."""
    out: list[Scenario] = []
    for pae in (False, True):
        for memory in (16 * MiB, 128 * MiB, 896 * MiB, 1 * GiB, 3 * GiB):
            for nx in ((True, False) if pae else (False,)):
                sid = f"xen-{'pae' if pae else 'nopae'}{'-nx' if nx else ('-nonx' if pae else '')}"
                sid += f"-{x86.size_text(memory)}"
                quick = memory in (128 * MiB, 896 * MiB) and (nx or not pae)
                out.append(Scenario(id=sid, pae=pae, nx=nx, memory=memory, pv="xen",
                                    sets=_sets(quick)))
    for pae in (False, True):
        mode = "pae" if pae else "nopae"
        # NX off in the quick one: pv=xen without NX gets a second quick run.
        out.append(Scenario(id=f"xen-{mode}{'-nonx' if pae else ''}-128M-poison", pae=pae,
                            nx=False, pv="xen", cmdline=(f"poison={POISON}",),
                            sets=_sets(True)))
        out.append(Scenario(id=f"xen-{mode}{'-nx' if pae else ''}-896M-poison", pae=pae,
                            nx=pae, pv="xen", memory=896 * MiB, cmdline=(f"poison={POISON}",)))
        # A kernel that breaks the hypervisor's rules: the audit must record exactly
        # what the model's hypervisor flags (docs/xen.md, pvbug=).
        for bug in PVBUGS:
            quick = (not pae and bug == "writable-root") or (pae and bug == "batch-hv-write")
            out.append(Scenario(id=f"xen-{mode}-128M-pvbug-{bug}", pae=pae, nx=pae, pv="xen",
                                cmdline=(f"pvbug={bug}",), expect=AUDIT, sets=_sets(quick)))
    return out


def _other_outcomes() -> list[Scenario]:
    """Outcomes other than a pass: an unsupported CPU, an exception."""
    return [
        Scenario(id="pae-cpu-nopae-unsupported", pae=True, cpu_pae=False, nx=False,
                 expect=UNSUPPORTED, sets=_sets(True)),
        Scenario(id="nopae-pse-pge-128M-fault", pae=False, nx=False,
                 cmdline=("fault=0xd0000000",), expect=EXCEPTION, sets=_sets(True)),
        Scenario(id="pae-nopse-pge-nx-128M-fault", pae=True, pse=False,
                 cmdline=("fault=0xd0000000",), expect=EXCEPTION, sets=_sets(False)),
    ]


def _build() -> dict[str, Scenario]:
    table: dict[str, Scenario] = {}
    for part in (_feature_cross, _knobs, _boundaries, _poison_and_smp, _xen, _other_outcomes):
        for s in part():
            if s.id in table:
                raise AssertionError(f"duplicate scenario id {s.id}")
            table[s.id] = s
    return table


SCENARIOS: dict[str, Scenario] = _build()
MATRICES = ("quick", "full")


class UnknownScenario(KeyError):
    def __str__(self) -> str:
        return self.args[0]


_SIZE_RE = re.compile(r"^(\d+)([MG])$")
_FLAG_WORDS = {"pse": "pse", "nopse": "pse", "pge": "pge", "nopge": "pge", "nx": "nx", "nonx": "nx"}


def from_spec(spec: str) -> Scenario:
    """The scenario a spec names (Scenario.spec), expected to pass; its id is the
    spec itself. Raises UnknownScenario naming the word it cannot read."""
    words = spec.split("-")
    pv = "native"
    if words and words[0] == "xen":
        pv, words = "xen", words[1:]
    if not words or words[0] not in ("pae", "nopae"):
        raise UnknownScenario(f"scenario spec {spec!r}: starts with pae or nopae (after xen-)")
    fields: dict = {"pae": words[0] == "pae"}
    i = 1
    while i < len(words) and words[i] in _FLAG_WORDS:
        fields[_FLAG_WORDS[words[i]]] = not words[i].startswith("no")
        i += 1
    m = _SIZE_RE.match(words[i]) if i < len(words) else None
    if m is None:
        raise UnknownScenario(f"scenario spec {spec!r}: expected the memory size (e.g. 128M) "
                              f"after the CPU flags, got {words[i] if i < len(words) else 'nothing'!r}")
    fields["memory"] = int(m.group(1)) * (MiB if m.group(2) == "M" else GiB)
    knobs: list[str] = []
    for w in words[i + 1:]:
        if "=" not in w and knobs:  # a value with a dash in it: pvbug=writable-pt
            knobs[-1] += "-" + w
        elif "=" not in w or not w.split("=", 1)[1]:
            raise UnknownScenario(f"scenario spec {spec!r}: {w!r} is not a KNOB=VALUE word")
        else:
            knobs.append(w)
    fields.setdefault("nx", False)
    return Scenario(id=spec, cmdline=tuple(knobs), pv=pv, sets=frozenset(), **fields)


def in_table(s: Scenario) -> bool:
    """A scenario of the table (named by its id), not one made from a spec."""
    return SCENARIOS.get(s.id) == s


def get_or_spec(text: str) -> Scenario:
    """A table id, or else a spec (`ptharness debug` takes either)."""
    try:
        return get(text)
    except UnknownScenario as unknown:
        try:
            return from_spec(text)
        except UnknownScenario:
            raise unknown from None


def get(scenario_id: str) -> Scenario:
    try:
        return SCENARIOS[scenario_id]
    except KeyError:
        close = [i for i in SCENARIOS if scenario_id in i][:5]
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise UnknownScenario(
            f"unknown scenario {scenario_id!r}{hint} (`ptharness list` shows them all)") from None


def matrix(name: str) -> list[Scenario]:
    if name not in MATRICES:
        raise UnknownScenario(f"unknown matrix {name!r}: choose one of {', '.join(MATRICES)}")
    return [s for s in SCENARIOS.values() if name in s.sets]
