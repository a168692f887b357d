"""The `probes` check layer: the CPU's own verdict on the tables, a fourth
opinion beside the walker, the model and QEMU's monitor.

After the zap the guest executes, writes and reads at chosen addresses and
records whether each faulted, with the vector, error code and CR2
(docs/guest-contract.md "Probes"). What each must do is stated here from the
scenario and the spec alone (kernel-facts §2, §6-8, docs/xen.md), never from
the guest's tables:

- exec-data:     a `ret` in a lowmem data page above __init_end's page: #PF
                 with I/D and P set where NX is active and the page is mapped
                 NX (kernel-facts §5: a 4 KiB page above __init_end; with PSE
                 a 2 MiB page that holds no text at either end), else it runs;
- exec-text:     a `ret` in kernel text: runs;
- write-data:    a write to an ordinary data page: succeeds;
- write-root / write-pte (pv=xen): a write to swapper_pg_dir / to the first PTE
                 page through PAGE_OFFSET: #PF with P and W/R set (the
                 hypervisor keeps page tables read-only, CR0.WP on);
- read-identity: a read of 0x00100000 after the zap: #PF, not present.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import records, x86
from .checks import Finding

CHECK = "probes"
PF = 14
ERR_P, ERR_W, ERR_ID = 0x1, 0x2, 0x10
IDENTITY_VA = 0x00100000  # the kernel's physical load address


@dataclass(frozen=True)
class Expected:
    name: str
    va: int | None       # None: any address in `within`
    fault_error: int | None  # the #PF error code; None: must not fault
    within: tuple[int, int] | None = None


LARGE_PAGE = 2 << 20  # NX exists only in PAE, whose large pages are 2 MiB


def mapped_nx(va: int, nx_active: bool, large_pages: bool, init_end: int) -> bool:
    """kernel_physical_mapping_init's protection for lowmem at va: NX unless it
    is "text" (PAGE_OFFSET..__init_end inclusive); a large page is text when
    its first or its last byte is."""
    def text(a: int) -> bool:
        return x86.PAGE_OFFSET <= a <= init_end
    if not nx_active:
        return False
    if large_pages:
        base = va & ~(LARGE_PAGE - 1)
        return not (text(base) or text(base + LARGE_PAGE - 1))
    return not text(va)


def expected(pv: str, nx_active: bool, large_pages: bool, symbols: dict[str, int],
             first_pte_page: int | None) -> list[Expected]:
    """The probes in the order the guest runs them. large_pages: the kernel maps
    lowmem with PSE (natively, on a CPU with PSE); first_pte_page: physical
    address of the first PTE page pagetable_init allocated (pv=xen)."""
    data = symbols["probe_data_page"]
    nx = mapped_nx(data, nx_active, large_pages, symbols["__init_end"])
    out = [Expected("exec-data", data, ERR_P | ERR_ID if nx else None),
           Expected("exec-text", None, None, within=(symbols["_text"], symbols["_etext"])),
           Expected("write-data", None, None, within=(data, data + x86.PAGE_SIZE))]
    if pv == "xen":
        out.append(Expected("write-root", symbols["swapper_pg_dir"], ERR_P | ERR_W))
        out.append(Expected("write-pte", None if first_pte_page is None
                            else x86.PAGE_OFFSET + first_pte_page, ERR_P | ERR_W))
    out.append(Expected("read-identity", IDENTITY_VA, 0))
    return out


def check_probes(want: list[Expected], got: list[dict]) -> list[Finding]:
    out: list[Finding] = []
    names = [records.PROBE_NAMES.get(p["id"], f"id {p['id']}") for p in got]
    if names != [w.name for w in want]:
        out.append(Finding(CHECK, "ran", ", ".join(w.name for w in want) or "(none)",
                           ", ".join(names) or "(none)"))
    by_name = dict(zip(names, got))
    for w in want:
        p = by_name.get(w.name)
        if p is None:
            continue
        va = p["va"]
        if w.va is not None and va != w.va:
            out.append(Finding(CHECK, w.name, f"at {w.va:#x}", f"at {va:#x}", va=va))
            continue
        if w.within is not None and not w.within[0] <= va < w.within[1]:
            out.append(Finding(CHECK, w.name, f"in [{w.within[0]:#x}, {w.within[1]:#x})",
                               f"at {va:#x}", va=va))
            continue
        text = _outcome(p)
        if w.fault_error is None:
            if p["faulted"]:
                out.append(Finding(CHECK, w.name, "no fault", text, level="pte", va=va & ~0xFFF,
                                   span=x86.PAGE_SIZE))
            continue
        want_text = f"#PF error {w.fault_error:#x} cr2 {va:#x}"
        if not p["faulted"]:
            out.append(Finding(CHECK, w.name, want_text, "no fault: the access went through",
                               level="pte", va=va & ~0xFFF, span=x86.PAGE_SIZE))
        elif (p["vector"], p["error"] & (ERR_P | ERR_W | ERR_ID), p["cr2"]) != (PF, w.fault_error, va):
            out.append(Finding(CHECK, w.name, want_text, text, level="pte", va=va & ~0xFFF,
                               span=x86.PAGE_SIZE))
    return out


def _outcome(p: dict) -> str:
    if not p["faulted"]:
        return "no fault"
    return f"vector {p['vector']} error {p['error']:#x} cr2 {p['cr2']:#x} at eip {p['eip']:#x}"
