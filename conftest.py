"""pytest configuration shared by the unit tests and the nbval notebook runs.

Quick mode (DDPM_QUICK=1) is set here, before any notebook kernel starts, so kernels inherit
it: the notebooks run the same code with fewer steps and samples. Export DDPM_QUICK=0 to
validate the notebooks in full mode instead.
"""

import os

os.environ.setdefault("DDPM_QUICK", "1")
