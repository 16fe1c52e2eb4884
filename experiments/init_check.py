"""Whether a model file's layers were trained or are still at their initialisation (issue 21, item 3: the released
R101-DELG's local branch, which the authors' released training script cannot train).

For each weight (2+ dims) and bias of the named layers: shape, fan_in and fan_out (as ``torch.nn.init`` computes
them), mean, std, max |w|, and two tests under each initialisation hypothesis, a distribution fixed by the fans:

- weights: PyTorch's default for Conv2d / Linear (kaiming_uniform with a = sqrt(5): U(-b, b), b = 1/sqrt(fan_in)),
  Xavier uniform (b = sqrt(6 / (fan_in + fan_out))), Xavier normal (std sqrt(2 / (fan_in + fan_out))), Kaiming
  normal over fan_in and over fan_out (std sqrt(2 / fan), torchvision's ResNet convolutions use fan_out);
- biases: PyTorch's default (U(-b, b), b = 1/sqrt(fan_in) of the layer's weight) and zero.

The tests: a Kolmogorov-Smirnov test of the values against the distribution (``scipy.stats.kstest``), and a test of the
largest |w| (a uniform: none beyond b, and the probability of a maximum this far below b; a normal: the probability
of a maximum this extreme, two-sided). A tensor is consistent with a hypothesis when both p-values are at least
0.001. The tests see the values' distribution only: a layer trained so little that its values' distribution did not
change (relative moves well under 1/sqrt(number of values)) still passes.

    python -m experiments.init_check models/R101-DELG.pth
    python -m experiments.init_check runs/delg/last.pth --layers whiten local.reduction --json init.json

Default layers: a DELG's local branch (``local.attention``, ``local.reduction``, and ``local.arcface`` when the file
has it); for other models name them with ``--layers`` (prefixes of our parameter names, or of the released ones).
"""

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import kstest, norm, uniform

from utils import checks
from utils.atomic import save_json
from utils.errors import InputError, fail_cleanly
from utils.paths import writable_file
from weights import load_model
from weights.released import released_to_ours

# A hypothesis is rejected when either test's p-value is below this: a tensor still at an initialisation is called
# trained (the misleading error) with probability about 2 ALPHA per hypothesis, and a layer of 1,000+ values moved
# by training gives p-values far smaller.
ALPHA = 0.001
DELG_LOCAL = ("local.attention", "local.reduction", "local.arcface")


@dataclass(frozen=True)
class Hypothesis:
    """An initialisation: ``kind`` "uniform" (U(-s, s)), "normal" (N(0, s^2)) or "zero", s = ``scale(fan_in,
    fan_out)``."""

    name: str
    kind: str
    scale: object = None

    def distribution(self, scale):
        """The hypothesis' distribution at the scale s, as ``scipy.stats`` holds it."""
        return uniform(-scale, 2 * scale) if self.kind == "uniform" else norm(0, scale)

    def describe(self, fan_in, fan_out):
        if self.kind == "zero":
            return "all 0"
        s = self.scale(fan_in, fan_out)
        return f"U(-{s:.3g}, {s:.3g})" if self.kind == "uniform" else f"N(0, {s:.3g}^2)"


