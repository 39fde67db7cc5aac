"""The demo's HTTP server: one page, ``GET /api/info`` and ``POST /api/generate``.

The page (compare/serving/page.html, one file, no external assets) has a blue Generate
button and a "Randomness" slider (the sampling temperature). It posts JSON to
``POST /api/generate``; ``GET /api/info`` describes the loaded checkpoint. The text comes
from compare.model.sampling, the code behind ``python -m compare.sample``, so the page
and the CLI print the same text for the same seed.

The app is Starlette, served by uvicorn on one event loop (compare.serving.connections adds
the connection timeouts uvicorn lacks). Generation is CPU-bound, so it runs in worker threads,
only a few at once (compare.serving.gate); a request is checked first, by
compare.serving.generate_request, one generate request at a time (GenerationGate.turn).
Everything else (the page, the info) is answered on the event loop, never behind a generation,
nor behind the generate requests that came before it.

The checkpoint is loaded once. Sampling only reads the weights, and every request gets
its own random generator (seeded from the request) and its own hidden state, so the
worker threads can sample from the same engines at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from http import HTTPStatus
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import anyio
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
from compare.serving.gate import DEFAULT_LIMITS, Busy, GenerationGate, Limits
from compare.serving.generate_request import GenerateRequest, ModelInfo, RequestError, parse_generate_request

if TYPE_CHECKING:
    from compare.model.engines import Engine

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
