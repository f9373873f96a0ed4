"""Generated frames per second of the ``token`` family: parallel vs causal, KV cache on and off.

One imagined frame = the dynamics' next-frame tokens for one action + the tokenizer's decoder
drawing them (what ``worldflux play`` does per key press), batch 1, the family's default sizes
(8x8 tokens, 128 codes, history 4, 4 layers x 128). Weights are random: the cost does not depend
on them. Modes: ``parallel`` (one pass for all 64 tokens), ``causal`` with the KV cache (one new
position per token) and without it (the whole sequence again for every token). Also batch 16 in
parallel mode (frames per second over the batch), the 3-layer size, and the default size with
token_games' tokenizer (patch encoder, 512 codes, per-position decoder norm), without and with
the decoder drawing against the last real frame (``reference_decoder``).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks.common import write_result


def _frames_per_second(model, state, action, mode: str, use_cache: bool, seconds: float) -> dict:
    with torch.no_grad():
        model.decode(model.transition(state, action, mode=mode, use_cache=use_cache))  # warm-up
        count, started = 0, time.perf_counter()
        while True:
            out = model.transition(state, action, mode=mode, use_cache=use_cache)
            model.decode(out)
            count += 1
            elapsed = time.perf_counter() - started
            if elapsed >= seconds and count >= 2:
                break
    batch = action.shape[0]
    return {"frames_per_s": round(count * batch / elapsed, 2),
            "ms_per_step": round(1000 * elapsed / count, 2), "steps": count, "batch": batch}


def main(argv: list[str]) -> None:
    import worldflux

    parser = argparse.ArgumentParser(prog="python -m benchmarks token_speed")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    args = parser.parse_args(argv)
    started = time.time()
    load = os.getloadavg()
    results = {}
    for label, overrides in (("default_4x128", {}), ("benchmark_3x128", {"num_layers": 3}),
                             ("patch_512_codes_4x128", {"encoder": "patch", "codebook_size": 512,
                                                        "decoder_norm": "position"}),
                             ("patch_512_codes_reference_4x128", {
                                 "encoder": "patch", "codebook_size": 512,
                                 "decoder_norm": "position", "reference_decoder": True})):
        torch.manual_seed(0)
        model = worldflux.create_world_model("token", obs_shape=(3, 64, 64), action_dim=4,
                                             action_kind="discrete", device="cpu", **overrides)
        model.eval()
        frames = torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8)
        entry = {}
        for name, mode, cache, batch in (("parallel", "parallel", True, 1),
                                         ("causal_kv_cache", "causal", True, 1),
                                         ("causal_no_cache", "causal", False, 1),
                                         ("parallel_batch16", "parallel", True, 16)):
            state = model.encode(frames[:batch])
            action = torch.nn.functional.one_hot(torch.arange(batch) % 4, 4).float()
            entry[name] = _frames_per_second(model, state, action, mode, cache, args.seconds)
        entry["kv_cache_speedup"] = round(entry["causal_kv_cache"]["frames_per_s"]
                                          / entry["causal_no_cache"]["frames_per_s"], 1)
        entry["parameters"] = model.num_parameters()
        results[label] = entry
    payload = {"results": results, "load_average_at_start": [round(x, 2) for x in load],
               "target": "parallel >= 20 frames/s on this 2-core CPU; the KV cache must give a "
                         "large speed-up"}
    path = write_result("token_speed", payload, started)
    for label, entry in results.items():
        print(label, {k: (v["frames_per_s"] if isinstance(v, dict) else v)
                      for k, v in entry.items()})
    print(path)
