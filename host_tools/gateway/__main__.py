"""`python -m host_tools.gateway run|pair|list|unpair|stats --config gateway.json` (cli.py)."""

import sys

from host_tools.gateway.cli import main

# "gateway.py": the name usage and error lines have always shown (host_tools/gateway.py)
sys.exit(main(prog="gateway.py"))
