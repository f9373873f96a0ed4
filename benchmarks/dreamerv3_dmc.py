"""DreamerV3 learning on dm_control, from the state vector or 64x64 pixels, next to the
published DreamerV3 curve.

``python -m benchmarks dreamerv3_dmc --task cartpole-swingup --seeds 0,1,2 --steps 100000``
(proprioceptive; the issue reports the return at 100k next to the published 677) and
``... --task cartpole-balance --pixels --steps 20000`` (pixels, a small budget that must rise
well above a random policy). ``size1m`` preset, train ratio 128, action repeat 2; runs resume.
The training and report code is shared with ``tdmpc2_dmc``: ``dmc_learning``.
"""

from __future__ import annotations

from benchmarks import dmc_learning


def main(argv: list[str] | None = None) -> None:
    dmc_learning.main("dreamerv3_dmc", argv)


if __name__ == "__main__":
    main()
