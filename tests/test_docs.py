"""The README and docs/ stay true: the README is short, every relative link (and its #section) resolves, every
command in their code blocks uses flags its script has, and no page names a module or class by a retired name."""

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 300
SCRIPTS = {"train.py", "test.py", "index.py", "demo.py", "visualize.py"}
WITH_SUBCOMMANDS = {"index.py", "visualize.py", "datasets.download"}
# names the issue-19 redesign retired (PLAN's rename table): a page that still uses one sends a reader nowhere
RETIRED = ("networks/checkpoint.py", "networks/released.py", "networks/zoo.py", "networks.zoo", "networks/whiten.py",
           "networks/whitening.py", "networks.whitening.", "retrieval/whitening_files.py", "retrieval/index.py",
           "retrieval.index.", "ExactIndex", "PQIndex", "CompressedIndex", "utils/metrics.py", "utils.metrics")

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FLAG = re.compile(r"^--[a-z][a-z0-9-]*")


def prose(text):
    """``text`` without its fenced code blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page):
    seen, names = Counter(), set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if m := re.match(r"#{1,6} (.+)", line):
            base = slug(m.group(1))
            names.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
    return names


def links(page):
    for target in LINK.findall(prose(page.read_text())):
        if not re.match(r"[a-z]+:", target):
            yield target


def commands(page):
    """(script, help argv, flags used) of every python/torchrun command in the page's shell code blocks."""
    for lang, body in FENCE.findall(page.read_text()):
        if lang not in ("", "sh", "bash"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            tokens = line.split("#")[0].replace("[", " ").replace("]", " ").split()
            if not tokens or not re.match(r"(\w+=\S+ )*(python|torchrun|taskset)\b", " ".join(tokens)):
                continue
            if "-m" in tokens and tokens[tokens.index("-m") - 1] == "python":
                at = tokens.index("-m") + 1
            else:
                at = next((i for i, t in enumerate(tokens) if t in SCRIPTS), None)
                if at is None:
                    continue
            script, args = tokens[at], tokens[at + 1:]
            prefix = []
            if script in WITH_SUBCOMMANDS and args and not args[0].startswith("-"):
                prefix = [args[0]]
            if script == "train.py" and "--model" in args:
                prefix = ["--model", args[args.index("--model") + 1]]
            flags = {FLAG.match(t).group() for t in args if FLAG.match(t)}
            yield script, tuple(prefix), flags


HELPER = """
import contextlib, io, json, runpy, sys
out = {}
for script, prefix in json.loads(sys.argv[1]):
    sys.argv = [script, *prefix, "--help"]
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            if script.endswith(".py"):
                runpy.run_path(script, run_name="__main__")
            else:
                runpy.run_module(script, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    out[json.dumps([script, prefix])] = buffer.getvalue()
print(json.dumps(out))
"""


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail to docs/ (at most {MAX_README_LINES})"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        path, _, section = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif section and file.suffix == ".md" and section not in anchors(file):
            broken.append(f"{target}: no section #{section} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_retired_name(page):
    text = page.read_text()
    found = [name for name in RETIRED if name in text]
    assert not found, f"{page.relative_to(ROOT)} uses retired names: {found}"


def test_the_link_check_sees_a_broken_link_and_section(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A `code` heading: here\n\n[ok](#a-code-heading-here) [gone](missing.md) ![x](page.md#nope)\n"
                    "```\n[not a link](missing.md)\n```\n")
    assert sorted(links(page)) == ["#a-code-heading-here", "missing.md", "page.md#nope"]
    assert anchors(page) == {"a-code-heading-here"}


def test_every_documented_command_uses_flags_its_script_has():
    used = {}
    for page in PAGES:
        for script, prefix, flags in commands(page):
            used.setdefault((script, prefix), {}).update({flag: page.name for flag in flags})
    assert ("train.py", ()) in used and ("test.py", ()) in used and ("index.py", ("build",)) in used
    keys = sorted(used)
    result = subprocess.run([sys.executable, "-c", HELPER, json.dumps([list(k) for k in keys])], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    helps = json.loads(result.stdout.splitlines()[-1])
    unknown = []
    for script, prefix in keys:
        text = helps[json.dumps([script, list(prefix)])]
        assert "usage:" in text, f"{script} {' '.join(prefix)} --help printed no usage"
        unknown += [f"{page}: {' '.join([script, *prefix, flag])}"
                    for flag, page in sorted(used[script, prefix].items())
                    if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)]
    assert not unknown, "flags the scripts do not have: " + "; ".join(unknown)
