import sys

from host_tools.bench.runner import main

sys.exit(main())
