"""`python -m lap_core` runs the `lap` command (where the `lap` script is not on PATH)."""

from lap_core._cli import main

main()
