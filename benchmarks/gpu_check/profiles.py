"""The sizes of the GPU check's runs and of its CPU smoke run (``benchmarks.gpu_check``)."""

from dataclasses import dataclass, field

AMPS = ("bf16", "fp16")


@dataclass(frozen=True)
class Profile:
    """The sizes of one kind of run: the GPU check's or the CPU smoke run's."""

    model: list  # train.py model flags
    imsize: int  # training crops
    batch_size: int
    world: dict  # datasets.synthetic.ensure_generated keywords
    test_imsize: int
    extract_shape: tuple  # (H, W) of the extraction timing images
    extract_images: int
    extract_batch: int
    speed_steps: int  # timed training steps (after two warm-up steps)
    amps: tuple = AMPS  # the --amp settings trained with
    stage_s: dict = field(default_factory=dict)  # the most seconds a stage may take


GPU = Profile(model=["--backbone", "resnet101"], imsize=512, batch_size=16,
              world=dict(num_train_landmarks=16, images_per_landmark=(10, 10), num_test_landmarks=3,
                         db_views_per_landmark=(4, 6), num_distractors=10),
              test_imsize=1024, extract_shape=(768, 1024), extract_images=16, extract_batch=8, speed_steps=10,
              stage_s={"world": 60, "train": 75, "ddp": 75, "test": 60, "speed": 45})
SMOKE = Profile(model=["--backbone", "resnet18", "--dim", "32", "--out-dim", "32", "--heads", "4"], imsize=32,
                batch_size=4, world=dict(num_train_landmarks=4, images_per_landmark=(3, 3), num_test_landmarks=2,
                                         queries_per_landmark=(1, 1), db_views_per_landmark=(3, 3), num_distractors=2,
                                         image_size=(96, 96)),
                test_imsize=64, extract_shape=(48, 64), extract_images=4, extract_batch=2, speed_steps=1,
                amps=("none",),  # CPU autocast is slow without bf16 hardware, and test.py's AMP is CUDA only
                stage_s={"world": 120, "train": 120, "ddp": 120, "test": 120, "speed": 120})


def model_config(profile):
    """The TokenConfig of the profile's train.py model flags."""
    from networks import TokenConfig
    from training.options import get_args_parser

    return TokenConfig.from_args(get_args_parser().parse_args(profile.model))
