"""The review page over aiohttp's test client: no anonymous writes, CSRF and origin checks,
the audit record of every decision, escaping, and the operational endpoints."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from review_inputs import T0, verdict, withdrawal

from detector.config import Settings
from detector.labels import Label
from detector.review import web as web_module
from detector.review.auth import LOGIN_FAILURES_PER_CLIENT, Users, hash_password
from detector.review.queue import ReviewQueue
from detector.review.records import ReviewDecision, valid_reviewer
from detector.review.web import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Readiness,
    ReviewState,
    create_web_app,
)

PASSWORD = "correct horse battery staple"
HASH = hash_password(PASSWORD)
HOSTILE_ID = '<script>alert("id")</script>'
HOSTILE_ACCOUNT = 'acct-"><img src=x onerror=alert(1)>'
HOSTILE_DESTINATION = "javascript:alert('x')//<svg onload=alert(2)>"


@dataclass
class Harness:
    state: ReviewState
    users_file: Path
    published: list[tuple[ReviewDecision, Label]] = field(default_factory=list)
    fail_publish: bool = False
    now: list[float] = field(default_factory=lambda: [T0 + 900])


def harness(tmp_path: Path) -> Harness:
    users_file = tmp_path / "users"
    users_file.write_text(f"alice:{HASH}\nbob:{HASH}\n")
    queue = ReviewQueue(lookback_s=86400)
    queue.apply_withdrawal(withdrawal("w-1", destination="bc1q-mule", at=T0))
    queue.apply_withdrawal(withdrawal("w-0", "acct-2", destination="bc1q-mule", at=T0 - 60))
    queue.apply_verdict(verdict("w-1", at=T0 + 0.01))
    queue.apply_withdrawal(
        withdrawal(HOSTILE_ID, HOSTILE_ACCOUNT, destination=HOSTILE_DESTINATION, at=T0 + 5)
    )
    queue.apply_verdict(verdict(HOSTILE_ID, HOSTILE_ACCOUNT, at=T0 + 6))
    h: Harness

    async def publish(decision: ReviewDecision, label: Label) -> None:
        if h.fail_publish:
            raise RuntimeError("KafkaTimeoutError")
        h.published.append((decision, label))

    state = ReviewState(
        Settings(review_users_file=str(users_file)),
        queue,
        Users(users_file),
        publish,
        readiness=Readiness(True, "test"),
        clock=lambda: h.now[0],
    )
    h = Harness(state, users_file)
    return h


def run(
    tmp_path: Path, scenario: Callable[[TestClient[Any, Any], Harness], Awaitable[None]]
) -> Harness:
    h = harness(tmp_path)

    async def main() -> None:
        async with TestClient(TestServer(create_web_app(h.state))) as client:
            await scenario(client, h)

    asyncio.run(main())
    return h


def origin(client: TestClient[Any, Any]) -> dict[str, str]:
    return {"Origin": str(client.make_url("/")).rstrip("/")}


def token_in(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF token in the page"
    return html.unescape(match.group(1))


async def login(
    client: TestClient[Any, Any], name: str = "alice", password: str = PASSWORD
) -> ClientResponse:
    form = await client.get("/login")
    data = {"username": name, "password": password, "csrf_token": token_in(await form.text())}
    return await client.post("/login", data=data, headers=origin(client), allow_redirects=False)


async def queue_token(client: TestClient[Any, Any]) -> str:
    page = await client.get("/")
    assert page.status == 200
    return token_in(await page.text())


async def decide(
    client: TestClient[Any, Any],
    token: str,
    *,
    wid: str = "w-1",
    decision: str = "refuse",
    why: str = "new address, 250x usual",
    headers: dict[str, str] | None = None,
) -> ClientResponse:
    data = {"withdrawal_id": wid, "decision": decision, "why": why, "csrf_token": token}
    return await client.post(
        "/decide",
        data=data,
        headers=origin(client) if headers is None else headers,
        allow_redirects=False,
    )


def test_anonymous_visitors_see_only_the_login_page_and_cannot_write(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        page = await client.get("/", allow_redirects=False)
        assert page.status == 303 and page.headers["Location"] == "/login"
        refused = await decide(client, "anything")
        assert refused.status == 401
        logout = await client.post("/logout", data={"csrf_token": "x"}, headers=origin(client))
        assert logout.status == 401

    h = run(tmp_path, scenario)
    assert h.published == []
    assert h.state.queue.get("w-1") is not None


def test_a_good_login_sets_a_strict_http_only_session_cookie(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        form = await client.get("/login")
        login_cookie = form.headers["Set-Cookie"]
        assert LOGIN_COOKIE in login_cookie and "HttpOnly" in login_cookie
        assert "SameSite=Strict" in login_cookie
        response = await login(client)
        assert response.status == 303 and response.headers["Location"] == "/"
        cookies = response.headers.getall("Set-Cookie")
        (session,) = [c for c in cookies if c.startswith(SESSION_COOKIE + "=")]
        assert "HttpOnly" in session and "SameSite=Strict" in session and "Path=/" in session
        assert "Secure" not in session  # plain http on 127.0.0.1 (no https public URL)
        page = await client.get("/")
        assert page.status == 200 and "alice" in await page.text()
        again = await client.get("/login", allow_redirects=False)
        assert again.status == 303  # already logged in

    run(tmp_path, scenario)


def test_an_https_public_url_makes_cookies_secure(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        form = await client.get("/login")
        assert "Secure" in form.headers["Set-Cookie"]

    h = harness(tmp_path)
    h.state.settings = Settings(
        review_users_file=str(h.users_file), review_public_url="https://review.example.com"
    )

    async def main() -> None:
        async with TestClient(TestServer(create_web_app(h.state))) as client:
            await scenario(client, h)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("name", "password"), [("alice", "wrong password"), ("mallory", PASSWORD), ("", "")]
)
def test_a_wrong_login_is_refused(tmp_path: Path, name: str, password: str) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        response = await login(client, name, password)
        assert response.status == 401
        assert "Unknown analyst or wrong password" in await response.text()
        assert SESSION_COOKIE not in client.session.cookie_jar.filter_cookies(client.make_url("/"))

    run(tmp_path, scenario)


def test_logins_are_throttled_after_repeated_failures(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        for _ in range(5):
            assert (await login(client, "alice", "guess")).status == 401
        blocked = await login(client, "alice", PASSWORD)  # even the right password, for now
        assert blocked.status == 429

    run(tmp_path, scenario)


def test_one_client_spraying_passwords_over_many_names_is_throttled(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        for n in range(LOGIN_FAILURES_PER_CLIENT):
            assert (await login(client, f"guess-{n}", "guess")).status == 401
        assert (await login(client, "bob", PASSWORD)).status == 429

    run(tmp_path, scenario)


def test_a_login_without_its_form_token_or_from_another_site_is_refused(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        data = {"username": "alice", "password": PASSWORD, "csrf_token": "forged"}
        no_token = await client.post("/login", data=data, headers=origin(client))
        assert no_token.status == 403
        form = await client.get("/login")
        data["csrf_token"] = token_in(await form.text())
        evil = await client.post(
            "/login", data=data, headers={"Origin": "https://evil.example"}, allow_redirects=False
        )
        assert evil.status == 403 and "Cross-site" in await evil.text()

    run(tmp_path, scenario)


def test_the_queue_shows_held_withdrawals_oldest_first_with_their_context(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await login(client)
        page = await client.get("/")
        text = await page.text()
        assert text.index('data-withdrawal-id="w-1"') < text.index('data-withdrawal-id="&lt;script')
        assert '<strong class="depth">2</strong>' in text
        assert "amount_vs_history detail" in text  # the reasons
        assert "score 0.6460" in text
        assert "Recent withdrawals of acct-1" in text
        assert '<span class="fan-count">2</span> distinct account(s) paid' in text  # fan-in
        assert "<code>acct-2</code>" in text
        assert "3.1 BTC ($250,000)" in text
        filtered = await (await client.get("/", params={"reason": "structuring"})).text()
        assert "Nothing to review." in filtered
        bad = await (await client.get("/", params={"min_amount": "lots"})).text()
        assert "min_amount must be a number" in bad

    run(tmp_path, scenario)


def test_a_long_queue_shows_its_oldest_rows_and_says_how_many_more_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_module, "MAX_ROWS", 1)

    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await login(client)
        text = await (await client.get("/")).text()
        assert text.count('<details class="item"') == 1
        assert 'data-withdrawal-id="w-1"' in text and "the oldest 1 are shown" in text
        filtered = await (await client.get("/", params={"reason": "new_destination"})).text()
        assert "2 match the filters" in filtered

    run(tmp_path, scenario)


def test_user_typed_strings_are_escaped_and_no_script_may_run(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await login(client)
        page = await client.get("/")
        text = await page.text()
        echoed = await client.get("/", params={"asset": '"><script>alert(3)</script>'})
        both = text + await echoed.text()
        for raw in (HOSTILE_ID, HOSTILE_ACCOUNT, "<svg onload", "<script>alert(3)", "<img src=x"):
            assert raw not in both, raw
        assert html.escape(HOSTILE_ID) in text
        assert "&lt;img src=x onerror=alert(1)&gt;" in text
        assert "&lt;svg onload=alert(2)&gt;" in text
        assert "&quot;&gt;&lt;script&gt;alert(3)" in both  # the filter value, echoed escaped
        csp = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert page.headers["Cache-Control"] == "no-store"

    run(tmp_path, scenario)


def test_a_decision_with_a_wrong_or_missing_csrf_token_is_refused(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await login(client)
        good = await queue_token(client)
        assert (await decide(client, "forged")).status == 403
        assert (await decide(client, "")).status == 403
        assert (await decide(client, good[:-1])).status == 403
        # bob's token does not work in alice's session
        assert h.state.sessions.create("bob")[1].csrf != good

    h = run(tmp_path, scenario)
    assert h.published == [] and h.state.queue.get("w-1") is not None


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {},  # neither Origin nor Referer
    ],
    ids=["other-origin", "null-origin", "other-referer", "no-origin"],
)
def test_a_cross_site_decision_is_refused_even_with_the_right_token(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await login(client)
        response = await decide(client, await queue_token(client), headers=headers)
        assert response.status == 403
        assert "Cross-site request refused" in await response.text()

    h = run(tmp_path, scenario)
    assert h.published == []


def test_fetch_metadata_saying_cross_site_is_refused(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await login(client)
        headers = {**origin(client), "Sec-Fetch-Site": "cross-site"}
        response = await decide(client, await queue_token(client), headers=headers)
        assert response.status == 403

    assert run(tmp_path, scenario).published == []


def test_a_good_decision_is_published_with_its_audit_record_and_leaves_the_queue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await login(client)
        token = await queue_token(client)
        response = await decide(
            client,
            token,
            why="  new address, 80x the usual amount  ",
            headers={**origin(client), "Sec-Fetch-Site": "same-origin", "User-Agent": "UA/1"},
        )
        assert response.status == 303 and response.headers["Location"] == "/"
        page = await (await client.get("/")).text()
        assert "Refused w-1 (account acct-1)" in page
        assert 'data-withdrawal-id="w-1"' not in page
        again = await decide(client, token)
        assert again.status == 409 and "Already decided: refuse by alice" in await again.text()

    with caplog.at_level(logging.INFO, logger="detector.review.audit"):
        h = run(tmp_path, scenario)
    ((decision, label),) = h.published
    doc = decision.to_json()
    # who, when, what, why
    assert doc["reviewer"] == "alice"
    assert doc["reviewed_at"] == "2026-11-24T10:15:00.000Z"
    assert (doc["decision"], doc["withdrawal_id"], doc["account_id"]) == ("refuse", "w-1", "acct-1")
    assert doc["why"] == "new address, 80x the usual amount"
    assert doc["verdict"]["verdict"] == "delay" and doc["verdict"]["score"] == 0.646
    assert doc["withdrawal"]["destination"] == "bc1q-mule"
    audit = doc["audit"]
    assert audit["client_addr"] == "127.0.0.1" and audit["user_agent"] == "UA/1"
    assert re.fullmatch(r"[0-9a-f]{8}", audit["session"])
    assert audit["service"].startswith("detector-review ")
    assert (label.label, label.source, label.destination) == ("fraud", "analyst", "bc1q-mule")
    assert label.label_id == f"review:{decision.review_id}"
    (record,) = [r for r in caplog.records if r.name == "detector.review.audit"]
    logged = json.loads(record.getMessage().removeprefix("review decision "))
    assert logged == doc
    resolution = h.state.queue.resolution("w-1")
    assert resolution is not None and resolution.reviewer == "alice"
    sample = h.state.registry.get_sample_value
    assert sample("detector_review_decisions_total", {"outcome": "refuse"}) == 1.0
    assert sample("detector_review_decisions_total", {"outcome": "release"}) == 0.0


def test_a_release_teaches_a_legit_label(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await login(client, "bob")
        response = await decide(
            client, await queue_token(client), decision="release", why="known payee"
        )
        assert response.status == 303

    ((decision, label),) = run(tmp_path, scenario).published
    assert (decision.decision, decision.reviewer, label.label) == ("release", "bob", "legit")


@pytest.mark.parametrize(
    ("form", "status", "fragment"),
    [
        ({"why": "   "}, 400, "say why"),
        ({"decision": "approve"}, 400, "decision must be one of"),
        ({"wid": "w-unknown"}, 409, "not waiting for review"),
    ],
)
def test_a_decision_needs_a_reason_a_known_outcome_and_a_held_withdrawal(
    tmp_path: Path, form: dict[str, str], status: int, fragment: str
) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await login(client)
        response = await decide(client, await queue_token(client), **form)
        assert response.status == status
        assert fragment in await response.text()

    assert run(tmp_path, scenario).published == []


def test_nothing_is_decided_while_the_queue_catches_up_or_when_kafka_fails(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await login(client)
        token = await queue_token(client)
        h.state.readiness.ready = False
        page = await (await client.get("/")).text()
        assert "decisions are disabled" in page and 'action="/decide"' not in page
        assert (await decide(client, token)).status == 503
        h.state.readiness.ready = True
        h.fail_publish = True
        failed = await decide(client, token)
        assert failed.status == 503 and "not recorded" in await failed.text()

    h = run(tmp_path, scenario)
    assert h.published == [] and h.state.queue.get("w-1") is not None
    assert (
        h.state.registry.get_sample_value("detector_review_decisions_total", {"outcome": "refuse"})
        == 0.0
    )


def test_logout_needs_the_csrf_token_and_ends_the_session(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await login(client)
        token = await queue_token(client)
        forged = await client.post("/logout", data={"csrf_token": "x"}, headers=origin(client))
        assert forged.status == 403
        out = await client.post(
            "/logout", data={"csrf_token": token}, headers=origin(client), allow_redirects=False
        )
        assert out.status == 303 and out.headers["Location"] == "/login"
        assert len(h.state.sessions) == 0
        assert (await decide(client, token)).status == 401

    run(tmp_path, scenario)


def test_an_analyst_removed_from_the_users_file_loses_their_session(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await login(client)
        token = await queue_token(client)
        h.users_file.write_text(f"bob:{HASH}\n# alice left\n")
        assert (await decide(client, token)).status == 401
        assert (await client.get("/", allow_redirects=False)).status == 303

    assert run(tmp_path, scenario).published == []


def test_metrics_and_health_need_no_login_and_show_the_queue(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        metrics = await client.get("/metrics")
        assert metrics.status == 200
        assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await metrics.text()
        assert "detector_review_queue_depth 2.0" in text
        age = h.state.registry.get_sample_value("detector_review_oldest_held_age_seconds")
        assert age == pytest.approx(899.99)  # held at T0 + 0.01, now T0 + 900
        assert "detector_review_overdue_withdrawals 0.0" in text
        h.now[0] = T0 + 3601
        assert (
            "detector_review_overdue_withdrawals 1.0" in await (await client.get("/metrics")).text()
        )
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 200
        h.state.readiness.ready = False
        h.state.readiness.detail = "reading 10 records"
        not_ready = await client.get("/readyz")
        assert not_ready.status == 503 and "reading 10 records" in await not_ready.text()
        css = await client.get("/static/review.css")
        assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
        missing = await client.get("/nope")
        assert missing.status == 404 and missing.headers["X-Frame-Options"] == "DENY"

    run(tmp_path, scenario)


def test_reviewer_names_follow_the_users_file_rules() -> None:
    assert valid_reviewer("alice") and valid_reviewer("a.b-c+d@example.com")
    assert not valid_reviewer("") and not valid_reviewer("a b") and not valid_reviewer("x" * 65)
