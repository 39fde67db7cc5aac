"""The demo server's JSON API: status codes, validation, determinism, concurrent requests, the CLI."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
from tiny_runs import PHRASE, train_argv

from compare.model.checkpoint import BEST, load_checkpoint
from compare.model.generate import SampleConfig, generate_from_checkpoint
from compare.serving.server import MAX_LENGTH, DemoServer, load_demo_model
from compare.training.config import parse_args
from compare.training.loop import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A manual run of 126 steps (3 epochs, about a second) on the tiny corpus."""
    directory = tmp_path_factory.mktemp("demo")
    train(parse_args(train_argv(directory, run_name="demo-run", epochs=3)))
    return directory / "runs" / "demo-run"


@contextmanager
def serving(model):
    """A demo server for ``model`` on a free port, in a thread of this process."""
    demo = DemoServer(("127.0.0.1", 0), model)
    threading.Thread(target=demo.serve_forever, daemon=True).start()
    try:
        yield demo
    finally:
        demo.shutdown()
        demo.server_close()


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
        ({"lenght": 10}, "unknown fields: lenght"),
    ],
)
def test_bad_fields_are_400_with_a_message(server, fields, message):
    status, answer = generate(server, **fields)
    assert status == 400
    assert message in answer["error"]


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
    assert status == 400
    assert "at most" in answer["error"]


def test_concurrent_requests_each_get_their_own_answer(server, run_dir):
    # Different seeds, implementations and temperatures at once: a shared generator or hidden
    # state would mix them up. Each answer must equal the CLI's text for its own settings.
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
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda fields: generate(server, **fields), settings))
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


def run_demo_cli(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "compare.demo", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow  # a subprocess that imports torch: about 4 s
def test_cli_serves_on_port_0_and_prints_the_url(run_dir):
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
    finally:
        process.terminate()
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


def test_help_documents_every_flag():
    result = run_demo_cli("--help")
    assert result.returncode == 0
    for flag in ("--checkpoint", "--host", "--port"):
        assert flag in result.stdout
