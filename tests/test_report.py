"""test.py --report and --whiten-file on a generated roxford5k-format set with R1M-format distractors: the HTML
page parsed and checked against results.json and the features, the whitened row against its own computation."""

import json
import math
import pickle
from html.parser import HTMLParser

import numpy as np
import pytest

from networks.pca_whitening import PCAWhitening
from retrieval.descriptor_whitening import save_whitening
from retrieval.revisited import PROTOCOLS, revisited_map
from tests.eval_sets import DIM, R1M_IMAGES, run_test, write_checkpoint, write_mini_set, write_r1m
from tests.faults import one_error_line

POWER = 0.5


pytestmark = pytest.mark.usefixtures("one_thread")


class Page(HTMLParser):
    """The parts of the report a reader relies on: table rows, query blocks with their figures, every URL."""

    def __init__(self):
        super().__init__()
        self.rows, self.queries, self.urls, self.tags = [], [], [], set()
        self._cells = None
        self._caption = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.urls += [attrs[key] for key in ("src", "href") if key in attrs]
        if tag == "tr" and "data-search" in attrs:
            self.rows.append({"attrs": attrs, "cells": []})
            self._cells = self.rows[-1]["cells"]
        elif tag == "div" and attrs.get("class") == "query":
            self.queries.append({"attrs": attrs, "figures": []})
        elif tag == "figure" and self.queries:
            self.queries[-1]["figures"].append({"class": attrs["class"], "caption": ""})
        elif tag == "figcaption":
            self._caption = self.queries[-1]["figures"][-1]

    def handle_endtag(self, tag):
        if tag == "tr":
            self._cells = None
        elif tag == "figcaption":
            self._caption = None

    def handle_data(self, data):
        if self._cells is not None and data.strip():
            self._cells.append(data.strip())
        if self._caption is not None:
            self._caption["caption"] += data + " "


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    write_mini_set(base / "data")
    write_r1m(base / "data")
    checkpoint = write_checkpoint(base / "token.pth")
    whitening = PCAWhitening.fit(np.random.default_rng(0).standard_normal((80, DIM)))
    save_whitening(base / "W.npz", whitening)
    run_test(base / "data", checkpoint, base / "eval", "--r1m", "--qe", "--whiten-file", str(base / "W.npz"),
             "--whiten-power", str(POWER), "--report", str(base / "pages" / "report.html"))  # a folder to create
    page = Page()
    page.feed((base / "pages" / "report.html").read_text())
    return base, json.loads((base / "eval" / "results.json").read_text()), page, whitening


def test_the_table_holds_every_search_row_of_results_json(reported):
    _, results, page, _ = reported
    expected = {(name, label): run for name, entry in results["datasets"].items()
                for label, run in entry["runs"].items()}
    assert {(row["attrs"]["data-database"], row["attrs"]["data-search"]) for row in page.rows} == set(expected)
    assert ("roxford5k", "exact+whiten") in expected and ("roxford5k+1M", "exact+whiten") in expected
    for row in page.rows:
        run = expected[row["attrs"]["data-database"], row["attrs"]["data-search"]]
        for p, cell in zip(PROTOCOLS, row["cells"][2:5], strict=True):
            assert float(row["attrs"][f"data-map-{p}"]) == pytest.approx(run[p]["mAP"], abs=1e-9)
            assert cell == f"{run[p]['mAP']:.2f}"


def test_queries_come_worst_first_and_their_aps_make_the_exact_map(reported):
    _, results, page, _ = reported
    for name in ("roxford5k", "roxford5k+1M"):
        blocks = [q for q in page.queries if q["attrs"]["data-database"] == name]
        assert sorted(int(q["attrs"]["data-query"]) for q in blocks) == [0, 1, 2, 3]
        medium = [float(q["attrs"]["data-ap-medium"]) for q in blocks]
        assert medium == sorted(medium) and not any(math.isnan(ap) for ap in medium)
        for p in PROTOCOLS:
            aps = np.array([float(q["attrs"][f"data-ap-{p}"]) for q in blocks])
            assert np.nanmean(aps) == pytest.approx(results["datasets"][name]["runs"]["exact"][p]["mAP"], abs=1e-9)
        for q in blocks:
            assert q["figures"][0]["class"] == "query" and len(q["figures"]) == 11
            assert {f["class"] for f in q["figures"][1:]} <= {"positive", "negative", "junk"}


