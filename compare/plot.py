"""The loss plot of a run, as the original write-up's Figure 2 showed its training.

    python -m compare.plot runs/<run>                  # writes runs/<run>/loss.png
    python -m compare.plot runs/<run> --out loss.png --width 9 --height 6 --dpi 120

Reads the TensorBoard event files that compare.train wrote (runs/<run>/manual and
runs/<run>/torch, whichever exist) and draws, for each implementation, the smooth
training loss as a line and the validation loss as dots, in nats per character. A run
trained with --impl both also has runs/<run>/both: a second panel then shows, on one log
scale, the implementation error measured on identical inputs (flat, at rounding level) and
how far the two free-running trajectories drifted apart (the chaos, growing).

matplotlib is an optional extra: pip install -e ".[plot]".
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

from compare.cli.errors import UsageError, run_cli
from compare.cli.parser import CommandParser
from compare.plotting.events import PlotError, read_run
from compare.plotting.figure import draw_figure, require_matplotlib, save_png

PROG = "python -m compare.plot"


@dataclass
class PlotConfig:
    run_dir: str
    out: str | None = None  # None: <run_dir>/loss.png
    width: float = 8.0  # inches
    height: float = 6.0  # inches
    dpi: int = 100


def parse_args(argv: list[str] | None = None) -> PlotConfig:
    parser = CommandParser(prog=PROG, description="Plot a run's smooth training loss and validation loss per step.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by compare.train (runs/<run>)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default=None, help="the PNG to write (default: RUN_DIR/loss.png)")
    output.add_argument(
        "--width", type=float, default=PlotConfig.width, help="figure width in inches (default: %(default)s)"
    )
    output.add_argument(
        "--height", type=float, default=PlotConfig.height, help="figure height in inches (default: %(default)s)"
    )
    output.add_argument(
        "--dpi",
        type=int,
        default=PlotConfig.dpi,
        help="pixels per inch: the PNG is width*dpi by height*dpi pixels (default: %(default)s)",
    )
    config = PlotConfig(**vars(parser.parse_args(argv)))
    for flag, value in (("--width", config.width), ("--height", config.height), ("--dpi", config.dpi)):
        if not (math.isfinite(value) and value > 0):
            parser.error(f"{flag} must be a positive number, got {value}")
    return config


def main(argv: list[str] | None = None) -> int:
    """The command line; errors end as one line on stderr and exit code 2."""
    return run_cli(PROG, plot_command, argv)


def plot_command(argv: list[str]) -> int:
    config = parse_args(argv)
    out = Path(config.out) if config.out else Path(config.run_dir) / "loss.png"
    try:
        require_matplotlib()
        curves = read_run(config.run_dir)
        save_png(draw_figure(curves, config.width, config.height, config.dpi), out)
    except PlotError as error:
        raise UsageError(str(error)) from None
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
