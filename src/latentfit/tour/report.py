"""A small HTML report: sections of text and figures, written atomically.

Figures are ``matplotlib.figure.Figure`` objects made by :func:`subplots`, outside pyplot: the
tour draws and saves them without touching matplotlib's backend or pyplot's figure list, so it
runs the same from the command line, in a notebook or on a machine without a display."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from latentfit._files import atomic_path


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kwargs):
    """``pyplot.subplots`` for a figure pyplot does not know: (Figure, Axes or array of Axes)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


@dataclass
class Section:
    """One part of the report: a title, paragraphs (HTML allowed), figures and tables."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    tables: list[str] = field(default_factory=list)  # preformatted text tables
    seconds: float = 0.0


@dataclass
class TourContext:
    """What every section gets: where to write, and the seed for all its randomness."""

    out: Path
    seed: int = 0
    #: Where the figures end up when ``out`` is a staging folder (named in error messages).
    report: Path | None = None

    def save_figure(self, fig, name: str) -> str:
        path = self.out / name
        with atomic_path(path, shown=(self.report or self.out) / name) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
        return name


def write_report(out: Path, sections: list[Section], title: str = "latentfit tour") -> Path:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto;padding:1em;line-height:1.45}"
        "figure{margin:1em 0}img{max-width:100%}pre{background:#f4f4f4;padding:.6em;overflow:auto}"
        "figcaption{color:#555;font-size:.9em}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Generated {time.strftime('%Y-%m-%d %H:%M')} by <code>latentfit tour</code>.</p><ol>",
    ]
    parts += [
        f"<li><a href='#s{i}'>{html.escape(s.title)}</a></li>" for i, s in enumerate(sections)
    ]
    parts.append("</ol>")
    for i, s in enumerate(sections):
        parts.append(f"<h2 id='s{i}'>{html.escape(s.title)}</h2>")
        parts += [f"<p>{p}</p>" for p in s.paragraphs]
        parts += [f"<pre>{html.escape(t)}</pre>" for t in s.tables]
        for name, caption in s.figures:
            parts.append(
                f"<figure><img src='{html.escape(name)}' alt='{html.escape(caption)}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        parts.append(f"<p style='color:#888;font-size:.8em'>section took {s.seconds:.1f} s</p>")
    parts.append("</body></html>")
    index = out / "index.html"
    with atomic_path(index) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return index
