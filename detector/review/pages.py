"""The review queue's HTML: plain functions from view data to a page, every value escaped.

Withdrawals carry user-typed strings (ids, addresses), verdict reasons carry text, analysts
type reasons: every dynamic value goes through :func:`esc` (``html.escape`` with quotes), and
URLs are built with ``urlencode``. There is no JavaScript at all (rows expand with
``<details>``), and the service's Content-Security-Policy forbids any (see ``web``).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from detector.events import Withdrawal
from detector.review.queue import FanIn, Filters, HeldItem, QueueStats
from detector.review.records import DECISIONS, MAX_WHY_CHARS

__all__ = [
    "STYLESHEET",
    "ItemView",
    "QueueView",
    "esc",
    "filters_query",
    "login_page",
    "message_page",
    "queue_page",
]

# Payers of a destination listed by name in the fan-in section; the rest are counted.
_FAN_IN_SHOWN = 12


def esc(value: object) -> str:
    """HTML-escape ``str(value)``, quotes included (safe in text and in attribute values)."""
    return html.escape(str(value), quote=True)


@dataclass(frozen=True, slots=True)
class ItemView:
    """One held withdrawal with the context its expanded row shows."""

    item: HeldItem
    recent: Sequence[tuple[Withdrawal, str | None]]
    fan_in: FanIn | None


@dataclass(frozen=True, slots=True)
class QueueView:
    user: str
    csrf: str
    now: float
    items: Sequence[ItemView]
    stats: QueueStats
    filters: Filters
    reasons: Sequence[str]
    assets: Sequence[str]
    ready: bool
    flash: str | None = None
    problems: Sequence[str] = field(default_factory=tuple)
    matching: int | None = None  # held withdrawals matching the filters (items: the first ones)


def _layout(title: str, body: str, *, user: str | None = None, csrf: str | None = None) -> str:
    account = ""
    if user is not None and csrf is not None:
        account = (
            f'<form class="logout" method="post" action="/logout">'
            f'<span class="who">{esc(user)}</span>'
            f'<input type="hidden" name="csrf_token" value="{esc(csrf)}">'
            f'<button type="submit">Log out</button></form>'
        )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        '<link rel="stylesheet" href="/static/review.css"></head>'
        f"<body><header><h1>{esc(title)}</h1>{account}</header><main>{body}</main>"
        "</body></html>\n"
    )


def login_page(token: str, *, error: str | None = None) -> str:
    """The login form; ``token`` is the login CSRF token (also in a cookie)."""
    problem = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    body = (
        f'<form class="login" method="post" action="/login">{problem}'
        f'<input type="hidden" name="csrf_token" value="{esc(token)}">'
        '<label>Analyst <input name="username" autocomplete="username" required '
        'maxlength="64" autofocus></label>'
        '<label>Password <input name="password" type="password" '
        'autocomplete="current-password" required maxlength="1024"></label>'
        '<button type="submit">Log in</button></form>'
    )
    return _layout("Review queue: log in", body)


def message_page(title: str, text: str, *, back: str = "/") -> str:
    return _layout(
        title, f'<p class="message">{esc(text)}</p><p><a href="{esc(back)}">Back</a></p>'
    )


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _usd(value: float | None) -> str:
    return "" if value is None else f"${value:,.0f}" if value >= 100 else f"${value:,.2f}"


def _amount(w: Withdrawal) -> str:
    usd = f" ({_usd(w.amount_usd)})" if w.amount_usd is not None else ""
    return f"{w.amount} {w.asset}{usd}"


def _options(name: str, values: Iterable[str], selected: str | None, label: str) -> str:
    opts = [f'<option value="">{esc(label)}</option>']
    choices = list(values)
    if selected is not None and selected not in choices:
        choices.insert(0, selected)
    for value in choices:
        chosen = " selected" if value == selected else ""
        opts.append(f'<option value="{esc(value)}"{chosen}>{esc(value)}</option>')
    return f'<select name="{esc(name)}">{"".join(opts)}</select>'


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _filters_form(view: QueueView) -> str:
    f = view.filters
    clear = '<a class="clear" href="/">Clear</a>' if f.active else ""
    return (
        '<form class="filters" method="get" action="/">'
        f"<label>Reason {_options('reason', view.reasons, f.reason, 'any')}</label>"
        f"<label>Asset {_options('asset', view.assets, f.asset, 'any')}</label>"
        '<label>Amount from <input name="min_amount" inputmode="decimal" size="9" '
        f'value="{esc(_number(f.min_amount))}"></label>'
        '<label>to <input name="max_amount" inputmode="decimal" size="9" '
        f'value="{esc(_number(f.max_amount))}"></label>'
        f'<button type="submit">Filter</button>{clear}</form>'
    )


def _summary(item: HeldItem, now: float) -> str:
    v, w = item.verdict, item.withdrawal
    due = v.due_at - now
    hold = (
        f'<span class="overdue">overdue {_age(-due)}</span>'
        if item.overdue(now)
        else f'<span class="due">due in {_age(due)}</span>'
    )
    amount = esc(_amount(w)) if w else '<span class="muted">withdrawal not seen yet</span>'
    destination = esc(w.destination) if w else ""
    codes = ", ".join(esc(c) for c in v.reason_codes) or "-"
    return (
        "<summary>"
        f'<span class="age">held {_age(item.age_s(now))}<br>{hold}</span>'
        f'<span class="ids"><span class="wid">{esc(v.withdrawal_id)}</span>'
        f'<br><span class="account">{esc(v.account_id)}</span></span>'
        f'<span class="amount">{amount}</span>'
        f'<span class="dest">{destination}</span>'
        f'<span class="score">{v.score:.3f}</span>'
        f'<span class="codes">{codes}</span>'
        "</summary>"
    )


def _reasons(item: HeldItem, now: float) -> str:
    v = item.verdict
    rows = "".join(
        f"<li><code>{esc(code)}</code>"
        + (f' <span class="family">{esc(family)}</span>' if family else "")
        + f" {esc(detail)}</li>"
        for code, family, detail in v.reasons
    )
    return (
        '<section class="verdict"><h3>Why it was held</h3>'
        f"<ul>{rows or '<li>no reason given</li>'}</ul>"
        f'<p class="muted">score {v.score:.4f} · model {esc(v.model_version)} · held at '
        f"{esc(_time(v.decided_at))} for {_age(v.hold_seconds)} (until "
        f"{esc(_time(v.due_at))})</p></section>"
    )


def _recent(view: ItemView) -> str:
    item = view.item
    rows = []
    for w, verdict in view.recent:
        this = ' class="this"' if w.withdrawal_id == item.withdrawal_id else ""
        rows.append(
            f"<tr{this}><td>{esc(_time(w.requested_at))}</td><td>{esc(w.withdrawal_id)}</td>"
            f"<td>{esc(_amount(w))}</td><td>{esc(w.destination)}</td>"
            f"<td>{esc(verdict or '?')}</td></tr>"
        )
    table = (
        "<table><thead><tr><th>requested</th><th>withdrawal</th><th>amount</th>"
        f"<th>destination</th><th>verdict</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        if rows
        else '<p class="muted">no withdrawal of this account seen in the look-back</p>'
    )
    return (
        f'<section class="history"><h3>Recent withdrawals of {esc(item.account_id)}</h3>'
        f"{table}</section>"
    )


def _fan_in(view: ItemView) -> str:
    fan = view.fan_in
    if fan is None:
        return (
            '<section class="fan-in"><h3>Destination fan-in</h3>'
            '<p class="muted">destination unknown until the withdrawal is seen</p></section>'
        )
    count = f"{fan.count}+" if fan.capped else str(fan.count)
    others = [a for a in fan.accounts if a != view.item.account_id]
    shown = ", ".join(f"<code>{esc(a)}</code>" for a in others[:_FAN_IN_SHOWN])
    more = f" and {len(others) - _FAN_IN_SHOWN} more" if len(others) > _FAN_IN_SHOWN else ""
    who = f"<p>Other payers: {shown}{more}</p>" if others else "<p>No other account paid it.</p>"
    return (
        f'<section class="fan-in"><h3>Destination fan-in</h3>'
        f'<p><span class="fan-count">{esc(count)}</span> distinct account(s) paid '
        f"<code>{esc(fan.destination)}</code> since {esc(_time(fan.since))}.</p>{who}</section>"
    )


def _decision_form(view: QueueView, item: HeldItem) -> str:
    if not view.ready:
        return '<p class="muted">Decisions open once the queue has caught up with Kafka.</p>'
    buttons = "".join(
        f'<button type="submit" name="decision" value="{d}" class="{d}">{d.title()}</button>'
        for d in DECISIONS
    )
    return (
        '<form class="decision" method="post" action="/decide">'
        f'<input type="hidden" name="csrf_token" value="{esc(view.csrf)}">'
        f'<input type="hidden" name="withdrawal_id" value="{esc(item.withdrawal_id)}">'
        f'<label>Why (required, goes into the audit record)<textarea name="why" required '
        f'maxlength="{MAX_WHY_CHARS}" rows="2"></textarea></label>'
        f'<div class="buttons">{buttons}</div></form>'
    )


def queue_page(view: QueueView) -> str:
    """The queue: stats, filters, then one expandable row per held withdrawal."""
    parts = []
    if view.flash:
        parts.append(f'<p class="flash" role="status">{esc(view.flash)}</p>')
    if not view.ready:
        parts.append(
            '<p class="loading">Reading the queue from Kafka; it may be incomplete and '
            "decisions are disabled until it has caught up.</p>"
        )
    parts.extend(f'<p class="error">{esc(p)}</p>' for p in view.problems)
    s = view.stats
    overdue = f' · <span class="overdue">{s.overdue} overdue</span>' if s.overdue else ""
    matching = len(view.items) if view.matching is None else view.matching
    shown = f" · {matching} match the filters" if view.filters.active else ""
    if matching > len(view.items):
        shown += f" · the oldest {len(view.items)} are shown"
    parts.append(
        f'<p class="stats"><strong class="depth">{s.depth}</strong> held withdrawal(s) '
        f"awaiting review · oldest held {_age(s.oldest_age_s)}{overdue}{shown}</p>"
    )
    parts.append(_filters_form(view))
    if not view.items:
        parts.append('<p class="empty">Nothing to review.</p>')
    for n, iv in enumerate(view.items):
        item = iv.item
        parts.append(
            f'<details class="item" id="item-{n}" '
            f'data-withdrawal-id="{esc(item.withdrawal_id)}">'
            f"{_summary(item, view.now)}"
            f'<div class="body">{_reasons(item, view.now)}{_fan_in(iv)}{_recent(iv)}'
            f"{_decision_form(view, item)}</div></details>"
        )
    return _layout("Review queue", "".join(parts), user=view.user, csrf=view.csrf)


def filters_query(filters: Filters) -> str:
    """The query string that reproduces ``filters`` (for redirects back to the queue)."""
    pairs = [
        (name, value if isinstance(value, str) else f"{value:g}")
        for name, value in (
            ("reason", filters.reason),
            ("asset", filters.asset),
            ("min_amount", filters.min_amount),
            ("max_amount", filters.max_amount),
        )
        if value is not None
    ]
    return urlencode(pairs)


STYLESHEET = """
:root { --fg: #1d2330; --muted: #6b7385; --line: #dfe3ea; --bg: #f6f7f9; --accent: #2d5bd3;
        --refuse: #b3261e; --release: #1e7b34; --warn: #a35c00; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
header { display: flex; justify-content: space-between; align-items: center;
         padding: 10px 20px; background: #1d2330; color: #fff; }
header h1 { font-size: 18px; margin: 0; font-weight: 600; }
header .logout { display: flex; gap: 10px; align-items: center; }
header .who { opacity: .85; }
main { padding: 16px 20px; max-width: 1400px; }
button { font: inherit; padding: 5px 12px; border-radius: 4px; border: 1px solid var(--line);
         background: #fff; cursor: pointer; }
button.refuse { background: var(--refuse); color: #fff; border-color: var(--refuse); }
button.release { background: var(--release); color: #fff; border-color: var(--release); }
input, select, textarea { font: inherit; padding: 4px 6px; border: 1px solid #c5cbd6;
                          border-radius: 4px; }
.stats { font-size: 15px; margin: 4px 0 10px; }
.stats .depth { font-size: 20px; }
.overdue { color: var(--refuse); font-weight: 600; }
.due, .muted { color: var(--muted); }
.flash { background: #e7f3ea; border: 1px solid #b9dcc1; padding: 8px 12px; border-radius: 4px; }
.loading { background: #fff4e0; border: 1px solid #f0d39a; padding: 8px 12px; border-radius: 4px; }
.error { color: var(--refuse); }
.filters { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; padding: 10px 12px;
           background: #fff; border: 1px solid var(--line); border-radius: 6px;
           margin-bottom: 12px; }
.filters .clear { color: var(--accent); }
details.item { background: #fff; border: 1px solid var(--line); border-radius: 6px;
               margin-bottom: 8px; }
details.item[open] { border-color: var(--accent); }
details.item summary { display: grid; cursor: pointer; list-style: none; padding: 8px 12px;
    grid-template-columns: 120px 230px 220px minmax(160px, 1fr) 60px 260px; gap: 12px;
    align-items: center; }
details.item summary::-webkit-details-marker { display: none; }
summary .ids { min-width: 0; }
summary .wid { font-weight: 600; overflow-wrap: anywhere; }
summary .account, summary .dest { font-family: ui-monospace, monospace; font-size: 12px;
    overflow-wrap: anywhere; }
summary .score { font-weight: 600; color: var(--warn); }
summary .codes { font-size: 12px; color: var(--muted); }
.body { border-top: 1px solid var(--line); padding: 10px 12px 14px; display: grid;
        grid-template-columns: 1fr 1fr; gap: 8px 24px; }
.body h3 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
           margin: 6px 0; }
.body .history { grid-column: 1 / -1; }
.body ul { margin: 0; padding-left: 18px; }
.family { font-size: 10px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
          border: 1px solid var(--line); border-radius: 3px; padding: 0 4px; }
code { font-family: ui-monospace, monospace; font-size: 12px; background: #f0f2f6;
       padding: 0 3px; border-radius: 3px; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; font-size: 12px; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid var(--line);
         overflow-wrap: anywhere; }
tr.this td { background: #fff4e0; font-weight: 600; }
.fan-count { font-size: 18px; font-weight: 700; }
form.decision { grid-column: 1 / -1; display: flex; gap: 12px; align-items: flex-end; }
form.decision label { flex: 1; display: flex; flex-direction: column; gap: 4px; }
form.decision textarea { width: 100%; }
form.decision .buttons { display: flex; gap: 8px; }
form.login { max-width: 320px; margin: 60px auto; display: flex; flex-direction: column;
             gap: 12px; background: #fff; padding: 20px; border: 1px solid var(--line);
             border-radius: 6px; }
form.login label { display: flex; flex-direction: column; gap: 4px; }
.empty { color: var(--muted); padding: 20px 0; }
"""
