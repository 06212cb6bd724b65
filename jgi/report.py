"""The run report: one self-contained ``report.html`` next to ``results.jsonl``.

The page needs nothing at view time (no network, no external script or style sheet):
every picture is a PNG inlined as base64, the CSS is inline. It shows, for the folder's
``results.jsonl``:

- the table in the core paper's Table 4 layout (:func:`jgi.tables.table_rows`, the
  paper's published SSIM/ASR/accuracy beside ours) for attack and utility rows;
- the experiment's own tables (every ``*.md`` in the folder, e.g. the targeted papers'
  tables or the high-resolution study's Table I/II layout) and a generic table of the
  scalar fields of rows that are not attack/utility rows (grouped by ``experiment``);
- one section per row: its reconstruction grid (from
  ``reconstructions/<row_id>.npz``, which :func:`jgi.pipeline.rows.attack_row` saves,
  or a PNG the row names, e.g. the high-resolution rows' ``grid``), a histogram of its
  per-victim SSIM, the FedAvg test-accuracy curve of a utility row (``history``, or
  ``curve`` of the federated-accuracy study), its timings and its config;
- the folder's other PNG figures (``reconstructions.png``, ``fig5.png``, ...).

It is written automatically: :func:`jgi.results.append_row` calls
:func:`write_report_safely` after every row it appends to a ``.jsonl`` file (the report
shows that file's rows), and :func:`jgi.pipeline.run_rows` once more after its table and
figure. A failure to write the report is logged and never touches the results. Set the
environment variable ``JGI_REPORT=0`` to switch the automatic report off (an explicit
:func:`write_report` still writes it).

Choices the issue leaves open: at most :data:`GRID_VICTIMS` victims per grid (the first
ones, as ``reconstructions.png`` draws them), so a 128-victim row stays a readable and
small page; pictures are cached in memory per process (keyed by their inputs), so
regenerating after each row only draws the new row's pictures.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
import io
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from jgi import figures, results, tables
from jgi.records import AttackRow, Row, UtilityRow, from_json

REPORT_NAME = "report.html"
ROWS_NAME = "results.jsonl"
ENV_SWITCH = "JGI_REPORT"
GRID_VICTIMS = 32
_CACHE_BYTES = 256 * 2**20  # about 2,500 grids of 32 victims (~100 KB each)
_PNG_CACHE: dict[str, bytes] = {}

log = logging.getLogger(__name__)

# Drawn from the row's own fields (None: the row does not have them).
_TIMING_FIELDS = ("wall_seconds", "compile_seconds", "seconds", "samples_per_second",
                  "iterations_mean", "rounds", "best_round", "stopped_early", "device",
                  "created")


def enabled() -> bool:
    """Whether the automatic report is on (``JGI_REPORT`` unset or not ``0``/``false``)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def write_report(workdir: str | os.PathLike, rows_name: str = ROWS_NAME) -> Path:
    """Writes ``<workdir>/report.html`` (atomically) from the folder's results and figures.

    Args:
      workdir: the run's folder.
      rows_name: the rows file in it (``results.jsonl``; the federated-accuracy study
        writes ``rows.jsonl``).

    Returns:
      The report's path.
    """
    workdir = Path(workdir)
    path = workdir / REPORT_NAME
    results.write_text(path, render(workdir, rows_name))
    return path


def write_report_safely(workdir: str | os.PathLike,
                        rows_name: str = ROWS_NAME) -> Path | None:
    """:func:`write_report`, but a failure is logged (and printed) instead of raised.

    The automatic hooks call this: a results row is already on disk when they run, and a
    report that cannot be drawn (a broken figure, a full disk) must not fail the run.

    Returns:
      The report's path, or None when it was switched off or could not be written.
    """
    if not enabled():
        return None
    try:
        return write_report(workdir, rows_name)
    except Exception as e:  # noqa: BLE001 (any report failure must leave the run alone)
        log.warning("report.html in %s was not written: %s: %s", workdir,
                    type(e).__name__, e)
        print(f"warning: report.html in {workdir} was not written ({type(e).__name__}: "
              f"{e}); the results are unaffected.", file=sys.stderr, flush=True)
        return None


# ---------------------------------------------------------------------------- pictures


