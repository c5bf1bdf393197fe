"""Architecture rules of issue 11, checked on the tree: every wire fact has one
home (atls.protocol), the firmware never imports host code, no sys.path edits
in product code, and no import cycle between modules of different folders."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = [ROOT / "firmware", ROOT / "host_tools", ROOT / "sim"]
FACTS = ROOT / "firmware" / "atls" / "protocol.py"


def _product_files():
    for top in PRODUCT:
        yield from sorted(top.rglob("*.py"))


def _code_lines(path):
    """Source lines without comments and docstrings (facts may be *named* in prose)."""
    src = path.read_text()
    tree = ast.parse(src)
    doc_lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant):
            if isinstance(node.value.value, str):
                doc_lines.update(range(node.lineno, node.end_lineno + 1))
    for n, line in enumerate(src.splitlines(), 1):
        if n in doc_lines:
            continue
        yield n, line.split("#", 1)[0]


def _stray(pattern):
    rx = re.compile(pattern)
    found = []
    for path in _product_files():
        if path == FACTS:
            continue
        for n, line in _code_lines(path):
            if rx.search(line):
                found.append("%s:%d: %s" % (path.relative_to(ROOT), n, line.strip()))
    return found


def test_exporter_label_defined_once():
    assert _stray(r"application-layer-tls") == []


def test_device_suite_code_points_defined_once():
    assert _stray(r"0x130[145]\b|\\x13\\x0[145]") == []


def test_group_code_points_defined_once():
    assert _stray(r"0x001[dD]\b|0x0017\b") == []


def test_marker_defined_once():
    """The link marker (0xA0 under the mask 0xF0); DER's context tag [0] is also
    0xA0, so only a masked comparison or a MARKER definition counts."""
    assert _stray(r"0x[fF]0\)?\s*[!=]=\s*0x[aA]0\b|MARKER\s*=\s*(const\()?0x[aA]0") == []


def test_firmware_never_imports_host_code():
    bad = [p for p in (ROOT / "firmware").rglob("*.py") if "host_tools" in p.read_text()]
    assert bad == []


def test_no_sys_path_edits_in_product_code():
    assert _stray(r"sys\.path\.(insert|append)") == []


def _module_name(path):
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    if parts[0] == "firmware":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path, name):
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            out.add(base)
            out.update(base + "." + a.name for a in node.names)
    return out


def test_no_import_cycle_between_folders():
    """Cycles among modules of one folder (package) can be fine; a cycle that
    crosses folders means a layer imports upward."""
    mods = {_module_name(p): p for p in _product_files()}
    graph = {}
    for name, path in mods.items():
        graph[name] = {m for m in _imports(path, name) if m in mods and m != name}
    folder = {name: str(path.parent) for name, path in mods.items()}
    # strongly connected components (Tarjan)
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v, counter=[0]):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    crossing = [sorted(c) for c in comps if len({folder[m] for m in c}) > 1]
    assert crossing == []


def test_file_sizes():
    """Firmware modules stay small enough to compile on a device (~400 lines);
    host and simulator modules stay readable (~500)."""
    big = []
    for path in _product_files():
        limit = 420 if "firmware" in path.parts else 520
        n = len(path.read_text().splitlines())
        if n > limit:
            big.append("%s: %d lines" % (path.relative_to(ROOT), n))
    assert big == []
