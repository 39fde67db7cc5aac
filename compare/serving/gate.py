"""How many generations run at once, and how long a request waits for one.

Generation is CPU-bound, so it runs in worker threads, and only a few at once:
``Limits.generations`` of any length, and ``Limits.quick_generations`` more for quick requests
(at most ``Limits.quick_length`` characters), which long ones would otherwise starve. A request
that finds no free slot may wait ``Limits.max_wait`` seconds for one, if fewer than
``Limits.waiting`` of its kind already wait, and is otherwise answered 503 with Retry-After at
once (compare.serving.server turns Busy into that answer). Limits also holds the server's other
limits (connections, timeouts), so that one object configures the whole server.

Before all that, generate requests take turns (GenerationGate.turn): the event loop checks, admits
or refuses one at a time, in order of arrival, while requests that generate nothing (the page, the
info) never wait for a turn. Clients that send a new request the moment they get a 503 therefore
cannot fill every pass of the event loop with their work, and a short request is answered within a
few passes however many of them there are (python -m compare.bench --demo measures it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from compare.serving.generate_request import GenerateRequest


@dataclass(frozen=True)
class Limits:
    """How much the server takes on at once, and how long it waits for a client."""

    generations: int = 2  # run at once, one worker thread each, for requests of any length...
    quick_generations: int = 1  # ...and this many more only for quick ones, so that long ones never starve them
    quick_length: int = 500  # characters (length + prime) of a quick request: the page's default; ~0.05 s
    waiting: int = 2  # requests of each kind (any, quick) that may wait for a free generation...
    max_wait: float = 0.5  # ...this many seconds at most; then, and beyond them at once, 503
    retry_after: int = 1  # seconds, in the 503's Retry-After header
    connections: int = 256  # open at once; beyond it uvicorn answers a plain 503 (no Retry-After) and closes
    backlog: int = 128  # connections the kernel queues before the server accepts them
    idle_timeout: int = 5  # seconds a connection may stay open with no request (uvicorn counts whole seconds)
    read_timeout: float = 10.0  # seconds for a request's head, and again for its body, to arrive
    shutdown_timeout: int = 5  # seconds Ctrl-C waits for requests still running


DEFAULT_LIMITS = Limits()


class Busy(Exception):
    """Every generation slot is taken: the request is answered 503."""


class Lane:
    """``slots`` generations at once, and at most ``max_waiting`` requests waiting for one."""

    def __init__(self, slots: int, max_waiting: int) -> None:
        self.size = slots
        self.max_waiting = max_waiting
        self.slots: anyio.Semaphore | None = None  # made on first use, inside the loop that serves
        self.waiting = 0

    def semaphore(self) -> anyio.Semaphore:
        if self.slots is None:
            self.slots = anyio.Semaphore(self.size)
        return self.slots

    def take_now(self) -> bool:
        """Take a free slot if there is one."""
        if self.size == 0:
            return False
        try:
            self.semaphore().acquire_nowait()
        except anyio.WouldBlock:
            return False
        return True

    async def take(self, max_wait: float) -> None:
        """Take a slot, waiting ``max_wait`` seconds at most (if few enough already wait); Busy if not."""
        if self.size == 0 or self.waiting >= self.max_waiting:
            raise Busy
        self.waiting += 1
        try:
            with anyio.move_on_after(max_wait) as waited:
                await self.semaphore().acquire()
        finally:
            self.waiting -= 1
        if waited.cancelled_caught:
            raise Busy

    def release(self) -> None:
        self.semaphore().release()


class GenerationGate:
    """Runs generations in worker threads, a few at once (see the module's docstring and Limits).

    A request takes a free slot of the general lane; a quick one may instead take a free slot of
    the quick lane. If none is free it waits, in the quick lane if it is quick, else in the
    general one: a quick request never queues behind a long one. Only the event loop touches the
    gate, so plain counts are safe.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.general = Lane(limits.generations, limits.waiting)
        self.quick = Lane(limits.quick_generations, limits.waiting)
        self.threads: anyio.CapacityLimiter | None = None
        self.turns: anyio.Lock | None = None  # made on first use, inside the loop that serves

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait, in order of arrival, until no other generate request is being checked, admitted or refused.

        The event loop runs every task that is ready once per pass, in order. Without turns, each
        pass would run a step of every generate request in hand, and a short request's steps would
        wait behind all of theirs; with them, a pass does one generate request's work at most,
        however many clients send them. The turn must not span an await on the client (its body,
        its answer being sent) or on a generation, or one slow client would hold up every other.
        """
        if self.turns is None:
            self.turns = anyio.Lock()  # first come, first served
        async with self.turns:
            yield

    def is_quick(self, request: GenerateRequest) -> bool:
        return request.length + len(request.prime) <= self.limits.quick_length

    async def run(self, function: Callable[[GenerateRequest], dict[str, Any]], request: GenerateRequest) -> Any:
        """``function(request)`` in a worker thread, once a slot is free; Busy if none is free in time."""
        lanes = (self.general, self.quick) if self.is_quick(request) and self.quick.size else (self.general,)
        lane = next((lane for lane in lanes if lane.take_now()), None)
        if lane is None:
            lane = lanes[-1]
            await lane.take(self.limits.max_wait)
        if self.threads is None:
            self.threads = anyio.CapacityLimiter(self.limits.generations + self.limits.quick_generations)
        try:
            # not abandoned on cancellation: the slot stays taken until the thread is done
            return await anyio.to_thread.run_sync(function, request, limiter=self.threads)
        finally:
            lane.release()