def _cached_png(key: Any, draw: Callable[[], bytes]) -> bytes:
    """``draw()``, memoised on ``key``; least recently used first out past
    :data:`_CACHE_BYTES` (a refresh touches every row's pictures, so a FIFO would
    redraw them all once a run has more pictures than the cache holds)."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()
    png = _PNG_CACHE.pop(digest, None)
    if png is None:
        png = draw()
    _PNG_CACHE[digest] = png  # most recently used last
    while sum(map(len, _PNG_CACHE.values())) > _CACHE_BYTES and len(_PNG_CACHE) > 1:
        _PNG_CACHE.pop(next(iter(_PNG_CACHE)))
    return png


def _pyplot():
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    return plt


def _figure_png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def ssim_histogram_png(ssims: Sequence[float], title: str = "") -> bytes:
    """A histogram of per-victim SSIM, with the ASR threshold (0.5) and the mean marked."""
    values = np.asarray(ssims, float)

    def draw():
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(3.6, 2.4))
        lo = min(0.0, float(values.min())) if values.size else 0.0
        ax.hist(values, bins=np.linspace(lo, 1.0, 21), color="#4477aa", edgecolor="white")
        ax.axvline(0.5, color="#cc3311", linestyle="--", linewidth=1, label="ASR threshold")
        if values.size:
            ax.axvline(values.mean(), color="black", linewidth=1,
                       label=f"mean {values.mean():.2f}")
        ax.set_xlabel("SSIM per victim", fontsize=8)
        ax.set_ylabel("victims", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="upper left")
        if title:
            ax.set_title(title, fontsize=8)
        fig.tight_layout()
        return _figure_png(fig)

    return _cached_png(("hist", tuple(values.tolist()), title), draw)


def accuracy_curve_png(rounds: Sequence[float], curves: dict[str, Sequence[float]],
                       best_round: int | None = None, title: str = "") -> bytes:
    """Accuracy (in %) against the FedAvg round, one line per curve."""
    rounds = [float(r) for r in rounds]
    curves = {k: [float(v) for v in vs] for k, vs in curves.items()}

    def draw():
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(3.8, 2.4))
        for name, values in curves.items():
            ax.plot(rounds[:len(values)], [100 * v for v in values], marker=".",
                    markersize=3, linewidth=1, label=name.replace("_", " "))
        if best_round:
            ax.axvline(best_round, color="gray", linestyle=":", linewidth=1,
                       label=f"best round {best_round}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("round", fontsize=8)
        ax.set_ylabel("accuracy [%]", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
        if title:
            ax.set_title(title, fontsize=8)
        fig.tight_layout()
        return _figure_png(fig)

    return _cached_png(("curve", rounds, sorted(curves.items()), best_round, title), draw)


def grid_png(npz: Path, title: str = "") -> bytes:
    """The reconstruction grid (originals over reconstructions, SSIM under each) of the
    first :data:`GRID_VICTIMS` victims of a row's ``reconstructions/<row_id>.npz``."""
    stat = npz.stat()

    def draw():
        with np.load(npz) as d:
            originals, recon, ssim = d["originals"], d["reconstructions"], d["ssim"]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "grid.png"
            figures.reconstruction_grid(originals, recon, ssim, out, title=title,
                                        max_images=GRID_VICTIMS)
            return out.read_bytes()

    return _cached_png(("grid", str(npz), stat.st_mtime_ns, stat.st_size, title), draw)


# ---------------------------------------------------------------------------- html


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#222;
  max-width:1400px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
