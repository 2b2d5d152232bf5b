"""capgen-demo's model side, without gradio: which checkpoints it serves, the pictures it
reads, and captioning one picture with one checkpoint as capgen-caption does (the same loading,
decoding and figure code: capgen.lightning.inference, capgen.viz), so that the page (page.py)
only lays the results out and its calls can be tested without a browser or gradio.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from PIL import Image

from ...config.decode_group import CONSTRAINT_KEYS, command_settings
from ...data.images import BadSampleError, load_rgb
from ...data.shapes import ShapesSource
from ...lightning.hardware import encoder_settings
from ...lightning.inference import caption_row, checkpoint_list, load_checkpoints, load_module, resolve_device
from ...lightning.module import CaptioningModule
from ...models.search import DecodeSettings
from ...models.search.settings import BEAM_METHODS
from ...runs.folders import (
    DEFAULT_IMAGE_SIZE,
    best_checkpoint,
    checkpoint_image_size,
    find_runs,
    is_run,
    not_a_run,
    run_choice,
    run_config,
)
from ...runs.provenance import TrainedOn
from ...viz import draw_attention, resize_longest

log = logging.getLogger(__name__)

# What the page says about an upload that is not a picture.
FIX_UPLOAD = "upload a picture file (PNG, JPEG, GIF, BMP, WebP or TIFF)"
# The decoding methods the page offers (diverse_beam stays a command-line choice: decode=diverse_beam).
PAGE_METHODS = ("greedy", "beam", "sample")
EXAMPLE_PREFIX = "shapes_test_"  # the page's example scenes: <out>/shapes_test_<k>.png


@dataclass
class ServedModel:
    """One checkpoint the page shows a column for."""

    model: str  # the model config its run was trained with (model=attn), else its decoder's class
    path: Path
    module: CaptioningModule
    image_size: int  # the side its run's images were resized to
    settings: DecodeSettings  # the command's decode settings for it: cfg.decode over its run's test decode
    trained: TrainedOn | None = None  # its training data and length (capgen.runs.provenance)
    members: tuple[Path, ...] = ()  # an ensemble's checkpoints, in order (`path` is the first); () for one

    @property
    def shown_path(self) -> str:
        """Its checkpoint, or an ensemble's checkpoints joined by ' + '."""
        return " + ".join(map(str, self.members)) if self.members else str(self.path)

    @property
    def name(self) -> str:
        return f"{self.model}: {self.shown_path}"

    @property
    def has_attention(self) -> bool:
        return self.module.net.has_attention


@dataclass
class Captioned:
    """One checkpoint's caption of one picture."""

    row: dict  # {checkpoint, decode, caption, words, word_probs, logprob[, captions, logprobs]} (captions.jsonl's)
    frames: list[Image.Image]  # the GIF's frames: the picture, then one per word; [] without attention
    gif: Path | None  # the animated GIF and the per-word grid PNG, for attention models with a caption
    png: Path | None


# ----- which checkpoints ----------------------------------------------------------------------
def split_paths(value: str, setting: str) -> list[Path]:
    """`value` split at its commas into existing paths. A comma inside an existing path stays
    in it: a sweep's job folders are named by their overrides (`1_model=lstm,model.decoder...`),
    so each path is the shortest run of comma-separated parts that names a file or folder."""
    parts, paths, start = value.split(","), [], 0
    while start < len(parts):
        end = next((e for e in range(start + 1, len(parts) + 1)
                    if Path(",".join(parts[start:e])).expanduser().exists()), None)
        if end is None:
            missing = ",".join(parts[start:])
            where = f" (the part after {paths[-1]})" if paths else ""
            raise FileNotFoundError(
                f"{setting}={value}: {missing}{where} is no file or folder; give existing paths separated by commas, "
                f"e.g. {setting}=a.ckpt,b.ckpt"
            )
        paths.append(Path(",".join(parts[start:end])).expanduser())
        start = end
    return paths


def is_ensemble(cfg: DictConfig) -> bool:
    """Whether `run=` or `ckpt_path=` is a list (`ckpt_path=[a.ckpt,b.ckpt]`): one column, the
    ensemble of its checkpoints (capgen.models.ensemble), where commas alone give a column each."""
    return any(isinstance(cfg.get(key), ListConfig | list) for key in ("run", "ckpt_path"))


