"""Host-side tools (CPython): service, gateway, benchmarks, provisioning."""
