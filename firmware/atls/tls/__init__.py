"""A slim, sans-I/O TLS 1.3 client (RFC 8446) for MicroPython devices."""
