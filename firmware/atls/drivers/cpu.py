"""The board's CPU frequency: board_config.json "cpu_freq_mhz", set at boot.

apply_freq(mhz) calls machine.freq(mhz * 1000000) and returns the frequency
the board reports afterwards (MHz); None when no frequency is configured or
the port has no machine.freq (the unix port).  ESP32_GENERIC boots at
160 MHz and takes 80, 160 or 240 (docs/BOARDS.md, "CPU frequency": the
power cost); the RP2040 takes what its PLL can make, and raises ValueError
for the rest.
"""


def apply_freq(mhz, machine=None):
    if mhz is None:
        return None
    if machine is None:
        try:
            import machine
        except ImportError:
            return None
    freq = getattr(machine, "freq", None)
    if freq is None:
        return None
    freq(int(mhz) * 1000000)
    return freq() // 1000000
