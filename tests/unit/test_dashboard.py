"""The dashboard's routes: admin-token auth (cookie exchange, bearer), headers, and its JSON."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette

from freshkeep import BuildContext, ConfigurationError, Keeper, Policy
from freshkeep.integrations.dashboard import (
    COOKIE,
    Dashboard,
    content_security_policy,
    script_json,
)
from freshkeep.processing import Item, Outcome, Pipeline, ProcessContext, Processor
from freshkeep.testing import MemoryRevisions

TOKEN = "correct horse battery staple"


async def build(ctx: BuildContext) -> dict[str, Any]:
    return {"revisions": dict(ctx.revisions)}


def client(dashboard: Dashboard, base: str = "http://hub") -> httpx.AsyncClient:
    app = Starlette()
    dashboard.mount(app)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


@pytest.fixture
async def keeper() -> AsyncIterator[Keeper]:
    k = Keeper(MemoryRevisions(), probe="always")
    k.view("summary", build, sources=["table:tasks"], policy=Policy.strict(stale_if_error=60))
    yield k
    await k.aclose()


async def test_without_a_token_the_dashboard_is_off(keeper: Keeper) -> None:
    async with client(Dashboard(keeper, None)) as http:
        page = await http.get("/freshkeep")
        assert page.status_code == 403 and "disabled" in page.text
        assert (await http.get("/freshkeep?token=")).status_code == 403
        data = await http.get("/freshkeep/status.json", headers={"Authorization": "Bearer x"})
        assert data.status_code == 403 and "FRESHKEEP_ADMIN_TOKEN" in data.json()["detail"]


async def test_the_token_may_be_the_settings_secret(keeper: Keeper) -> None:
    """``Dashboard(keeper, settings.admin_token)``: a SecretStr works as its text does, an empty
    one turns the dashboard off, and anything else is refused when it is made."""
    async with client(Dashboard(keeper, SecretStr(TOKEN))) as http:
        assert (await http.get("/freshkeep", params={"token": "wrong"})).status_code == 401
        signed = await http.get("/freshkeep", params={"token": TOKEN})
        assert signed.status_code == 303
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/freshkeep/status.json", headers=bearer)).status_code == 200
    assert TOKEN not in repr(Dashboard(keeper, TOKEN))
    async with client(Dashboard(keeper, SecretStr(""))) as http:
        assert (await http.get("/freshkeep")).status_code == 403
    with pytest.raises(ConfigurationError, match="str or a SecretStr"):
        Dashboard(keeper, b"bytes")  # type: ignore[arg-type]


async def test_the_token_is_exchanged_for_an_http_only_strict_cookie(keeper: Keeper) -> None:
    dashboard = Dashboard(keeper, TOKEN)
    async with client(dashboard) as http:
        anonymous = await http.get("/freshkeep")
        assert anonymous.status_code == 401 and "?token=" in anonymous.text
        assert TOKEN not in anonymous.text
        assert (await http.get("/freshkeep", params={"token": "wrong"})).status_code == 401
        assert (await http.get("/freshkeep/status.json")).status_code == 401

        signed = await http.get("/freshkeep", params={"token": TOKEN})
        assert signed.status_code == 303 and signed.headers["location"] == "/freshkeep"
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=") and TOKEN not in cookie
        assert re.search(r"HttpOnly", cookie, re.I) and re.search(r"SameSite=strict", cookie, re.I)
        assert "Path=/freshkeep" in cookie and "Secure" not in cookie
        assert signed.headers["cache-control"] == "no-store"

        page = await http.get("/freshkeep")  # the client sends the cookie back
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert 'data-poll="1500"' in page.text and TOKEN not in page.text
        data = await http.get("/freshkeep/status.json")
        assert data.status_code == 200 and data.json()["views"][0]["name"] == "summary"

    async with client(dashboard) as other:  # a forged cookie is refused
        other.cookies.set(COOKIE, "0" * 64, path="/freshkeep")
        assert (await other.get("/freshkeep/status.json")).status_code == 401
        other.cookies.clear()
        other.cookies.set(COOKIE, TOKEN, path="/freshkeep")  # the token itself is no cookie
        assert (await other.get("/freshkeep/status.json")).status_code == 401


async def test_bearer_token_and_a_secure_cookie_over_https(keeper: Keeper) -> None:
    async with client(Dashboard(keeper, TOKEN), base="https://hub") as http:
        ok = await http.get("/freshkeep/status.json", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.headers["content-type"] == "application/json"
        bad = await http.get("/freshkeep/status.json", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        signed = await http.get("/freshkeep", params={"token": TOKEN})
        assert "Secure" in signed.headers["set-cookie"]


async def test_the_content_security_policy_allows_exactly_the_inline_script(
    keeper: Keeper,
) -> None:
    async with client(Dashboard(keeper, TOKEN)) as http:
        page = await http.get("/freshkeep", headers={"Authorization": f"Bearer {TOKEN}"})
    csp = page.headers["content-security-policy"]
    assert csp == content_security_policy()
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "http" not in csp
    for tag in ("script", "style"):
        (inline,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page.text, flags=re.S)
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert not re.search(r'(src|href)="(?!data:)', page.text)  # no external asset


async def test_status_follows_reads_and_writes(keeper: Keeper) -> None:
    view = keeper.get_view("summary")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with client(Dashboard(keeper, TOKEN)) as http:
        before = (await http.get("/freshkeep/status.json", headers=headers)).json()
        (row,) = before["views"]
        assert row["served"] is None and row["reads_total"] == 0 and row["hit_ratio"] is None

        await view.get()
        await view.get()
        after = (await http.get("/freshkeep/status.json", headers=headers)).json()
        (row,) = after["views"]
        assert row["served"]["revision"] == "table:tasks=0"
        assert row["reads"] == {"miss": 1, "hit": 1} and row["hit_ratio"] == 0.5
        assert row["builds"] == {"default": 1} and row["last_error"] is None

        await keeper.bump("table:tasks")
        await view.get()
        later = (await http.get("/freshkeep/status.json", headers=headers)).json()
        (row,) = later["views"]
        assert row["served"]["revision"] == "table:tasks=1"
        assert row["reads"]["miss"] == 2 and row["builds"] == {"default": 2}
        assert later["keeper"]["commits"] == 1
        health = later["health"]
        assert health["status"] in ("ok", "degraded", "unhealthy")
        assert any(c["name"] == "view:summary" for c in health["checks"])


def _initial(page: str) -> Any:
    found = re.findall(r'<script type="application/json" id="initial">(.*?)</script>', page, re.S)
    assert len(found) == 1
    return json.loads(found[0])


async def test_the_page_embeds_the_status_for_its_first_paint(keeper: Keeper) -> None:
    view = keeper.get_view("summary")
    await view.get()
    await view.get()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with client(Dashboard(keeper, TOKEN)) as http:
        page = await http.get("/freshkeep", headers=headers)
        data = (await http.get("/freshkeep/status.json", headers=headers)).json()
    assert page.status_code == 200
    initial = _initial(page.text)
    assert set(initial) == set(data)
    (row,) = initial["views"]
    assert row["name"] == "summary" and row["served"]["revision"] == "table:tasks=0"
    assert row["reads"] == {"miss": 1, "hit": 1}
    assert initial["health"]["status"] in ("ok", "degraded", "unhealthy")
    assert "{{" not in page.text  # every placeholder filled


async def test_embedded_values_cannot_close_the_script_element(keeper: Keeper) -> None:
    nasty = "</script><script>alert(1)</script><!-- & -->"

    async def broken(ctx: BuildContext) -> dict[str, Any]:
        raise RuntimeError(nasty)

    keeper.view("broken", broken, sources=["table:tasks"])
    with pytest.raises(Exception, match="alert"):
        await keeper.get_view("broken").get()
    async with client(Dashboard(keeper, TOKEN)) as http:
        page = await http.get("/freshkeep", headers={"Authorization": f"Bearer {TOKEN}"})
    assert "alert(1)" in page.text  # the error is in the page, escaped
    assert "<script>alert" not in page.text and "<!--" not in page.text
    assert page.text.count("</script>") == 2  # the data's element and the page's script
    row = next(v for v in _initial(page.text)["views"] if v["name"] == "broken")
    assert nasty in row["last_error"]
    assert script_json({"a": "</b>&"}) == '{"a":"\\u003c/b\\u003e\\u0026"}'


async def test_the_page_is_served_when_the_status_fails(keeper: Keeper) -> None:
    dashboard = Dashboard(keeper, TOKEN)

    async def failing() -> dict[str, Any]:
        raise RuntimeError("status failed")

    dashboard.status = failing  # type: ignore[method-assign]
    async with client(dashboard) as http:
        page = await http.get("/freshkeep", headers={"Authorization": f"Bearer {TOKEN}"})
    assert page.status_code == 200 and _initial(page.text) is None  # the page polls instead


class Files(Processor):
    def __init__(self, root: Path) -> None:
        self.name, self.root, self.pattern = "files", root, "*.txt"

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        if item.path.read_text() == "bad":
            raise ValueError("cannot parse")
        return Outcome({"lines": 1})


async def test_processors_show_their_last_run_lag_and_stuck_item(
    keeper: Keeper, tmp_path: Path
) -> None:
    (tmp_path / "good.txt").write_text("ok")
    (tmp_path / "broken.txt").write_text("bad")
    pipeline = Pipeline(racy_window=0)
    pipeline.register(Files(tmp_path))
    keeper.health.watch_processor(pipeline, "files", cadence=60, stuck_threshold=0)
    await pipeline.run("files")
    dashboard = Dashboard(keeper, TOKEN, health_every=0)
    (p,) = (await dashboard.status())["processors"]  # found through the health registry
    assert p["name"] == "files" and p["running"] is False
    assert p["last_run"]["processed"] == 1 and p["last_run"]["failed"] == 1
    assert "cannot parse" in p["last_run"]["errors"]["broken.txt"]
    assert p["items"] == 2 and p["pending"] == 1
    assert p["stuck_item"] == "broken.txt" and "cannot parse" in p["stuck_error"]
    assert p["lag_level"] in ("ok", "warning")


async def test_a_failing_health_run_is_shown_not_raised(keeper: Keeper) -> None:
    def broken() -> Any:
        raise RuntimeError("check exploded")

    keeper.health.add("broken", broken)
    status = await Dashboard(keeper, TOKEN, health_every=0).status()
    (check,) = [c for c in status["health"]["checks"] if c["name"] == "broken"]
    assert check["level"] == "error" and "check exploded" in check["detail"]
    assert status["health"]["status"] == "unhealthy"


def test_bad_configuration_is_refused(keeper: Keeper) -> None:
    with pytest.raises(ConfigurationError, match="path"):
        Dashboard(keeper, TOKEN, path="freshkeep/")
    with pytest.raises(ConfigurationError, match="poll"):
        Dashboard(keeper, TOKEN, poll=0)
    assert Dashboard(keeper, "").token is None  # an empty token is no token: off
