"""python -m host_tools.service --config service.json [--stats F] [--ready-file F] [--workers N]"""

import sys

from host_tools.service.cli import main

if __name__ == "__main__":
    sys.exit(main())
