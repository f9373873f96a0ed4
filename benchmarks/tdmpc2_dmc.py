"""TD-MPC2 learning on dm_control, from proprioception or pixels, next to the published curve.

``python -m benchmarks tdmpc2_dmc --task cartpole-swingup --seeds 0,1,2 --steps 50000 --device
cuda`` (``--report --work DIR`` rebuilds the result from copied run directories). Issue target:
cartpole-swingup >= 750 at 50k agent steps (action repeat 2), 5M preset at the official
settings. ``--pixels`` trains on the last 3 rendered 64x64 frames (the official pixel wrapper);
``--preset 1`` makes that affordable on a CPU (the pixel encoder then has 8 channels, so that
its 4x4 output is the 1M latent of 128). The training and report code is shared with
``dreamerv3_dmc``: ``dmc_learning``.
"""

from __future__ import annotations

from benchmarks import dmc_learning


def main(argv: list[str] | None = None) -> None:
    dmc_learning.main("tdmpc2_dmc", argv)


if __name__ == "__main__":
    main()
