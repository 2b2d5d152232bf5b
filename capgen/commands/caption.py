"""Captioning your own images with a checkpoint (capgen-caption).

    capgen-caption ckpt_path=outputs/train/<run>/checkpoints/last.ckpt images=photos/
    capgen-caption ckpt_path=... images='photos/*.jpg' decode=greedy device=cuda
    capgen-caption ckpt_path=... images=photos/ decode=sample decode.n_best=5

An ensemble, `ckpt_path=[a.ckpt,b.ckpt]`, captions with the normalised geometric mean of the
checkpoints' word distributions (capgen.models.ensemble; every decoding method); the image
size and the run's notes are the first checkpoint's, and the attention figures show the mean
of the attending members' maps.

`images` is an image file, a folder (its images, not sub-folders) or a glob pattern (`**`
reaching every level below; quote it for the shell). What it names but leaves out (sub-folders,
files without an image extension) is named in one warning. Each
image is read as RGB whatever its format and resized to the side the model was trained on
(image_size, see conf/caption.yaml: the checkpoint records it). Decoding: beam 3 unless `decode=` / `decode.*` say
otherwise (capgen.config.decode_group). Prints `path<TAB>caption` per caption on stdout (n_best
lines per image, best first) and writes into the run dir (outputs/caption/<time>, named on
stderr):
    captions.jsonl                     {path, caption, words, word_probs, logprob} per image, of
                                       its first caption, plus {captions, logprobs} of all n_best
    <name>_attention.png, <name>_attention.gif   attention models: one panel / frame per word
                                       of the first caption (<name> cut, plus a hash, where a
                                       file name would pass 255 bytes)

An image that cannot be read does not stop the others: its row is {path, error} (a
one-paragraph message, also on stderr), and a last stderr line says `N of M images failed,
listed in <run dir>/captions.jsonl`. An image whose figures cannot be drawn keeps its caption
(printed and in its row) and its row adds `figure_error` (the message, also on stderr at once),
and a last stderr line counts those. Either way capgen-caption then exits with status 1. A bad
setting or checkpoint stops the command before it writes anything.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from ..config.checks import check_numbers, check_values
from ..config.decode_group import command_settings
from ..data.images import FIX_GIVEN, BadSampleError, load_rgb
from ..lightning.hardware import encoder_settings
from ..lightning.inference import caption_row, checkpoint_list, load_checkpoints, resolve_device
from ..models.search import DecodeSettings
from ..runs.folders import DEFAULT_IMAGE_SIZE, checkpoint_image_size
from ..viz import draw_attention, resize_longest
from ..vocab import shown
from .failure import one_paragraph_on_failure

log = logging.getLogger(__name__)

# What PIL reads and cameras/web pages produce; matched case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def find_images(spec: str) -> list[Path]:
    """The image files `spec` names (a file, a folder, or a glob), sorted; errors say what was
    found instead and which extensions are accepted."""
    accepted = ", ".join(IMAGE_EXTENSIONS)

    def dangling(p: Path) -> bool:  # kept, so that its row says so (load_rgb), rather than left out unsaid
        return p.is_symlink() and not p.exists()

    def is_image(p: Path) -> bool:
        return (p.is_file() or dangling(p)) and p.suffix.lower() in IMAGE_EXTENSIONS

    p = Path(spec).expanduser()
    if p.is_file() or dangling(p):
        if not is_image(p):
            raise ValueError(f"images={spec}: not an image file (extension {p.suffix or 'none'!r}); accepted: {accepted}")
        return [p]
    if p.is_dir():
        found = sorted(f for f in p.iterdir() if is_image(f))
        if not found:
            others = sorted(f.name for f in p.iterdir())
            what = f"{len(others)} other entries ({', '.join(others[:5])}{', ...' if len(others) > 5 else ''})" if others else "nothing"
            raise ValueError(f"images={spec}: no images in this folder, found {what}; accepted extensions: {accepted}")
        return found
    # recursive: `photos/**/*.jpg` reaches every level below photos/, as in a shell with globstar.
    matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
    if not matches:
        raise FileNotFoundError(f"images={spec}: no such file or folder, and no file matches it as a pattern")
    found = [m for m in matches if is_image(m)]
    if not found:
        raise ValueError(
            f"images={spec}: the pattern matches {len(matches)} paths ({', '.join(map(str, matches[:5]))}) but no "
            f"image files; accepted extensions: {accepted}"
        )
    return found


def left_out(spec: str, found: list[Path]) -> str | None:
    """What `images=spec` names but find_images leaves out, as one line: a folder's sub-folders
    and its files without an image extension, a pattern's matches that are not image files;
    None when nothing is."""
    p = Path(spec).expanduser()
    if p.is_dir():
        named = list(p.iterdir())
    elif p.is_file():
        return None
    else:
        named = [Path(m) for m in glob.glob(str(p), recursive=True)]
    kept = set(found)
    # A pattern's folders are not left out: what it matches inside them is the pattern's business.
    folders = sorted(f.name + "/" for f in named if f.is_dir()) if p.is_dir() else []
    files = sorted(f.name for f in named if f not in kept and not f.is_dir())

    def some(names: list[str]) -> str:
        return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")

    parts = []
    if folders:
        # Every file below p, whatever its extension: what is no image is named again then.
        parts.append(f"{len(folders)} sub-folder{'s' * (len(folders) > 1)} ({some(folders)}; their images too: "
                     f"images='{p}/**/*')")
    if files:
        parts.append(f"{len(files)} file{'s' * (len(files) > 1)} without an image extension ({some(files)}; accepted: "
                     f"{', '.join(IMAGE_EXTENSIONS)})")
    return f"left out of images={spec}: {'; '.join(parts)}" if parts else None


def _display(path: Path, longest: int) -> np.ndarray:
    """The image at its own aspect ratio with its longer side `longest`, for the figures
    (the model sees it squashed to a square; its grid still covers the whole picture)."""
    return resize_longest(load_rgb(path), longest)


# A file name's limit in bytes (NAME_MAX on Linux and macOS), and the longer figure suffix.
NAME_MAX = 255
FIGURE_SUFFIX = "_attention.png"  # .gif: as long
STEM_MAX = NAME_MAX - len(FIGURE_SUFFIX)


def _fitting(stem: str) -> str:
    """`stem`, or when stem + FIGURE_SUFFIX exceeds NAME_MAX bytes (a legal 245-byte image
    name, or about 80 CJK characters), its first characters plus 8 hex digits of its hash,
    so that two long names cut alike still differ."""
    if len(os.fsencode(stem)) <= STEM_MAX:
        return stem
    tag = "-" + hashlib.sha256(os.fsencode(stem)).hexdigest()[:8]
    cut = stem
    while len(os.fsencode(cut + tag)) > STEM_MAX:  # whole characters: a cut never splits one's bytes
        cut = cut[:-1]
    return cut + tag


def _unique_stem(path: Path, taken: set[str]) -> str:
    """A file-name stem for the image's figures that fits a file name; a.jpg and a.png do not
    overwrite each other."""
    stem, n = _fitting(path.stem), 2
    while stem in taken:
        stem, n = _fitting(f"{path.stem}_{n}"), n + 1
    taken.add(stem)
    if len(os.fsencode(path.stem)) > STEM_MAX:  # the figures' names no longer show the image's whole name
        log.info("%s: its attention figures are %s_attention.png and .gif (its name cut to fit a file name's "
                 "%d bytes)", path, stem, NAME_MAX)
    return stem


# Settings that act inside each image's own error handling: checked first, since a bad one
# would otherwise read as every image failing. None (image_size's default) passes.
POSITIVE_SETTINGS = {
    "image_size": "pixels, or null for the training run's",
    "batch_size": "images per forward pass",
    "figure_size": "pixels on the figures' longer side",
    "gif_frame_ms": "milliseconds per GIF frame",
}


def check_caption_config(cfg: DictConfig) -> None:
    """Raise a ValueError naming the first of POSITIVE_SETTINGS that is not a positive int, or
    a switch that is not true/false."""
    check_numbers(cfg)
    check_values(cfg, {"figures": bool})
    for key, what in POSITIVE_SETTINGS.items():
        value = cfg.get(key)
        if key == "image_size" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}={value}: give a positive whole number ({what}), e.g. {key}=32")


def _one_line(err: Exception) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def _failed(path: Path, message: str) -> dict:
    """The row of an image that got no caption; its error also goes to stderr at once."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return {"path": str(path), "error": message}


