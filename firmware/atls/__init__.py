"""atls: Application-Layer TLS for MicroPython devices (and the CPython host).

Everything under this package is written in the MicroPython dialect and also
imports unchanged on CPython, so the device and the host share one
implementation of every wire format and of the data channel.
"""
