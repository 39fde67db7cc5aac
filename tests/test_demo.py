"""The demo server's JSON API: status codes, validation, determinism, concurrent requests, limits
and timeouts, a bounded load test, the CLI."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tiny_runs import PHRASE, train_argv

from compare.bench import main as bench_main
from compare.benchmarks.demo_load import LoadSettings, measure
from compare.model.checkpoint import BEST, load_checkpoint
from compare.model.sampling import SampleConfig, generate_from_checkpoint
from compare.serving.server import (
    MAX_BODY_BYTES,
    MAX_LENGTH,
    DemoServer,
    Limits,
    load_demo_model,
    parse_generate_request,
)
from compare.training.config import parse_args
from compare.training.loop import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A manual run of 126 steps (3 epochs, about a second) on the tiny corpus."""
    directory = tmp_path_factory.mktemp("demo")
    train(parse_args(train_argv(directory, run_name="demo-run", epochs=3)))
    return directory / "runs" / "demo-run"


DEFAULT_LIMITS = Limits()


@contextmanager
def serving(model, limits=DEFAULT_LIMITS):
    """A demo server for ``model`` on a free port, in a thread of this process; the thread is gone afterwards."""
    demo = DemoServer(("127.0.0.1", 0), model, limits)
    thread = threading.Thread(target=demo.serve_forever, daemon=True)
    thread.start()
    try:
        yield demo
    finally:
        demo.shutdown()
        thread.join(timeout=limits.shutdown_timeout + 5)
        demo.server_close()
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def server(run_dir):
    with serving(load_demo_model(str(run_dir))) as demo:
        yield demo


