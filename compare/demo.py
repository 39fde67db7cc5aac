"""A small web page that generates text from a checkpoint: the original project's demo box.

    python -m compare.demo --checkpoint runs/<run>              # then open the printed URL
    python -m compare.demo --checkpoint runs/<run>/manual/best.npz --port 0   # any free port

The server is compare.serving.server: Starlette under uvicorn, a few generations at once
(the rest are told to retry: 503 with Retry-After), every connection with a deadline.
Ctrl-C stops it after the requests still running (at most a few seconds).
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass

from compare.cli.errors import UsageError, run_cli
from compare.cli.parser import CommandParser
from compare.model.cells import CHECKPOINT_CELL_HELP
from compare.model.checkpoint import BEST, LATEST, NEWEST_RULE, checkpoint_or_newest
from compare.serving.server import DemoServer, load_demo_model

PROG = "python -m compare.demo"


@dataclass
class DemoConfig:
    checkpoint: str  # --checkpoint, or the newest run under --logdir (compare.model.checkpoint)
    host: str = "127.0.0.1"
    port: int = 8000
    cell: str | None = None  # --cell: the cell of your own the checkpoint records, vouched for (None: built-in)


def parse_args(argv: list[str] | None = None) -> DemoConfig:
    parser = CommandParser(prog=PROG, description="Serve a page that generates text from a training checkpoint.")
    model = parser.add_argument_group("model")
    model.add_argument(
        "--checkpoint",
        default=None,
        help=f"a checkpoint file, or a run directory (runs/<run> or runs/<run>/<impl>): its {BEST}, else its "
        f"{LATEST} (default: {NEWEST_RULE})",
    )
    model.add_argument(
        "--logdir", default="runs", help="where to look for the newest run without --checkpoint (default: %(default)s)"
    )
    model.add_argument("--cell", metavar="CELL", default=None, help=CHECKPOINT_CELL_HELP)
    server = parser.add_argument_group("server")
    server.add_argument(
        "--host", default=DemoConfig.host, help="address to listen on (default: %(default)s, this machine only)"
    )
    server.add_argument(
        "--port", type=int, default=DemoConfig.port, help="TCP port; 0 picks a free one (default: %(default)s)"
    )
    args = vars(parser.parse_args(argv))
    if not 0 <= args["port"] <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {args['port']}")
    args["checkpoint"] = checkpoint_or_newest(args["checkpoint"], args.pop("logdir"))  # after the flags' checks
    return DemoConfig(**args)


def main(argv: list[str] | None = None) -> int:
    """The command line; errors end as one line on stderr and exit code 2."""
    return run_cli(PROG, demo_command, argv)


def demo_command(argv: list[str]) -> int:
    config = parse_args(argv)
    model = load_demo_model(config.checkpoint, config.cell)  # a CheckpointError is a UsageError: one line, exit 2
    # The model and the libraries (torch: some 290,000 objects) live as long as the server. Frozen, they are
    # out of the collector's way: a full collection no longer walks them all (0.3 s on a busy two-core
    # machine) while every request waits.
    gc.freeze()
    try:
        server = DemoServer((config.host, config.port), model)
    except OSError as error:  # port taken, no permission, unknown host
        raise UsageError(f"cannot listen on {config.host}:{config.port} ({error.strerror or error})") from None
    with server:
        print(
            f"serving {model.info.run_name} ({model.info.cell}, trained with {model.info.impl}) at {server.url}",
            flush=True,
        )  # flush: tests and scripts read the URL from a pipe
        try:
            server.serve_forever()  # uvicorn handles Ctrl-C and SIGTERM: no new requests, the running ones finish
        except KeyboardInterrupt:  # raised again once uvicorn has stopped
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
