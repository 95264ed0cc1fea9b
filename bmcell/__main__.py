"""`python -m bmcell` runs the command line (and `torchrun -m bmcell` will, for distributed training)."""

from bmcell.cli.main import app

app()
