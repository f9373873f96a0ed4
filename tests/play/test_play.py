"""``worldflux play``: the session, the HTTP API, and the page in a real headless browser."""

from __future__ import annotations

import base64
import json
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import worldflux
from worldflux.core.errors import CheckpointError, ConfigError
from worldflux.play import PlaySession, game_of_run, load_play_model, serve_in_background

TINY = {"channels": 8, "code_dim": 8, "codebook_size": 16, "embed_dim": 32, "num_layers": 1,
        "num_heads": 2, "history": 2}


def tiny_model(**overrides):
    torch.manual_seed(0)
    return worldflux.create_world_model("token", obs_shape=(3, 64, 64), action_dim=4,
                                        action_kind="discrete", device="cpu",
                                        **{**TINY, **overrides})


def _pixels(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), np.uint8).reshape(64, 64, 4)


def test_session_steps_the_model_and_the_real_game_together():
    session = PlaySession(tiny_model(), "Breakout64", seed=0)
    paddle = session.game.paddle.copy()
    out = session.step(3)
    assert _pixels(out["imagined"]).shape == (64, 64, 4) and (_pixels(out["real"])[..., 3] == 255).all()
    assert session.game.paddle[0] > paddle[0]
    assert out["steps"] == 1 and 0.0 <= out["continue"] <= 1.0
    assert session.state["tokens"].shape == (1, 2, 64)
    session.step(2)
    synced = session.sync()  # the model restarts from the real history
    assert torch.equal(session.state["tokens"][0, -1],
                       session.model.tokenize(torch.from_numpy(session.real_frame[None]))[0])
    assert synced["real"] == out["real"] or synced["steps"] == 2
    with pytest.raises(ConfigError, match="expected 0..3"):
        session.step(4)
    with pytest.raises(ConfigError, match="game"):
        PlaySession(tiny_model(), "Pong")


def test_models_load_from_a_run_or_a_pretrained_folder(tmp_path):
    model = tiny_model()
    model.save_pretrained(str(tmp_path / "run" / "model"))
    (tmp_path / "run" / "config.json").write_text(json.dumps(
        {"train": {"env": "worldflux/Collect64-v0"}}))
    loaded = load_play_model(tmp_path / "run")
    assert loaded.family == "token" and game_of_run(tmp_path / "run") == "Collect64"
    assert load_play_model(tmp_path / "run" / "model").config == model.config
    with pytest.raises(CheckpointError, match="no world model"):
        load_play_model(tmp_path)


def test_http_api_serves_the_page_and_steps():
    server, url = serve_in_background(PlaySession(tiny_model(), "Collect64"))
    try:
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "<canvas id=\"imagined\"" in page and "fps" in page
        request = urllib.request.Request(url + "api/step", data=b'{"action": 1}', method="POST")
        out = json.loads(urllib.request.urlopen(request, timeout=10).read())
        assert out["steps"] == 1 and len(base64.b64decode(out["real"])) == 64 * 64 * 4
        info = json.loads(urllib.request.urlopen(url + "api/info", timeout=10).read())
        assert info["game"] == "Collect64" and info["history"] == 2
    finally:
        server.shutdown()
        server.server_close()


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(_chromium() is None,
                    reason="no chromium + chromedriver on PATH (Debian: apt-get install chromium "
                           "chromium-driver, or `make system-deps`)")
def test_browser_plays_with_arrow_keys_and_reports_its_frame_rate():
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium missing: pip install 'worldflux[play]'")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser, driver_path = _chromium()
    # Sampled tokens: even an untrained model draws a new frame at every step.
    session = PlaySession(tiny_model(temperature=1.0), "Breakout64", seed=0)
    server, url = serve_in_background(session)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(url)
        canvas = "return document.getElementById(arguments[0]).toDataURL();"

        def wait_for(condition, timeout=30.0):
            end = time.time() + timeout
            while time.time() < end:
                value = condition()
                if value:
                    return value
                time.sleep(0.2)
            raise AssertionError("timed out waiting for the page")

        fps = wait_for(lambda: float(driver.execute_script(
            "return document.getElementById('fps').dataset.fps || 0")))
        assert fps > 0 and "fps" in driver.find_element("id", "fps").text
        first_imagined = driver.execute_script(canvas, "imagined")
        first_real = driver.execute_script(canvas, "real")
        paddle = session.game.paddle[0]
        before = len(session.actions_seen)
        body = driver.find_element("tag name", "body")
        ActionChains(driver).key_down(Keys.ARROW_RIGHT, body).perform()
        wait_for(lambda: session.actions_seen[before:].count(3) >= 3)
        ActionChains(driver).key_up(Keys.ARROW_RIGHT, body).perform()
        ActionChains(driver).send_keys_to_element(body, Keys.ARROW_LEFT).perform()
        wait_for(lambda: 2 in session.actions_seen[before:])
        assert session.game.paddle[0] != paddle or session.episodes > 1
        wait_for(lambda: driver.execute_script(canvas, "imagined") != first_imagined)
        wait_for(lambda: driver.execute_script(canvas, "real") != first_real)
        assert driver.find_element("id", "action").text in ("up", "down", "left", "right")
        driver.find_element("id", "sync").click()  # start from the real frame
        steps = len(session.actions_seen)
        wait_for(lambda: len(session.actions_seen) > steps + 2)
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()


MODELS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "models"


@pytest.mark.parametrize(("folder", "floor"), [("token_Breakout64", 26.0),
                                               ("token_Collect64", 24.0)])
def test_the_committed_game_models_imagine_the_real_game(folder, floor):
    # The benchmark's trained history-4 models (token_games --stage export): eight steps from
    # a real start, the imagined frames stay close to the real ones (seen: 28.8 dB on average
    # on Breakout64, where copying the start frame gets 23.4; 26.3 dB on Collect64).
    model = load_play_model(MODELS / folder)
    session = PlaySession(model, game_of_run(MODELS / folder), seed=3)
    start = session.real_frame.astype(np.float32)
    imagined, copied = [], []
    for k in range(8):
        session.step(k % 4 if "Collect" in folder else 2 + (k // 4) % 2)
        real = session.real_frame.astype(np.float32)
        with torch.no_grad():
            frame = model.decode(session.state).preds["obs"][0].numpy()
        imagined.append(10 * np.log10(255 ** 2 / max(float(((frame - real) ** 2).mean()), 1e-6)))
        copied.append(10 * np.log10(255 ** 2 / max(float(((start - real) ** 2).mean()), 1e-6)))
    assert np.mean(imagined) > floor, (imagined, copied)
    if "Breakout" in folder:
        assert np.mean(imagined) > np.mean(copied) + 3, (imagined, copied)
