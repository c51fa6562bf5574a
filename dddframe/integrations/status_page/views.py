"""The status page's HTML: no script at all and no inline style (the stylesheet is served as
``static/status.css``), every stored text escaped, every link free of secrets.

Every function takes ``base``, the page's path without the trailing slash (``/dddframe``).
"""

from __future__ import annotations

import re
from datetime import datetime
from html import escape

from dddframe.bus.dead_letters import DeadLetter
from dddframe.outbox.status import SystemStatus

__all__ = ["chart", "confirm_page", "error_page", "login_page", "status_page"]

_LIST_ERROR = 2000  # characters of an error shown in the list; the confirmation shows more
_DETAIL_TEXT = 64_000
_NAME = 1000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _clip(text: str | None, limit: int = _NAME) -> str:
    r"""Stored text as inert HTML: control characters shown as ``\xNN``, markup escaped, at
    most ``limit`` characters (the rest counted).

    >>> _clip('<b>\x1b[31mred</b>')
    '&lt;b&gt;\\x1b[31mred&lt;/b&gt;'
    >>> _clip("abcdef", 3)
    'abc\n… (3 more characters)'
    """
    text = text or ""
    shown = escape(_CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text[:limit]))
    return shown if len(text) <= limit else f"{shown}\n… ({len(text) - limit} more characters)"


def _document(base: str, title: str, body: str, *, refresh: bool = False) -> str:
    b = escape(base)
    meta = f'<meta http-equiv="refresh" content="15; url={b}/">' if refresh else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{escape(title)}</title>"
        f'<link rel="stylesheet" href="{b}/static/status.css"></head><body>{body}</body></html>'
    )


def _header(base: str, csrf: str | None) -> str:
    logout = (
        f'<form method="post" action="{escape(base)}/logout" class="logout">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        '<button type="submit" id="logout">log out</button></form>'
        if csrf is not None
        else ""
    )
    return f'<header><h1><a href="{escape(base)}/">dddframe status</a></h1>{logout}</header>'