def _draw(cfg: DictConfig, out: Path, stem: str, path: Path, words, alphas, grid: int, probs) -> dict:
    """The image's attention PNG and GIF; {png, gif} file names for its row."""
    png, gif = out / f"{stem}_attention.png", out / f"{stem}_attention.gif"
    draw_attention(png, gif, _display(path, cfg.figure_size), words, alphas, grid, probs, cfg.gif_frame_ms)
    return {"png": png.name, "gif": gif.name}


def _caption_chunk(cfg: DictConfig, module, decode: DecodeSettings, draws: torch.Generator, paths: list[Path],
                   size: int, out: Path, taken: set[str]) -> list[dict]:
    """The rows of one batch of images, in order: an image that cannot be read gets an error
    row, one whose figures cannot be drawn keeps its caption with a figure_error, and the rest
    go on. The model's own errors concern every image alike (a setting, the checkpoint) and
    stop the command."""
    vocab, net = module.vocab, module.net
    rows: dict[int, dict] = {}
    readable, pixels = [], []
    for i, path in enumerate(paths):
        try:
            pixels.append(load_rgb(path, size, FIX_GIVEN))  # (S, S, 3) uint8
            readable.append(i)
        except BadSampleError as e:
            rows[i] = _failed(path, " ".join(str(e).split()))
    if readable:
        images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).to(module.device)  # (B, 3, S, S)
        every = module.generate(images, decode, draws)
    for k, i in enumerate(readable):
        path = paths[i]
        caption, alphas = caption_row(vocab, every, k)
        row = {"path": str(path), **caption}
        words, probs = row["words"], row["word_probs"]
        if cfg.figures and alphas is not None and words:
            try:
                row.update(_draw(cfg, out, _unique_stem(path, taken), path, words, alphas, net.grid, probs))
            except Exception as e:  # any error of one image's figures: in its row (its caption kept), and the exit status
                row["figure_error"] = (f"{path}: its attention figures could not be drawn ({_one_line(e)}); its caption "
                                       "is kept; give figures=false to caption without figures")
                print(f"error: {row['figure_error']}", file=sys.stderr, flush=True)
        cut = row.get("cut_captions", [0] if row.get("cut") else [])
        for j, caption in enumerate(row.get("captions", [row["caption"]])):
            print(f"{path}\t{shown(caption, j in cut)}", flush=True)
        rows[i] = row
    return [rows[i] for i in range(len(paths))]


