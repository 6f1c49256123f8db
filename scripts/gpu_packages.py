"""Pack the Python packages a GPU run needs and the device image lacks into one tarball.

The device machines (docs/gpu.md) run Python 3.12 with torch, transformers 5.17 and a long list
of packages, but no lmms-eval, Hydra or decord, and no network. This script, run here in the
project's venv:

1. imports what the GPU scripts import (the table runner, lmms-eval's evaluator and task
   registry, the wrappers, decord, Hydra) and lists the distributions behind every loaded module;
2. keeps those the image lacks or holds at another version than ours (``IMAGE``: the image's
   package list as the device tool documents it, with the versions it gives);
3. downloads each as a Python 3.12 manylinux wheel (``pip download --no-deps``), unpacks them into
   one folder with freres-lmms's own metadata (its lmms-eval entry points) and writes
   ``.gpu/site.tar.xz`` (ignored by git; well inside the 64 MiB a device
   call may carry).

On the device: ``mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site && export
PYTHONPATH=/tmp/site:$PWD``, then run the script (``carry: [".gpu"]``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the device image's packages (device tool, KINDS.md, read 2026-11-17) and the versions it states
IMAGE_VERSIONS = {"transformers": "5.17.0", "huggingface-hub": "1.33.0", "tokenizers": "0.23.2", "safetensors": "0.8.0",
                  "accelerate": "1.15.0", "numpy": "2.5.2", "torch": "2.11.0", "torchvision": "0.26.0"}
IMAGE = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax
fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2
joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-
it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions
nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow
pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-
mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp""".split())
# never carried: the image's own builds of these are what the GPU needs
NEVER = {"torch", "torchvision", "torchaudio", "triton", "numpy", "nvidia-nccl-cu13"}
MODULES = ["freres_lmms.tables.reproduce", "freres_lmms.lmms.families", "freres_lmms.synthetic_eval", "freres_lmms.evaluate",
           "lmms_eval.__main__", "pytablewriter", "lmms_eval.evaluator",
           "lmms_eval.tasks", "decord", "hydra", "omegaconf", "datasets", "evaluate"]


def norm(name: str) -> str:
    return name.lower().replace("_", "-")


def needed() -> dict[str, str]:
    """Distribution -> our version, for every distribution behind a module the GPU scripts load."""
    for module in MODULES:
        importlib.import_module(module)
    owners = md.packages_distributions()
    dists = {norm(d) for m in list(sys.modules) for d in owners.get(m.split(".")[0], [])}
    versions = {norm(d.metadata["Name"]): d.version for d in md.distributions()}
    out = {}
    for dist in sorted(dists - {"freres-lmms"}):
        version = versions.get(dist)
        if version is None or dist in NEVER:
            continue
        if dist not in IMAGE or (dist in IMAGE_VERSIONS and IMAGE_VERSIONS[dist] != version):
            out[dist] = version
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / ".gpu" / "site.tar.xz"))
    args = parser.parse_args()
    packages = needed()
    print("carrying:", " ".join(f"{k}=={v}" for k, v in packages.items()))
    with tempfile.TemporaryDirectory() as tmp:
        wheels, site = Path(tmp) / "wheels", Path(tmp) / "site"
        platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)]
        for name, version in packages.items():
            got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                                  "--python-version", "3.12", "--implementation", "cp", *platforms,
                                  "--platform=manylinux2014_x86_64", "--platform=manylinux1_x86_64",
                                  "--platform=manylinux2010_x86_64", "-d", str(wheels), f"{name}=={version}"])
            if got.returncode:  # an sdist only (antlr4 4.9.3): pure Python, so a wheel built here serves
                subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                                f"{name}=={version}"], check=True)
        site.mkdir()
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
        # our own metadata (entry points: lmms-eval finds the model ids by it); the code itself
        # comes from the working tree on PYTHONPATH
        ours = md.distribution("freres-lmms")
        info = site / f"freres_lmms-{ours.version}.dist-info"
        info.mkdir()
        for name in ("METADATA", "entry_points.txt"):
            (info / name).write_text(ours.read_text(name))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out, "w:xz") as tar:
            for path in sorted(site.iterdir()):
                tar.add(path, arcname=path.name)
    print(f"written: {out} ({out.stat().st_size / 2**20:.1f} MiB, {len(packages)} packages)")


if __name__ == "__main__":
    main()
