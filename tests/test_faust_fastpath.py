"""The fast path under Faust's consumer (`pssync.faust_fastpath`), without Kafka."""

from __future__ import annotations

import asyncio

import pytest
from mode import Service

from pssync import faust_fastpath


class Svc(Service):
    pass


def run(coro_fn):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        svc = Svc()
        return await coro_fn(svc)

    return asyncio.run(main())


def test_a_callback_that_does_not_suspend_wins_without_a_task() -> None:
    async def body(svc: Svc) -> object:
        calls = []

        async def callback() -> str:
            calls.append(1)
            return "done"

        before = len(asyncio.all_tasks())
        other = asyncio.Event().wait()  # as Faust passes suspend_flow.wait()
        result = await faust_fastpath.wait_first(svc, callback(), other)
        assert other.cr_frame is None  # closed: no "never awaited" warning per record
        assert len(asyncio.all_tasks()) == before
        assert calls == [1]
        return result

    result = run(body)
    assert result.results == ["done"]
    assert not result.stopped


def test_a_callback_that_suspends_goes_on_and_returns_its_value() -> None:
    async def body(svc: Svc) -> object:
        gate = asyncio.Event()
        steps = []

        async def callback() -> str:
            steps.append("start")
            await gate.wait()
            steps.append("end")
            return "later"

        asyncio.get_running_loop().call_later(0.05, gate.set)
        result = await faust_fastpath.wait_first(svc, callback(), asyncio.Event())
        assert steps == ["start", "end"]
        return result

    assert run(body).results[0] == "later"


def test_the_other_event_still_interrupts_a_suspended_callback() -> None:
    async def body(svc: Svc) -> object:
        suspend = asyncio.Event()
        never = asyncio.Event()
        finished = []

        async def callback() -> None:
            await never.wait()
            finished.append(1)

        asyncio.get_running_loop().call_later(0.05, suspend.set)
        result = await faust_fastpath.wait_first(svc, callback(), suspend)
        assert finished == []
        return result

    result = run(body)
    assert result.results == [True]  # the event's wait() won


def test_an_error_raises_whether_or_not_the_callback_suspended() -> None:
    async def body(svc: Svc) -> None:
        async def at_once() -> None:
            raise ValueError("at once")

        async def after() -> None:
            await asyncio.sleep(0.01)
            raise KeyError("after")

        with pytest.raises(ValueError, match="at once"):
            await faust_fastpath.wait_first(svc, at_once(), asyncio.Event())
        with pytest.raises(KeyError):
            await faust_fastpath.wait_first(svc, after(), asyncio.Event())

    run(body)


def test_install_patches_fausts_consumer_once() -> None:
    from faust.transport.consumer import Consumer

    faust_fastpath.install()
    faust_fastpath.install()
    assert Consumer.wait_first is faust_fastpath.wait_first