def caption_images(cfg: DictConfig) -> list[dict]:
    """Caption every image cfg.images names; writes the files in the module docstring.
    An image that cannot be read gets a row {path, error} instead of a caption; one whose
    figures cannot be drawn keeps its caption, its row with a figure_error."""
    paths = find_images(str(cfg.images))
    check_caption_config(cfg)
    skipped = left_out(str(cfg.images), paths)
    if skipped:  # said, so that "N images" is not read as everything the folder holds
        log.warning("%s", skipped)
    device = resolve_device(cfg.device)
    ckpts = checkpoint_list(cfg.ckpt_path)  # several: an ensemble, with the first one's run settings
    module = load_checkpoints(ckpts, device, encoder_settings(cfg))
    if len(ckpts) > 1:
        log.info("captioning with the ensemble of %d checkpoints: %s", len(ckpts), ", ".join(ckpts))
        if module.net.attention_note:
            log.warning("the ensemble draws no attention figures: %s", module.net.attention_note)
    note = module.trained_on.photo_note(ckpts[0]) if module.trained_on else None
    if note:  # the images given here are the user's own: most likely photographs
        log.warning("%s", note)
    decode = command_settings(cfg, module.decoding["test"], module.vocab.max_len)
    draws = torch.Generator(device=module.device).manual_seed(decode.seed)  # one stream for every image
    # Each checkpoint's training image size: recorded in it, else (an earlier capgen's) its run folder's.
    trained = module.members_trained_on or (module.trained_on,)
    each = [checkpoint_image_size(c, t.image_size if t else None) for c, t in zip(ckpts, trained)]
    size = cfg.image_size or each[0]
    if not cfg.image_size and len(set(each)) > 1:
        log.warning("the ensemble's checkpoints were trained on images of different sizes (%s): every member sees "
                    "them at the first one's, %s; set image_size=... to choose", sorted(map(str, set(each))), size)
    if size is None:
        size = DEFAULT_IMAGE_SIZE
        log.warning("the training image size is unknown (the checkpoint, written by an earlier capgen, does not record "
                    "it, and no saved run config with data.source.image_size is beside it): resizing to %d; set "
                    "image_size=... to match training", size)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    rows, taken = [], set()
    for start in range(0, len(paths), cfg.batch_size):
        rows += _caption_chunk(cfg, module, decode, draws, paths[start : start + cfg.batch_size], size, out, taken)
    with open(out / "captions.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    failed = sum("error" in row for row in rows)
    no_figures = sum("figure_error" in row for row in rows)
    captioned = len(rows) - failed
    if no_figures:
        what = f"captions for {captioned} images and attention figures for {captioned - no_figures}"
    elif cfg.figures and module.net.has_attention:
        what = f"captions and attention figures for {captioned} images"
    else:
        what = f"captions for {captioned} images"
    print(f"wrote {what} to {out}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(rows)} images failed, listed in {out / 'captions.jsonl'}", file=sys.stderr)
    if no_figures:
        print(f"{no_figures} of {len(rows)} images have their caption but no attention figures (drawing them failed: "
              f"figure_error in {out / 'captions.jsonl'})", file=sys.stderr)
    return rows


def run(cfg: DictConfig) -> None:
    """capgen-caption's Hydra job: caption_images, a failure ended in one paragraph. Images that
    failed, or whose figures failed, are in captions.jsonl and on stderr; scripts learn of them
    from the exit status 1 (SystemExit passes through Hydra, which only reports Exceptions)."""
    with one_paragraph_on_failure("capgen-caption"):
        rows = caption_images(cfg)
    if any("error" in row or "figure_error" in row for row in rows):
        raise SystemExit(1)
