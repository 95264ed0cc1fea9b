"""The `bmcell` root command: assembles one module per subcommand."""

from __future__ import annotations

import typer

from bmcell.cli.adapt import adapt
from bmcell.cli.bench import bench
from bmcell.cli.bench_train import bench_train
from bmcell.cli.check import check
from bmcell.cli.combine import combine
from bmcell.cli.compare import compare
from bmcell.cli.crosslab import crosslab
from bmcell.cli.evaluate import evaluate
from bmcell.cli.export import export
from bmcell.cli.finetune import finetune
from bmcell.cli.info import info
from bmcell.cli.parity import parity
from bmcell.cli.predict import predict
from bmcell.cli.quickstart import quickstart
from bmcell.cli.release import release
from bmcell.cli.serve_demo import serve_demo
from bmcell.cli.setup_arm64 import setup_arm64
from bmcell.cli.synth import synth
from bmcell.cli.train import train

app = typer.Typer(
    name="bmcell",
    help="Train MobileViT classifiers of bone-marrow and blood white-cell images and ship them to phones.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for command in (quickstart, train, evaluate, crosslab, check, adapt, finetune, combine, predict, export, parity, bench,
                bench_train, compare, release, info, synth, serve_demo, setup_arm64):
    app.command()(command)

if __name__ == "__main__":
    app()
