"""The demo's HTTP server: one page, ``GET /api/info`` and ``POST /api/generate``.

The page (compare/serving/page.html, one file, no external assets) has a blue Generate
button and a "Randomness" slider (the sampling temperature). It posts JSON to
``POST /api/generate``; ``GET /api/info`` describes the loaded checkpoint. The text comes
from compare.model.sampling, the code behind ``python -m compare.sample``, so the page
and the CLI print the same text for the same seed.

The app is Starlette, served by uvicorn on one event loop (compare.serving.connections adds
the connection timeouts uvicorn lacks). Generation is CPU-bound, so it runs in worker threads,
only a few at once (the gate, below); a request is checked first (parse_generate_request), one
generate request at a time (GenerationGate.turn). Everything else (the page, the info) is answered
on the event loop, never behind a generation, nor behind the generate requests that came before it.

What ``POST /api/generate`` takes: a length, a temperature, a prime, an implementation and a seed,
every one optional. parse_generate_request fills in the defaults and refuses anything the model cannot
sample (a character it never saw, an implementation it lacks) with a RequestError whose message
the page shows as it is. ModelInfo, what the checks need to know of the checkpoint, is also what
``GET /api/info`` answers.

How many generations run at once, and how long a request waits for one: ``Limits.generations`` of
any length, and ``Limits.quick_generations`` more for quick requests (at most ``Limits.quick_length``
characters), which long ones would otherwise starve. A request that finds no free slot may wait
``Limits.max_wait`` seconds for one, if fewer than ``Limits.waiting`` of its kind already wait, and is
otherwise answered 503 with Retry-After at once (the app turns Busy into that answer). Limits also
holds the server's other limits (connections, timeouts), so that one object configures the whole server.

Before all that, generate requests take turns (GenerationGate.turn): the event loop checks, admits
or refuses one at a time, in order of arrival, while requests that generate nothing (the page, the
info) never wait for a turn. Clients that send a new request the moment they get a 503 therefore
cannot fill every pass of the event loop with their work, and a short request is answered within a
few passes however many of them there are (python -m compare.bench --demo measures it).

The checkpoint is loaded once. Sampling only reads the weights, and every request gets
its own random generator (seeded from the request) and its own hidden state, so the
worker threads can sample from the same engines at once.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from http import HTTPStatus
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from compare.data.corpus import Vocab
from compare.model.checkpoint import BEST, IMPL_DIRS, LATEST, find_checkpoint, load_checkpoint
from compare.model.sampling import sample_text
from compare.serving.connections import listening_socket, protocol_with_timeouts

if TYPE_CHECKING:
    from compare.model.engines import Engine

# ----- what POST /api/generate takes ----------------------------------------------------------------

MAX_LENGTH = 10_000  # characters per request: about 0.6 s of sampling with manual, 2 s with torch
MAX_PRIME = 1_000  # characters: the prime is run through the model too
MAX_TEMPERATURE = 1.5  # the slider's range; above it the text is mostly noise


@dataclass(frozen=True)
class ModelInfo:
    """What the page shows about the checkpoint."""

    run_name: str
    impl: str  # the implementation that trained it
    cell: str  # rnn, lstm or gru
    step: int
    val_loss: float | None  # nats per character; None if the run never validated
    vocab: str
    implementations: tuple[str, ...]  # those the page may sample with


class RequestError(ValueError):
    """A bad request; the message is shown on the page as it is."""


@dataclass(frozen=True)
class GenerateRequest:
    """The fields of POST /api/generate; every one may be left out."""

    length: int = 500
    temperature: float = 0.8
    prime: str = ""  # "": start after a newline, as python -m compare.sample does
    impl: str | None = None  # None: the implementation that trained the checkpoint
    seed: int | None = None  # None: a fresh random seed, sent back so the text can be reproduced


def parse_generate_request(body: bytes, info: ModelInfo) -> GenerateRequest:
    """The request in ``body`` (JSON) with the defaults filled in; RequestError says what is wrong."""
    try:
        fields = json.loads(body)
    except RecursionError:  # [[[[...: nested deeper than the parser goes
        raise RequestError("the request body must be JSON nested less deeply") from None
    except ValueError as error:  # not JSON, not UTF-8, or a number of more digits than int() takes (4,300)
        detail = " with numbers of at most 4,300 digits" if "digits" in str(error) else ""
        raise RequestError(f"the request body must be JSON{detail}") from None
    if not isinstance(fields, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = sorted(set(fields) - {field.name for field in dataclasses.fields(GenerateRequest)})
    if unknown:  # a misspelt field would otherwise be ignored without a word
        raise RequestError(f"unknown fields: {', '.join(unknown)}")
    # A field left out takes its default; one that is there is checked as it is (null, false, 0, [] and {}
    # included), never replaced by the default because it looks empty.
    given = {**dataclasses.asdict(GenerateRequest(impl=info.impl)), **fields}
    return GenerateRequest(
        length=checked_length(given["length"]),
        temperature=checked_temperature(given["temperature"]),
        prime=checked_prime(given["prime"], info.vocab),
        impl=checked_impl(given["impl"], info.implementations),
        seed=checked_seed(fields["seed"]) if "seed" in fields else secrets.randbelow(2**32),
    )


def shown(value: object) -> str:
    """``value`` as the client wrote it (JSON), cut short: a 60 kB string makes no better message."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else f"{text[:36]}..."


