"""``python -m benchmarks.gpu_check``: the GPU check's command line (``benchmarks.gpu_check.main``)."""

import sys

from benchmarks.gpu_check import main

sys.exit(main())
