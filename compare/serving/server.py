"""The demo's HTTP server: one page, ``GET /api/info`` and ``POST /api/generate``.

The page (compare/serving/page.html, one file, no external assets) has a blue Generate
button and a "Randomness" slider (the sampling temperature). It posts JSON to
``POST /api/generate``; ``GET /api/info`` describes the loaded checkpoint. The text comes
from compare.model.generate, the code behind ``python -m compare.sample``, so the page
and the CLI print the same text for the same seed.

The checkpoint is loaded once. Sampling only reads the weights, and every request gets
its own random generator (seeded from the request) and its own hidden state, so the
threads of ThreadingHTTPServer can sample from the same engines at once.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from compare.data.corpus import Vocab
from compare.model.checkpoint import BEST, IMPL_DIRS, LATEST, find_checkpoint, load_checkpoint
from compare.model.sampling import sample_text

if TYPE_CHECKING:
    from compare.model.engines import Engine

MAX_BODY_BYTES = 64 * 1024  # a request is a few small fields; anything bigger is not ours
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
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestError("the request body must be JSON") from None
    if not isinstance(fields, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = sorted(set(fields) - {field.name for field in dataclasses.fields(GenerateRequest)})
    if unknown:  # a misspelt field would otherwise be ignored without a word
        raise RequestError(f"unknown fields: {', '.join(unknown)}")
    request = GenerateRequest(**fields)
    return GenerateRequest(
        length=checked_length(request.length),
        temperature=checked_temperature(request.temperature),
        prime=checked_prime(request.prime, info.vocab),
        impl=checked_impl(request.impl or info.impl, info.implementations),
        seed=checked_seed(request.seed),
    )


def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a length


# The checked_* functions take a field as JSON parsing left it (any JSON value: Any, as json.loads
# types it) and return it as its type, or raise RequestError.
def checked_length(length: Any) -> int:
    if not is_integer(length) or not 1 <= length <= MAX_LENGTH:
        raise RequestError(f"length must be a whole number from 1 to {MAX_LENGTH:,}, got {length!r}")
    return length


def checked_temperature(temperature: Any) -> float:
    is_number = is_integer(temperature) or isinstance(temperature, float)
    # "not in range" rather than "out of range" also refuses NaN, which JSON parsing lets through
    if not (is_number and 0 <= temperature <= MAX_TEMPERATURE):
        raise RequestError(
            f"randomness (temperature) must be a number from 0 to {MAX_TEMPERATURE}, got {temperature!r}"
        )
    return float(temperature)


def checked_prime(prime: Any, vocab: str) -> str:
    if not isinstance(prime, str) or len(prime) > MAX_PRIME:
        raise RequestError(f"prime must be text of at most {MAX_PRIME:,} characters")
    try:
        Vocab(vocab).encode(prime)
    except ValueError as error:  # names the characters the model never saw
        raise RequestError(f"the prime has {error}") from None
    return prime


def checked_impl(impl: Any, implementations: tuple[str, ...]) -> str:
    if impl not in implementations:
        raise RequestError(f"impl must be one of {', '.join(implementations)}, got {impl!r}")
    return impl


def checked_seed(seed: Any) -> int:
    if seed is None:
        return secrets.randbelow(2**32)
    if not is_integer(seed) or not 0 <= seed < 2**63:
        raise RequestError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")
    return seed


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


def load_demo_model(path: str) -> DemoModel:
    """Load the checkpoint that ``path`` means (a file or a run directory: best.npz first)."""
    from compare.model.generate import sampling_engine  # imports torch

    checkpoint_path = find_checkpoint(path, names=(BEST, LATEST))
    checkpoint = load_checkpoint(checkpoint_path)
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


class DemoServer(ThreadingHTTPServer):
    """A thread per request; holds the one loaded model and the page."""

    daemon_threads = True  # Ctrl-C does not wait for requests still running

    def __init__(self, address: tuple[str, int], model: DemoModel) -> None:
        super().__init__(address, DemoHandler)
        self.model = model
        self.page = demo_page()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if isinstance(host, (bytes, bytearray)):  # the stub allows bytes; a TCP server's address holds a str
            host = host.decode()
        return f"http://{host}:{port}/"


class DemoHandler(BaseHTTPRequestHandler):
    server: DemoServer
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length

    def do_GET(self) -> None:
        if self.path == "/":
            self.send_body(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif self.path == "/api/info":
            self.send_json(HTTPStatus.OK, asdict(self.server.model.info))
        else:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no page at {self.path}"})

    def do_POST(self) -> None:
        if self.path != "/api/generate":
            self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint at {self.path}"})
            return
        try:
            request = parse_generate_request(self.read_body(), self.server.model.info)
        except RequestError as error:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            return
        try:
            answer = self.server.model.generate(request)
        except ValueError as error:  # the checkpoint's weights give NaN probabilities: not the request's fault
            self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"the model cannot be sampled: {error}"})
            return
        self.send_json(HTTPStatus.OK, answer)

    def read_body(self) -> bytes:
        try:
            size = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True  # we cannot know where this request ends
            raise RequestError("the request needs a Content-Length header") from None
        if not 0 <= size <= MAX_BODY_BYTES:
            self.close_connection = True  # its body is left unread
            raise RequestError(f"the request body must be at most {MAX_BODY_BYTES} bytes, got {size}")
        return self.rfile.read(size)

    def send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        self.send_body(status, json.dumps(payload).encode("utf-8"), "application/json")

    def send_body(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)
