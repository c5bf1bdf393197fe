"""The TLS client's state diagram, generated from its transition table.

    python -m host_tools.tls_diagram            print the generated block
    python -m host_tools.tls_diagram --check    exit 1 if docs/ARCHITECTURE.md differs
    python -m host_tools.tls_diagram --write    rewrite the block in docs/ARCHITECTURE.md

The block sits between `<!-- tls-states:begin -->` and `<!-- tls-states:end -->`
in the "The TLS client" section: a Mermaid stateDiagram-v2 and a table with one
row per entry of atls.tls.handshake.TRANSITIONS (RFC 8446 Appendix A.1), read
by importing the firmware client under CPython.  tests/test_tls_diagram.py
checks that the document and the table agree.
"""

import argparse
import sys

from atls.tls import client, handshake
from host_tools.toolchain import ROOT

DOC = ROOT / "docs" / "ARCHITECTURE.md"
BEGIN = "<!-- tls-states:begin -->"
END = "<!-- tls-states:end -->"

# RFC 8446 §4 HandshakeType names of the messages the table can name
MESSAGE_NAMES = {
    1: "ClientHello",
    2: "ServerHello",
    4: "NewSessionTicket",
    8: "EncryptedExtensions",
    11: "Certificate",
    13: "CertificateRequest",
    15: "CertificateVerify",
    20: "Finished",
    24: "KeyUpdate",
    handshake.HELLO_RETRY_REQUEST: "HelloRetryRequest",
}


def rows():
    """(state, message name, handler name, (next states...)) per table row."""
    table = handshake.TRANSITIONS
    out = []
    for i in range(0, len(table), 4):
        state, mtype, handler, nxt = table[i : i + 4]
        if mtype not in MESSAGE_NAMES:
            raise ValueError("no name for handshake type %r in row %d" % (mtype, i // 4))
        name = handler if isinstance(handler, str) else "handshake." + handler.__name__
        out.append((state, MESSAGE_NAMES[mtype], name, nxt if isinstance(nxt, tuple) else (nxt,)))
    return out


def generate():
    """The Markdown between the markers (without them)."""
    lines = [
        "```mermaid",
        "stateDiagram-v2",
        "    [*] --> %s" % client.START,
        "    %s --> %s : send ClientHello" % (client.START, client.WAIT_SH),
    ]
    for state, message, _, nxt in rows():
        for n in nxt:
            lines.append("    %s --> %s : %s" % (state, n, message))
    lines += [
        "    %s --> [*]" % client.CLOSED,
        "    note right of %s : from any state, on a failure, a peer alert or close()"
        % client.CLOSED,
        "```",
        "",
        "| state | received | handler | next state |",
        "|---|---|---|---|",
    ]
    for state, message, handler, nxt in rows():
        lines.append("| %s | %s | `%s` | %s |" % (state, message, handler, " or ".join(nxt)))
    return "\n".join(lines) + "\n"


def replace_block(text, block):
    """`text` with the block between the markers replaced; ValueError
    without exactly one pair of markers."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError("expected one %s and one %s" % (BEGIN, END))
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return head + BEGIN + "\n" + block + END + tail


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_tools.tls_diagram", description=__doc__)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if the document differs")
    mode.add_argument("--write", action="store_true", help="rewrite the block in the document")
    ap.add_argument("--doc", default=str(DOC), help="the document (default: %(default)s)")
    args = ap.parse_args(argv)
    block = generate()
    if not (args.check or args.write):
        sys.stdout.write(block)
        return 0
    with open(args.doc, encoding="utf-8") as f:
        text = f.read()
    try:
        new = replace_block(text, block)
    except ValueError as e:
        print("%s: %s" % (args.doc, e), file=sys.stderr)
        return 1
    if args.check:
        if new != text:
            print(
                "%s: the TLS state diagram differs from atls.tls.handshake.TRANSITIONS;"
                " run python -m host_tools.tls_diagram --write" % args.doc,
                file=sys.stderr,
            )
            return 1
        return 0
    if new != text:
        with open(args.doc, "w", encoding="utf-8") as f:
            f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
