"""What the timm and open_clip encoders share: their optional package, and their pretrained
weight files found in the libraries' caches without the network.

Nothing is downloaded unless an encoder is built with `download=True`: a weight file is looked
up where the library itself keeps its downloads (the Hugging Face cache for both, torch's hub
folder or open_clip's for files hosted elsewhere) and handed to the library as a local file;
missing, it is one paragraph naming the file, where to put it and the settings that avoid it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import torch


def import_extra(module: str, extra: str, setting: str):
    """The optional package `module` (capgen's extra `extra`), or ModuleNotFoundError naming the
    pip command; `setting` is what asked for it (e.g. model/encoder=timm)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:  # not installed, or installed without a package it imports
        raise ModuleNotFoundError(
            f"{setting} needs the {module} package ({e}), capgen's optional '{extra}' extra, which is not "
            f"installed here. Install it with pip install 'capgen[{extra}]' (in a clone: pip install -e \".[{extra}]\"), "
            "or choose an encoder without it (model/encoder=torchvision, model/encoder=small_cnn)."
        ) from e


@dataclass(frozen=True)
class WeightSource:
    """Where a library downloads a weight file from: a Hugging Face repository (`repo`, with an
    optional `@revision`) and the file names it tries in order, and/or a plain `url` that it
    saves into the folder `url_cache`."""

    repo: str | None = None
    filenames: tuple[str, ...] = ()
    url: str | None = None
    url_cache: str | None = None

    def _repo_revision(self) -> tuple[str, str | None]:
        repo, _, revision = (self.repo or "").partition("@")
        return repo, revision or None

    def cached_file(self) -> str | None:
        """The weight file if a download left it in the library's cache, else None (never the network)."""
        if self.repo:
            from huggingface_hub import try_to_load_from_cache

            repo, revision = self._repo_revision()
            for name in self.filenames:
                path = try_to_load_from_cache(repo, name, revision=revision)
                if isinstance(path, str) and os.path.isfile(path):
                    return path
        if self.url and self.url_cache:
            path = os.path.join(self.url_cache, os.path.basename(self.url))
            if os.path.isfile(path):
                return path
        return None

    def where(self) -> str:
        """What to download and where to put it, as a sentence."""
        parts = []
        if self.repo:
            from huggingface_hub import constants

            repo, revision = self._repo_revision()
            folder = os.path.join(constants.HF_HUB_CACHE, "models--" + repo.replace("/", "--"))
            rev = f" --revision {revision}" if revision else ""
            parts.append(
                f"the Hugging Face file {repo}/{self.filenames[0]} into the Hugging Face cache ({folder}, under "
                f"HF_HUB_CACHE={constants.HF_HUB_CACHE}; HF_HOME or HF_HUB_CACHE set another): on a machine with "
                f"internet run `hf download {repo} {self.filenames[0]}{rev}` and copy that cache folder here"
            )
        if self.url and self.url_cache:
            parts.append(f"{self.url} into {os.path.join(self.url_cache, os.path.basename(self.url))}")
        return ", or ".join(parts)


def torch_hub_folder() -> str:
    """Where torch.hub (and timm, for weights hosted outside Hugging Face) keeps downloaded files."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def missing_weights(setting: str, what: str, source: WeightSource) -> FileNotFoundError:
    """The offline error for a pretrained weight file that is not in the library's cache."""
    return FileNotFoundError(
        f"{setting}: the weight file of {what} is not on this machine, and capgen downloads nothing unless asked. "
        f"Put {source.where()}; or set model.encoder.download=true on a machine with internet (the library "
        "downloads it into that cache), or model.encoder.weights=null for random initialisation."
    )