def request(server, method: str, path: str, body: bytes | None = None, headers=None):
    """(status, decoded body) of one request on a fresh connection."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        content = response.read()
        is_json = response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(content) if is_json else content.decode("utf-8")
    finally:
        connection.close()


def generate(server, **fields):
    return request(server, "POST", "/api/generate", json.dumps(fields).encode("utf-8"))


def cli_text(run_dir, **settings) -> str:
    """What python -m compare.sample prints for the same settings: the prime, then the sample."""
    return generate_from_checkpoint(SampleConfig(checkpoint=str(run_dir), **settings))


def test_page_is_served_and_needs_nothing_from_outside(server):
    status, page = request(server, "GET", "/")
    assert status == 200
    assert "Generate" in page and "Randomness" in page
    assert "http://" not in page and "https://" not in page  # no CDN, no fonts: works offline


def test_info_describes_the_checkpoint(server, run_dir):
    checkpoint = load_checkpoint(run_dir / "manual" / BEST)
    status, info = request(server, "GET", "/api/info")
    assert status == 200
    assert info["run_name"] == "demo-run"
    assert info["impl"] == "manual"
    assert info["cell"] == checkpoint.config.get("cell", "rnn")
    assert info["val_loss"] == checkpoint.progress.val_loss
    assert info["implementations"] == ["manual", "torch"]


def test_unknown_paths_are_404(server):
    assert request(server, "GET", "/nothing")[0] == 404
    assert request(server, "POST", "/api/nothing", b"{}")[0] == 404


def test_generate_returns_the_requested_length_and_the_cli_text(server, run_dir):
    status, answer = generate(server, length=200, temperature=0.8, prime="the ", seed=5, impl="torch")
    assert status == 200
    assert len(answer["text"]) == 200
    assert answer["prime"] + answer["text"] == cli_text(
        run_dir, impl="torch", length=200, temperature=0.8, prime="the ", seed=5
    )


def test_defaults_fill_every_missing_field(server):
    status, answer = generate(server)
    assert status == 200
    assert (len(answer["text"]), answer["temperature"], answer["impl"], answer["prime"]) == (500, 0.8, "manual", "")


def test_same_seed_same_text_whichever_implementation(server):
    texts = {impl: generate(server, length=300, seed=11, impl=impl)[1]["text"] for impl in ("manual", "torch")}
    again = generate(server, length=300, seed=11, impl="manual")[1]["text"]
    assert texts["manual"] == texts["torch"] == again


def test_a_request_without_seed_reports_the_seed_that_reproduces_it(server):
    first = generate(server, length=100)[1]
    assert generate(server, length=100, seed=first["seed"])[1]["text"] == first["text"]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"length": MAX_LENGTH + 1}, "length"),
        ({"length": 0}, "length"),
        ({"length": "50"}, "length"),
        ({"length": True}, "length"),
        ({"temperature": 1.51}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"prime": "the Ü"}, "not in the vocabulary: 'Ü'"),
        ({"prime": "x" * 1001}, "prime"),
        ({"impl": "tensorflow"}, "impl"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed must be a whole number from 0 to 2**63 - 1, got 1.5"),  # no rounding to 1
        ({"seed": "7"}, 'seed must be a whole number from 0 to 2**63 - 1, got "7"'),  # no parsing of text
        ({"lenght": 10}, "unknown fields: lenght"),
    ],
)
def test_bad_fields_are_400_with_a_message(server, fields, message):
    status, answer = generate(server, **fields)
    assert status == 400
    assert message in answer["error"]
    assert "\n" not in answer["error"]  # one line, as the page shows it


EXPECTED = {  # field -> what its message says it must be
    "length": "length must be a whole number from 1 to 10,000",
    "temperature": "randomness (temperature) must be a number from 0 to 1.5",
    "prime": "prime must be text (a JSON string) of at most 1,000 characters",
    "impl": "impl must be one of manual, torch",
    "seed": "seed must be a whole number from 0 to 2**63 - 1",
}
WRONG_TYPES = [None, False, True, 0, [], {}, "", 2.5]  # JSON null, false, true, 0, [], {}, "", 2.5
VALID = [("temperature", int, 0), ("seed", int, 0), ("prime", str, "")]  # (field, type, value) that is right


@pytest.mark.parametrize(
    "field, value",
    [
        pytest.param(field, value, id=f"{field}={json.dumps(value)}")
        for field in EXPECTED
        for value in WRONG_TYPES
        if (field, type(value), value) not in VALID
    ],
)
def test_a_field_of_the_wrong_type_is_400_naming_it_and_what_was_given(server, field, value):
    # Never the default in its place: "impl": false used to sample with the checkpoint's implementation.
    status, answer = generate(server, **{field: value})
    assert status == 400
    assert answer["error"] == f"{EXPECTED[field]}, got {json.dumps(value)}"


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not json", "JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"temperature": NaN}', "temperature"),
        (b"\xff\xfe", "JSON"),
    ],
)
def test_bad_bodies_are_400_with_a_message(server, body, message):
    status, answer = request(server, "POST", "/api/generate", body)
    assert status == 400
    assert message in answer["error"]


def test_an_oversized_body_is_refused_unread(server):
    status, answer = request(server, "POST", "/api/generate", b"{}", headers={"Content-Length": str(10**6)})
    assert status == 413
    assert "at most" in answer["error"]


def test_an_oversized_chunked_body_is_refused_as_it_comes(server):
    # No Content-Length: the server counts the body as it reads it. One sendall, so that the whole body is
    # in the server's socket before it answers: it closes the connection after its 413, and any unread byte
    # would turn that close into a reset that could discard the answer before this test reads it.
    size = MAX_BODY_BYTES + 1
    head = b"POST /api/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(server.server_address, timeout=30) as connection:
        connection.sendall(head + b"%x\r\n" % size + b" " * size + b"\r\n0\r\n\r\n")
        data = read_until_closed(connection)
    assert data.startswith(b"HTTP/1.1 413 ") and b"at most" in data


def test_get_on_generate_is_405_and_says_to_post(server):
    connection = http.client.HTTPConnection(*server.server_address, timeout=30)
    try:
        connection.request("GET", "/api/generate")
        response = connection.getresponse()
        assert response.status == 405
        assert response.getheader("Allow") == "POST"
        assert "POST" in json.loads(response.read())["error"]
    finally:
        connection.close()


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"length": ' + b"9" * 5000 + b"}", "at most 4,300 digits"),  # int() refuses more digits: ValueError
        (b"[" * 30_000 + b"]" * 30_000, "nested less deeply"),  # deeper than the parser goes: RecursionError
        (b'{"prime": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "nested less deeply"),
        (b'{"length": "' + b"x" * 50_000 + b'"}', "length must be"),
    ],
)
def test_json_the_parser_refuses_is_400_and_the_connection_stays_usable(server, body, message):
    connection = http.client.HTTPConnection(*server.server_address, timeout=30)
    try:
        connection.request("POST", "/api/generate", body=body)
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == 400
        assert message in answer["error"] and len(answer["error"]) < 200  # no 50 kB echo of the value
        connection.request("GET", "/api/info")  # the same connection: not dropped
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["run_name"] == "demo-run"
    finally:
        connection.close()


def test_concurrent_requests_each_get_their_own_answer(run_dir):
    # Different seeds, implementations and temperatures at once: a shared generator or hidden
    # state would mix them up. Each answer must equal the CLI's text for its own settings.
    # Four generations at once, and room for the rest to wait: none is refused.
    settings = [
        {
            "impl": ("manual", "torch")[i % 2],
            "seed": i,
            "temperature": 0.3 + 0.1 * i,
            "length": 400,
            "prime": PHRASE[: i + 1],
        }
        for i in range(12)
    ]
    limits = Limits(generations=4, waiting=8, max_wait=60)
    with serving(load_demo_model(str(run_dir)), limits) as demo, ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda fields: generate(demo, **fields), settings))
    for fields, (status, answer) in zip(settings, answers, strict=True):
        assert status == 200
        assert (answer["seed"], answer["impl"]) == (fields["seed"], fields["impl"])
        assert answer["prime"] + answer["text"] == cli_text(run_dir, **fields)


def test_a_model_with_broken_weights_answers_500_with_a_message(run_dir):
    model = load_demo_model(str(run_dir))  # its own copy: the shared server's model stays intact
    model.engines["manual"].params["c"][0] = float("nan")
    with serving(model) as demo:
        status, answer = generate(demo, length=10, impl="manual")
    assert status == 500
    assert "not finite" in answer["error"]


class BlockedModel:
    """A demo model whose generations wait until ``release`` is set; ``started`` counts those that began."""

    def __init__(self, model, blocks=lambda request: True):
        self.info = model.info
        self.engines = model.engines
        self.model = model
        self.blocks = blocks  # which requests wait
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def generate(self, request):
        if self.blocks(request):
            self.started.release()
            assert self.release.wait(timeout=30), "the test never released the generation"
        return self.model.generate(request)


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def timed(function, *args, **kwargs):
    """(seconds it took, what it returned)."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def response_of(server, method, path, body=None):
    """(status, headers, decoded JSON) of one request on a fresh connection."""
    connection = http.client.HTTPConnection(*server.server_address, timeout=30)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def test_beyond_the_running_and_waiting_generations_the_answer_is_503_at_once(run_dir):
    model = BlockedModel(load_demo_model(str(run_dir)))
    limits = Limits(generations=1, quick_generations=0, waiting=1, max_wait=20, retry_after=3)
    body = json.dumps({"length": 20, "seed": 1}).encode()
    with serving(model, limits) as demo, ThreadPoolExecutor(max_workers=2) as pool:
        gate = demo.app.state.gate
        running = pool.submit(response_of, demo, "POST", "/api/generate", body)
        assert model.started.acquire(timeout=10)  # the one generation slot is taken...
        waiting = pool.submit(response_of, demo, "POST", "/api/generate", body)
        wait_until(lambda: gate.general.waiting == 1)  # ...and the one place to wait for it

        seconds, (status, headers, answer) = timed(response_of, demo, "POST", "/api/generate", body)
        assert status == 503 and seconds < 1.0
        assert headers["retry-after"] == "3"
        assert "busy" in answer["error"]
        seconds, (status, _, info) = timed(response_of, demo, "GET", "/api/info")
        assert status == 200 and seconds < 1.0  # the rest of the API never waits behind a generation
        assert request(demo, "POST", "/api/generate", b"not json")[0] == 400  # nor does a bad request

        model.release.set()
        assert running.result(timeout=30)[0] == 200
        assert waiting.result(timeout=30)[0] == 200  # it got the slot when the first one was done
        assert gate.general.waiting == 0
        assert generate(demo, length=20)[0] == 200


