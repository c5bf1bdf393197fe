"""Small shims so firmware modules import unchanged on CPython.

``from atls.compat import const`` gives MicroPython's compile-time constant
marker on the device and an identity function on CPython.
"""
try:
    from micropython import const  # noqa: F401
except ImportError:  # CPython

    def const(x):
        return x