h3{font-size:1em;margin:.4em 0}
table{border-collapse:collapse;font-size:.8em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
table.summary td{overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}
section.row{border:1px solid #ddd;border-radius:4px;padding:.6em;margin:.8em 0}
.pictures{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
figure{margin:0;min-width:14em;max-width:100%}
figcaption{font-size:.75em;color:#555;overflow-wrap:anywhere}
img{max-width:100%;height:auto}
pre{font-size:.75em;background:#f6f6f6;padding:.5em;overflow-x:auto;max-height:30em}
.muted{color:#777;font-size:.85em}
"""

# Lets a headless browser (tests/test_report.py) read what the page showed: after load,
# <html> carries how many images decoded and how many did not.
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.documentElement.setAttribute("data-images-loaded", String(ok));
  document.documentElement.setAttribute("data-images-broken", String(imgs.length - ok));
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(png: bytes, alt: str, caption: str = "", kind: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return (f'<figure class="{_e(kind)}"><img alt="{_e(alt)}" '
            f'src="data:image/png;base64,{data}">{cap}</figure>')


def _table(header: Sequence[str], body: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in body)
    return f'<table class="{_e(cls)}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "–"
    return str(value)


def _short(text: str, limit: int = 60) -> str:
    """Long cells (paths, descriptions) cut to ``limit`` characters; the row as stored
    below has them whole."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


_INLINE_CODE = re.compile(r"`([^`]+)`")


def _md_inline(text: str) -> str:
    return _INLINE_CODE.sub(r"<code>\1</code>", _e(text))


def markdown_html(text: str) -> str:
    """The subset of Markdown the experiments write: headings, pipe tables, paragraphs."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i].strip())
                i += 1
            cells = [[c.strip() for c in b.strip("|").split("|")] for b in block
                     if not re.fullmatch(r"\|?[\s:|-]+\|?", b)]
            if cells:
                head = "".join(f"<th>{_md_inline(c)}</th>" for c in cells[0])
                body = "".join("<tr>" + "".join(f"<td>{_md_inline(c)}</td>" for c in r)
                               + "</tr>" for r in cells[1:])
                out.append(f'<table class="md"><thead><tr>{head}</tr></thead>'
                           f"<tbody>{body}</tbody></table>")
            continue
        if line.startswith("#"):
            out.append(f"<h3>{_md_inline(line.lstrip('#').strip())}</h3>")
        elif line:
            out.append(f"<p>{_md_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _core_row(raw: dict[str, Any]) -> Row | None:
    """The row as an attack/utility record, or None for another experiment's row."""
    if "experiment" in raw or raw.get("kind", "attack") not in ("attack", "utility"):
        return None
    try:
        return from_json(raw)
    except (ValueError, TypeError):
        return None


def _row_title(raw: dict[str, Any], row: Row | None) -> str:
    if isinstance(row, AttackRow):
        return (f"{row.attack.upper()} on {row.model} / {row.dataset}, defenses: "
                f"{', '.join(row.defenses) or 'none'}, seed {row.seed}")
    if isinstance(row, UtilityRow):
        return (f"FedAvg utility of {row.model} / {row.dataset}, defenses: "
                f"{', '.join(row.defenses) or 'none'}, seed {row.seed}")
    keys = [k for k in ("model", "dataset", "attack", "method", "part", "resolution", "image",
                        "setting", "seed") if isinstance(raw.get(k), (str, int, float))]
    fields = ", ".join(f"{k} {_short(str(raw[k]), 40)}" for k in keys)
    return f"{raw['experiment']}: {fields}" if "experiment" in raw else fields or "row"


def _pictures(workdir: Path, raw: dict[str, Any], row: Row | None,
              referenced: set[str]) -> list[str]:
    pics = []
    if isinstance(row, AttackRow):
        npz = workdir / "reconstructions" / f"{row.row_id}.npz"
        if row.row_id and npz.exists():
            n = len(row.per_victim_ssim)
            shown = f"first {GRID_VICTIMS} of {n} victims" if n > GRID_VICTIMS else \
                f"{n} victims"
            pics.append(_img(grid_png(npz), "reconstruction grid",
                             f"originals (top) and reconstructions, SSIM under each; {shown}",
                             "grid"))
    for key, value in raw.items():  # PNGs the row names (e.g. the high-resolution grids)
        if isinstance(value, str) and value.endswith(".png"):
            png = workdir / value
            if png.is_file() and png.resolve().parent == workdir.resolve():
                referenced.add(png.name)
                pics.append(_img(png.read_bytes(), key, f"{key}: {value}", "grid"))
    ssims = raw.get("per_victim_ssim")
    if isinstance(ssims, list) and ssims:
        pics.append(_img(ssim_histogram_png(ssims), "SSIM histogram",
                         f"per-victim SSIM of {len(ssims)} victims", "histogram"))
    history = raw.get("history") if isinstance(raw.get("history"), dict) else None
    curve = raw.get("curve") if isinstance(raw.get("curve"), dict) else None
    source = history or curve
    if source:
        curves = {k: v for k, v in source.items()
                  if k.endswith("accuracy") and isinstance(v, list) and v}
        if curves:
            n = max(len(v) for v in curves.values())
            rounds = source.get("round") or list(range(1, n + 1))
            best = raw.get("best_round") if history else None
            pics.append(_img(accuracy_curve_png(rounds, curves, best), "accuracy curve",
                             "FedAvg test accuracy per round", "curve"))
    return pics


def _row_section(i: int, workdir: Path, raw: dict[str, Any], referenced: set[str]) -> str:
    row = _core_row(raw)
    title = _row_title(raw, row)
    parts = [f'<section class="row" id="row-{i}" data-row-index="{i}" '
             f'data-row-id="{_e(raw.get("row_id", ""))}">',
             f"<h3>Row {i + 1}: {_e(title)}</h3>"]
    summary = []
    if isinstance(row, AttackRow):
        summary = [("SSIM", f"{row.ssim_mean:.3f} (± {row.ssim_std:.3f})"
                    if row.ssim_mean is not None else "–"),
                   ("ASR [%]", f"{100 * row.asr:.2f}" if row.asr is not None else "–"),
                   ("PSNR [dB]", _fmt(row.psnr_mean)), ("victims", row.n_victims),
                   ("label accuracy", _fmt(row.label_accuracy))]
    elif isinstance(row, UtilityRow):
        summary = [("test accuracy [%]", f"{100 * row.accuracy:.2f}"),
                   ("final [%]", _fmt(100 * row.final_accuracy)
                    if row.final_accuracy is not None else "–"),
                   ("max [%]", _fmt(100 * row.max_accuracy)
                    if row.max_accuracy is not None else "–")]
    timings = [(k, _fmt(raw[k])) for k in _TIMING_FIELDS if k in raw and raw[k] is not None]
    if summary or timings:
        pairs = summary + timings
        parts.append(_table([k for k, _ in pairs], [[v for _, v in pairs]], "summary"))
    pics = _pictures(workdir, raw, row, referenced)
    if pics:
        parts.append('<div class="pictures">' + "".join(pics) + "</div>")
    config = raw.get("config")
    if isinstance(config, dict) and config:
        parts.append("<details><summary>config</summary><pre>"
                     f"{_e(json.dumps(config, indent=1, sort_keys=True, default=str))}"
                     "</pre></details>")
    parts.append("<details><summary>row as stored</summary><pre>"
                 f"{_e(json.dumps(raw, sort_keys=True, default=str))}</pre></details>")
    parts.append("</section>")
    return "\n".join(parts)


def _generic_tables(others: list[dict[str, Any]]) -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for raw in others:
        groups.setdefault(str(raw.get("experiment", "other rows")), []).append(raw)
    out = []
    for name, rows in groups.items():
        columns: list[str] = []
        for raw in rows:
            for k, v in raw.items():
                if (isinstance(v, (str, int, float, bool)) or v is None) and k not in columns:
                    columns.append(k)
        body = [[_short(_fmt(raw.get(k))) for k in columns] for raw in rows]
        out.append(f'<h3>{_e(name)}</h3><div class="scroll">'
                   + _table(columns, body, "generic") + "</div>")
    return "\n".join(out)


def render(workdir: str | os.PathLike, rows_name: str = ROWS_NAME) -> str:
    """The report's HTML for ``workdir`` (see the module docstring for what it shows)."""
    workdir = Path(workdir)
    raws = results.read_rows(workdir / rows_name)
    core = [(raw, r) for raw in raws if (r := _core_row(raw)) is not None]
    others = [raw for raw in raws if _core_row(raw) is None]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    body = [f"<h1>jgi run report: {_e(workdir.name or workdir)}</h1>",
            f'<p class="muted">{len(raws)} row(s) of <code>{_e(workdir / rows_name)}</code>'
            f" ({len(core)} attack/utility, {len(others)} other); written {now}.</p>"]
    if core:
        cells = tables.table_rows([r for _, r in core])
        body += ["<h2>Table (core paper's Table 4 layout)</h2>",
                 '<p class="muted">SSIM: mean (± std) over victims; ASR: share of victims '
                 "with SSIM &gt; 0.5; accuracy: FedAvg test accuracy, mean (± std) over "
                 "seeds. The paper columns are Scheliga et al.'s Table 4 (CNN, 128 "
                 "victims, CDIA).</p>",
                 _table(cells[0], cells[1:], "paper-table")]
    md_files = sorted(p for p in workdir.glob("*.md")
                      if not (core and p.name == "table.md"))  # table.md = the table above
    if md_files:
        body.append("<h2>The experiment's tables</h2>")
        for p in md_files:
            body += [f"<h3><code>{_e(p.name)}</code></h3>",
                     markdown_html(p.read_text(encoding="utf-8"))]
    if others:
        body += ["<h2>Rows (fields)</h2>", _generic_tables(others)]
    referenced: set[str] = set()
    if raws:
        body.append("<h2>Rows</h2>")
        body += [_row_section(i, workdir, raw, referenced) for i, raw in enumerate(raws)]
    figures_left = sorted(p for p in workdir.glob("*.png") if p.name not in referenced)
    if figures_left:
        body.append("<h2>Figures</h2>")
        body.append('<div class="pictures">' + "".join(
            _img(p.read_bytes(), p.name, p.name, "figure") for p in figures_left) + "</div>")
    if not raws and not md_files and not figures_left:
        body.append("<p>No results yet.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>jgi report: {_e(workdir.name)}</title><style>{_CSS}</style>"
            f"<script>{_SCRIPT}</script></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")