def test_a_request_that_waits_longer_than_max_wait_is_503(run_dir):
    model = BlockedModel(load_demo_model(str(run_dir)))
    limits = Limits(generations=1, quick_generations=0, waiting=4, max_wait=0.3)
    body = json.dumps({"length": 20}).encode()
    with serving(model, limits) as demo, ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(response_of, demo, "POST", "/api/generate", body)
        assert model.started.acquire(timeout=10)
        seconds, (status, headers, _) = timed(response_of, demo, "POST", "/api/generate", body)
        assert status == 503 and "retry-after" in headers
        assert 0.3 <= seconds < 1.5
        model.release.set()
        assert running.result(timeout=30)[0] == 200


def test_long_requests_never_take_the_quick_requests_slot(run_dir):
    limits = Limits(generations=1, quick_generations=1, quick_length=500, waiting=0)
    model = BlockedModel(load_demo_model(str(run_dir)), blocks=lambda request: request.length > 500)
    long_body = json.dumps({"length": 501}).encode()
    with serving(model, limits) as demo, ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(response_of, demo, "POST", "/api/generate", long_body)
        assert model.started.acquire(timeout=10)  # the general slot is taken by a long request
        assert response_of(demo, "POST", "/api/generate", long_body)[0] == 503  # the quick slot is not for it
        quick_body = json.dumps({"length": 500}).encode()
        seconds, (status, _, answer) = timed(response_of, demo, "POST", "/api/generate", quick_body)
        assert status == 200 and len(answer["text"]) == 500 and seconds < 5
        model.release.set()
        assert running.result(timeout=30)[0] == 200


