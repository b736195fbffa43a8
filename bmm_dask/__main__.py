"""``python -m bmm_dask``: the same as the ``bmm-dask`` command."""

import sys

from bmm_dask.cli import main

sys.exit(main())