def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a length


# The checked_* functions take a field as JSON parsing left it (any JSON value: Any, as json.loads
# types it) and return it as its type, or raise RequestError.
def checked_length(length: Any) -> int:
    if not is_integer(length) or not 1 <= length <= MAX_LENGTH:
        raise RequestError(f"length must be a whole number from 1 to {MAX_LENGTH:,}, got {shown(length)}")
    return length


def checked_temperature(temperature: Any) -> float:
    is_number = is_integer(temperature) or isinstance(temperature, float)
    # "not in range" rather than "out of range" also refuses NaN, which JSON parsing lets through
    if not (is_number and 0 <= temperature <= MAX_TEMPERATURE):
        raise RequestError(
            f"randomness (temperature) must be a number from 0 to {MAX_TEMPERATURE}, got {shown(temperature)}"
        )
    return float(temperature)


def checked_prime(prime: Any, vocab: str) -> str:
    if not isinstance(prime, str):
        raise RequestError(
            f"prime must be text (a JSON string) of at most {MAX_PRIME:,} characters, got {shown(prime)}"
        )
    if len(prime) > MAX_PRIME:
        raise RequestError(f"prime must be text of at most {MAX_PRIME:,} characters, got {len(prime):,} characters")
    unknown = sorted(set(prime) - set(vocab))
    if unknown:  # a set difference: Vocab.encode would build its table of every code point (4 MB) per request
        raise RequestError(f"the prime has characters not in the vocabulary: {''.join(unknown)!r}")
    return prime


def checked_impl(impl: Any, implementations: tuple[str, ...]) -> str:
    if impl not in implementations:
        raise RequestError(f"impl must be one of {', '.join(implementations)}, got {shown(impl)}")
    return impl


def checked_seed(seed: Any) -> int:
    if not is_integer(seed) or not 0 <= seed < 2**63:
        raise RequestError(f"seed must be a whole number from 0 to 2**63 - 1, got {shown(seed)}")
    return seed


# ----- how many generations run at once, and how long a request waits for one -----------------------


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


# ----- the app and its server --------------------------------------------------------------------------

MAX_BODY_BYTES = 64 * 1024  # a request is a few small fields; a bigger body is refused unread (413)


@dataclass
class DemoModel:
    """A checkpoint loaded once, with a float64 sampling engine for each implementation."""

    info: ModelInfo
    engines: Mapping[str, Engine]  # implementation name -> engine

    def generate(self, request: GenerateRequest) -> dict[str, Any]:
        """The JSON answer to one validated request."""
        assert request.impl is not None and request.seed is not None  # parse_generate_request filled both in
        text = sample_text(
            self.engines[request.impl],
            Vocab(self.info.vocab),
            request.length,
            request.temperature,
            request.prime or None,
            request.seed,
        )
        return {
            "prime": request.prime,
            "text": text,
            "impl": request.impl,
            "seed": request.seed,
            "temperature": request.temperature,
            "length": request.length,
        }


def load_demo_model(path: str, cell: str | None = None) -> DemoModel:
    """Load the checkpoint that ``path`` means (a file or a run directory: best.npz first); ``cell``: --cell."""
    from compare.model.sampling import sampling_engine  # imports torch

    checkpoint_path = find_checkpoint(path, names=(BEST, LATEST))
    checkpoint = load_checkpoint(checkpoint_path, cell)
    info = ModelInfo(
        run_name=checkpoint.config.get("run_name") or checkpoint_path.stem,
        impl=checkpoint.impl,
        cell=checkpoint.config.get("cell", "rnn"),  # checkpoints from before LSTM/GRU have no cell
        step=checkpoint.step,
        val_loss=checkpoint.progress.val_loss,
        vocab=checkpoint.vocab,
        implementations=IMPL_DIRS,
    )
    engines = {impl: sampling_engine(checkpoint, impl) for impl in IMPL_DIRS}
    return DemoModel(info, engines)


def demo_page() -> bytes:
    return files("compare.serving").joinpath("page.html").read_bytes()


NO_STORE = {"Cache-Control": "no-store"}


