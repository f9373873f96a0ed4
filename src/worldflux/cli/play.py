"""``worldflux play RUN_DIR``: play inside a learned game world in the browser."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``play`` command to ``app``."""
    app.command("play")(play)


def play(
    run_dir: Annotated[Path, typer.Argument(
        help="A `worldflux train` run (its model/ folder is used) or a save_pretrained folder "
             "of a model of the native 64x64 games.", show_default=False)],
    game: Annotated[str | None, typer.Option(
        "--game", help="Real game shown side by side (Breakout64 or Collect64); default: the "
                       "run's env or play.json.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0 = any free one).")] = 8765,
    mode: Annotated[str | None, typer.Option(
        "--mode", help="Decoding of token models: parallel (fast) or causal (token by token "
                       "with a KV cache); default: the model's.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the real game.")] = 0,
    device: Annotated[str, typer.Option("--device", help="Torch device of the model.")] = "auto",
) -> None:
    """Serve a local page where the arrow keys play inside the learned world of RUN_DIR, next
    to the real game, with a frames-per-second counter. Stop with Ctrl-C."""
    from worldflux.cli.main import _user_errors, console

    with _user_errors():
        from worldflux.core.device import resolve_device
        from worldflux.core.errors import ConfigError
        from worldflux.play import PlaySession, game_of_run, load_play_model, make_server

        if mode not in (None, "parallel", "causal"):
            raise ConfigError(f"--mode: got {mode!r}, expected parallel or causal")
        model = load_play_model(run_dir, device=str(resolve_device(device)))
        session = PlaySession(model, game or game_of_run(run_dir), seed=seed, mode=mode)
        server = make_server(session, host, port)
        url = f"http://{host}:{server.server_address[1]}/"
        console.print(f"playing {session.game_name} in the {model.family} model of {run_dir}: "
                      f"open {url} (Ctrl-C stops)")
        try:
            server.serve_forever()
        finally:
            server.server_close()
