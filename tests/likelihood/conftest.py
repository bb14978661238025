"""The likelihood tests reuse the closed-form Gaussian references of ``tests/hvae/gaussian_oracle.py``."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "hvae"))
