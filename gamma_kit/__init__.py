"""gamma_kit: PaddlePaddle kit for GAMMA task 2 (fovea localisation) and task 3
(optic disc / cup segmentation) on colour fundus photographs.

Conventions used everywhere in the kit:
- images are RGB ``uint8`` arrays of shape (H, W, 3); masks are (H, W) ``uint8``;
- points are (x, y) = (column, row) in pixels, as continuous coordinates whose
  integer values fall on pixel corners (pixel ``i`` spans [i, i+1));
- GAMMA mask values: 0 = cup, 128 = disc outside the cup, 255 = background.
"""
import warnings as _warnings

from gamma_kit.runtime import configure_threads as _configure_threads
from gamma_kit.runtime import quiet_paddle_import as _quiet_paddle_import

# Paddle warns at import that ccache (for compiling custom C++ ops) is missing; the kit compiles none
_warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

_configure_threads()
_quiet_paddle_import()     # Paddle's import-time "OMP_NUM_THREADS set to 2" warning: the kit sets it on purpose

__version__ = "0.1.0"
