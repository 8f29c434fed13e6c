"""``python -m autogen_http_runtime serve``: the same as the ``autogen-http-runtime`` command."""

import sys

from ._cli.main import main

if __name__ == "__main__":
    sys.exit(main())