def chart(rates: list[tuple[datetime, int]]) -> str:
    """Events per minute as an SVG bar chart with a labelled time axis (UTC) and count axis."""
    width, height, left, right, top_pad, bottom = 480, 160, 34, 8, 24, 34
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    top = max((n for _, n in rates), default=0) or 1
    bar = plot_w / max(len(rates), 1)
    base_y = top_pad + plot_h
    parts = [
        f'<svg id="throughput" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="events per minute, one bar per minute (UTC)">',
        f'<text x="2" y="11" font-size="10" class="y-label">events/min (max {top})</text>',
        f'<line x1="{left}" y1="{base_y}" x2="{width - right}" y2="{base_y}" stroke="#555"/>',
        f'<text x="{left - 4}" y="{top_pad + 4}" font-size="10" text-anchor="end">{top}</text>',
        f'<text x="{left - 4}" y="{base_y}" font-size="10" text-anchor="end">0</text>',
    ]
    for i, (at, n) in enumerate(rates):
        h = plot_h * n / top
        x = left + i * bar
        parts.append(
            f'<rect x="{x:.1f}" y="{base_y - h:.1f}" width="{bar * 0.8:.1f}" '
            f'height="{h:.1f}" fill="#3b82f6"><title>{at:%H:%M} UTC: {n}</title></rect>'
        )
    ticks = sorted({0, len(rates) // 2, len(rates) - 1}) if rates else []
    for i in ticks:
        x = left + i * bar + bar * 0.4
        parts.append(
            f'<line x1="{x:.1f}" y1="{base_y}" x2="{x:.1f}" y2="{base_y + 4}" stroke="#555"/>'
            f'<text x="{x:.1f}" y="{base_y + 15}" font-size="10" text-anchor="middle" '
            f'class="tick">{rates[i][0]:%H:%M}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 3}" font-size="10" '
        'text-anchor="middle" class="x-label">time (UTC), one bar per minute</text></svg>'
    )
    return "".join(parts)


def _cell(label: str, value: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f'<td data-label="{label}"{cls}>{value}</td>'


def status_page(
    base: str,
    current: SystemStatus,
    rates: list[tuple[datetime, int]],
    dead: list[DeadLetter],
    *,
    csrf: str | None,
    notice: str = "",
) -> str:
    """The overview: subscriptions, relays, the chart and the dead letters (each with a link
    to its confirmation page; replaying is a POST from there)."""
    b = escape(base)
    rows = "".join(
        "<tr>"
        + _cell("subscription", _clip(s.name))
        + _cell("position", "-" if s.position is None else str(s.position), "num")
        + _cell("lag", str(s.lag_events), "num")
        + _cell("lag (s)", f"{s.lag_seconds:.1f}", "num")
        + _cell("retries", str(s.retries_pending), "num")
        + _cell("dead letters", str(s.dead_letters), "num bad" if s.dead_letters else "num")
        + "</tr>"
        for s in current.subscriptions
    )
    relays = "".join(
        "<tr>"
        + _cell("relay", _clip(r.name))
        + _cell("last sent", str(r.last_sent), "num")
        + _cell("lag", str(r.lag_events), "num")
        + "</tr>"
        for r in current.relays
    )
    letters = "".join(
        f'<tr class="dead-letter" id="dead-letter-{d.id}">'
        + _cell("id", str(d.id), "num")
        + _cell("subscription", _clip(d.subscription))
        + _cell("event", _clip(d.name))
        + _cell("aggregate", _clip(d.ordering_key))
        + _cell("attempts", str(d.attempts), "num")
        + _cell("error", f'<pre class="error">{_clip(d.error, _LIST_ERROR)}</pre>')
        + _cell(
            "action",
            f'<a class="replay" id="replay-{d.id}" href="{b}/dead-letters/{d.id}">replay…</a>',
        )
        + "</tr>"
        for d in dead
    )
    body = (
        _header(base, csrf)
        + (f'<p class="notice" id="notice">{escape(notice)}</p>' if notice else "")
        + f"<p>outbox head {current.head}, not yet sequenced {current.unsequenced}, "
        f"at {current.at:%Y-%m-%d %H:%M:%S} UTC</p>"
        '<h2>Subscriptions</h2><table id="subscriptions" class="cards"><thead><tr>'
        '<th>subscription</th><th class="num">position</th><th class="num">lag</th>'
        '<th class="num">lag (s)</th><th class="num">retries</th>'
        f'<th class="num">dead letters</th></tr></thead><tbody>{rows}</tbody></table>'
        + (
            '<h2>Relays</h2><table id="relays" class="cards"><thead><tr><th>relay</th>'
            '<th class="num">last sent</th><th class="num">lag</th></tr></thead>'
            f"<tbody>{relays}</tbody></table>"
            if relays
            else ""
        )
        + f'<h2>Events per minute</h2><figure class="chart">{chart(rates)}</figure>'
        f"<h2>Dead letters ({len(dead)})</h2>"
        + (
            '<table id="dead-letters" class="cards"><thead><tr><th class="num">id</th>'
            '<th>subscription</th><th>event</th><th>aggregate</th><th class="num">attempts</th>'
            f"<th>error</th><th>action</th></tr></thead><tbody>{letters}</tbody></table>"
            if dead
            else '<p id="no-dead-letters">none</p>'
        )
    )
    return _document(base, "dddframe status", body, refresh=True)


def confirm_page(base: str, letter: DeadLetter, *, csrf: str | None) -> str:
    """One dead letter in full, with the form that replays it (the confirmation step)."""
    b = escape(base)
    fields = "".join(
        f"<dt>{label}</dt><dd>{value}</dd>"
        for label, value in (
            ("id", str(letter.id)),
            ("subscription", _clip(letter.subscription)),
            ("event", _clip(letter.name)),
            ("event id", _clip(letter.event_id)),
            ("aggregate", _clip(letter.ordering_key)),
            ("attempts", str(letter.attempts)),
            ("state", _clip(letter.state)),
            ("parked at", f"{letter.created_at:%Y-%m-%d %H:%M:%S} UTC"),
        )
    )
    form = (
        f'<form method="post" action="{b}/dead-letters/{letter.id}/replay" class="confirm">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<button type="submit" id="confirm-replay">Replay dead letter {letter.id}</button> '
        f'<a href="{b}/" id="cancel">cancel</a></form>'
        if csrf is not None
        else "<p>Replay it with a POST that carries the bearer token.</p>"
    )
    body = (
        _header(base, csrf) + f"<h2>Replay dead letter {letter.id}?</h2>"
        "<p>The event is delivered to this subscription again, with its attempts reset.</p>"
        f'<dl class="letter">{fields}</dl>{form}'
        f'<h3>Error</h3><pre class="error" id="error">{_clip(letter.error, _DETAIL_TEXT)}</pre>'
        "<details><summary>Traceback</summary>"
        f'<pre class="traceback">{_clip(letter.traceback, _DETAIL_TEXT)}</pre></details>'
    )
    return _document(base, f"replay dead letter {letter.id}", body)


def login_page(base: str, *, message: str = "") -> str:
    """The login form: the token goes in a POST body, never in a URL."""
    b = escape(base)
    note = f'<p class="bad" id="login-error">{escape(message)}</p>' if message else ""
    body = (
        "<header><h1>dddframe status</h1></header>"
        f'{note}<form method="post" action="{b}/login" class="login">'
        '<label for="token">Status page token</label>'
        '<input type="password" id="token" name="token" autocomplete="current-password" '
        'required autofocus><button type="submit" id="login">log in</button></form>'
    )
    return _document(base, "dddframe status: log in", body)


def error_page(base: str, status: int, title: str, detail: str) -> str:
    """An error for a person: what went wrong and a way back."""
    body = (
        "<header><h1>dddframe status</h1></header>"
        f'<h2 id="error-status">{status} {escape(title)}</h2><p id="error-detail">'
        f'{escape(detail)}</p><p><a href="{escape(base)}/">back to the status page</a></p>'
    )
    return _document(base, f"{status} {title}", body)
