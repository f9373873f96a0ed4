"""The run report: a self-contained HTML page (images read back from its data URIs), its
Markdown twin, fidelity.json, and the ``worldflux report`` command end to end."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from worldflux.cli.main import app
from worldflux.core.errors import CheckpointError
from worldflux.evaluation import FidelityResult, write_report

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageSequence  # noqa: E402

runner = CliRunner()
DATA_URI = re.compile(r'src="data:(image/(?:png|gif));base64,([A-Za-z0-9+/=]+)"')


def embedded_images(page: str) -> list[tuple[str, bytes]]:
    return [(mime, base64.b64decode(data)) for mime, data in DATA_URI.findall(page)]


def assert_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "url(" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)


@pytest.fixture(scope="module")
def full_report(pets_run):
    """The report of the tiny run with fidelity (horizon 20), an OOD split and Markdown."""
    path = write_report(pets_run, horizon=20, episodes=1, starts_per_episode=3,
                        ood_options={"g": 20.0}, markdown=True)
    return path, path.read_text(encoding="utf-8")


def test_report_is_self_contained_and_embeds_its_images(full_report, pets_run):
    path, page = full_report
    assert path == pets_run / "report.html"
    assert page.startswith("<!DOCTYPE html>")
    assert_self_contained(page)
    images = embedded_images(page)
    pngs = [data for mime, data in images if mime == "image/png"]
    gifs = [data for mime, data in images if mime == "image/gif"]
    assert len(pngs) == 3  # learning curve, fidelity, OOD
    assert len(gifs) == 1  # the held-out episode, real vs imagined
    for data in pngs:
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG" and min(image.size) > 100
    with Image.open(io.BytesIO(gifs[0])) as image:
        assert sum(1 for _ in ImageSequence.Iterator(image)) == 101  # 100 steps + the start
    for title in ("Run", "Learning curve", "Evaluations", "Open-loop fidelity and calibration",
                  "Out of distribution", "Episodes: real next to imagined"):
        assert f"<h2>{title}</h2>" in page
    evaluation = json.loads((pets_run / "eval.jsonl").read_text().splitlines()[-1])
    assert f"{evaluation['mean']:.4g}" in page  # the evaluation table
    assert "g=20.0" in page and "robustness ratio" in page


def test_report_writes_fidelity_json_and_a_markdown_twin(full_report, pets_run):
    data = json.loads((pets_run / "fidelity.json").read_text())
    assert data["checkpoint_step"] == 210 and data["policy"] == "random"
    assert data["seed"] == 20_000 and data["episodes"] == 1
    (label, raw), = data["results"].items()
    assert label == "pets"
    result = FidelityResult.from_dict(raw)
    assert result.horizon == 20 and result.num_starts == 3 and result.num_samples == 2
    assert np.all(np.isfinite(result.rmse)) and result.rmse[-1] > result.rmse[0]
    assert f"{result.spearman:.4g}" in full_report[1]

    markdown = (pets_run / "report.md").read_text()
    for name in ("learning_curve.png", "fidelity.png", "ood.png", "heldout_imagined.gif"):
        assert f"](report_files/{name})" in markdown
        assert (pets_run / "report_files" / name).stat().st_size > 1000


def test_report_shows_logged_rates_run_gifs_and_extra_sections(pets_run, tmp_path):
    from worldflux.training.video import write_gif

    run = tmp_path / "run"
    shutil.copytree(pets_run, run, ignore=shutil.ignore_patterns("report*", "fidelity.json"))
    lines = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    for line in lines:
        line.update(success_rate=0.75, collision_rate=0.125)
    (run / "eval.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 9')
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    frames[1, 4:8] = 255
    gif = write_gif(run / "videos" / "eval_step00000210.gif", frames).read_bytes()
    write_gif(run / "videos" / "eval_step00000100.gif", frames[:2])  # older: not shown

    page = write_report(run, compute_fidelity=False,
                        extra_sections={"Notes": "hello <b>world</b>",
                                        "Numbers": {"answer": 42}}).read_text()
    assert_self_contained(page)
    assert "Success / collision rates" in page
    assert "<td>success_rate</td><td class=\"num\">0.75</td>" in page
    assert "<td>collision_rate</td><td class=\"num\">0.125</td>" in page
    assert "1 line(s)" in page  # the partial last line of eval.jsonl
    assert ("image/gif", gif) in embedded_images(page)
    assert len([m for m, _ in embedded_images(page) if m == "image/gif"]) == 1
    assert "Not computed" in page and not (run / "fidelity.json").exists()
    assert "hello &lt;b&gt;world&lt;/b&gt;" in page and "<td>answer</td>" in page


def test_report_of_a_non_run_directory_fails_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="config.json: missing"):
        write_report(tmp_path)
    result = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "config.json" in result.output and "Traceback" not in result.output


def test_cli_report_end_to_end(pets_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(pets_run, run, ignore=shutil.ignore_patterns("report*", "fidelity.json"))
    result = runner.invoke(app, ["report", str(run), "--horizon", "15", "--episodes", "1",
                                 "--starts", "2", "--samples", "4"])
    assert result.exit_code == 0, result.output
    assert f"report written to {run / 'report.html'}" in result.output
    assert "steps under 10% relative error (horizon 15)" in result.output
    assert_self_contained((run / "report.html").read_text())
    raw = json.loads((run / "fidelity.json").read_text())["results"]["pets"]
    assert raw["horizon"] == 15 and raw["num_samples"] == 4 and raw["num_starts"] == 2

    result = runner.invoke(app, ["report", str(run), "--ood", "oops"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    result = runner.invoke(app, ["report", str(run), "--policy", "greedy"])
    assert result.exit_code == 2 and "--policy" in result.output
