"""``python -m prm``: the command line, :mod:`prm.cli`."""

import os

from prm.cli import main

if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
