"""Up-front checks that a row's weights and benchmark data are on this machine (nothing is fetched).

Hub ids are looked up in the Hugging Face cache (``$HF_HOME/hub``, or ``$HF_HUB_CACHE``), dataset
repos in the hub cache or in ``datasets``' own cache, folders relative to ``$HF_HOME`` or the repo
root. Each missing item is one line naming it, so a table shows "not run (needs ...)" instead of
an lmms-eval run that fails, or worse, tries the network, an hour in.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[2]


def hf_home() -> Path:
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HOME", constants.HF_HOME))


def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE", constants.HF_HUB_CACHE))


def _snapshot_files(repo: str, kind: str) -> list[Path]:
    folder = _hub_cache() / f"{kind}s--{repo.replace('/', '--')}" / "snapshots"
    return [p for p in folder.glob("*/**/*") if p.is_file()] if folder.is_dir() else []


def missing_model(model: DictConfig) -> str | None:
    """None when the checkpoint loads offline, else what is missing."""
    pretrained = model.pretrained
    if pretrained is None or str(pretrained).startswith("testbed-"):
        return None  # the tiny random checkpoint is built on first use; testbeds ship in the package
    path = Path(str(pretrained)).expanduser()
    if path.is_dir():
        return None if (path / "config.json").is_file() else f"{pretrained} (no config.json in that folder)"
    files = _snapshot_files(str(pretrained), "model")
    if not any(f.name == "config.json" for f in files) or not any(f.suffix == ".safetensors" for f in files):
        return f"{pretrained} weights in {_hub_cache()}"
    return None


def _dataset_present(repo: str) -> bool:
    """The repo's snapshot in the hub cache, or the Arrow cache ``datasets`` prepared from it
    (``<namespace>___<snake_case name>``: what an offline load actually reads)."""
    import datasets.config
    from datasets.naming import camelcase_to_snakecase

    if _snapshot_files(repo, "dataset"):
        return True
    namespace, _, name = repo.partition("/")
    cache = Path(os.environ.get("HF_DATASETS_CACHE", datasets.config.HF_DATASETS_CACHE))
    return (cache / f"{namespace}___{camelcase_to_snakecase(name)}").is_dir()


def missing_data(benchmark: DictConfig) -> list[str]:
    """What the benchmark's tasks need that is not here (empty when all is present)."""
    needs = []
    for item in benchmark.data:
        if item.hf_dataset and not _dataset_present(item.hf_dataset):
            needs.append(f"dataset {item.hf_dataset} in {_hub_cache()}")
        if item.path:
            base = hf_home() if item.under == "HF_HOME" else Path(os.environ[item.under]) if item.under else ROOT
            if not (base / item.path).exists():
                needs.append(f"{item.what or item.path} at {base / item.path}")
    if not needs:  # every folder is there: is every video the split names?
        video = missing_video(benchmark)
        if video:
            needs.append(video)
    return needs


def missing_video(benchmark: DictConfig) -> str | None:
    """The first video the prepared test split names that is not where lmms-eval's task looks for it,
    for the benchmarks whose layout ``data.mini_benchmarks`` knows; None when all are there (or the
    split itself is missing, which ``missing_data`` reports)."""
    import datasets.config
    from datasets import Dataset
    from datasets.naming import camelcase_to_snakecase

    from ..data.mini_benchmarks import BENCHMARKS

    spec = BENCHMARKS.get(benchmark.name)
    if spec is None:
        return None
    namespace, _, name = spec.repo.partition("/")
    cache = Path(os.environ.get("HF_DATASETS_CACHE", datasets.config.HF_DATASETS_CACHE))
    root = cache / f"{namespace}___{camelcase_to_snakecase(name)}"
    for config in spec.tables():
        files = sorted((root / (config or "default")).glob(f"*/*/*-{spec.split}*.arrow"))
        if not files:
            continue
        rows = [row for file in files for row in Dataset.from_file(str(file)).to_list()]
        for path in spec.videos(config, rows):
            if not (hf_home() / path).exists():
                return f"video {hf_home() / path} (named by {spec.repo}{f' {config}' if config else ''}, split {spec.split})"
    return None


def missing(cfg: DictConfig) -> list[str]:
    """Everything a row lacks: the checkpoint, then the benchmark's data."""
    needs = []
    model = missing_model(cfg.model)
    if model:
        needs.append(model)
    needs.extend(missing_data(cfg.benchmark))
    if cfg.benchmark.needs_judge and not os.environ.get("OPENAI_API_KEY"):  # lmms-eval's judge reads it
        needs.append(f"a GPT judge for {cfg.benchmark.title} (OPENAI_API_KEY and network)")
    return needs
