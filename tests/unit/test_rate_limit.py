"""The one API client's rate limit (nmisim.kube.client.TokenBucket): ``qps`` on average, bursts up to
``burst``, and two priorities — an Event (background) never takes a token while a status (foreground) is
waiting for one, so a burst of Events cannot delay the statuses of the next change."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from nmisim.kube.client import APIClient, StaticCredentials, TokenBucket


async def _order(bucket: TokenBucket, plan: list[tuple[str, bool]]) -> list[str]:
    done: list[str] = []

    async def one(name: str, background: bool) -> None:
        await bucket.acquire(background=background)
        done.append(name)

    await asyncio.gather(*(one(n, b) for n, b in plan))
    return done


def test_the_burst_then_qps() -> None:
    async def run() -> float:
        bucket = TokenBucket(qps=100, burst=10)
        t0 = time.monotonic()
        for _ in range(30):
            await bucket.acquire()
        return time.monotonic() - t0

    elapsed = asyncio.run(run())
    assert 0.17 <= elapsed < 1.0  # 10 at once, 20 more at 100/s


def test_background_waits_for_every_waiting_foreground_acquisition() -> None:
    async def run() -> list[str]:
        bucket = TokenBucket(qps=200, burst=1)
        await bucket.acquire()  # the bucket is empty: everyone below waits
        plan = [(f"event-{i}", True) for i in range(6)] + [(f"status-{i}", False) for i in range(6)]
        return await _order(bucket, plan)

    done = asyncio.run(run())
    statuses = [i for i, n in enumerate(done) if n.startswith("status")]
    events = [i for i, n in enumerate(done) if n.startswith("event")]
    # at most the one Event already inside the bucket (holding it, waiting for a token) goes first
    assert sum(1 for e in events if e < max(statuses)) <= 1, done
    assert [n for n in done if n.startswith("status")] == [f"status-{i}" for i in range(6)]


def test_background_alone_is_not_held_back() -> None:
    async def run() -> float:
        bucket = TokenBucket(qps=100, burst=5)
        t0 = time.monotonic()
        await _order(bucket, [(f"event-{i}", True) for i in range(15)])
        return time.monotonic() - t0

    assert asyncio.run(run()) < 1.0  # 5 at once, 10 at 100/s: about 0.1 s


def test_a_cancelled_foreground_wait_releases_the_background() -> None:
    async def run() -> list[str]:
        bucket = TokenBucket(qps=20, burst=1)
        await bucket.acquire()
        fg = asyncio.create_task(bucket.acquire())
        await asyncio.sleep(0.01)
        bg = asyncio.create_task(_order(bucket, [("event", True)]))
        await asyncio.sleep(0.01)
        fg.cancel()
        return await asyncio.wait_for(bg, 2)

    assert asyncio.run(run()) == ["event"]


def test_the_client_serves_statuses_before_queued_events() -> None:
    """Against a real HTTP server: 20 Events queued, then 5 statuses; the statuses arrive within the
    first few requests after them, not behind the Events."""

    async def run() -> list[str]:
        seen: list[str] = []

        async def handler(request: web.Request) -> web.Response:
            seen.append(request.path)
            return web.json_response({})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        api = APIClient(
            StaticCredentials(f"http://127.0.0.1:{port}", False, {}), concurrency=4, qps=50, burst=1
        )
        try:
            events = [
                asyncio.create_task(api.request("POST", f"/event/{i}", {}, background=True))
                for i in range(20)
            ]
            await asyncio.sleep(0.05)  # a few Events are through, the rest wait for tokens
            statuses = [api.request("PATCH", f"/status/{i}", {}) for i in range(5)]
            await asyncio.gather(*statuses, *events)
        finally:
            await api.close()
            await runner.cleanup()
        return seen

    seen = asyncio.run(run())
    first_status = next(i for i, p in enumerate(seen) if p.startswith("/status"))
    last_status = max(i for i, p in enumerate(seen) if p.startswith("/status"))
    assert last_status - first_status <= 5, seen  # the statuses go together (one Event may be in flight)
    assert any(p.startswith("/event") for p in seen[last_status:]), seen  # Events still waiting went after
