"""docs/ARCHITECTURE.md's TLS state diagram is the one host_tools.tls_diagram
generates from atls.tls.handshake.TRANSITIONS (RFC 8446 Appendix A.1)."""

import subprocess
import sys

import pytest

from atls.tls import handshake
from host_tools import tls_diagram
from host_tools.toolchain import ROOT


def test_architecture_doc_has_the_generated_diagram():
    res = subprocess.run(
        [sys.executable, "-m", "host_tools.tls_diagram", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr


def test_every_table_row_is_in_the_diagram_and_the_table():
    block = tls_diagram.generate()
    t = handshake.TRANSITIONS
    assert len(tls_diagram.rows()) == len(t) // 4
    for state, message, handler, nxt in tls_diagram.rows():
        for n in nxt:
            assert "    %s --> %s : %s\n" % (state, n, message) in block
        assert "| %s | %s | `%s` |" % (state, message, handler) in block


def test_check_fails_when_the_doc_differs_and_write_fixes_it(tmp_path):
    doc = tmp_path / "ARCHITECTURE.md"
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    doc.write_text(text.replace("WAIT_SH --> WAIT_EE : ServerHello", "WAIT_SH --> WAIT_CV : x"))
    assert tls_diagram.main(["--check", "--doc", str(doc)]) == 1
    assert tls_diagram.main(["--write", "--doc", str(doc)]) == 0
    assert doc.read_text() == text
    assert tls_diagram.main(["--check", "--doc", str(doc)]) == 0


def test_check_fails_without_markers(tmp_path):
    doc = tmp_path / "ARCHITECTURE.md"
    doc.write_text("# no diagram here\n")
    assert tls_diagram.main(["--check", "--doc", str(doc)]) == 1


def test_unknown_message_type_is_refused(monkeypatch):
    monkeypatch.setattr(handshake, "TRANSITIONS", ("WAIT_SH", 99, "x.y", "WAIT_EE"))
    with pytest.raises(ValueError):
        tls_diagram.rows()
