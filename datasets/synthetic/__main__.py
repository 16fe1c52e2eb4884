"""``python -m datasets.synthetic``: the generator's command line (``cli.py``)."""

import sys

from datasets.synthetic.cli import main

sys.exit(main())
