"""The ablation tables from the jobs' results: per row the mean and the min-max over the seeds of the Medium and
Hard mAP, beside the paper's numbers, as markdown; and a plot of the same (one panel per table)."""

from statistics import mean

from matplotlib.figure import Figure

from utils.atomic import atomic_write

PROTOCOLS = ("medium", "hard")


def summarise(scores):
    """``scores``: the mAP of each seed -> ``(mean, min, max)``; None for no seed."""
    return (mean(scores), min(scores), max(scores)) if scores else None


def row_stats(rows, results):
    """``results``: job name -> seed -> result; for each row ``(row, {protocol: (mean, min, max) or None},
    seeds)``."""
    stats = []
    for row in rows:
        done = results.get(row.job, {})
        stats.append((row, {p: summarise([r["mAP"][p] for r in done.values()]) for p in PROTOCOLS}, sorted(done)))
    return stats


def cell(stat):
    return "not run" if stat is None else f"{stat[0]:.2f} ({stat[1]:.2f}-{stat[2]:.2f})"


def markdown(tables, results):
    """One markdown table per ``tables`` entry (name -> ``experiments.tables.Table``)."""
    parts = []
    for name, table in tables.items():
        lines = ([f"### Table {name}: {table.title}", "", f"The paper: {table.claim}.", ""] if name.isdigit()
                 else [f"### {table.title}", ""])
        lines += ["| row | paper ROxf M / H | Medium | Hard | seeds |", "|---|---|---|---|---|"]
        for row, stat, seeds in row_stats(table.rows, results):
            lines.append(f"| {row.label} (`{row.key}`) | {row.paper or '-'} | {cell(stat['medium'])} | "
                         f"{cell(stat['hard'])} | {' '.join(map(str, seeds)) or '-'} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def plot(tables, results, path):
    """Bars of the mean Medium and Hard mAP per row, whiskers from min to max, a panel per table; ``path``."""
    figure = Figure(figsize=(4.5 * len(tables), 4.2), layout="constrained")
    axes = figure.subplots(1, len(tables), squeeze=False)[0]
    for ax, (name, table) in zip(axes, tables.items(), strict=True):
        stats = row_stats(table.rows, results)
        for offset, protocol in ((-0.2, "medium"), (0.2, "hard")):
            points = [(i, s[protocol]) for i, (_, s, _) in enumerate(stats) if s[protocol]]
            if points:
                xs = [i + offset for i, _ in points]
                means = [s[0] for _, s in points]
                spread = [[s[0] - s[1] for _, s in points], [s[2] - s[0] for _, s in points]]
                ax.bar(xs, means, 0.4, yerr=spread, capsize=3, label=protocol.capitalize())
        ax.set_xticks(range(len(stats)), [row.key for row, _, _ in stats], rotation=30, ha="right")
        ax.set_title(f"Table {name}" if name.isdigit() else name)
        ax.set_ylabel("mAP (%)")
        if ax.containers:  # no legend for a table with no results yet
            ax.legend()
    atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=100))
    return path
