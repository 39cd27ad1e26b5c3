"""Build and install pdlkit with its native extension ``pdlkit._C``.

The C++ sources in ``csrc/`` are always compiled; the CUDA sources too when nvcc and a CUDA-enabled
torch are present.  ``PDL_WITH_CUDA=0|1`` overrides the detection.  Install with
``pip install --no-build-isolation -e .`` after torch.
"""
import glob
import os
import re

from setuptools import find_packages, setup

# torch takes CUDA_HOME from the nvcc on PATH when the variable is unset; a wrapper script in
# /usr/local/bin would make that /usr/local.  Prefer the conventional toolkit root when it exists.
if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError as exc:  # pragma: no cover - a build-time message
    raise SystemExit(
        "pdlkit builds against an installed torch: `pip install torch==2.14.1 torchvision==0.29.1`, "
        "then `pip install --no-build-isolation -e .`"
    ) from exc

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version() -> str:
    text = open(os.path.join(HERE, "pdlkit", "__init__.py")).read()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def with_cuda() -> bool:
    forced = os.environ.get("PDL_WITH_CUDA")
    if forced is not None:
        if forced not in ("0", "1"):
            raise SystemExit(f"PDL_WITH_CUDA must be 0 or 1, got {forced!r}")
        if forced == "1" and (CUDA_HOME is None or torch.version.cuda is None):
            raise SystemExit("PDL_WITH_CUDA=1 but nvcc (CUDA_HOME) or a CUDA-enabled torch is missing")
        return forced == "1"
    return CUDA_HOME is not None and torch.version.cuda is not None


def pip_cuda_include_dirs() -> list:
    """Headers of the CUDA libraries that torch's own headers include (cusparse.h, cublas_v2.h, ...).

    A minimal toolkit (nvcc + runtime) lacks them; the CUDA build of torch ships them in the
    ``nvidia`` pip packages beside it (site-packages/nvidia/cu*/include).
    """
    if CUDA_HOME and os.path.exists(os.path.join(CUDA_HOME, "include", "cusparse.h")):
        return []
    site = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(d for d in glob.glob(os.path.join(site, "nvidia", "*", "include"))
                  if os.path.exists(os.path.join(d, "cusparse.h")))


def extension():
    # An rpath to torch's libraries, so that `import pdlkit._C` works before `import torch`.
    # -fopenmp: at::parallel_for is inline and runs serially unless this library is built with
    # OpenMP (torch's own libgomp.so.1, already loaded by torch, serves both).
    link_args = ["-fopenmp", "-Wl,-rpath," + os.path.join(os.path.dirname(torch.__file__), "lib")]
    # csrc/module.cpp, csrc/ops/<op>.cpp (schema + host flow), csrc/ops/cpu/*.cpp, csrc/ops/cuda/*.cu
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    cuda = with_cuda()
    # -ffp-contract=off: no fused multiply-add, so distances round as in the reference (docs/ops.md).
    cxx_flags = ["-O3", "-fopenmp", "-ffp-contract=off", "-Wall", "-Wno-unused-function"]
    if not cuda:
        return CppExtension(
            "pdlkit._C", cpp_sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_args
        )
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    return CUDAExtension(
        "pdlkit._C",
        cpp_sources + cuda_sources,
        include_dirs=pip_cuda_include_dirs(),
        define_macros=[("PDL_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--fmad=false", "-lineinfo"]},
        extra_link_args=link_args,
    )


def evaluation_extension():
    """pdl eval's pixel loops (PNG unfiltering, joint histograms): plain C without torch, so that
    scoring a folder of files never pays for importing torch."""
    from setuptools import Extension

    return Extension("pdlkit.evaluation._native", [os.path.join("pdlkit", "evaluation", "_native.c")],
                     extra_compile_args=["-O3"])


setup(
    name="pdlkit",
    version=read_version(),
    description="Panoptic-DeepLab toolkit: native target encoding, center NMS and panoptic merging, "
    "training, evaluation and a command line",
    long_description=open(os.path.join(HERE, "README.md")).read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["pdlkit", "pdlkit.*"]) + ["pdlkit.cli"],
    package_dir={"pdlkit.cli": "cli"},
    ext_modules=[extension(), evaluation_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "numpy>=1.24,<2.4",  # cityscapesscripts 2.3.0's evaluators break on numpy 2.4 (np.in1d)
        "click>=8.0",
        "opencv-python",
        "tqdm",
        "pyyaml",
        "pillow",
        "cityscapesscripts>=2.2",
        "pycocotools",
    ],
    extras_require={
        "test": ["pytest", "hypothesis", "scipy"],
        "onnx": ["onnx", "onnxruntime"],
        "tensorboard": ["tensorboard"],
        "fast": ["imagecodecs"],  # zlib-ng inflate (and libspng) for pdl eval's PNG decoding
        "bench": ["hotcoco"],
    },
    entry_points={"console_scripts": ["pdl = pdlkit.cli.main:main"]},
    zip_safe=False,
)
