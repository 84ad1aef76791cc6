"""The operator's seed in chunks (``Intake.seed_chunked``, what the controller runs after the first LIST):
at 50,000 pods the seed's evaluations and migration assessments take tens of seconds, so it yields to the
event loop every CHUNK pods (the health endpoint and the watches are served meanwhile). What changes while
it yields is evaluated again before it ends, nothing is queued before it ends, and the result is what the
one-go seed (``Intake.seed``) gives for the objects as they are at the end."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from test_controller_migration import (
    CONFIG,
    NAMES,
    NS,
    Writer,
    drain,
    identity_objects,
    replica,
    service_account,
)

from nmisim.controller.controller import Controller
from nmisim.controller.intake import CHUNK
from nmisim.engine.models import KIND_POD

Body = dict[str, Any]
DEPLOYMENTS = 6
PER_DEPLOYMENT = 220  # 1,320 pods: more than two chunks


def objects() -> list[Body]:
    out: list[Body] = [CONFIG, *identity_objects(), service_account("web")]
    for d in range(DEPLOYMENTS):
        for i in range(PER_DEPLOYMENT):
            b = replica(i, deployment=f"web{d}", selector="web" if d % 2 else "none")
            b["status"]["podIP"] = f"10.1.{d}.{i + 1}"
            out.append(b)
    return out


async def listed(bodies: list[Body]) -> tuple[Controller, Writer]:
    fake = Writer()
    ctl = Controller(writer=fake)
    for body in bodies:
        await ctl.intake.upsert(str(body["kind"]), body)
    return ctl, fake


def written(fake: Writer) -> dict[tuple[str, str], Body]:
    """The last status written per verdict (by pod name), without its timestamps."""
    out = {}
    for op, body in fake.calls:
        if op == "patch":
            b = {k: v for k, v in body.items() if k not in {"lastTransitionTime", "lastEvaluated"}}
            out[(NS, NAMES[str(body["podUID"])])] = b
    return out


@pytest.mark.parametrize("what", ["pods", "identities"])
def test_changes_while_the_seed_yields_are_evaluated_and_nothing_is_queued_before_it_ends(what: str) -> None:
    start = objects()
    by_name = {b["metadata"]["name"]: b for b in start if b["kind"] == KIND_POD}
    extra = identity_objects(selector="none") if what == "identities" else []
    changed: dict[str, Body | None] = {}

    async def chunked() -> tuple[dict[tuple[str, str], Body], int, int]:
        ctl, fake = await listed(start)
        ticks = 0
        seed = asyncio.create_task(ctl.intake.seed_chunked())
        while len(ctl.store) < CHUNK:
            await asyncio.sleep(0)
            ticks += 1
        queued_meanwhile = len(ctl.queue)
        # what changes while the seed yields, among the pods it has already evaluated: one with an identity
        # is relabelled to select nothing, another is deleted; and a second identity and binding selecting
        # "none" appear (they change whole Deployments, some evaluated before, some after this point)
        done = sorted(r.name for r in ctl.store.results() if by_name[r.name]["metadata"]["labels"]
                      ["aadpodidbinding"] == "web")  # fmt: skip
        relabelled = copy.deepcopy(by_name[done[0]])
        relabelled["metadata"]["labels"]["aadpodidbinding"] = "nobody"
        relabelled["metadata"]["resourceVersion"] = "9"
        if what == "pods":
            changed[done[0]], changed[done[1]] = relabelled, None
            await ctl.intake.upsert(KIND_POD, relabelled)
            await ctl.intake.delete(KIND_POD, NS, done[1], "10")
        for body in extra:
            await ctl.intake.upsert(str(body["kind"]), body)
        assert not ctl.intake.seeded
        await seed
        assert ctl.intake.seeded
        await drain(ctl)
        return written(fake), queued_meanwhile, ticks

    got, queued_meanwhile, ticks = asyncio.run(chunked())
    final = [changed.get(b["metadata"]["name"], b) for b in start]
    want = asyncio.run(_one_go_of([b for b in final if b is not None] + extra))
    assert ticks >= 1 and queued_meanwhile == 0
    assert len(want) == DEPLOYMENTS * PER_DEPLOYMENT - len([b for b in changed.values() if b is None])
    assert got == want
    # the changes made a difference (the test would not notice a seed that ignored them otherwise)
    before = asyncio.run(_one_go_of(start))
    differ = {k for k in want if k in before and before[k] != want[k]}
    if what == "pods":
        relabelled_name = next(n for n, b in changed.items() if b is not None)
        assert differ == {(NS, relabelled_name)}
    else:
        assert len(differ) > PER_DEPLOYMENT, "the new binding changes whole Deployments"


async def _one_go_of(bodies: list[Body]) -> dict[tuple[str, str], Body]:
    ctl, fake = await listed(bodies)
    ctl.intake.seed()
    await drain(ctl)
    return written(fake)


def test_the_event_loop_runs_while_a_large_seed_runs() -> None:
    async def go() -> tuple[int, bool]:
        ctl, _ = await listed(objects())
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        await ctl.intake.seed_chunked()
        done = True
        await t
        return ticks, ctl.intake.seeded

    ticks, seeded = asyncio.run(go())
    assert seeded
    assert ticks >= (DEPLOYMENTS * PER_DEPLOYMENT) // CHUNK  # at least once per chunk
