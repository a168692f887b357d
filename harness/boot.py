"""The boot check layer: the state at pagetable_init entry held to the spec.

Every other layer takes the "before" snapshot as given; a boot stage that maps
too little, with the wrong flags or one table too many would be absorbed into
the model's prediction. This layer compares that snapshot with the state
harness.bootstate builds from the text (head.S natively, kernel-facts.md §4;
the hypervisor's start-of-day layout under pv=xen, docs/xen.md): registers,
every table entry, the variables that describe the boot mapping, the start
info, and what the guest says it poisoned.
"""
from __future__ import annotations

import re

from . import bootstate, x86
from .checks import Finding, compare_tables
from .scenarios import Scenario
from .snapshot import Snapshot

CR4_MODE_BITS = x86.CR4_PSE | x86.CR4_PAE | x86.CR4_PGE
_POISON_LINE = re.compile(r"^poison pattern=(0x[0-9a-fA-F]+) pages=(\d+) entries=(\d+)", re.M)


def spec_start(s: Scenario, symbols: dict[str, int],
               ram_bytes: int) -> bootstate.HeadS | bootstate.XenStart:
    """What the spec says the machine holds at pagetable_init entry. ram_bytes:
    the RAM the firmware reports (the hypervisor's nr_pages under pv=xen)."""
    head = bootstate.head_s(s.pae, symbols, None if s.pv == "xen" else s.poison)
    if s.pv != "xen":
        return head
    # The hypervisor's frames start right after head.S's pg0 tables (docs/xen.md).
    return bootstate.xen_start_of_day(s.pae, ram_bytes >> x86.PAGE_SHIFT, head.tables_end,
                                      s.poison, bootstate.xen_hyp_frames(symbols))


def check_boot(s: Scenario, spec: bootstate.HeadS | bootstate.XenStart, before: Snapshot,
               serial: str = "") -> list[Finding]:
    out = _registers(s, spec, before) + _variables(spec, before)
    out += compare_tables("boot", spec.before.tables, spec.before.cpu, before.tables, before.cpu)
    if isinstance(spec, bootstate.XenStart):
        out += _start_info(spec, before)
    out += _poison_report(s, spec, serial)
    return out


def _registers(s: Scenario, spec, before: Snapshot) -> list[Finding]:
    cpu = before.cpu
    xen = isinstance(spec, bootstate.XenStart)
    root = spec.pt_base if xen else spec.swapper
    want = {"cr0.pg": 1, "cr0.pe": 1, "cr3": root,
            "cr4 paging bits": x86.CR4_PAE if xen and s.pae else 0,
            # set_nx runs in paging_init before pagetable_init (kernel-facts §2)
            "efer.nxe": int(s.nx_active)}
    got = {"cr0.pg": int(cpu.paging), "cr0.pe": cpu.cr0 & 1,
           "cr3": cpu.root,
           "cr4 paging bits": cpu.cr4 & CR4_MODE_BITS, "efer.nxe": int(cpu.nxe)}
    if xen:  # the hypervisor enforces read-only in ring 0 too
        want["cr0.wp"], got["cr0.wp"] = 1, int(bool(cpu.cr0 & x86.CR0_WP))
    return [Finding("boot", "registers", f"{k}={want[k]:#x}", f"{k}={got[k]:#x}")
            for k in want if want[k] != got[k]]


def _variables(spec, before: Snapshot) -> list[Finding]:
    """init_pg_tables_end, init_map_end and the allocator's start as the spec's
    boot stage leaves them (docs/guest-contract.md)."""
    guest = before.guest or {}
    want = {k: spec.before.guest[k] for k in ("init_pg_tables_end", "init_map_end",
                                               "boot_alloc_start")}
    want["boot_alloc_cursor"] = want["boot_alloc_start"]  # nothing allocated yet
    out = []
    for name, value in want.items():
        have = guest.get(name)
        if have is not None and have != value:
            out.append(Finding("boot", "variables", f"{name}={value:#x}", f"{name}={have:#x}",
                               detail=_variable_role(name)))
    return out


def _variable_role(name: str) -> str:
    return {"init_pg_tables_end": "end of the boot tables",
            "init_map_end": "end of the boot mapping (the allocator's limit)",
            "boot_alloc_start": "PAGE_ALIGN(init_pg_tables_end)",
            "boot_alloc_cursor": "no page handed out before pagetable_init"}[name]


def _start_info(spec: bootstate.XenStart, before: Snapshot) -> list[Finding]:
    have = (before.guest or {}).get("start_info")
    if have is None:
        return [Finding("boot", "start-info", "the start-info block", "none recorded")]
    return [Finding("boot", "start-info", f"{k}={v:#x}", f"{k}={have.get(k, 0):#x}")
            for k, v in spec.start_info_fields.items() if have.get(k) != v]


def _poison_report(s: Scenario, spec, serial: str) -> list[Finding]:
    """The guest's own account of what it poisoned, against the spec's count."""
    if s.poison is None or not serial:
        return []
    m = _POISON_LINE.search(serial)
    if m is None:
        return [Finding("boot", "poison", f"a `poison pattern={s.poison:#010x}` line",
                        "none on the serial log")]
    guest = spec.before.guest
    want = (int(s.poison), (guest["init_map_end"] - guest["boot_alloc_start"]) // x86.PAGE_SIZE,
            spec.poisoned_entries)
    have = (int(m.group(1), 16), int(m.group(2)), int(m.group(3)))
    if want == have:
        return []
    return [Finding("boot", "poison", "pattern={:#x} pages={} entries={}".format(*want),
                    "pattern={:#x} pages={} entries={}".format(*have),
                    detail="free pages [boot_alloc_start, init_map_end); unused table entries")]
