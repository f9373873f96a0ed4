"""Play inside a learned world: ``worldflux play RUN_DIR`` serves a page on a local port.

Quick use::

    from worldflux.play import PlaySession, load_play_model, serve_in_background
    session = PlaySession(load_play_model("runs/breakout"), "Breakout64")
    server, url = serve_in_background(session)     # open url; server.shutdown() stops it
"""

from worldflux.play.server import make_server, serve_in_background
from worldflux.play.session import PlaySession, frame_to_rgba, game_of_run, load_play_model

__all__ = ["PlaySession", "frame_to_rgba", "game_of_run", "load_play_model", "make_server",
           "serve_in_background"]