def checkpoint_paths(cfg: DictConfig) -> list[Path]:
    """The checkpoints `run=` or `ckpt_path=` names, in order: each run folder's best
    checkpoint (a folder of runs, such as a sweep's: each of its runs'), each checkpoint file.
    A list (is_ensemble): its items, each a checkpoint file (ckpt_path) or a run folder (run:
    its best checkpoint)."""
    if bool(cfg.run) == bool(cfg.ckpt_path):
        given = f"run={cfg.run} and ckpt_path={cfg.ckpt_path}: give one of them" if cfg.run else "nothing to show"
        raise ValueError(f"{given}: give run=<run folder> (its best checkpoint; a sweep folder: each run's) or "
                         "ckpt_path=<checkpoint>, several separated by commas (run=a,b or ckpt_path=a.ckpt,b.ckpt)")
    if is_ensemble(cfg):
        setting = "ckpt_path" if cfg.ckpt_path else "run"
        paths = [Path(p).expanduser() for p in checkpoint_list(cfg[setting], setting)]
        if setting == "run":
            return [best_checkpoint(p) for p in paths]
        return paths
    if cfg.ckpt_path:
        paths = split_paths(str(cfg.ckpt_path), "ckpt_path")
        for path in paths:
            if path.is_dir():
                raise ValueError(f"ckpt_path={path}: a folder; give run={path} for a run's best checkpoint (a sweep "
                                 "folder: each run's), or ckpt_path=<a .ckpt file in it>")
        return paths
    found = []
    for folder in split_paths(str(cfg.run), "run"):
        if folder.is_file():
            raise ValueError(f"run={folder}: a file, not a run folder; give ckpt_path={folder} to show a checkpoint file")
        if is_run(folder):
            found.append(best_checkpoint(folder))
            continue
        runs, skipped = find_runs(folder), []
        if not runs:
            raise ValueError(f"run={folder}: neither a capgen-train run folder nor a folder holding any ("
                             f"{not_a_run(folder)}); give a run folder, a sweep folder, or ckpt_path=<checkpoint>")
        for run in runs:  # a sweep's job that failed or is still running has no best checkpoint yet: the others are shown
            try:
                found.append(best_checkpoint(run))
            except (ValueError, FileNotFoundError) as e:
                skipped.append(str(e))
                log.warning("left out: %s", e)
        if len(skipped) == len(runs):
            raise ValueError(f"run={folder}: none of its {len(runs)} runs has a best checkpoint; the first: {skipped[0]}")
    return found


def load_served_models(cfg: DictConfig, paths: list[Path] | None = None) -> list[ServedModel]:
    """Every checkpoint of `paths` (default: checkpoint_paths(cfg)) on cfg.device, as
    capgen-caption loads one; a checkpoint that does not load stops the command with its
    error (naming the file)."""
    device = resolve_device(cfg.device)
    paths = checkpoint_paths(cfg) if paths is None else paths
    if is_ensemble(cfg) and len(paths) > 1:  # a list of one, ckpt_path=[a]: the checkpoint itself
        return [_served_ensemble(cfg, paths, device)]
    models = []
    for path in paths:
        module = load_module(str(path), device, encoder_settings(cfg))
        size = cfg.image_size or checkpoint_image_size(str(path), module.trained_on.image_size if module.trained_on else None)
        if size is None:
            size = DEFAULT_IMAGE_SIZE
            log.warning("%s: the training image size is unknown (the checkpoint, written by an earlier capgen, does not "
                        "record it, and no saved run config is beside it): resizing to %d; set image_size=... to match "
                        "training", path, size)
        model = run_choice(str(path), "model") or type(module.net.decoder).__name__
        settings = command_settings(cfg, module.decoding["test"], module.vocab.max_len)
        models.append(ServedModel(model, path, module, size, settings, module.trained_on))
    return models


def _served_ensemble(cfg: DictConfig, paths: list[Path], device: str) -> ServedModel:
    """The ensemble of `paths` as one column; its image size, test decode and training data
    are the first checkpoint's (capgen.lightning.inference)."""
    module = load_checkpoints([str(p) for p in paths], device, encoder_settings(cfg))
    if module.net.attention_note:
        log.warning("the ensemble shows no attention: %s", module.net.attention_note)
    first = module.trained_on.image_size if module.trained_on else None
    size = cfg.image_size or checkpoint_image_size(str(paths[0]), first) or DEFAULT_IMAGE_SIZE
    names = [run_choice(str(p), "model") or type(m.decoder).__name__ for p, m in zip(paths, module.net.members)]
    settings = command_settings(cfg, module.decoding["test"], module.vocab.max_len)
    return ServedModel(f"ensemble of {' + '.join(names)}", paths[0], module, size, settings, module.trained_on,
                       members=tuple(paths))


# ----- pictures -------------------------------------------------------------------------------
def read_picture(path: str | Path | None, name: str | None = None) -> np.ndarray:
    """An uploaded file as (H, W, 3) uint8 RGB at its full size (capgen.data.images.load_rgb);
    a BadSampleError naming the file (`name`: as it was uploaded; else the file's own name,
    not the server's folder) and the fix when it is none."""
    if path is None:
        raise BadSampleError("no picture", "nothing was uploaded", "upload a picture or pick an example")
    name = name or Path(path).name
    try:
        return load_rgb(path, fix=FIX_UPLOAD)
    except BadSampleError as e:
        if isinstance(e.__cause__, Image.DecompressionBombError):
            raise BadSampleError(name, f"too large to decode safely ({e.__cause__})",
                                 "shrink it below that many pixels and upload it again") from None
        raise BadSampleError(name, e.reason, FIX_UPLOAD) from None