SHORT_TIMEOUTS = Limits(idle_timeout=1, read_timeout=0.5)


@pytest.fixture(scope="module")
def impatient_server(run_dir):
    """A demo server that closes an idle connection after 1 s and waits 0.5 s for a request's head or body."""
    with serving(load_demo_model(str(run_dir)), SHORT_TIMEOUTS) as demo:
        yield demo


def raw_connection(server):
    connection = socket.create_connection(server.server_address, timeout=10)
    connection.settimeout(10)  # a test that would hang fails instead
    return connection


def read_until_closed(connection) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it never does)."""
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    return data


def test_a_connection_that_never_sends_a_request_is_closed(impatient_server):
    with raw_connection(impatient_server) as connection:
        seconds, data = timed(read_until_closed, connection)
    assert data == b""
    assert 0.9 <= seconds < 5


def test_an_idle_keep_alive_connection_is_closed(impatient_server):
    with raw_connection(impatient_server) as connection:
        connection.sendall(b"GET /api/info HTTP/1.1\r\nHost: x\r\n\r\n")
        seconds, data = timed(read_until_closed, connection)
    assert data.startswith(b"HTTP/1.1 200 ") and b"demo-run" in data  # answered, then closed when idle
    assert 0.9 <= seconds < 5


def test_a_request_head_that_stops_halfway_is_closed(impatient_server):
    with raw_connection(impatient_server) as connection:
        connection.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-")
        seconds, data = timed(read_until_closed, connection)
    assert data == b""
    assert seconds < 5


def test_a_body_shorter_than_its_content_length_times_out(impatient_server):
    with raw_connection(impatient_server) as connection:
        connection.sendall(b'POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"length": 5')
        seconds, data = timed(read_until_closed, connection)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b"did not arrive within 0.5 s" in data
    assert 0.4 <= seconds < 5


def test_the_server_stops_with_connections_still_open(run_dir):
    # serving() asserts that the server's thread is gone; an idle connection must not keep it.
    with serving(load_demo_model(str(run_dir)), Limits(idle_timeout=60, shutdown_timeout=2)) as demo:
        idle = raw_connection(demo)
        assert request(demo, "GET", "/api/info")[0] == 200
    with idle:
        assert read_until_closed(idle) == b""


@pytest.mark.slow  # about 10 s: the command's server under 20 clients for 2 s (python -m compare.bench --demo)
def test_the_server_under_clients_that_retry_at_once_answers_everyone_and_stops(run_dir):
    # How fast it answers is the benchmark's to say (docs/demo.md); this checks what must hold however fast:
    # every request answered, memory bounded, a clean stop.
    figures = measure(LoadSettings(str(run_dir), clients=20, seconds=2.0, short=20))
    print("\nload:", {key: value for key, value in asdict(figures).items() if key != "server_stderr"})
    assert figures.short_statuses == {200: 20}, figures  # the page and the info: never refused, never dropped
    assert set(figures.generate_statuses) <= {200, 503} and figures.generate_statuses.get(200, 0) > 0, figures
    assert figures.rss_peak_mib - figures.rss_start_mib < 100, figures  # bounded: no thread per client
    assert figures.server_exit_code == 0 and "Traceback" not in figures.server_stderr, figures.server_stderr
    assert not Path(f"/proc/{figures.server_pid}").exists()  # the server is gone, nothing left running


def test_a_short_request_overtakes_the_generate_requests_in_hand(run_dir, monkeypatch):
    # The event loop checks one generate request at a time (GenerationGate.turn), so the page and the info
    # wait for a few of those checks at most, not for every generate request that came before them, and
    # never for a generation. Counted in checks done, not in seconds: each check blocks the loop 0.1 s here,
    # long enough that a busy machine's pauses of this test's thread add few checks to the count.
    checks = []
    checking = threading.Event()

    def slow_parse(body, info):
        checks.append(body)
        checking.set()
        time.sleep(0.1)  # the event loop's own work for one request, made long enough to count
        return parse_generate_request(body, info)

    monkeypatch.setattr("compare.serving.server.parse_generate_request", slow_parse)
    model = BlockedModel(load_demo_model(str(run_dir)))
    limits = Limits(generations=1, quick_generations=0, waiting=0)
    body = json.dumps({"length": 20}).encode()
    with serving(model, limits) as demo, ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(response_of, demo, "POST", "/api/generate", body)
        assert model.started.acquire(timeout=10)  # the one generation slot is taken, until release
        checks.clear()
        checking.clear()
        head = b"POST /api/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
        hammering = [raw_connection(demo) for _ in range(24)]
        for connection in hammering:  # 24 generate requests in hand, none answered yet
            connection.sendall(head % len(body) + body)
        assert checking.wait(timeout=10)
        assert request(demo, "GET", "/api/info")[0] == 200
        checked_before_info = len(checks)
        assert request(demo, "GET", "/")[0] == 200
        assert not running.done()  # the generation is still running: nothing waited for it
        model.release.set()
        assert running.result(timeout=30)[0] == 200
        answers = []
        for connection in hammering:
            with connection:
                answers.append(read_until_closed(connection))
    # 7 here: one check per pass of the loop, and a new connection takes a few (accept, transport, read, task)
    assert checked_before_info <= 16, f"the info waited for {checked_before_info} of 24 generate requests' checks"
    # each answered in its turn: 503 while the one slot was taken (no waiting), 200 once it was free
    assert {answer[:13] for answer in answers} <= {b"HTTP/1.1 503 ", b"HTTP/1.1 200 "}, answers


def run_demo_cli(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "compare.demo", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow  # a subprocess that imports torch: about 4 s
def test_cli_serves_on_port_0_prints_the_url_and_stops_on_ctrl_c(run_dir):
    process = subprocess.Popen(
        [sys.executable, "-m", "compare.demo", "--checkpoint", str(run_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()  # "serving <run> (...) at http://127.0.0.1:<port>/"
        url = urlsplit(line.split(" at ")[-1].strip())
        assert url.hostname == "127.0.0.1" and url.port > 0, line
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        connection.request("GET", "/api/info")
        assert json.loads(connection.getresponse().read())["run_name"] == "demo-run"
        connection.close()
        process.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop, exit code 0, no traceback
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0 and "Traceback" not in stderr, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--checkpoint", "/no/such/run"], "/no/such/run"),
        (["--checkpoint", ".", "--port", "70000"], "--port"),
        (["--port", "8000"], "--checkpoint"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, flag):
    result = run_demo_cli(*args)
    assert result.returncode == 2
    assert flag in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a subprocess that imports torch: about 4 s
def test_a_taken_port_exits_2_with_one_line(run_dir, server):
    result = run_demo_cli("--checkpoint", str(run_dir), "--port", str(server.server_address[1]))
    assert result.returncode == 2
    assert "cannot listen" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "flag, value",
    [("--clients", "0"), ("--seconds", "nan"), ("--short", "-1"), ("--length", "x"), ("--json", "/no/such/dir/x.json")],
)
def test_bad_demo_bench_flags_are_one_line_and_exit_2(tmp_path, flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["--demo", "--checkpoint", str(tmp_path), flag, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and flag in error


def test_help_documents_every_flag():
    result = run_demo_cli("--help")
    assert result.returncode == 0
    for flag in ("--checkpoint", "--host", "--port"):
        assert flag in result.stdout
