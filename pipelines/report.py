"""Serve: `spp report`, one self-contained HTML file with the marts drawn as charts.

The charts are inline SVG written here, so the page opens offline with no script and no web
font. It reads the serving copy when there is one (so it never waits for a running sync),
otherwise the database, read-only.
"""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

from pipelines.database import connect
from pipelines.errors import DatabaseError
from pipelines.serve import serving_dir

SENTIMENT_COLORS = {"Négatif": "#d1495b", "Neutre": "#edae49", "Positif": "#00798c", None: "#9aa5b1"}
BAR = "#30638e"
WIDTH = 860
TOP_STRUCTURES = 12


def _esc(v) -> str:
    return html.escape("—" if v is None else str(v))


def _hbars(title: str, rows: list[tuple[str, float]], fmt=lambda v: f"{v:,.0f}", max_value: float | None = None,
           chart_id: str = "") -> str:
    """Horizontal bars: one (label, value) per row."""
    label_w, row_h, bar_w = 300, 24, WIDTH - 300 - 90
    top = max_value or max((v for _, v in rows), default=1) or 1
    h = row_h * len(rows) + 10
    parts = [f'<svg class="chart" data-chart="{chart_id}" width="{WIDTH}" height="{h}" role="img" aria-label="{_esc(title)}">']
    for i, (label, value) in enumerate(rows):
        y = i * row_h + 5
        w = max(1.0, bar_w * (value or 0) / top)
        parts.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{_esc(label)[:48]}</text>'
                     f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" fill="{BAR}"/>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + 16}">{_esc(fmt(value or 0))}</text>')
    parts.append("</svg>")
    return f"<section><h2>{_esc(title)}</h2>{''.join(parts)}</section>"


def _stacked(title: str, rows: list[tuple[str, dict]], keys: list, colors: dict, chart_id: str) -> str:
    """100% stacked horizontal bars: one (label, {key: count}) per row, with a legend."""
    label_w, row_h, bar_w = 300, 24, WIDTH - 300 - 20
    h = row_h * len(rows) + 40
    parts = [f'<svg class="chart" data-chart="{chart_id}" width="{WIDTH}" height="{h}" role="img" aria-label="{_esc(title)}">']
    for i, (label, counts) in enumerate(rows):
        y = i * row_h + 5
        total = sum(counts.get(k, 0) for k in keys) or 1
        x = float(label_w)
        parts.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{_esc(label)[:48]}</text>')
        for k in keys:
            w = bar_w * counts.get(k, 0) / total
            if w > 0:
                parts.append(f'<rect class="bar" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" fill="{colors[k]}">'
                             f'<title>{_esc(k)}: {counts.get(k, 0)} ({100 * counts.get(k, 0) / total:.0f}%)</title></rect>')
            x += w
    ly = len(rows) * row_h + 25
    for j, k in enumerate(keys):
        parts.append(f'<rect x="{label_w + j * 120}" y="{ly - 10}" width="12" height="12" fill="{colors[k]}"/>'
                     f'<text x="{label_w + j * 120 + 16}" y="{ly}">{_esc(k)}</text>')
    parts.append("</svg>")
    return f"<section><h2>{_esc(title)}</h2>{''.join(parts)}</section>"


def _months(title: str, rows: list[tuple[dt.date, dict]], chart_id: str) -> str:
    """Vertical stacked bars per month, by sentiment."""
    keys = ["Négatif", "Neutre", "Positif", None]
    left, bottom, height = 60, 30, 260
    n = max(len(rows), 1)
    step = (WIDTH - left - 10) / n
    top = max((sum(c.values()) for _, c in rows), default=1) or 1
    parts = [f'<svg class="chart" data-chart="{chart_id}" width="{WIDTH}" height="{height + bottom + 10}" role="img" aria-label="{_esc(title)}">',
             f'<line x1="{left}" y1="{height}" x2="{WIDTH - 10}" y2="{height}" stroke="#555"/>',
             f'<text x="{left - 6}" y="14" text-anchor="end">{top:,}</text><text x="{left - 6}" y="{height}" text-anchor="end">0</text>']
    for i, (month, counts) in enumerate(rows):
        x = left + i * step
        y = float(height)
        for k in keys:
            v = counts.get(k, 0)
            if v:
                h = (height - 10) * v / top
                y -= h
                parts.append(f'<rect class="bar" x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(step - 1, 1):.1f}" height="{h:.1f}" '
                             f'fill="{SENTIMENT_COLORS[k]}"><title>{month:%Y-%m} {_esc(k)}: {v}</title></rect>')
        if month.month == 1 or i == 0:
            parts.append(f'<text x="{x:.1f}" y="{height + 18}">{month:%Y}</text>')
    parts.append("</svg>")
    legend = "".join(f'<span class="key" style="background:{SENTIMENT_COLORS[k]}"></span>{_esc(k or "non renseigné")} '
                     for k in keys)
    return f"<section><h2>{_esc(title)}</h2>{''.join(parts)}<p class=\"legend\">{legend}</p></section>"


