"""`python -m lap_core._cli` runs the `lap` command."""

from lap_core._cli import main

main()
