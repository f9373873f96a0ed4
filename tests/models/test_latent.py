"""Latent (autoencoder) world models: ``latent-mlp``, ``latent-vae`` and ``latent-conv``.

The fitted system: a 2-D point ``p' = p + 0.1 a`` observed through a fixed linear map to 5
features, with reward ``-|p'|^2``.
"""

from __future__ import annotations

import pytest
import torch

import worldflux
from worldflux.core import ConfigError
from worldflux.models.latent import (
    LatentConvModel,
    LatentMLPModel,
    LatentModel,
    LatentVAEModel,
)

MIX = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [0.5, -1.0], [-0.3, 0.2]])
SMALL = {"hidden_size": 64, "dynamics_hidden_size": 64, "dynamics_num_layers": 2,
         "reward_hidden_size": 32}
CONV = {"conv_depth": 4, "latent_size": 8, "dynamics_hidden_size": 32, "reward_hidden_size": 16}


def _transitions(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, 2, generator=g) * 2 - 1
    a = torch.rand(n, 2, generator=g) * 2 - 1
    next_p = p + 0.1 * a
    return p @ MIX.T, a, -next_p.pow(2).sum(-1), next_p @ MIX.T


def _build(family: str, obs_shape=(5,), **overrides) -> LatentModel:
    torch.manual_seed(0)
    config = {**(CONV if family == "latent-conv" else SMALL), **overrides}
    return worldflux.create_world_model(family, obs_shape=obs_shape, action_dim=2, device="cpu",
                                        **config)


def _fit(model: LatentModel, steps: int, n: int = 1024, data: tuple | None = None,
         members: int | None = None) -> LatentModel:
    """``steps`` Adam steps of ``transition_loss`` on ``data`` (``obs, action, reward,
    next_obs``; default ``n`` transitions of the 2D task), batches of 128 rows for ``members``
    rows of members (default: each member its own draw)."""
    obs, action, reward, next_obs = data if data is not None else _transitions(n, seed=0)
    n = obs.shape[0]
    members = model.config.ensemble_size if members is None else members
    model.fit_normalizers(obs, action, reward, next_obs)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(n, (members, 128), generator=g)
        out = model.transition_loss(obs[idx], action[idx], reward[idx], next_obs[idx])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def fitted() -> LatentMLPModel:
    return _fit(_build("latent-mlp", latent_size=8), steps=150)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 64, 64), generator=g, dtype=torch.uint8)


# -- families and configuration ------------------------------------------------------------------
def test_families_are_registered_with_their_defaults():
    mlp = worldflux.create_world_model("latent-mlp", obs_shape=(12,), action_dim=3, device="cpu")
    vae = worldflux.create_world_model("latent-vae", obs_shape=(12,), action_dim=3, device="cpu")
    conv = worldflux.create_world_model("latent-conv", obs_shape=(3, 64, 64), action_dim=3,
                                        device="cpu")
    assert (type(mlp), type(vae), type(conv)) == (LatentMLPModel, LatentVAEModel, LatentConvModel)
    assert (mlp.family, vae.family, conv.family) == ("latent-mlp", "latent-vae", "latent-conv")
    assert not mlp.config.variational and not mlp.config.stochastic
    assert vae.config.variational and vae.config.stochastic
    assert conv.config.encoder == "conv" and conv.obs_spec.dtype == "uint8"
    channels = [m.out_channels for m in conv.encoder.convs if isinstance(m, torch.nn.Conv2d)]
    assert channels == [32, 64, 128, 256]
    assert conv.encoder.flat == 256 * 4 * 4
    models = {m["name"]: m for m in worldflux.list_models()}
    assert all(models[f]["tier"] == "experimental" for f in ("latent-mlp", "latent-vae",
                                                             "latent-conv"))


def test_invalid_configurations_name_the_field():
    with pytest.raises(ConfigError, match=r"encoder 'mlp': got obs_shape \(3, 64, 64\)"):
        worldflux.create_world_model("latent-mlp", obs_shape=(3, 64, 64), action_dim=1)
    with pytest.raises(ConfigError, match="multiples of 16"):
        worldflux.create_world_model("latent-conv", obs_shape=(3, 60, 60), action_dim=1)
    with pytest.raises(ConfigError, match="'training': got 'both'"):
        worldflux.create_world_model("latent-mlp", obs_shape=(4,), action_dim=1, training="both")
    with pytest.raises(ConfigError, match="latent_size: got 0"):
        worldflux.create_world_model("latent-mlp", obs_shape=(4,), action_dim=1, latent_size=0)