WEIGHT_HYPOTHESES = (
    Hypothesis("PyTorch default", "uniform", lambda fan_in, fan_out: 1 / math.sqrt(fan_in)),
    Hypothesis("Xavier uniform", "uniform", lambda fan_in, fan_out: math.sqrt(6 / (fan_in + fan_out))),
    Hypothesis("Xavier normal", "normal", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
    Hypothesis("Kaiming normal (fan_in)", "normal", lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
    Hypothesis("Kaiming normal (fan_out)", "normal", lambda fan_in, fan_out: math.sqrt(2 / fan_out)),
)
BIAS_HYPOTHESES = (WEIGHT_HYPOTHESES[0], Hypothesis("zero", "zero"))


# ---------------------------------------------------------------- statistics: tensors in, numbers out


def fans(shape):
    """(fan_in, fan_out) of a weight of ``shape`` (out, in, *kernel), as ``torch.nn.init`` computes them."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def max_abs_pvalue(hypothesis, scale, largest, n):
    """The p-value of ``largest``, the largest |w| of ``n`` draws from the hypothesis (U(-scale, scale) or
    N(0, scale^2)), whose CDF is G(m) = P(|w| <= m)^n. Uniform: 0 beyond the bound (by more than float32 rounding),
    else G(largest), the probability of a maximum this far below the bound; normal: 2 min(G, 1 - G), two-sided."""
    if hypothesis.kind == "uniform":
        return 0.0 if largest > scale * (1 + 1e-6) else min(largest / scale, 1.0) ** n
    q = math.erfc(largest / (scale * math.sqrt(2)))  # P(|w| > largest) for one draw
    log_g = n * math.log1p(-q) if q < 1 else -math.inf  # log G(largest)
    return min(1.0, 2 * min(math.exp(log_g), -math.expm1(log_g)))


def hypothesis_tests(x, hypothesis, fan_in, fan_out):
    """The two tests of the values ``x`` (sorted, 1-d, float64) under ``hypothesis``: a dict with the distribution,
    the KS statistic and p-value, the max |w| p-value and whether both p-values are at least ``ALPHA``; for "zero",
    no p-values and whether all values are 0."""
    if hypothesis.kind == "zero":
        return {"hypothesis": hypothesis.name, "distribution": "all 0", "ks_d": None, "ks_p": None, "max_p": None,
                "consistent": bool((x == 0).all())}
    scale, n = hypothesis.scale(fan_in, fan_out), x.numel()
    d, ks_p = kstest(x.numpy(), hypothesis.distribution(scale).cdf)
    d, ks_p = float(d), float(ks_p)
    max_p = max_abs_pvalue(hypothesis, scale, max(-x[0].item(), x[-1].item()), n)
    return {"hypothesis": hypothesis.name, "distribution": hypothesis.describe(fan_in, fan_out), "ks_d": d,
            "ks_p": ks_p, "max_p": max_p, "consistent": ks_p >= ALPHA and max_p >= ALPHA}


def evidence(test):
    return "all values 0" if test["ks_p"] is None else f"KS p={test['ks_p']:.2g}"


def check_tensor(values, fan_in, fan_out, bias=False):
    """Statistics of one weight (or, ``bias``, one bias) and its tests under each hypothesis of its kind; the
    verdict names the consistent hypothesis of largest KS p-value, and the others consistent too."""
    values = values.detach().double()
    x = values.flatten().sort().values
    tests = [hypothesis_tests(x, h, fan_in, fan_out) for h in (BIAS_HYPOTHESES if bias else WEIGHT_HYPOTHESES)]
    passed = sorted((t for t in tests if t["consistent"]), key=lambda t: -(1.0 if t["ks_p"] is None else t["ks_p"]))
    if passed:
        verdict = "; also ".join(f"consistent with {t['hypothesis']} initialisation ({evidence(t)})" for t in passed)
    else:
        verdict = "not an initialisation of these kinds (moved by training?)"
    return {"shape": list(values.shape), "fan_in": fan_in, "fan_out": fan_out, "mean": values.mean().item(),
            "std": values.std().item() if values.numel() > 1 else 0.0, "max_abs": values.abs().max().item(),
            "tests": tests, "initialisation": passed[0]["hypothesis"] if passed else None, "verdict": verdict}


# ---------------------------------------------------------------- the model's layers, the command line


def model_name(model):
    config = getattr(model, "config", None)
    return f"{type(model).__name__}({config.backbone})" if hasattr(config, "backbone") else type(model).__name__


def default_layers(model):
    """A DELG's local branch, those of ``DELG_LOCAL`` that it has; None for any other model."""
    if getattr(getattr(model, "config", None), "model", None) != "delg":
        return None
    names = [name for name, _ in model.named_parameters()]
    return [p for p in DELG_LOCAL if any(_under(name, p) for name in names)]


def layer_tensors(model, prefixes, path):
    """(name, tensor, fan_in, fan_out, is_bias) of every weight of 2+ dims and every bias of such a weight among
    ``model``'s parameters under ``prefixes`` (ours, or the released names); an ``InputError`` for a prefix that
    names no parameter or only parameters of other kinds (normalisation layers, scalars)."""
    params = dict(model.named_parameters())
    rows = []
    for prefix in prefixes:
        ours = prefix if any(_under(name, prefix) for name in params) else released_to_ours(prefix.rstrip(".") + ".")
        under = [name for name in params if _under(name, ours.rstrip("."))]
        if not under:
            layers = sorted({name.rsplit(".", 1)[0] for name in params})
            raise InputError(f"--layers {prefix}: no parameter of {path}'s {model_name(model)} is under it; its "
                             f"layers: {', '.join(layers[:12])}{' ...' if len(layers) > 12 else ''}")
        found = []
        for name in under:
            bias = name.endswith(".bias")
            weight = params.get(name.removesuffix("bias") + "weight") if bias else params[name]
            if weight is not None and weight.dim() >= 2:
                found.append((name, params[name], *fans(weight.shape), bias))
        if not found:
            raise InputError(f"--layers {prefix}: {', '.join(under[:4])} hold no weight of 2+ dims (a convolution's or "
                             "a linear layer's) or its bias; nothing to test")
        rows += [row for row in found if row[0] not in {r[0] for r in rows}]
    return rows


def _under(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


def get_args_parser():
    parser = argparse.ArgumentParser(prog="python -m experiments.init_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a model file (ours or a released one)")
    parser.add_argument("--layers", nargs="+", metavar="PREFIX",
                        help="parameter name prefixes (default: a DELG's local branch; required for other models)")
    parser.add_argument("--json", metavar="PATH", help="also write the results there as JSON")
    return checks.check_flags(parser)


def report(name, result):
    """The printed lines of one tensor's ``check_tensor`` result."""
    lines = [f"{name}: shape {'x'.join(map(str, result['shape']))}, fan_in {result['fan_in']}, fan_out "
             f"{result['fan_out']}, mean {result['mean']:.3g}, std {result['std']:.3g}, "
             f"max |w| {result['max_abs']:.3g}"]
    for t in result["tests"]:
        tests = (f"KS D={t['ks_d']:.3g} p={t['ks_p']:.2g}, max |w| p={t['max_p']:.2g}" if t["ks_d"] is not None
                 else "all values 0" if t["consistent"] else "not all values 0")
        lines.append(f"  {t['hypothesis']:<25} {t['distribution']:<24} {tests}"
                     f"{'' if t['consistent'] else '  rejected'}")
    return lines + [f"  verdict: {result['verdict']}"]


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.json:
        writable_file(args.json, "--json")
    model = load_model(args.checkpoint)
    prefixes = args.layers or default_layers(model)
    if not prefixes:
        what = "has no local branch" if prefixes is not None else "is not a DELG"
        raise InputError(f"{args.checkpoint}: its {model_name(model)} {what}; name the layers to check with "
                         "--layers PREFIX ...")
    results = {}
    print(f"{args.checkpoint}: {model_name(model)}; layers {', '.join(prefixes)}; a hypothesis is rejected where "
          f"a p-value is below {ALPHA}")
    for name, tensor, fan_in, fan_out, bias in layer_tensors(model, prefixes, args.checkpoint):
        results[name] = check_tensor(tensor, fan_in, fan_out, bias)
        print("\n".join(report(name, results[name])))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        save_json(args.json, {"checkpoint": str(args.checkpoint), "model": model_name(model), "alpha": ALPHA,
                              "tensors": results})
    return results


if __name__ == "__main__":
    main()
