"""The harness itself: firmware code really runs under the MicroPython unix
port, with firmware/ on the path, asyncio importable and heap limits applied."""


def test_runs_under_micropython(mpy):
    res = mpy.check("import sys\nprint(sys.implementation.name)\n")
    assert res.stdout.strip() == "micropython"


def test_firmware_and_asyncio_importable(mpy):
    res = mpy.check("import asyncio\nimport atls.errors\nprint('ok')\n")
    assert res.stdout.strip() == "ok"


def test_exit_status_and_stderr_reported(mpy):
    res = mpy.run("raise ValueError('boom')\n")
    assert res.returncode != 0
    assert "ValueError" in res.stdout + res.stderr


def test_heapsize_limit_applies(mpy):
    src = "import gc\ngc.collect()\nprint(gc.mem_free() + gc.mem_alloc())\n"
    small = int(mpy.check(src, heapsize="32K").stdout)
    big = int(mpy.check(src, heapsize="256K").stdout)
    assert small <= 32 * 1024 < big
    res = mpy.run("x = bytearray(64 * 1024)\n", heapsize="32K")
    assert res.returncode != 0 and "MemoryError" in res.stdout + res.stderr


def test_row_streaming_reports_failures(mpy):
    src = (
        "from vecrun import rows, unhex, Tally\n"
        "t = Tally()\n"
        "for i, f in rows():\n"
        "    t.check(i, unhex(f[0]) == unhex(f[1]), 'differ')\n"
        "t.report()\n"
    )
    summary = mpy.run_rows(src, [[b"ab", b"ab"], [b"", b""], [b"01", b"02"]], heapsize="32K")
    assert summary == {"ok": 2, "failed": [2]}