# -- a tiny real fit ----------------------------------------------------------------------------
def test_autoencoder_reconstructs_and_latent_dynamics_beat_the_mean(fitted):
    obs, action, reward, next_obs = _transitions(512, seed=7)  # held out
    with torch.no_grad():
        recon = fitted.decode_latent(fitted.encode_latent(obs))
        relative = float((recon - obs).norm() / obs.norm())
        state = fitted.transition(fitted.encode(obs), action)
        predicted = fitted.decode(state).preds
    assert relative < 0.05
    mse = float((predicted["obs"] - next_obs).pow(2).mean())
    mean_baseline = float((next_obs - next_obs.mean(0)).pow(2).mean())
    no_change = float((obs - next_obs).pow(2).mean())
    assert mse < 0.01 * mean_baseline and mse < 0.2 * no_change, (mse, mean_baseline, no_change)
    reward_mse = float((predicted["reward"] - reward).pow(2).mean())
    assert reward_mse < 0.1 * float(reward.var())
    eval_mse = fitted.evaluation_mse(obs, action, reward, next_obs)
    assert eval_mse.shape == (1,) and float(eval_mse[0]) < 0.05


def test_particle_returns_rank_sequences_like_the_true_returns(fitted):
    p0 = torch.tensor([0.6, -0.4])
    toward = (-p0 / p0.norm()).expand(5, 2)  # steer to the origin
    sequences = torch.stack([toward, -toward])  # [2, 5, 2]
    p, true = p0.clone().expand(2, 2), torch.zeros(2)
    for t in range(5):
        p = p + 0.1 * sequences[:, t]
        true += -p.pow(2).sum(-1)
    returns = fitted.particle_returns(p0 @ MIX.T, sequences, 4)
    assert returns.shape == (2, 4)
    assert torch.equal(returns[:, 0], returns[:, 1])  # one deterministic member: no noise
    torch.testing.assert_close(returns[:, 0], true, atol=0.15, rtol=0.05)
    bf16 = fitted.particle_returns(p0 @ MIX.T, sequences, 4, dtype=torch.bfloat16)
    torch.testing.assert_close(bf16, returns, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("head", ["mlp", "potential"])
def test_particle_returns_equal_rollout_rewards_per_member(head):
    model = _build("latent-mlp", ensemble_size=3, reward_head=head)
    obs = torch.randn(5)
    sequences = torch.rand(2, 4, 2) * 2 - 1
    returns = model.particle_returns(obs, sequences, 3)  # row n * 3 + k runs on member (n*3+k) % 3
    with torch.no_grad():
        state = model.encode(obs.expand(6, 5)).replace(member=torch.arange(6) % 3)
        rewards = model.rollout(state, sequences.repeat_interleave(3, 0)).rewards.sum(1)
    torch.testing.assert_close(returns.reshape(-1), rewards, atol=1e-4, rtol=1e-4)


def test_known_reward_function_sees_decoded_observations(fitted):
    seen = []

    def reward_fn(obs, action, next_obs):
        seen.append(obs.shape)
        return next_obs[:, 0]

    sequences = torch.zeros(3, 2, 2)
    obs = torch.tensor([0.5, 0.2]) @ MIX.T
    returns = fitted.particle_returns(obs, sequences, 2, reward_fn=reward_fn, discount=0.5)
    assert seen == [(6, 5), (6, 5)]
    assert returns.shape == (3, 2)
    torch.testing.assert_close(returns, torch.full((3, 2), 1.5 * 0.5), atol=0.05, rtol=0)


# -- imagine and predict_uncertainty -------------------------------------------------------------
def test_imagine_shapes_and_sample_zero_equals_the_decoded_rollout(fitted):
    obs, actions = _transitions(3, seed=2)[0], torch.rand(3, 6, 2) * 2 - 1
    samples = fitted.imagine(obs, actions, 2)
    assert samples.shape == (2, 3, 7, 5)
    with torch.no_grad():
        torch.testing.assert_close(samples[0, :, 0], fitted.decode_latent(fitted.encode_latent(obs)))
        trajectory = fitted.rollout(fitted.encode(obs), actions)
        decoded = fitted.decode_latent(trajectory.states["latent"].reshape(18, -1)).view(3, 6, 5)
    torch.testing.assert_close(samples[0, :, 1:], decoded, rtol=0, atol=1e-5)
    assert torch.equal(samples[0], samples[1])  # deterministic: no spread
    # Open loop over 6 steps stays close to the true observations.
    p = obs @ torch.linalg.pinv(MIX).T
    truth = (p[:, None] + 0.1 * actions.cumsum(1)) @ MIX.T
    assert (samples[0, :, 1:] - truth).abs().max() < 0.15


def test_vae_imagine_spreads_and_uncertainty_separates_the_sources():
    model = _build("latent-vae", ensemble_size=3)
    obs, actions = torch.randn(4, 5), torch.rand(4, 3, 2)
    samples = model.imagine(obs, actions, 5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 4, 4, 5)
    assert torch.equal(samples[:, :, 0], samples[:1, :, 0].expand(5, 4, 5))  # same start
    assert not torch.equal(samples[0, :, 1:], samples[3, :, 1:])  # same member, new noise
    unc = model.predict_uncertainty(obs, actions[:, 0])
    assert set(unc) == {"mean", "aleatoric", "epistemic"}
    assert all(v.shape == (4, model.latent_size) for v in unc.values())
    assert (unc["aleatoric"] > 0).all() and (unc["epistemic"] > 0).all()
    deterministic = _build("latent-mlp").predict_uncertainty(obs, actions[:, 0])
    assert torch.equal(deterministic["aleatoric"], torch.zeros(4, 16))
    assert torch.equal(deterministic["epistemic"], torch.zeros(4, 16))


# -- losses ----------------------------------------------------------------------------------
def _component_grads(model: LatentModel, component: str) -> dict[str, float]:
    obs, action, reward, next_obs = (t.expand(2, *t.shape) for t in _transitions(16, seed=3))
    model.zero_grad()
    out = model.transition_loss(obs, action, reward, next_obs)
    out.components[component].backward()
    return {name: float(p.grad.abs().sum()) if p.grad is not None else 0.0
            for name, p in model.named_parameters()}


@pytest.mark.parametrize("training", ["two_stage", "joint"])
def test_dynamics_gradients_reach_the_encoder_only_in_joint_training(training):
    model = _build("latent-mlp", ensemble_size=2, training=training)
    for component in ("dynamics", "reward"):
        grads = _component_grads(model, component)
        encoder = sum(v for k, v in grads.items() if k.startswith("encoder."))
        assert (encoder > 0) is (training == "joint"), component
        assert sum(v for k, v in grads.items() if k.startswith("decoder.")) == 0.0
    grads = _component_grads(model, "recon")
    assert sum(v for k, v in grads.items() if k.startswith(("dynamics.", "reward_head."))) == 0
    # The decoded prediction trains the dynamics; the autoencoder only in joint training.
    grads = _component_grads(model, "predicted_recon")
    assert sum(v for k, v in grads.items() if k.startswith("dynamics.")) > 0
    for part in ("encoder.", "decoder."):
        assert (sum(v for k, v in grads.items() if k.startswith(part)) > 0) is (
            training == "joint"), part
    out = model.transition_loss(*(t.expand(2, *t.shape) for t in _transitions(16, seed=3)))
    assert {"loss", "recon_mse", "mse_normalized", "mse_member_0", "mse_member_1",
            "predicted_recon_mse", "reward_mse"} <= set(out.metrics)


def test_vae_kl_has_free_bits_per_dimension():
    model = _build("latent-vae", latent_size=6, free_bits=0.5, kl_scale=2.0)
    obs, action, reward, next_obs = (t.unsqueeze(0) for t in _transitions(32, seed=4))
    out = model.transition_loss(obs, action, reward, next_obs)
    assert float(out.components["kl"].detach()) >= 2.0 * 0.5 * 6 - 1e-5
    assert {"kl", "nll", "nll_member_0"} <= set(out.metrics)
    assert "logvar_bound" in out.components


def test_fit_normalizers_sets_latent_statistics_from_the_encoder():
    model = _build("latent-mlp")
    obs, action, reward, next_obs = _transitions(256, seed=5)
    model.fit_normalizers(obs, action, reward, next_obs)
    assert float(model.stats_ready[0]) == 1.0
    with torch.no_grad():
        z, z_next = model.encode_latent(obs), model.encode_latent(next_obs)
    torch.testing.assert_close(model.latent_norm.mean, z.mean(0))
    # One scale shared by all latent features: the root mean variance.
    torch.testing.assert_close(model.delta_norm.std,
                               (z_next - z).var(0, unbiased=False).mean().sqrt().expand(16))
    torch.testing.assert_close(model.obs_norm.mean, torch.cat([obs, next_obs]).mean(0))


# -- pixels --------------------------------------------------------------------------------------
def test_conv_model_encodes_once_per_planning_decision_and_decodes_images():
    model = _build("latent-conv", obs_shape=(3, 64, 64))
    calls = []
    model.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    obs = _images(1)[0]
    for _ in range(3):  # the iterations of one planning decision
        returns = model.particle_returns(obs, torch.rand(20, 5, 2) * 2 - 1, 2)
        assert returns.shape == (20, 2) and torch.isfinite(returns).all()
    assert calls == [(1, 3, 64, 64)]
    model.particle_returns(_images(1, seed=1)[0], torch.rand(20, 5, 2), 2)  # next decision
    with torch.no_grad():
        model.encoder.out.bias.add_(0.1)  # a training step
    model.particle_returns(_images(1, seed=1)[0], torch.rand(20, 5, 2), 2)
    assert len(calls) == 3
    samples = model.imagine(_images(2), torch.rand(2, 3, 2), 3)
    assert samples.shape == (3, 2, 4, 3, 64, 64) and samples.dtype == torch.float32
    assert float(samples.min()) >= 0.0 and float(samples.max()) <= 255.0
    unc = model.predict_uncertainty(_images(4), torch.rand(4, 2))
    assert unc["mean"].shape == (4, 8)


def test_conv_autoencoder_learns_to_reconstruct_images():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    # Smooth images: a bright square at a random place on a dark background.
    images = torch.full((64, 3, 64, 64), 20, dtype=torch.uint8)
    for i, (r, c) in enumerate(torch.randint(0, 48, (64, 2), generator=g).tolist()):
        images[i, :, r:r + 16, c:c + 16] = 230
    model = _build("latent-conv", obs_shape=(3, 64, 64), conv_depth=8, latent_size=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = float(model.autoencoder_loss(images).metrics["recon_mse"])
    for _ in range(40):
        out = model.autoencoder_loss(images[torch.randint(64, (16,), generator=g)])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    after = float(model.autoencoder_loss(images).metrics["recon_mse"])
    assert after < 0.3 * before, (before, after)


@pytest.mark.parametrize("cls", [LatentVAEModel, LatentConvModel], ids=lambda c: c.family)
def test_smoke_task_learns(cls):
    result = cls.smoke_task(0)
    assert result.passed, result.description


def _dots(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 4x4 bright dot at a random place on a grey scene with a fixed dark block: images
    ``[n, 3, 64, 64]`` uint8 and the dot centres ``[n, 2]`` (column, row) in pixels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, 64, 64), 60, dtype=torch.uint8)
    images[:, :, 40:56, 8:24] = 10  # static scene
    corners = torch.randint(0, 60, (n, 2), generator=g)
    for i, (c, r) in enumerate(corners.tolist()):
        images[i, :, r:r + 4, c:c + 4] = 240
    return images, corners.float() + 1.5


def test_keypoint_autoencoder_tracks_a_small_moving_object():
    """The keypoint latent learns where a 16-pixel dot is: after a brief fit with the
    foreground weighting, a linear map of the keypoints locates the dot on unseen images to
    under a pixel (the static block goes into the decoder's scene)."""
    torch.manual_seed(0)
    images, centres = _dots(384, seed=0)
    model = _build("latent-conv", obs_shape=(3, 64, 64), encoder="keypoints", conv_depth=8,
                   latent_size=8, foreground_weight=20.0)
    model.fit_normalizers(images, torch.zeros(384, 2), torch.zeros(384), images)
    assert float(model.background.mean()) < -0.2  # the median scene (grey, dark block), no dot
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        out = model.autoencoder_loss(images[torch.randint(384, (32,), generator=g)])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    test_images, test_centres = _dots(128, seed=1)
    with torch.no_grad():
        z_train, z_test = model.encode_latent(images), model.encode_latent(test_images)
    assert z_train.shape == (384, 8) and float(z_train.abs().max()) <= 1.0
    ones = torch.ones(384, 1)
    fit = torch.linalg.lstsq(torch.cat([z_train, ones], 1), centres).solution
    predicted = torch.cat([z_test, torch.ones(128, 1)], 1) @ fit
    error = (predicted - test_centres).norm(dim=-1).median()
    assert float(error) < 1.0, float(error)  # pixels (0.2 measured), on a 64-pixel image


def test_keypoint_configuration_errors_name_the_field():
    with pytest.raises(ConfigError, match="latent_size"):
        _build("latent-conv", obs_shape=(3, 64, 64), encoder="keypoints", latent_size=7)
    with pytest.raises(ConfigError, match="variational"):
        _build("latent-conv", obs_shape=(3, 64, 64), encoder="keypoints", variational=True)
    with pytest.raises(ConfigError, match="foreground_weight"):
        _build("latent-conv", obs_shape=(3, 64, 64), foreground_weight=-1.0)


def test_potential_reward_head_learns_a_progress_reward():
    """``reward_head="potential"``: ``phi(z') - phi(z) + psi(a, z')`` fits the progress
    reward ``|p| - |p'|`` with a control cost, and ``phi`` of the latent then orders points
    by their distance to the origin."""
    model = _build("latent-mlp", latent_size=8, reward_head="potential")
    obs, action, _, next_obs = _transitions(1024, seed=0)
    p, next_p = obs @ torch.linalg.pinv(MIX).T, next_obs @ torch.linalg.pinv(MIX).T
    reward = p.norm(dim=-1) - next_p.norm(dim=-1) - 0.05 * action.pow(2).sum(-1)
    _fit(model, 300, data=(obs, action, reward, next_obs), members=1)
    with torch.no_grad():
        z, next_z = model.encode_latent(obs), model.encode_latent(next_obs)
        predicted = model._reward(z, action, next_z)
        potential = model.potential(model.latent_norm.normalize(z)[None]).view(-1)
    assert float((predicted - reward).pow(2).mean()) < 0.05 * float(reward.var())
    distance = p.norm(dim=-1)
    ranks = torch.stack([distance.argsort().argsort(), potential.argsort().argsort()]).float()
    assert float(torch.corrcoef(ranks)[0, 1]) < -0.8  # phi falls with the distance


def test_encoded_training_leaves_the_autoencoder_alone_and_fits_latents():
    """``training="encoded"``: the loss has no reconstruction term, no gradient reaches the
    encoder or decoder, and ``latent_transition_loss`` on pre-encoded latents is the same loss
    as ``transition_loss`` on the observations."""
    model = _build("latent-mlp", ensemble_size=2, training="encoded")
    obs, action, reward, next_obs = (t.expand(2, *t.shape) for t in _transitions(32, seed=3))
    model.fit_normalizers(obs[0], action[0], reward[0], next_obs[0])
    out = model.transition_loss(obs, action, reward, next_obs)
    assert set(out.components) == {"dynamics", "reward"}
    model.zero_grad()
    out.loss.backward()
    for name, param in model.named_parameters():
        touched = param.grad is not None and float(param.grad.abs().sum()) > 0
        assert touched is name.startswith(("dynamics.", "reward_head.")), name
    with torch.no_grad():
        z, next_z = model.encode_latent(obs[0]), model.encode_latent(next_obs[0])
    latent = model.latent_transition_loss(z.expand(2, -1, -1), action, reward,
                                          next_z.expand(2, -1, -1))
    torch.testing.assert_close(latent.loss, out.loss)
    held_out = model.evaluation_mse(obs[0], action[0], reward[0], next_obs[0])
    torch.testing.assert_close(held_out, model.latent_evaluation_mse(z, action[0], reward[0],
                                                                     next_z))


def test_keypoints_of_stacked_frames_are_encoded_frame_by_frame():
    """``frames=2``: each stacked frame gets its own keypoints from the same weights, so the
    latent of ``[a, b]`` is the latent of ``a`` followed by that of ``b``."""
    model = _build("latent-conv", obs_shape=(6, 64, 64), encoder="keypoints", conv_depth=4,
                   latent_size=8, frames=2)
    a, b = _images(3, seed=0), _images(3, seed=1)
    with torch.no_grad():
        z_ab = model.encode_latent(torch.cat([a, b], 1))
        z_ba = model.encode_latent(torch.cat([b, a], 1))
        images = model.decode_latent(z_ab)
    assert z_ab.shape == (3, 8) and images.shape == (3, 6, 64, 64)
    torch.testing.assert_close(z_ab[:, :4], z_ba[:, 4:])
    torch.testing.assert_close(z_ab[:, 4:], z_ba[:, :4])
    with pytest.raises(ConfigError, match="latent_size"):
        _build("latent-conv", obs_shape=(6, 64, 64), encoder="keypoints", latent_size=6,
               frames=2)


def test_window_loss_of_a_potential_head_fits_cumulative_rewards():
    """Windows of 3 steps with a potential head: one-step reward terms over every valid step
    plus the cumulative term, whose target past a masked step stops growing."""
    model = _build("latent-mlp", latent_size=4, reward_head="potential", training="encoded",
                   rollout_steps=3)
    obs, action, reward, next_obs = _transitions(12, seed=2)
    model.fit_normalizers(obs, action, reward, next_obs)
    with torch.no_grad():
        z, next_z = model.encode_latent(obs), model.encode_latent(next_obs)
    windows = [t.view(1, 4, 3, *t.shape[1:]) for t in (z, action, reward, next_z)]
    mask = torch.tensor([[[True, True, True], [True, True, False], [True, False, False],
                          [True, True, True]]])
    out = model.latent_window_loss(*windows, mask)
    assert {"dynamics", "reward", "reward_sum"} <= set(out.components)
    out.loss.backward()
    assert float(model.potential.layers[0].weight.grad.abs().sum()) > 0
    # Masked steps do not count: changing their rewards leaves the loss alone (eval mode: the
    # running latent statistics stay put between the two calls).
    model.eval()
    changed = windows[2].clone()
    changed[0, 2, 1:] += 10.0
    with torch.no_grad():
        before = model.latent_window_loss(*windows, mask).loss
        after = model.latent_window_loss(windows[0], windows[1], changed, windows[3], mask).loss
    torch.testing.assert_close(after, before)


def test_huber_reward_error_hand_values_and_validation():
    model = _build("latent-mlp", latent_size=8, reward_huber_delta=0.5)
    err = model._reward_error(torch.tensor([0.1, -3.0]), torch.zeros(2))
    # Squared below the threshold, linear above: 2 * 0.5 * (3 - 0.25).
    torch.testing.assert_close(err, torch.tensor([0.01, 2.75]))
    with pytest.raises(ConfigError, match="reward_huber_delta"):
        _build("latent-mlp", latent_size=8, reward_huber_delta=0.0)


def test_huber_reward_head_keeps_the_dense_reward_under_rare_large_bonuses():
    """A progress reward plus a rare +10 bonus near the goal (the origin), as on Nav3D: with
    squared errors the bonus rows dominate the head's fit; Huber errors fit the dense progress
    far better on the other rows."""
    obs, action, _, next_obs = _transitions(2048, seed=0)
    p, next_p = obs @ torch.linalg.pinv(MIX).T, next_obs @ torch.linalg.pinv(MIX).T
    progress = p.norm(dim=-1) - next_p.norm(dim=-1)
    bonus = next_p.norm(dim=-1) < 0.12  # about 2% of the rows
    reward = progress + 10.0 * bonus
    errors = {}
    for delta in (None, 0.3):
        model = _fit(_build("latent-mlp", latent_size=8, reward_huber_delta=delta), 300,
                     data=(obs, action, reward, next_obs), members=1)
        with torch.no_grad():
            test_obs, test_action, _, test_next = _transitions(1024, seed=5)
            tp = test_next @ torch.linalg.pinv(MIX).T
            keep = tp.norm(dim=-1) >= 0.12
            truth = (test_obs @ torch.linalg.pinv(MIX).T).norm(dim=-1) - tp.norm(dim=-1)
            predicted = model._reward(model.encode_latent(test_obs), test_action,
                                             model.encode_latent(test_next))
            errors[delta] = float((predicted - truth)[keep].pow(2).mean() / truth[keep].var())
    assert errors[0.3] < 0.5 * errors[None], errors
    assert errors[0.3] < 0.5, errors


def test_reward_events_predict_the_rare_bonus_and_keep_the_dense_reward():
    """Progress plus a rare +10 bonus near the goal (the origin; about 5% of the rows): with
    ``reward_events`` a classifier tells the bonus steps apart, so the predicted reward on
    held-out bonus rows is near the bonus (a Huber head under-predicts it) while the dense
    progress away from the goal stays as well fitted."""
    obs, action, _, next_obs = _transitions(2048, seed=0)
    p, next_p = obs @ torch.linalg.pinv(MIX).T, next_obs @ torch.linalg.pinv(MIX).T
    reward = p.norm(dim=-1) - next_p.norm(dim=-1) + 10.0 * (next_p.norm(dim=-1) < 0.25)
    test_obs, test_action, _, test_next = _transitions(4096, seed=5)
    tp = test_next @ torch.linalg.pinv(MIX).T
    bonus, dense = tp.norm(dim=-1) < 0.2, tp.norm(dim=-1) >= 0.4
    truth = (test_obs @ torch.linalg.pinv(MIX).T).norm(dim=-1) - tp.norm(dim=-1)
    results = {}
    for name, options in (("huber", {"reward_huber_delta": 0.3}),
                          ("events", {"reward_huber_delta": 0.3, "reward_events": (-5.0, 5.0)})):
        model = _fit(_build("latent-mlp", latent_size=8, **options), 300,
                     data=(obs, action, reward, next_obs), members=1)
        with torch.no_grad():
            predicted = model._reward(model.encode_latent(test_obs), test_action,
                                      model.encode_latent(test_next))
        results[name] = {
            "bonus": float(predicted[bonus].mean() - truth[bonus].mean()),
            "dense_error": float((predicted - truth)[dense].pow(2).mean() / truth[dense].var())}
    assert results["events"]["bonus"] > 9.0, results
    assert results["huber"]["bonus"] < 5.0, results
    assert results["events"]["dense_error"] < 0.2, results
    assert "event_sums" in model.state_dict()  # the class means travel with the weights
    assert float(model.event_sums[2] / model.event_counts[2]) > 9.0


def test_reward_events_are_validated():
    with pytest.raises(ConfigError, match="reward_events"):
        _build("latent-mlp", reward_events=(1.0, -1.0))
    with pytest.raises(ConfigError, match="reward_events"):
        _build("latent-mlp", reward_events=(-1.0, 1.0), reward_head="potential")


def test_encoder_skip_adds_a_linear_path_and_reconstructs_at_least_as_well():
    """``encoder_skip``: the MLP encoder and decoder each get a linear map of their input, so
    that a latent as wide as the state can carry it linearly; reconstruction of the 2D task
    after the same short training is no worse than without the path."""
    errors = {}
    for skip in (False, True):
        model = _fit(_build("latent-mlp", latent_size=8, encoder_skip=skip), 150)
        assert (model.encoder.skip is not None) == skip
        obs = _transitions(512, seed=7)[0]
        with torch.no_grad():
            recon = model.decode_latent(model.encode_latent(obs))
        errors[skip] = float((recon - obs).pow(2).mean() / obs.var())
    assert errors[True] <= 1.1 * errors[False], errors
    with pytest.raises(ConfigError, match="encoder_skip"):
        _build("latent-conv", obs_shape=(3, 64, 64), encoder_skip=True)


def test_latent_scale_per_feature_standardises_each_latent_feature():
    """``latent_scale``: ``isotropic`` gives every latent feature one standard deviation (the
    root mean variance), ``per_feature`` each its own, for the dynamics' inputs and changes."""
    obs, action, reward, next_obs = _transitions(512, seed=3)
    norms = {}
    for scale in ("isotropic", "per_feature"):
        model = _build("latent-mlp", latent_size=8, latent_scale=scale)
        model.fit_normalizers(obs, action, reward, next_obs)
        with torch.no_grad():
            z, z_next = model.encode_latent(obs), model.encode_latent(next_obs)
        norms[scale] = (model.latent_norm.std.clone(), model.delta_norm.std.clone(), z, z_next)
    std, delta_std, z, z_next = norms["per_feature"]
    torch.testing.assert_close(std, z.var(0, unbiased=False).sqrt(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(delta_std, (z_next - z).var(0, unbiased=False).sqrt(), rtol=1e-4,
                               atol=1e-6)
    iso, iso_delta, z, _ = norms["isotropic"]
    assert torch.allclose(iso, iso[0].expand_as(iso))
    torch.testing.assert_close(iso[0], z.var(0, unbiased=False).mean().sqrt(), rtol=1e-4,
                               atol=1e-6)
    with pytest.raises(ConfigError, match="latent_scale"):
        _build("latent-mlp", latent_scale="whitened")
