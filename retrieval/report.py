"""test.py --report: one self-contained HTML page of an evaluation, the failures first.

The page holds the mAP table of every search row of ``results.json`` (every database, every search), then, per
database, every query sorted by its Medium AP under the database's main search (exact search of the global
descriptors, or the ASMK or VLAD search of local features under ``--local-features``), worst first (queries without
Medium positives last): the query with its box, its Easy / Medium / Hard AP and its top ``TOP`` database images
framed by relevance (``retrieval.figures.relevance``: positive, negative or junk under the Medium protocol).
Thumbnails are embedded as ``data:`` URIs and the style is inline, so the file opens offline with nothing else.
Numbers also sit in ``data-*`` attributes (``data-map-medium`` on a table row, ``data-ap-medium`` on a query), for
programs.
"""

import base64
import html
import io
import math
from pathlib import Path

from PIL import ImageDraw

from datasets.images import load_rgb
from retrieval.figures import FRAME, QUERY_FRAME, relevance
from retrieval.revisited import KAPPAS, PROTOCOLS, revisited_map
from retrieval.search import top_k
from utils.atomic import atomic_write

TOP = 10
THUMB = 128  # longer side of a thumbnail, pixels
STYLE = f"""
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table.map {{ border-collapse: collapse; margin-bottom: 1.5em; }}
table.map td, table.map th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
table.map td.name {{ text-align: left; }}
div.query {{ display: flex; flex-wrap: wrap; align-items: flex-start; gap: 6px; margin: 10px 0;
            padding-bottom: 10px; border-bottom: 1px solid #eee; }}
figure {{ margin: 0; width: {THUMB + 8}px; font-size: 11px; }}
figure img {{ border: 4px solid; display: block; max-width: {THUMB}px; }}
figure.query img {{ border-color: {QUERY_FRAME}; }}
span.legend {{ padding: 0 6px; border: 3px solid; margin-right: 6px; }}
""" + "".join(f"figure.{kind} img {{ border-color: {color}; }}\n" for kind, color in FRAME.items())


def query_section(name, dataset, db_paths, scores, search="exact", top=TOP):
    """What the page shows of database ``name``: per query its image, box, Easy/Medium/Hard AP (percent, NaN
    without positives) and top ``top`` under the search ``search`` whose ``scores`` (n_db x n_queries) are given,
    ``(path, score, relevance)``."""
    results = revisited_map(scores, dataset.gnd)
    sims, ids = top_k(scores, top)
    query_paths = dataset.query_paths()
    return {"name": name, "search": search, "queries": [
        {"index": q, "path": str(query_paths[q]), "bbx": dataset.gnd[q]["bbx"],
         "ap": {p: 100 * float(results[p]["aps"][q]) for p in PROTOCOLS},
         "top": [(str(db_paths[i]), float(s), relevance(dataset.gnd[q], i)) for s, i in zip(sims[q], ids[q],
                                                                                           strict=True)]}
        for q in range(scores.shape[1])]}


def worst_first(queries):
    """Queries by Medium AP, lowest first; those without Medium positives (NaN) last, in query order."""
    return sorted(queries, key=lambda q: (math.isnan(q["ap"]["medium"]), q["ap"]["medium"], q["index"]))


class _Thumbnails:
    """JPEG thumbnails as data URIs, each image encoded once per page."""

    def __init__(self):
        self.cache = {}

    def __call__(self, path, box=None):
        key = (path, box)
        if key not in self.cache:
            img = load_rgb(path)
            if box is not None:
                img = img.copy()
                ImageDraw.Draw(img).rectangle(box, outline=(255, 220, 0), width=max(2, max(img.size) // 64))
            img.thumbnail((THUMB, THUMB))
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=80)
            self.cache[key] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
        return self.cache[key]


def _number(value):
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def _attr(value):
    return "nan" if value is None or math.isnan(value) else repr(float(value))


def _map_table(report):
    head = "".join(f"<th>{p.capitalize()} mAP</th>" for p in PROTOCOLS)
    head += "".join(f"<th>{p.capitalize()} mP@{k}</th>" for p in PROTOCOLS for k in KAPPAS)
    rows = []
    for name, entry in report["datasets"].items():
        for label, run in entry["runs"].items():
            attrs = "".join(f' data-map-{p}="{_attr(run[p]["mAP"])}"' for p in PROTOCOLS)
            cells = "".join(f"<td>{_number(run[p]['mAP'])}</td>" for p in PROTOCOLS)
            cells += "".join(f"<td>{_number(run[p][f'mP@{k}'])}</td>" for p in PROTOCOLS for k in KAPPAS)
            rows.append(f'<tr data-database="{html.escape(name)}" data-search="{html.escape(label)}"{attrs}>'
                        f'<td class="name">{html.escape(name)}</td><td class="name">{html.escape(label)}</td>'
                        f"{cells}</tr>")
    return (f'<table class="map"><tr><th>database</th><th>search</th>{head}</tr>\n' + "\n".join(rows)
            + "</table>")


def _figure(src, kind, caption):
    return (f'<figure class="{kind}"><img src="{src}" alt="{kind}"><figcaption>{caption}</figcaption></figure>')


def _queries(section, thumb):
    out = [f'<h2 id="{html.escape(section["name"])}">{html.escape(section["name"])}: {len(section["queries"])} '
           f"queries by Medium AP under {html.escape(section['search'])} search, worst first</h2>"]
    for q in worst_first(section["queries"]):
        aps = " ".join(f"{p[0].upper()} {_number(q['ap'][p])}" for p in PROTOCOLS)
        attrs = "".join(f' data-ap-{p}="{_attr(q["ap"][p])}"' for p in PROTOCOLS)
        box = tuple(round(v) for v in q["bbx"])
        caption = f"query {q['index']}: {html.escape(q['path'].rsplit('/', 1)[-1])}<br>AP {aps}"
        cells = [_figure(thumb(q["path"], box), "query", caption)]
        for rank, (path, score, kind) in enumerate(q["top"], 1):
            cells.append(_figure(thumb(path), kind, f"{rank}: {score:.3f} {kind}<br>"
                                                    f"{html.escape(path.rsplit('/', 1)[-1])}"))
        out.append(f'<div class="query" data-database="{html.escape(section["name"])}" data-query="{q["index"]}"'
                   f'{attrs}>' + "".join(cells) + "</div>")
    return "\n".join(out)


def render(report, sections):
    """The page as a string: ``report`` is results.json's content, ``sections`` the ``query_section``s."""
    thumb = _Thumbnails()
    legend = "".join(f'<span class="legend" style="border-color: {FRAME[k]}">{k}</span>' for k in FRAME)
    title = f"Evaluation of {report['checkpoint']}"
    settings = (f"imsize {report['imsize']}, scales {', '.join(f'{s:g}' for s in report['scales'])}, "
                f"device {report['device']}")
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(settings)}</p>", "<h2>mAP (%)</h2>",
            _map_table(report), f"<p>Top {TOP} framed by relevance (Medium protocol): {legend}</p>"]
    body += [_queries(section, thumb) for section in sections]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(path, report, sections):
    """Write the page atomically, creating its folder; the path."""
    page = render(report, sections).encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(page))
    return path

