"""The rows of the paper's ablation tables (Tables 3-6), each a Token that differs from the full model in the
``TokenConfig`` fields of ``Row.model``; ``experiments/table<N>.sh`` trains them with the paper's recipe on GPUs and
``python -m experiments.ablations`` with the demo's on the synthetic world.

``paper`` holds the ROxf Medium / Hard mAP the paper prints for a row, where docs/FACTS.md has it (Table 3's
first two rows, and the full model's Table 1 numbers); for the other rows the paper states only the ranking, in
``Table.claim``. The ``gap`` table is ours, not the paper's: the full Token and the demo's GeM baseline trained
longer, or on larger crops (recipe overrides in ``Row.recipe``), to see whether the gap between them closes; the
``temperature`` table, ours too, divides the tokenizer's logits by sqrt(d) (the demo's d = 256).
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Row:
    key: str  # the row's name in its script and in --rows
    label: str
    model: dict = field(default_factory=dict)  # TokenConfig fields that differ from the full Token
    recipe: dict = field(default_factory=dict)  # DemoRecipe fields that differ from the demo's (the gap table)
    paper: str = ""  # the paper's ROxf Medium / Hard mAP

    @property
    def job(self):
        """The row's training run, shared by every row of every table with the same settings: its folder name."""
        settings = {**self.model, **self.recipe}
        return "-".join(f"{key}={value}" for key, value in sorted(settings.items())) or "token"


@dataclass(frozen=True)
class Table:
    title: str
    claim: str  # what the paper says the table shows
    rows: tuple


FULL = Row("full", "Token (tokenizer, LFSA, 2 refinement blocks, L = 4)", paper="82.28 / 66.57 (Table 1)")
GEM = Row("gem", "GeM pooling of the same local features (ours, the demo's baseline)", dict(aggregation="gem"))
GEM_16EP = Row("gem-16ep", "GeM, 16 epochs", dict(aggregation="gem"), dict(epochs=16))

TABLES = {
    "3": Table("Components: the SPoC baseline, then + tokenizer, + LFSA, + refinement block",
               "each component adds mAP; the tokenizer most (77.0 -> 79.8 Medium)",
               (Row("spoc", "SPoC (no LFSA, no tokens)", dict(aggregation="spoc", lfsa_blocks=0), paper="77.0 / 56.0"),
                Row("tokenizer", "+ tokenizer", dict(lfsa_blocks=0, refinement_blocks=0), paper="79.8 / 62.5"),
                Row("lfsa", "+ LFSA", dict(refinement_blocks=0)),
                FULL, GEM)),
    "4": Table("The refinement block's parts",
               "removing any part of the refinement block costs mAP",
               (FULL,
                Row("one-block", "one refinement block (N = 1)", dict(refinement_blocks=1)),
                Row("no-cross-attention", "no cross-attention", dict(cross_attention=False)),
                Row("no-self-attention", "no self-attention", dict(self_attention=False)))),
    "5": Table("The tokenizer",
               "the attention tokenizer beats the learned-centre and VQ (EMA-centre) tokenizers",
               (FULL,
                Row("learned", "learned centres", dict(tokenizer="learned")),
                Row("vq", "VQ centres (moving average)", dict(tokenizer="vq")))),
    "6": Table("The number of tokens L",
               "mAP rises with L up to L = 4, then falls",
               (Row("L1", "L = 1", dict(num_tokens=1)),
                Row("L2", "L = 2", dict(num_tokens=2)),
                FULL,
                Row("L8", "L = 8", dict(num_tokens=8)),
                Row("L16", "L = 16", dict(num_tokens=16)))),
    "gap": Table("Ours: does the gap between Token and GeM close with a longer schedule or larger crops?",
                 "not a paper table",
                 (FULL, GEM,
                  Row("full-8ep", "Token, 8 epochs", recipe=dict(epochs=8)),
                  Row("gem-8ep", "GeM, 8 epochs", dict(aggregation="gem"), dict(epochs=8)),
                  Row("full-16ep", "Token, 16 epochs", recipe=dict(epochs=16)),
                  GEM_16EP,
                  Row("full-128px", "Token, 128 px crops (4 x 4 maps), 160 px test", recipe=dict(imsize=128,
                                                                                                test_imsize=160)),
                  Row("gem-128px", "GeM, 128 px crops, 160 px test", dict(aggregation="gem"),
                      dict(imsize=128, test_imsize=160)))),
    "temperature": Table("Ours: the tokenizer's logits divided by sqrt(d) = 16 (--tokenizer-temperature 16)",
                         "not a paper table",
                         (FULL, GEM, Row("t16", "Token, tokenizer logits / 16", dict(tokenizer_temperature=16.0)),
                          GEM_16EP,
                          Row("t16-16ep", "Token, tokenizer logits / 16, 16 epochs", dict(tokenizer_temperature=16.0),
                              dict(epochs=16)))),
}
PAPER_TABLES = ("3", "4", "5", "6")  # the tables with a script in experiments/
