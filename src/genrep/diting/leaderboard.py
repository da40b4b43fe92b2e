"""A DITING leaderboard: systems x dimensions table of mean rubric scores (0-6) with 95% intervals.

The paper ranks systems by their mean rubric score on the 0-6 scale (docs/papers.md s3.6: DeepSeek-V3 5.16,
GPT-4o 5.09, ...). Here, from rubric judgments (human raters or an LLM judge):

- a segment's score is the mean over its raters of ``specific + general_1 + general_2``;
- a cell (system, dimension) is the mean of the system's segment scores on that dimension's items;
  ``overall`` is the mean over all the system's segments (every segment weighs the same);
- the 95% interval is the percentile bootstrap over items drawn with replacement (the dimension's
  items for a cell, all items for ``overall``; default 1000 resamples, fixed seed), the statistic
  recomputed on the drawn items' segments; a cell whose segments come from a single item has no
  interval (resampling cannot vary it);
- systems are sorted and ranked by ``overall`` (descending; equal means share a rank: 1, 2, 2, 4).

Outputs: ``leaderboard.md``, ``leaderboard.html`` (self-contained: the table and the heatmap
embedded), ``leaderboard.csv`` and ``leaderboard.png`` (heatmap, annotated cells).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from genrep.core.errors import UserError
from genrep.core.rundir import atomic_write_bytes, atomic_write_text
from genrep.diting.limits import check_bootstrap
from genrep.diting.metaeval import Key, exact_group_means, ratings_from_judgments, resample_counts
from genrep.diting.schema import DIMENSIONS, Item, Judgment

OVERALL = "overall"


@dataclass
class Cell:
    """A mean score with its 95% interval (``None`` when undefined) over ``segments`` segments."""

    mean: float | None
    lo: float | None
    hi: float | None
    segments: int

    def text(self, ci: bool = True) -> str:
        if self.mean is None:
            return "-"
        if not ci or self.lo is None:
            return f"{self.mean:.2f}"
        return f"{self.mean:.2f} [{self.lo:.2f}, {self.hi:.2f}]"


@dataclass
class Leaderboard:
    systems: list[str]  # sorted by overall mean, best first
    dimensions: list[str]  # columns besides overall (empty without items)
    cells: dict[tuple[str, str], Cell]  # (system, dimension or "overall")
    rank: dict[str, int]
    judgments: int
    items: int
    resamples: int
    seed: int

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per system (rank, system, overall, overall_lo, overall_hi, <dim>, <dim>_lo, ...)."""
        out = []
        for s in self.systems:
            row: dict[str, Any] = {"rank": self.rank[s], "system": s}
            for col in (OVERALL, *self.dimensions):
                c = self.cells[(s, col)]
                row.update({col: c.mean, f"{col}_lo": c.lo, f"{col}_hi": c.hi, f"{col}_segments": c.segments})
            out.append(row)
        return out