def example_pictures(models: list[ServedModel], out: Path, n: int = 6) -> list[Path]:
    """n scenes of the built-in shapes data's test split, as PNGs in `out`, so that the page
    has pictures to try offline. Drawn at the largest training side of the checkpoints, with
    the data seed of the first that was trained on shapes (scenes its training never saw)."""
    seed = 0
    for c in models:
        source = (run_config(str(c.path)) or {}).get("data", {}).get("source", {})
        if "ShapesSource" in str(source.get("_target_", "")):
            seed = int(source.get("seed", 0))
            break
    shapes = ShapesSource("test", seed=seed, sizes={"test": n}, image_size=max(c.image_size for c in models))
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = out / f"{EXAMPLE_PREFIX}{i}.png"
        Image.fromarray(shapes.image(i)).save(path)
        paths.append(path)
    return paths


# ----- decoding -------------------------------------------------------------------------------
def page_settings(base: DecodeSettings, method: str, beam_size: int, n_best: int, temperature: float, top_p: float,
                  seed: int) -> DecodeSettings:
    """The page's choices as DecodeSettings: its method with the keys that method reads, the
    constraints (min_len, max_len, no_repeat_ngram_size, suppress_unk) and the settings the
    page has no control for (length_penalty, top_k) taken from `base`, the command's decode
    settings, where its method reads them too. Errors name decode.<key>=<value> (the page
    labels each control with its key)."""
    if method not in PAGE_METHODS:
        raise ValueError(f"decode.method={method!r}: the page offers {', '.join(PAGE_METHODS)}")
    values = {k: getattr(base, k) for k in CONSTRAINT_KEYS}
    values.update(method=method, n_best=_whole(n_best))
    if method in BEAM_METHODS:
        penalty = base.length_penalty if base.method in BEAM_METHODS else 0.0
        values.update(beam_size=_whole(beam_size), length_penalty=penalty)
    elif method == "sample":
        values.update(temperature=temperature, top_p=top_p, seed=_whole(seed), top_k=base.top_k)
    return DecodeSettings.from_config(values)


def _whole(value):
    """A whole number as an int (a page's slider or number box may give 3.0); anything else as given,
    for DecodeSettings' own check to name."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


_requests = itertools.count(1)  # numbers each captioned picture's files in the output folder


def caption_picture(served: ServedModel, picture: np.ndarray, settings: DecodeSettings, out: Path,
                    figure_size: int = 320, frame_ms: int = 800) -> Captioned:
    """Caption `picture` (H, W, 3) uint8, any size, with one checkpoint: squashed to the
    side it was trained on, as capgen-caption reads a file (load_rgb), decoded by the
    module's generate (capgen.models.search.decode), with sampling drawing from a
    generator seeded with settings.seed, so that the same choices give the same captions.
    For attention models the figures are drawn on the picture with its longer side
    `figure_size` and written to `out` (capgen.viz.draw_attention)."""
    module = served.module
    size = served.image_size
    pixels = np.asarray(Image.fromarray(picture).resize((size, size), Image.Resampling.BILINEAR))  # (S, S, 3)
    images = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].to(module.device)  # (1, 3, S, S)
    draws = torch.Generator(device=module.device).manual_seed(settings.seed)
    row, alphas = caption_row(module.vocab, module.generate(images, settings, draws), 0)
    checkpoint = [str(p) for p in served.members] if served.members else str(served.path)
    row = {"checkpoint": checkpoint, "decode": settings.describe(), **row}
    if alphas is None or not row["words"]:
        return Captioned(row, [], None, None)
    stem = f"{next(_requests):04d}_{'ensemble_' if served.members else ''}{served.path.stem}_attention"
    png, gif = out / f"{stem}.png", out / f"{stem}.gif"
    try:
        out.mkdir(parents=True, exist_ok=True)
        frames = draw_attention(png, gif, resize_longest(picture, figure_size), row["words"], alphas,
                                module.net.grid, row["word_probs"], frame_ms)
    except Exception as e:  # the caption is made: the page shows it, and why its figures are missing
        row["figure_error"] = (f"the attention figures could not be drawn into {out} "
                               f"({type(e).__name__}: {' '.join(str(e).split())}); the caption is kept")
        log.error("%s: %s", served.shown_path, row["figure_error"])
        return Captioned(row, [], None, None)
    return Captioned(row, frames, gif, png)

