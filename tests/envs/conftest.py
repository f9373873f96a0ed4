"""MuJoCo picks its GL backend when first imported: headless EGL unless the caller chose one."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