def json_response(status: int, payload: dict[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    # json.dumps rather than Starlette's JSONResponse, which refuses NaN (a diverged run's val_loss)
    body = json.dumps(payload).encode("utf-8")
    return Response(body, status, headers={**NO_STORE, **(headers or {})}, media_type="application/json")


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(status, {"error": message}, headers)


class BodyError(Exception):
    """The body is too big, or too slow: answered with ``status``, and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: Request, read_timeout: float) -> bytes:
    """The request's body, refused unread when its Content-Length is over the limit; BodyError says why not."""
    declared = request.headers.get("content-length")  # h11 has checked it is a number
    if declared is not None and int(declared) > MAX_BODY_BYTES:
        raise BodyError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"the request body must be at most {MAX_BODY_BYTES} bytes, got {int(declared)}",
        )
    body = bytearray()
    try:
        with anyio.fail_after(read_timeout):
            async for chunk in request.stream():  # a chunked body has no Content-Length: counted as it comes
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise BodyError(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the request body must be at most {MAX_BODY_BYTES} bytes"
                    )
    except TimeoutError:
        raise BodyError(
            HTTPStatus.REQUEST_TIMEOUT, f"the request body did not arrive within {read_timeout:g} s"
        ) from None
    return bytes(body)


def demo_app(model: DemoModel, limits: Limits = DEFAULT_LIMITS) -> Starlette:
    """The demo as an ASGI app: the page, ``GET /api/info`` and ``POST /api/generate``."""
    page = demo_page()
    gate = GenerationGate(limits)

    async def index(request: Request) -> Response:
        return Response(page, headers=NO_STORE, media_type="text/html; charset=utf-8")

    async def info(request: Request) -> Response:
        return json_response(HTTPStatus.OK, asdict(model.info))

    async def generate(request: Request) -> Response:
        try:
            body = await read_body(request, limits.read_timeout)
        except BodyError as error:  # the rest of the body is left unread: the connection cannot be reused
            return error_response(error.status, str(error), {"Connection": "close"})
        except ClientDisconnect:
            return error_response(HTTPStatus.BAD_REQUEST, "the client went away")  # nobody reads it
        async with gate.turn():  # one generate request checked at a time, so that short requests never queue
            try:
                generate_request = parse_generate_request(body, model.info)
            except RequestError as error:
                return error_response(HTTPStatus.BAD_REQUEST, str(error))
        try:
            answer = await gate.run(model.generate, generate_request)  # a 503 at once: still this pass, no await
        except Busy:
            return error_response(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the server is busy generating text for others; try again in {limits.retry_after} s",
                {"Retry-After": str(limits.retry_after)},
            )
        except ValueError as error:  # the checkpoint's weights give NaN probabilities: not the request's fault
            return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, f"the model cannot be sampled: {error}")
        return json_response(HTTPStatus.OK, answer)

    async def http_error(request: Request, error: Exception) -> Response:
        """Starlette's 404 and 405, as JSON with a message like every other error."""
        assert isinstance(error, HTTPException)
        if error.status_code == HTTPStatus.NOT_FOUND:
            message = f"no {'page' if request.method in ('GET', 'HEAD') else 'endpoint'} at {request.url.path}"
        elif error.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
            allowed = (error.headers or {}).get("Allow", "")
            message = f"{request.url.path} does not take {request.method}; it takes {allowed}"
        else:
            message = error.detail
        return error_response(error.status_code, message, error.headers)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api/info", info, methods=["GET"]),
        Route("/api/generate", generate, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.gate = gate  # for the tests: how many generations are admitted
    return app


class DemoServer:
    """The demo app under uvicorn, on a socket bound at once (so that port 0's port is known before serving).

    ``serve_forever()`` serves until ``shutdown()`` (from another thread) or Ctrl-C, then
    waits up to ``limits.shutdown_timeout`` seconds for requests still running.
    """

    def __init__(self, address: tuple[str, int], model: DemoModel, limits: Limits = DEFAULT_LIMITS) -> None:
        self.socket = listening_socket(*address, backlog=limits.backlog)  # OSError: port taken, unknown host
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self.limits = limits
        self.app = demo_app(model, limits)
        config = uvicorn.Config(
            self.app,
            http=protocol_with_timeouts(limits.read_timeout),
            lifespan="off",  # the app has no startup or shutdown of its own
            log_config=None,  # leave logging as it is: warnings and tracebacks still reach stderr
            log_level="warning",
            access_log=False,
            limit_concurrency=limits.connections,
            backlog=limits.backlog,
            timeout_keep_alive=limits.idle_timeout,
            timeout_graceful_shutdown=limits.shutdown_timeout,
        )
        self.uvicorn = uvicorn.Server(config)

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        """Serve until shutdown() or a signal; in the main thread, Ctrl-C ends it with KeyboardInterrupt."""
        self.uvicorn.run(sockets=[self.socket])

    def shutdown(self) -> None:
        self.uvicorn.should_exit = True  # uvicorn looks ten times a second

    def server_close(self) -> None:
        self.socket.close()

    def __enter__(self) -> DemoServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server_close()
