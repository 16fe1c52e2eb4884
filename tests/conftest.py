import signal
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "tests" / "data"  # key lists and golden descriptors of the released models (docs/FACTS.md)

# A shell without job control starts background commands (`make test &`) with SIGINT ignored, and every process
# inherits that: the Ctrl-C tests need the default, a KeyboardInterrupt, in this process and in its children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a
    shared 2-core machine, two spinning threads per process cost 50x in wall time."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def gldv2(tmp_path_factory):
    """A data root in the authors' layout: the small set in DIR/Google-landmark-v2, as train.py's --data-root. Shared
    by the ``test_faults_*`` files: their tests read it, and the split cache train.py writes there is the same for
    each."""
    from datasets.gldv2 import GLDV2_DIR
    from tests.test_train import small_set  # imported here: tests.test_train imports this module

    root = tmp_path_factory.mktemp("data")
    small_set(root / GLDV2_DIR)
    return root


@pytest.fixture(scope="session")
def eval_inputs(tmp_path_factory):
    """test.py's data root (the generated roxford5k-format set and R1M distractors) and a small Token checkpoint,
    shared by the ``test_test_*`` files: their tests copy the data root before they change it."""
    from tests.eval_sets import write_checkpoint, write_mini_set, write_r1m  # tests.eval_sets imports this module

    base = tmp_path_factory.mktemp("eval")
    write_mini_set(base / "data")
    write_r1m(base / "data")
    return base / "data", write_checkpoint(base / "token.pth")