def test_the_top_10_is_the_exact_ranking_framed_by_relevance(reported):
    base, _, page, _ = reported
    features = base / "eval" / "features"
    db = np.concatenate([np.load(features / "roxford5k_db.npy")] +
                        [np.load(p) for p in sorted((features / "revisitop1m").glob("shard_*.npy"))])
    queries = np.load(features / "roxford5k_query.npy")
    with open(base / "data" / "test" / "roxford5k" / "gnd_roxford5k.pkl", "rb") as f:
        gnd = pickle.load(f)
    names = gnd["imlist"] + [f"distractor_{i:04d}" for i in range(R1M_IMAGES)]
    for block in (q for q in page.queries if q["attrs"]["data-database"] == "roxford5k+1M"):
        q = int(block["attrs"]["data-query"])
        order = np.argsort(-(db @ queries[q]), kind="stable")[:10]
        for figure, i in zip(block["figures"][1:], order, strict=True):
            assert names[i] + ".jpg" in figure["caption"]
            kind = ("positive" if i in gnd["gnd"][q]["easy"] + gnd["gnd"][q]["hard"] else
                    "junk" if i in gnd["gnd"][q]["junk"] else "negative")
            assert figure["class"] == kind


def test_the_page_is_self_contained(reported):
    _, _, page, _ = reported
    assert page.urls and all(url.startswith("data:image/jpeg;base64,") for url in page.urls)
    assert not page.tags & {"script", "link", "iframe", "object"}


def test_the_whitened_row_is_exact_search_of_whitened_descriptors(reported):
    base, results, _, whitening = reported
    features = base / "eval" / "features"
    db, queries = np.load(features / "roxford5k_db.npy"), np.load(features / "roxford5k_query.npy")
    with open(base / "data" / "test" / "roxford5k" / "gnd_roxford5k.pkl", "rb") as f:
        gnd = pickle.load(f)["gnd"]
    expected = revisited_map(whitening(db, POWER) @ whitening(queries, POWER).T, gnd)
    run = results["datasets"]["roxford5k"]["runs"]["exact+whiten"]
    for p in PROTOCOLS:
        assert run[p]["mAP"] == pytest.approx(100 * expected[p]["map"], abs=1e-6)
    assert run["bytes_per_image"] == 4 * whitening.components.shape[0]


def test_a_whitening_of_another_size_is_one_line(reported, tmp_path, capsys):
    base, _, _, _ = reported
    save_whitening(tmp_path / "W16.npz", PCAWhitening.fit(np.random.default_rng(1).standard_normal((40, 16))))
    with pytest.raises(SystemExit) as exit_info:
        run_test(base / "data", base / "token.pth", base / "eval", "--whiten-file", str(tmp_path / "W16.npz"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --whiten-file") and "takes 16-d descriptors, the model gives 32-d" in err
    assert err.count("\n") == 1


def test_a_report_that_cannot_be_written_stops_test_py_before_any_work(reported, read_only, tmp_path, capsys):
    """Before: the whole evaluation ran, then writing the page failed (and without --output-dir the features were
    lost with it)."""
    base = reported[0]
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    cases = {read_only / "r.html": f"its folder {read_only}: is not writable (Read-only file system)",
             file / "r.html": f"its folder {file}: is a file, expected a folder",
             file / "pages" / "r.html": f"its folder {file / 'pages'}: cannot be created: {file} is a file, "
                                        "expected a folder",
             tmp_path: "is a folder, expected a file to write"}
    for report, why in cases.items():
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            run_test(base / "data", base / "token.pth", tmp_path / "eval", "--report", str(report))
        assert exit_info.value.code == 2
        out, err = capsys.readouterr()
        assert one_error_line(err) == f"error: --report {report}: {why}" and out == "", report
        assert not (tmp_path / "eval").exists()
