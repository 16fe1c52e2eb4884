"""The demo's recipe: one place for the synthetic world, the models and the schedule that demo.py runs and that
the benchmarks measure (they reuse the demo's world and its trained checkpoint)."""

from dataclasses import dataclass
from pathlib import Path

from networks.config import CONFIGS, TokenConfig

# demo.py --models name -> the model it trains (token, gem) or initialises (untrained): the gem row is Token with
# GeM pooling of its local features in place of the tokens (networks/token.py); every other name is a Table 1
# baseline of networks.config.CONFIGS
TOKEN_VARIANTS = {"token": {}, "gem": {"aggregation": "gem"}, "untrained": {}}


@dataclass(frozen=True)
class DemoRecipe:
    """Everything demo.py trains and evaluates on the synthetic world, from one seed."""

    world: dict  # keyword arguments of datasets.synthetic.ensure_generated, beside the seed
    model: dict  # TokenConfig fields of the demo's Token models (the GeM baseline adds aggregation="gem")
    baselines: dict  # model name -> config fields of each Table 1 baseline at the demo's size
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
    asmk_words: int = 1024  # the HOW + ASMK row's codebook (HOW's 65,536 is far more than the world's features)

    @property
    def checkpoint(self):
        """The trained Token's checkpoint, which the benchmarks measure."""
        return f"{self.run_dir}/token/last.pth"

    def config(self, name):
        """The model config of demo.py's ``--models`` entry ``name``."""
        if name in TOKEN_VARIANTS:
            return TokenConfig(**self.model, **TOKEN_VARIANTS[name])
        return CONFIGS[name](**self.baselines[name])

    def train_flags(self, name, progress=True, extractor=None):
        """train.py's flags that train the model ``name`` with this recipe into ``run_dir/name``, on the CPU. The
        aggregator reads the local features of ``extractor`` (a checkpoint), of the images thumbnailed to the
        evaluation's size, ``test_imsize``; the other models train from scratch on ``imsize`` crops."""
        config = self.config(name)
        inputs = (["--extractor", str(extractor), "--imsize", str(self.test_imsize)] if config.model == "aggregator"
                  else ["--no-pretrained", "--imsize", str(self.imsize)])
        return ["--model", config.model, *config.as_flags(), "--data-root", self.data_root,
                "--output-dir", str(Path(self.run_dir) / name), *inputs, "--device", "cpu",
                "--workers", "0", "--epochs", str(self.epochs),
                "--batch-size", str(self.batch_size), "--optimizer", "adamw", "--lr", str(self.lr),
                "--weight-decay", str(self.weight_decay), "--schedule", "cosine",
                "--warmup-epochs", str(self.warmup_epochs), "--warmup-lr", str(self.lr / 100),
                "--seed", str(self.seed), "--crop-scale", "0.6", "1.0", "--no-color-jitter", "--pipeline", "released",
                *([] if progress else ["--no-progress"])]

    def eval_settings(self, checkpoint, output_dir, progress=True):
        """``retrieval.evaluation.EvalSettings`` fields that evaluate ``checkpoint`` as test.py does on the world's
        ``synthetic`` test set (three scales, exact search), writing into ``output_dir``."""
        return dict(checkpoint=str(checkpoint), data_root=self.data_root, datasets=["synthetic"],
                    imsize=self.test_imsize, device="cpu", workers=0, output_dir=str(output_dir), progress=progress)


# Every model: a ResNet-18 trained from scratch (no ImageNet weights offline) with the Token's ArcFace head settings
# (no margin, s = 16: a margin slows learning from scratch); descriptors as large as the trunk's 512 channels, as
# the released baselines' 2048 are ResNet-101's.
HEAD = dict(backbone="resnet18", arcface_margin=0.0, arcface_scale=16.0)
DEMO = DemoRecipe(world=dict(num_train_landmarks=100, num_distractors=50),
                  model=dict(HEAD, dim=256, out_dim=1024, heads=4, dropout=0.0, drop_path=0.0),
                  baselines=dict(rmac=dict(HEAD, out_dim=512), solar=dict(HEAD, out_dim=512),
                                 delg=dict(HEAD, out_dim=512, local_dim=128, local_margin=0.0, local_scale=16.0),
                                 netvlad=dict(HEAD, dim=256, heads=4, dropout=0.0, drop_path=0.0),
                                 apgem=dict(HEAD, out_dim=512),
                                 how=dict(HEAD, skip_layer=1),
                                 # over the demo HOW's frozen 128-d local features, with Token's sizes and head
                                 aggregator=dict(arcface_margin=0.0, arcface_scale=16.0, local_dim=128,
                                                 num_features=256, dim=256, out_dim=1024, heads=4, dropout=0.0)))
QUICK = DemoRecipe(world=dict(num_train_landmarks=6, images_per_landmark=(4, 6), num_test_landmarks=3,
                              db_views_per_landmark=(4, 6), num_distractors=10),
                   model=dict(DEMO.model, dim=32, out_dim=32),
                   baselines=dict(rmac=dict(HEAD, out_dim=32), solar=dict(HEAD, out_dim=32),
                                  delg=dict(DEMO.baselines["delg"], out_dim=32, local_dim=16),
                                  netvlad=dict(DEMO.baselines["netvlad"], dim=32), apgem=dict(HEAD, out_dim=32),
                                  how=DEMO.baselines["how"],
                                  aggregator=dict(DEMO.baselines["aggregator"], num_features=32, dim=32, out_dim=32)),
                   data_root="data/synthetic/quick", run_dir="runs/demo/quick", epochs=1, warmup_epochs=1,
                   batch_size=8, test_imsize=64, asmk_words=64)
