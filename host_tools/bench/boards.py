"""Section `boards` (issue 7): .mpy bytes per board and the heap the unix
port needs to import every firmware module (host_tools.boards)."""

NOTE = (
    "mpy-cross per board (host_tools.boards.mpy_sizes); import RAM = unix port "
    "gc.mem_alloc() after importing every module (64-bit: ~2x a 32-bit MCU)"
)


def boards(quick=False):
    from host_tools import boards as B

    res = {}
    for name, size in sorted(B.mpy_sizes().items()):
        res["mpy_bytes_%s" % name] = size
    ram = B.import_ram()
    res["import_ram_bytes_unix"] = ram["bytes"]
    res["import_modules"] = ram["modules"]
    res["import_failed"] = len(ram["failed"])
    return res
