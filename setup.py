"""Install gamma_kit.

Paddle itself is an extra: AI Studio images already carry paddlepaddle-gpu, and a
CPU build installed on top would shadow it.

    pip install -e ".[cpu,test]"   # this machine / CI (no GPU)
    pip install -e .               # a CUDA machine: Paddle 3 GPU installed first (see below)
    pip install -e ".[cpu,bench]"  # to run python bench/run_all.py

There is no gpu extra on purpose: PyPI carries paddlepaddle-gpu only up to 2.6.2 (the kit
needs Paddle 3), so an extra naming it cannot resolve. The GPU build comes from Paddle's own
package index, one per CUDA version (e.g. ``python -m pip install paddlepaddle-gpu==3.3.1 -i
https://www.paddlepaddle.org.cn/packages/stable/cu126/``); AI Studio images already have it.
``python -m gamma_kit.doctor`` (gamma-kit-doctor) shows what got installed.

Why each pin (all checked together on Python 3.11):
- paddleseg==2.8.0: newest on PyPI; gamma_kit.seg.compat patches its four known
  failures on Paddle 3.3.1 (SPEC 4).
- opencv-python<=4.6.0: paddleseg 2.8.0 requires it; resolves to 4.5.5.64, which is
  built against NumPy 1, hence numpy<2 and, for pandas built on NumPy 1, pandas<3.
  NumPy 2 also breaks paddle.flops, which paddleseg's train calls at the end.
- paddlepaddle==3.3.1: 2.6.2 exports zlib symbols that break PNG decoding and
  scipy after ``import paddle``.
- openpyxl: the GAMMA ground truth comes as .xlsx.
constraints.txt holds the exact versions CI installs (pip install -c constraints.txt ...).
A wheel user has no constraints.txt: the pins above are the ones that matter (the exact
paddleseg and paddlepaddle, and the NumPy-1 chain they force), so ``pip install gamma_kit-*.whl
paddlepaddle==3.3.1`` (or ``"gamma_kit-*.whl[cpu]"``) resolves to a working set without it.
- wheel==0.45.1 (test extra): .ci/run builds the wheel offline (pip wheel --no-build-isolation);
  setuptools 65 needs the wheel package for bdist_wheel, and wheel >= 0.46 needs setuptools >= 70.1.

The YAML configs stay in <repo>/configs (PaddleSeg users type configs/seg/... from the repo
root). A built wheel carries a copy as package data in gamma_kit/_configs (BuildPyWithConfigs),
where gamma_kit.resources.config_path finds it from any working directory. Editable installs
use <repo>/configs directly and get no copy.
"""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithConfigs(build_py):
    """build_py that also copies <repo>/configs into the build's gamma_kit/_configs.

    The tree is copied as is (fovea/, seg/, seg/_base_/), so the ``_base_`` paths, which are
    relative to each YAML file, resolve in the copy too. Skipped for editable installs, which
    would otherwise put a stale copy into the source tree that shadows configs/.
    """

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        src = HERE / "configs"
        if not (src / "seg").is_dir() or not (src / "fovea").is_dir():
            raise FileNotFoundError(f"{src}: the configs to ship are missing (is this a full checkout?)")
        dst = Path(self.build_lib) / "gamma_kit" / "_configs"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))

    def get_outputs(self, include_bytecode=1):
        outputs = list(super().get_outputs(include_bytecode))
        dst = Path(self.build_lib) / "gamma_kit" / "_configs"
        if not getattr(self, "editable_mode", False):
            outputs += [str(dst / f.relative_to(HERE / "configs")) for f in sorted((HERE / "configs").rglob("*.y*ml"))]
        return outputs


setup(
    name="gamma_kit",
    version="0.1.0",
    description="PaddlePaddle kit for GAMMA fovea localisation and optic disc/cup segmentation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["gamma_kit", "gamma_kit.*"]),
    include_package_data=True,
    cmdclass={"build_py": BuildPyWithConfigs},
    install_requires=[
        "paddleseg==2.8.0",
        "numpy>=1.23,<2",
        "pandas>=1.5,<3",
        "opencv-python>=4.5,<=4.6.0",
        "openpyxl>=3.1,<4",
        "matplotlib>=3.7,<4",
        "tqdm>=4.60,<5",
        "PyYAML>=6,<7",
        "scipy>=1.10,<2",          # FFT correlation in the fovea decoder
        "Pillow>=9",               # image sizes from file headers
    ],
    extras_require={
        "cpu": ["paddlepaddle==3.3.1"],
        # no "gpu" extra: PyPI has no paddlepaddle-gpu >= 3 (see the docstring)
        "test": [
            "pytest==9.0.3",
            "nbclient==0.11.0",
            "nbformat==5.11.1",
            "ipykernel==7.4.0",
            "psutil==7.2.2",
            "wheel==0.45.1",       # .ci/run's offline wheel build (see above)
            "paddle2onnx==2.1.0",  # the onnx extra, so that CI runs tests/test_onnx.py
            "onnxruntime==1.32.0",
        ],
        "bench": ["psutil==7.2.2"],   # peak RSS sampling in bench/ (python bench/run_all.py)
        # export --format onnx / predict --onnx; with the NumPy-1 pin (see above) these resolve to onnx 1.17.0,
        # onnxoptimizer 0.3.13 and polygraphy 0.53.6, pinned in constraints.txt
        "onnx": ["paddle2onnx==2.1.0", "onnxruntime==1.32.0"],
    },
    # the same entry points as python -m gamma_kit.<module>
    entry_points={"console_scripts": [
        "gamma-kit-demo=gamma_kit.demo:main",
        "gamma-kit-fovea=gamma_kit.fovea.__main__:main",
        "gamma-kit-seg=gamma_kit.seg.__main__:main",
        "gamma-kit-synth=gamma_kit.synth.__main__:main",
        "gamma-kit-evaluate=gamma_kit.evaluate:main",
        "gamma-kit-doctor=gamma_kit.doctor:main",
    ]},
)
