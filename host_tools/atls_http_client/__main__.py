"""python -m host_tools.atls_http_client --url ... (see the package doc)."""

import sys

from host_tools.atls_http_client.client import main

if __name__ == "__main__":
    sys.exit(main())
