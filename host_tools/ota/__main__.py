import sys

from host_tools.ota.release import main

sys.exit(main())
