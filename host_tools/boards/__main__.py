import sys

from host_tools.boards.cli import main

sys.exit(main())
