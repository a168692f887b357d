"""docs/architecture.md lists the modules so that imports only go downwards: a
module never imports one listed after it. Read from the sources, not trusted."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_imports_only_modules_listed_before_it():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    order = re.findall(r"^harness/(\w+)\.py", doc, flags=re.M)
    on_disk = {p.stem for p in (ROOT / "harness").glob("*.py")} - {"__init__"}
    assert set(order) == on_disk, "docs/architecture.md must list every module once"
    rank = {name: i for i, name in enumerate(order)}
    wrong = []
    for name in order:
        tree = ast.parse((ROOT / "harness" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                used = [node.module] if node.module else [a.name for a in node.names]
                wrong += [(name, u) for u in used if u in rank and rank[u] > rank[name]]
    assert wrong == [], f"imports of modules listed later: {wrong}"


def test_the_invariant_table_in_the_docs_is_the_code_s():
    """docs/architecture.md lists the invariants as `ptharness list --invariants`
    prints them from checks.INVARIANTS: a rule added or reworded shows there."""
    from harness.cli import invariants_table
    doc = (ROOT / "docs" / "architecture.md").read_text()
    shown = re.search(r"<!-- ptharness list --invariants -->\n(.*?)<!-- end -->", doc, re.S)
    assert shown, "docs/architecture.md has no generated invariant table"
    assert shown.group(1).splitlines() == invariants_table()
