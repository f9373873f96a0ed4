"""Hugging Face Hub: ``push_to_hub`` and ``from_pretrained(repo_id)`` against a mocked endpoint.

``HfApi.create_repo`` / ``create_branch`` / ``upload_folder`` and ``snapshot_download`` are
replaced by fakes that check every call against the real signatures of ``huggingface_hub`` and
keep the "remote" repositories as folders under ``tmp_path``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import inspect
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

huggingface_hub = pytest.importorskip("huggingface_hub")

import worldflux  # noqa: E402
from worldflux.core.errors import CheckpointError  # noqa: E402
from worldflux.core.serialization import HUB_FILES  # noqa: E402

REPO = "someone/pets-pendulum"


def _allowed(name: str, patterns) -> bool:
    if patterns is None:
        return True
    patterns = [patterns] if isinstance(patterns, str) else patterns
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


class FakeHub:
    """Remote repositories as folders ``remote/<user>/<name>/<revision>``; records every call."""

    def __init__(self, root: Path) -> None:
        self.remote = root / "remote"
        self.cache = root / "cache"
        self.calls: list[tuple[str, dict]] = []

    def folder(self, repo_id: str, revision: str | None = None) -> Path:
        return self.remote / repo_id / (revision or "main")

    def install(self, monkeypatch) -> None:
        hub = self
        real = {name: getattr(huggingface_hub.HfApi, name)
                for name in ("create_repo", "create_branch", "upload_folder")}
        real_download = huggingface_hub.snapshot_download

        def record(name, function, *args, **kwargs) -> dict:
            bound = inspect.signature(function).bind(*args, **kwargs)  # TypeError if misused
            bound.apply_defaults()
            arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
            hub.calls.append((name, arguments))
            return arguments

        def create_repo(self, *args, **kwargs):
            arguments = record("create_repo", real["create_repo"], self, *args, **kwargs)
            assert arguments["exist_ok"] is True
            hub.folder(arguments["repo_id"]).mkdir(parents=True, exist_ok=True)
            return f"https://huggingface.co/{arguments['repo_id']}"

        def create_branch(self, *args, **kwargs):
            arguments = record("create_branch", real["create_branch"], self, *args, **kwargs)
            main = hub.folder(arguments["repo_id"])
            shutil.copytree(main, hub.folder(arguments["repo_id"], arguments["branch"]),
                            dirs_exist_ok=True)

        def upload_folder(self, *args, **kwargs):
            arguments = record("upload_folder", real["upload_folder"], self, *args, **kwargs)
            target = hub.folder(arguments["repo_id"], arguments["revision"])
            if not target.is_dir():
                raise AssertionError(f"upload to a missing repo/branch {target}")
            for path in Path(arguments["folder_path"]).iterdir():
                if _allowed(path.name, arguments["allow_patterns"]):
                    shutil.copy2(path, target / path.name)
            oid = hashlib.sha1(str(len(hub.calls)).encode()).hexdigest()
            return huggingface_hub.CommitInfo(
                commit_url=f"https://huggingface.co/{arguments['repo_id']}/commit/{oid}",
                commit_message=arguments["commit_message"], commit_description="", oid=oid)

        def snapshot_download(*args, **kwargs):
            arguments = record("snapshot_download", real_download, *args, **kwargs)
            source = hub.folder(arguments["repo_id"], arguments["revision"])
            if not source.is_dir():
                raise huggingface_hub.errors.RepositoryNotFoundError(
                    f"404 Client Error: Repository Not Found for url: {arguments['repo_id']}",
                    response=_response(404))
            local = hub.cache / arguments["repo_id"] / (arguments["revision"] or "main")
            local.mkdir(parents=True, exist_ok=True)
            for path in source.iterdir():
                if _allowed(path.name, arguments["allow_patterns"]):
                    shutil.copy2(path, local / path.name)
            return str(local)

        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_branch", create_branch)
        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)

    def named(self, name: str) -> list[dict]:
        return [arguments for call, arguments in self.calls if call == name]


def _response(status: int):
    import httpx2

    return httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api"))


@pytest.fixture
def hub(tmp_path, monkeypatch) -> FakeHub:
    fake = FakeHub(tmp_path)
    fake.install(monkeypatch)
    return fake


@pytest.fixture
def model():
    torch.manual_seed(0)
    model = worldflux.create_world_model("pets", obs_shape=(3,), action_dim=1, device="cpu",
                                         ensemble_size=3, hidden_size=16, num_layers=2)
    with torch.no_grad():  # normalisers away from their initial values
        persistent = set(model.state_dict())  # saved buffers; others derive from the config
        for name, buffer in model.named_buffers():
            if torch.is_floating_point(buffer) and name in persistent:
                buffer.mul_(1.5).add_(0.25)
    return model.eval()


def _predict(model) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    obs = torch.randn(8, 3, generator=generator)
    actions = torch.rand(8, 5, 1, generator=generator) * 2 - 1
    rows = []
    with torch.no_grad():
        state = model.encode(obs)
        for t in range(actions.shape[1]):
            state = model.transition(state, actions[:, t], deterministic=True)
            rows.append(torch.cat([state["obs"], state["reward"][:, None]], -1))
        returns = model.particle_returns(obs[0], actions, 4, generator=torch.Generator().manual_seed(1))
    return torch.cat([torch.stack(rows, 1).reshape(8, -1), returns], -1)


def test_push_then_from_pretrained_gives_bit_identical_predictions(hub, model):
    url = model.push_to_hub(REPO, token="hf_test", private=True)

    assert url.startswith(f"https://huggingface.co/{REPO}/commit/")
    (create,) = hub.named("create_repo")
    assert create["repo_id"] == REPO and create["private"] is True
    assert create["token"] == "hf_test" and create["repo_type"] == "model"
    (upload,) = hub.named("upload_folder")
    assert upload["revision"] is None and upload["commit_message"] == "Upload worldflux model"
    remote = hub.folder(REPO)
    assert sorted(p.name for p in remote.iterdir()) == sorted([*HUB_FILES, "README.md"])

    loaded = worldflux.from_pretrained(REPO, device="cpu", token="hf_test")

    (download,) = hub.named("snapshot_download")
    assert download["repo_id"] == REPO and download["revision"] is None
    assert download["token"] == "hf_test"
    assert sorted(download["allow_patterns"]) == sorted(HUB_FILES)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert torch.equal(_predict(loaded), _predict(model))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_model_card_names_family_config_fingerprint_and_usage(hub, model):
    worldflux.core.serialization.push_to_hub(model, REPO)
    card = (hub.folder(REPO) / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: worldflux\n")
    assert "`pets`" in card
    assert model.io_contract().fingerprint() in card
    assert f'worldflux.from_pretrained("{REPO}")' in card
    config_block = card.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(config_block)["hidden_size"] == 16
    meta = json.loads((hub.folder(REPO) / "worldflux.json").read_text())
    assert meta["contract_fingerprint"] == model.io_contract().fingerprint()


def test_revision_is_a_branch_for_push_and_load(hub, model):
    model.push_to_hub(REPO)  # main holds the first version
    with torch.no_grad():
        next(model.net.parameters()).add_(0.1)
    model.push_to_hub(REPO, revision="v2", commit_message="second")

    (branch,) = hub.named("create_branch")
    assert branch["repo_id"] == REPO and branch["branch"] == "v2" and branch["exist_ok"]
    assert hub.named("upload_folder")[-1]["revision"] == "v2"
    assert hub.named("upload_folder")[-1]["commit_message"] == "second"
    first = worldflux.from_pretrained(REPO, device="cpu")
    second = worldflux.from_pretrained(REPO, device="cpu", revision="v2")
    assert [d["revision"] for d in hub.named("snapshot_download")] == [None, "v2"]
    assert torch.equal(_predict(second), _predict(model))
    assert not torch.equal(_predict(first), _predict(model))


def test_pickled_files_are_not_downloaded_and_never_loaded(hub, model, tmp_path):
    model.push_to_hub(REPO)
    remote = hub.folder(REPO)
    (remote / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    worldflux.from_pretrained(REPO, device="cpu")
    downloaded = Path(hub.cache / REPO / "main")
    assert "pytorch_model.bin" not in {p.name for p in downloaded.iterdir()}

    # A local directory that only has pickled weights is refused with a clear message.
    local = tmp_path / "pickled"
    model.save_pretrained(str(local))
    (local / "model.safetensors").rename(local / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pickled weights \['pytorch_model.bin'\]"):
        worldflux.from_pretrained(str(local), device="cpu")


def test_weights_that_are_not_safetensors_raise_checkpoint_error(model, tmp_path):
    model.save_pretrained(str(tmp_path))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x80\x04not safetensors")
    meta = json.loads((tmp_path / "worldflux.json").read_text())
    meta["sha256"] = {}
    (tmp_path / "worldflux.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        worldflux.from_pretrained(str(tmp_path), device="cpu")


def test_unknown_repository_names_the_repo(hub):
    with pytest.raises(CheckpointError, match=r"'someone/missing'.*repository not found"):
        worldflux.from_pretrained("someone/missing", device="cpu")


def test_offline_without_cache_suggests_hf_hub_offline_and_local_path(monkeypatch):
    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError(
            "Cannot find an appropriate cached snapshot folder for the specified revision")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError) as excinfo:
        worldflux.from_pretrained(REPO, device="cpu", revision="v3")
    message = str(excinfo.value)
    assert f"'{REPO}' at revision 'v3'" in message
    assert "HF_HUB_OFFLINE=1" in message and "local directory" in message
    assert isinstance(excinfo.value.__cause__, huggingface_hub.errors.LocalEntryNotFoundError)


def test_push_failure_is_a_checkpoint_error(monkeypatch, model):
    def forbidden(self, *args, **kwargs):
        raise huggingface_hub.errors.HfHubHTTPError("403 Forbidden: write access required",
                                                    response=_response(403))

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", forbidden)
    with pytest.raises(CheckpointError, match=rf"'{REPO}'.*403 Forbidden"):
        model.push_to_hub(REPO)


@pytest.mark.parametrize("bad", ["no-slash", "a/b/c", "/abs/path", "user/"])
def test_invalid_repo_ids_are_rejected_before_any_request(hub, model, bad):
    with pytest.raises(CheckpointError, match="user/name"):
        model.push_to_hub(bad)
    with pytest.raises(CheckpointError, match="user/name"):
        worldflux.from_pretrained(bad, device="cpu")
    assert hub.calls == []


def test_missing_huggingface_hub_names_the_extra(monkeypatch, model):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"worldflux\[hub\]"):
        model.push_to_hub(REPO)
    with pytest.raises(ImportError, match=r"worldflux\[hub\]"):
        worldflux.from_pretrained(REPO, device="cpu")
