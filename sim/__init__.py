"""Simulator: a simulated 802.15.4/ZigBee medium with emulated XBee 3 modules
(sim.radio), and the fleet runner and scenarios built on it.

Everything here is CPython.  The emulated modules speak the same API frames
as real ones (encoded by firmware/atls/xbee.py), so the gateway and the device
driver run their real code paths against them.
"""
