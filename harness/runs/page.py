"""The one page style of the harness's HTML output: the leaderboard and plugin reports (`harness
analyze`) look alike because both wrap their body in `html_page`.

A page is self-contained (inline style and script, nothing fetched), so it opens offline, from a
file, in any browser.
"""

from __future__ import annotations

import html

#: The shared style sheet: text, tables, badges, best values, tooltips, figures and highlights.
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 80em; color: #222; }
h1, h2, h3 { font-weight: 600; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f4f4f4; }
td:nth-child(-n+4), th:nth-child(-n+4) { text-align: left; }
.badge { background: #b35900; color: #fff; border-radius: 0.3em; padding: 0.1em 0.5em; font-size: 0.85em; }
.badge.finished { background: #2e7d32; }
td.best { font-weight: bold; background: #e8f5e9; }
[title] { text-decoration: underline dotted; cursor: help; }
table.runs td, table.runs th, table.text td, table.text th { text-align: left; cursor: default; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
mark.target { background: #c8e6c9; }
mark.old { background: #ffe0b2; }
p.note { color: #555; font-style: italic; }
"""


def html_page(title: str, body: str, *, script: str = "", style: str = "") -> str:
    """A complete HTML document in the shared style: `title` (plain text, escaped here), `body`
    (HTML, placed as it is), an optional inline `script` run at the end of the body and `style`
    rules added after the shared ones."""
    scripts = f"<script>{script}</script>\n" if script else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>{STYLE}{style}</style>\n</head>\n<body>\n{body}{scripts}</body>\n</html>\n"
    )
