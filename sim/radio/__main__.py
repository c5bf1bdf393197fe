import sys

from sim.radio.cli import main

sys.exit(main())
