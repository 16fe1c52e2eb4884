import signal
import subprocess
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


def mount(*args):
    """``mount ARGS``; the test is skipped where mounting is not permitted."""
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"mounting is not permitted here (mount {' '.join(args)}: {done.stderr.strip()})")


@pytest.fixture
def read_only(tmp_path):
    """A read-only bind mount (``tmp_path/read-only``) of the folder ``tmp_path/source``, which holds ``old.txt``
    and stays writable: a real read-only file system, which root cannot write either (root ignores chmod)."""
    source, target = tmp_path / "source", tmp_path / "read-only"
    source.mkdir()
    target.mkdir()
    (source / "old.txt").write_text("old")
    mount("--bind", str(source), str(target))
    try:
        mount("-o", "remount,ro,bind", str(target))
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)