def _bootstrap_means(
    scores: np.ndarray, system: np.ndarray, item: np.ndarray, n_systems: int, n_items: int, resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """(per-system mean, per-system bootstrap means (B, S) over items drawn with replacement)."""
    onehot = (system[:, None] == np.arange(n_systems)[None]).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = exact_group_means(scores, system, n_systems)  # exact sums: equal multisets tie exactly
        if resamples <= 0 or n_items < 2:
            return point, None
        W = resample_counts(n_items, resamples, seed)[:, item]
        return point, (W * scores) @ onehot / (W @ onehot)


def _cell(mean: float, boot: np.ndarray | None, segments: int, items: int) -> Cell:
    if segments == 0 or not math.isfinite(mean):
        return Cell(None, None, None, 0)
    lo = hi = None
    if boot is not None and items >= 2:
        finite = boot[np.isfinite(boot)]
        if len(finite):
            lo, hi = (float(v) for v in np.percentile(finite, [2.5, 97.5]))
    return Cell(float(mean), lo, hi, segments)


def _coverage(mask: np.ndarray, item: np.ndarray) -> tuple[int, int]:
    """(segments, distinct items) selected by ``mask``."""
    return int(mask.sum()), len(np.unique(item[mask]))


def build_leaderboard(
    judgments: Iterable[Judgment], items: Iterable[Item] | None = None, resamples: int = 1000, seed: int = 0
) -> Leaderboard:
    """The leaderboard of rubric judgments; ``items`` give the dimensions (without them: overall only)."""
    check_bootstrap(resamples, seed)
    judgments = list(judgments)
    if not judgments:
        raise UserError("no judgments to rank")
    means = ratings_from_judgments(judgments).means()
    dim_of = {i.id: i.dimension for i in items} if items is not None else None
    if dim_of is not None:
        unknown = sorted({k[0] for k in means} - set(dim_of))
        if unknown:
            raise UserError(f"judgments for unknown item '{unknown[0]}' ({len(unknown)} item(s) not in the items file)")
    keys: list[Key] = sorted(means)
    scores = np.array([means[k] for k in keys])
    systems = sorted({k[1] for k in keys})
    system = np.array([systems.index(k[1]) for k in keys])
    item_ids = sorted({k[0] for k in keys})
    item = np.array([item_ids.index(k[0]) for k in keys])
    cells: dict[tuple[str, str], Cell] = {}
    point, boot = _bootstrap_means(scores, system, item, len(systems), len(item_ids), resamples, seed)
    for s, name in enumerate(systems):
        cells[(name, OVERALL)] = _cell(point[s], None if boot is None else boot[:, s], *_coverage(system == s, item))
    dimensions: list[str] = [d for d in DIMENSIONS if dim_of and d in {dim_of[k[0]] for k in keys}]
    for d in dimensions:
        assert dim_of is not None  # dimensions is empty without it
        sel = np.array([dim_of[k[0]] == d for k in keys])
        d_items, d_item = np.unique(item[sel], return_inverse=True)
        point, boot = _bootstrap_means(scores[sel], system[sel], d_item, len(systems), len(d_items), resamples, seed)
        for s, name in enumerate(systems):
            cells[(name, d)] = _cell(
                point[s], None if boot is None else boot[:, s], *_coverage(sel & (system == s), item)
            )
    order = sorted(systems, key=lambda s: (-cells[(s, OVERALL)].mean, s))  # type: ignore[operator]  # every system has a mean
    rank: dict[str, int] = {}
    for pos, name in enumerate(order, start=1):
        prev = order[pos - 2] if pos > 1 else None
        same = prev is not None and cells[(prev, OVERALL)].mean == cells[(name, OVERALL)].mean
        rank[name] = rank[prev] if same else pos  # type: ignore[index]  # same implies prev
    return Leaderboard(order, dimensions, cells, rank, len(judgments), len(item_ids), resamples, seed)


# ---------------------------------------------------------------------------------------------
# renderings


def leaderboard_markdown(board: Leaderboard) -> str:
    cols = [OVERALL, *board.dimensions]
    lines = ["| rank | system | segments | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for s in board.systems:
        name = s.replace("|", "\\|")
        lines.append(
            f"| {board.rank[s]} | {name} | {board.cells[(s, OVERALL)].segments} | "
            + " | ".join(board.cells[(s, c)].text() for c in cols)
            + " |"
        )
    note = (
        f"Mean rubric score (0-6; segment = mean of its raters) with 95% bootstrap interval over items "
        f"({board.resamples} resamples, seed {board.seed}); {board.judgments} judgments, {board.items} items."
    )
    return "\n".join(lines) + "\n\n" + note + "\n"


def leaderboard_csv(board: Leaderboard) -> str:
    rows = board.rows()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def leaderboard_png(board: Leaderboard) -> bytes:
    """Heatmap: systems (sorted by overall, best on top) x dimensions + overall, cells annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genrep.core.images import figure_png

    cols = [*board.dimensions, OVERALL]
    grid = np.array(
        [
            [board.cells[(s, c)].mean if board.cells[(s, c)].mean is not None else np.nan for c in cols]
            for s in board.systems
        ]
    )
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 3.0, 0.32 * len(board.systems) + 1.4))
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=6, aspect="auto")
    for r in range(grid.shape[0]):
        for c in range(grid.shape[1]):
            ax.text(
                c,
                r,
                "-" if np.isnan(grid[r, c]) else f"{grid[r, c]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                fontweight="bold" if cols[c] == OVERALL else "normal",
            )
    ax.set_xticks(range(len(cols)), [c.replace("_", " ") for c in cols], fontsize=9)
    ax.set_yticks(
        range(len(board.systems)),
        [f"{board.rank[s]}. {s} (n={board.cells[(s, OVERALL)].segments})" for s in board.systems],
        fontsize=8,
    )
    ax.xaxis.tick_top()
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="mean score (0-6)")
    fig.tight_layout()
    return figure_png(fig)


def leaderboard_html(board: Leaderboard, png: bytes | None = None) -> str:
    cols = [OVERALL, *board.dimensions]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["rank", "system", "segments", *cols])
    body = "".join(
        f"<tr><td>{board.rank[s]}</td><td>{html.escape(s)}</td><td>{board.cells[(s, OVERALL)].segments}</td>"
        + "".join(f"<td>{html.escape(board.cells[(s, c)].text())}</td>" for c in cols)
        + "</tr>"
        for s in board.systems
    )
    img = ""
    if png is not None:
        img = f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="leaderboard heatmap">'
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:14px}"
        "th{background:#f3f3f3}td:nth-child(n+3){text-align:right}img{max-width:100%}"
    )
    note = html.escape(leaderboard_markdown(board).rsplit("\n\n", 1)[-1].strip())
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>DITING leaderboard</title><style>{style}"
        f"</style></head><body><h1>DITING leaderboard</h1><table><thead><tr>{head}</tr></thead><tbody>{body}"
        f"</tbody></table><p>{note}</p>{img}</body></html>\n"
    )


def write_leaderboard(board: Leaderboard, out: str | Path) -> dict[str, Path]:
    """Write ``leaderboard.{md,html,csv,png}`` into ``out``; returns their paths."""
    out = Path(out)
    png = leaderboard_png(board)
    return {
        "md": atomic_write_text(out / "leaderboard.md", leaderboard_markdown(board)),
        "html": atomic_write_text(out / "leaderboard.html", leaderboard_html(board, png)),
        "csv": atomic_write_text(out / "leaderboard.csv", leaderboard_csv(board)),
        "png": atomic_write_bytes(out / "leaderboard.png", png),
    }
