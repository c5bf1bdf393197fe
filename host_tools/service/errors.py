"""The service's one error of its own: a configuration it cannot use."""


class ConfigError(Exception):
    """A config or registry file that cannot be read or is invalid; the CLI
    prints it as `service: <message>` and exits 2."""
