"""`python -m lap_server`: the same as `lap serve`."""

from lap_server.cli import serve_command

serve_command()
