"""The demo's recipe: one place for the synthetic world, the model and the schedule that demo.py runs and that
the benchmarks measure (they reuse the demo's world and its trained checkpoint)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoRecipe:
    """Everything demo.py trains and evaluates on the synthetic world, from one seed."""

    world: dict  # keyword arguments of datasets.synthetic.ensure_generated, beside the seed
    model: dict  # TokenConfig fields of the demo's models (the GeM baseline adds aggregation="gem")
    data_root: str = "data/synthetic"
    run_dir: str = "runs/demo"
    seed: int = 0
    epochs: int = 4
    warmup_epochs: float = 2  # linear warm-up from lr / 100, then a cosine to 0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    imsize: int = 64  # training crop
    test_imsize: int = 96  # longer side of the evaluation images

    @property
    def checkpoint(self):
        """The trained Token's checkpoint, which the benchmarks measure."""
        return f"{self.run_dir}/token/last.pth"


DEMO = DemoRecipe(world=dict(num_train_landmarks=100, num_distractors=50),
                  model=dict(backbone="resnet18", dim=256, out_dim=1024, heads=4, dropout=0.0, drop_path=0.0,
                             arcface_margin=0.0, arcface_scale=16.0))
QUICK = DemoRecipe(world=dict(num_train_landmarks=6, images_per_landmark=(4, 6), num_test_landmarks=3,
                              db_views_per_landmark=(4, 6), num_distractors=10),
                   model=dict(DEMO.model, dim=32, out_dim=32),
                   data_root="data/synthetic/quick", run_dir="runs/demo/quick", epochs=1, warmup_epochs=1,
                   batch_size=8, test_imsize=64)
