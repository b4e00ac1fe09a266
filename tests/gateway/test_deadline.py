"""The request path's deadline behaves as asyncio.timeout_at: it raises TimeoutError when it
passes, lets another cancellation through as such, and leaves nothing armed behind it."""

from __future__ import annotations

import asyncio

import pytest

from gateway.deadline import Deadline


def test_a_passed_deadline_raises_timeout_error_and_the_task_goes_on():
    async def main() -> str:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with Deadline(loop, loop.time() + 0.05):
                await asyncio.sleep(5)
        await asyncio.sleep(0.01)  # not cancelled any more
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        return "went on"

    assert asyncio.run(main()) == "went on"


def test_a_block_done_in_time_is_not_cancelled_later():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with Deadline(loop, loop.time() + 0.05):
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.1)  # past the deadline: its timer was cancelled with the block

    asyncio.run(main())


def test_a_deadline_already_past_fires_at_the_first_wait():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with Deadline(loop, loop.time() - 1):
                await asyncio.sleep(1)

    asyncio.run(main())


def test_another_cancellation_is_not_taken_for_the_deadline():
    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def call() -> None:
            async with Deadline(loop, loop.time() + 5):
                await asyncio.sleep(5)

        task = loop.create_task(call())
        await asyncio.sleep(0.01)
        task.cancel()  # the client left, say
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_cancellation_that_meets_the_deadline_stays_a_cancellation():
    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def call() -> None:
            async with Deadline(loop, loop.time() + 0.02):
                try:
                    await asyncio.sleep(5)
                finally:
                    await asyncio.sleep(0.05)  # cleanup outlives the deadline

        task = loop.create_task(call())
        await asyncio.sleep(0.01)
        task.cancel()  # before the deadline: two cancellations, one not ours
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