def _source(db):
    if not isinstance(db, Path):
        return db  # a lake: read-only connections see its last published snapshot
    serving = serving_dir(db) / "spp.duckdb"
    if serving.exists():
        return serving
    if db.exists():
        return db
    raise DatabaseError(f"no database at {db}: run `spp sync` first (or give --db)")


def build(db, out: Path) -> Path:
    source = _source(db)
    con = connect(source, read_only=True)
    try:
        have = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() AND table_schema = 'marts'").fetchall()}
        needed = {"sentiment_by_month", "experiences_by_structure", "contact_channels", "tags_by_sentiment"}
        if not needed <= have:
            raise DatabaseError(f"{source} lacks the marts {', '.join(sorted(needed - have))}: run `spp sync` first")
        total, first, last = con.execute("SELECT count(*), min(ecrit_le), max(ecrit_le) FROM raw.experiences").fetchone()
        months: dict = {}
        for month, sentiment, n in con.execute(
                "SELECT month, ressenti_usager, experiences FROM marts.sentiment_by_month WHERE month IS NOT NULL ORDER BY month").fetchall():
            months.setdefault(month, {})[sentiment] = n
        structures = con.execute(
            "SELECT intitule_structure, experiences, negatif, neutre, positif, response_rate FROM marts.experiences_by_structure "
            "WHERE intitule_structure IS NOT NULL ORDER BY experiences DESC, intitule_structure LIMIT ?", [TOP_STRUCTURES]).fetchall()
        channels = con.execute("SELECT canal, experiences FROM marts.contact_channels ORDER BY experiences DESC, canal").fetchall()
        tags: dict = {}
        for tag, value, n in con.execute("SELECT tag, tag_value, sum(experiences) FROM marts.tags_by_sentiment GROUP BY ALL ORDER BY 1, 2").fetchall():
            tags.setdefault(tag, {})[value] = n
    finally:
        con.close()
    sections = [
        _months("Expériences par mois d'envoi, par ressenti", sorted(months.items()), "months"),
        _stacked(f"Ressenti des usagers, {len(structures)} structures les plus citées",
                 [(s[0], {"Négatif": s[2], "Neutre": s[3], "Positif": s[4]}) for s in structures],
                 ["Négatif", "Neutre", "Positif"], SENTIMENT_COLORS, "sentiment"),
        _hbars("Taux de réponse par structure", [(s[0], 100 * s[5]) for s in structures], fmt=lambda v: f"{v:.0f} %",
               max_value=100, chart_id="response_rate"),
        _hbars("Canaux de contact", channels, chart_id="channels"),
        _stacked("Étiquettes thématiques", sorted(tags.items()), ["Négatif", "Neutre", "Positif"], SENTIMENT_COLORS, "tags"),
    ]
    page = f"""<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>Services Publics + : expériences</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 2rem auto; max-width: {WIDTH + 40}px; color: #1f2933; }}
h1 {{ font-size: 1.6rem; }} h2 {{ font-size: 1.1rem; margin-top: 2rem; }}
svg text {{ font-size: 12px; fill: #1f2933; }}
.legend {{ font-size: 12px; }} .key {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }}
footer {{ margin-top: 2rem; font-size: 12px; color: #52606d; }}
</style></head><body>
<h1>Services Publics + : expériences des usagers</h1>
<p>{total:,} expériences écrites du {_esc(first)} au {_esc(last)}. Source : DITP, jeu de données
<code>export-expa-c-riences</code> (Licence Ouverte).</p>
{''.join(sections)}
<footer>Généré le {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC par spp depuis {_esc(source.name)}.</footer>
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
