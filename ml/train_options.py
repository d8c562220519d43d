"""TrainOptions: every setting of a training run, each declared once with its command-line flag.

`trashmap ml train` and `trashmap ml cv` build their click options from these fields (see
`click_options`). Only click and the standard library are imported here, so the `trashmap`
command starts without torch.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import click

from trashmap.settings import MAX_SLICE_OVERLAP

EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
OUT_DIR = click.Path(file_okay=False, path_type=Path)

# Kept in step with ml.detector.ARCHITECTURES (a test checks); listed here to avoid torch.
Architecture = Literal[
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)

Command = TypeVar("Command", bound=Callable[..., Any])


@dataclass(frozen=True)
class Flag:
    """How a TrainOptions field is given on the command line.

    The click type follows the field's type: a Literal's values are the choices, `min` and
    `max` make a range; `type` overrides it. The flag defaults to --field-name, and to
    --field-name/--no-field-name for a bool.
    """

    help: str
    flags: str | None = None
    type: click.ParamType | None = None
    min: int | None = None
    max: int | None = None
    # `cv` sets these for each fold, so only `train` offers them.
    per_fold: bool = False


@dataclass(frozen=True)
class TrainOptions:
    """Everything `trashmap ml train` accepts; `trashmap ml cv` passes the same to each fold."""

    annotations: Annotated[
        Path, Flag("COCO file of the training images.", type=EXISTING_FILE, per_fold=True)
    ]
    images: Annotated[
        Path,
        Flag(
            "Folder the annotations' file_name paths are relative to.",
            type=EXISTING_DIR,
            per_fold=True,
        ),
    ]
    out: Annotated[
        Path,
        Flag(
            "Run folder: best.pt, last.pt, log.csv, tensorboard/, val_images/.",
            type=OUT_DIR,
            per_fold=True,
        ),
    ]
    extra_annotations: Annotated[
        Path | None,
        Flag(
            "A second COCO file merged into --annotations before anything is split (e.g. a "
            "`trashmap dataset export` with TACO): categories are matched by name and mapped "
            "by --classes, each image stays whole, its file names are relative to its folder.",
            type=EXISTING_FILE,
        ),
    ] = None
    val_annotations: Annotated[
        Path | None,
        Flag(
            "COCO file that picks the best epoch (default: a stratified "
            "--val-fraction of --annotations).",
            type=EXISTING_FILE,
            per_fold=True,
        ),
    ] = None
    test_annotations: Annotated[
        Path | None,
        Flag(
            "COCO file scored once with the chosen checkpoint; never used to choose.",
            type=EXISTING_FILE,
            per_fold=True,
        ),
    ] = None
    model: Annotated[Architecture, Flag("torchvision Faster R-CNN architecture.")] = (
        "fasterrcnn_resnet50_fpn_v2"
    )
    classes: Annotated[
        str,
        Flag(
            "Class set: taco15, taco10, supercategories, litter, 'all' (the "
            "file's own categories) or a path to a class-set .json."
        ),
    ] = "taco15"
    weights: Annotated[
        str,
        Flag(
            "Start from 'none' (random), 'torchvision' (COCO weights via the "
            "torchvision weights API) or a path to a local weights file."
        ),
    ] = "torchvision"
    trainable_backbone_layers: Annotated[
        int | None,
        Flag(
            "From pretrained weights (torchvision or a file): backbone stages left "
            "trainable, the rest frozen with their BatchNorm (default 3; from scratch all train).",
            min=0,
            max=6,
        ),
    ] = None
    epochs: Annotated[int, Flag("Passes over the training images.", min=1)] = 20
    batch_size: Annotated[int, Flag("Images per step per process.", min=1)] = 4
    accumulate: Annotated[
        int, Flag("Batches whose gradients add up before one optimizer step.", min=1)
    ] = 1
    optimizer: Annotated[Literal["adamw", "sgd"], Flag("AdamW, or SGD with momentum.")] = "adamw"
    lr: Annotated[float, Flag("Learning rate.")] = 1e-4
    weight_decay: Annotated[float, Flag("Weight decay.")] = 1e-4
    momentum: Annotated[float, Flag("SGD momentum.")] = 0.9
    warmup_iters: Annotated[
        int,
        Flag(
            "Optimizer steps of linear learning-rate warm-up (SGD usually wants a few hundred).",
            min=0,
        ),
    ] = 0
    lr_patience: Annotated[
        int,
        Flag(
            "Epochs without validation gain before ReduceLROnPlateau cuts the learning rate.",
            min=0,
        ),
    ] = 3
    lr_factor: Annotated[float, Flag("ReduceLROnPlateau's cut factor.")] = 0.1
    schedule: Annotated[
        Literal["plateau", "cosine"],
        Flag(
            "Learning-rate schedule: plateau (ReduceLROnPlateau on the validation metric, "
            "after --warmup-iters) or cosine (linear warm-up over --warmup-iters, then a "
            "cosine from --lr to --lr-floor x --lr over the remaining optimizer steps).",
        ),
    ] = "plateau"
    lr_floor: Annotated[
        float,
        Flag("Cosine schedule: the last step's learning rate, as a share of --lr.", min=0, max=1),
    ] = 0.01
    clip_grad: Annotated[
        float | None, Flag("Clip the gradient norm to this value (off by default).")
    ] = None
    ema: Annotated[
        float,
        Flag(
            "Keep an exponential moving average of the weights (and BatchNorm statistics) "
            "with this decay per optimizer step, e.g. 0.999; validation, the test split and "
            "the saved checkpoints then use it (0: off). 1 / (1 - decay) steps should be "
            "well below the run's total.",
            min=0,
            max=1,
        ),
    ] = 0.0
    precise_bn: Annotated[
        int,
        Flag(
            "Before each validation, recompute BatchNorm statistics over "
            "this many training batches (0: off). Helps models trained "
            "from scratch, whose running averages lag behind.",
            min=0,
        ),
    ] = 0
    select_on: Annotated[
        Literal["map", "map50"], Flag("Validation metric that picks the checkpoint kept.")
    ] = "map"
    val_fraction: Annotated[
        float,
        Flag(
            "Share of the training images held out to pick the best "
            "epoch, when no validation file is given."
        ),
    ] = 0.15
    min_size: Annotated[
        tuple[int, ...],
        Flag(
            "Shorter image side fed to the model. Repeat for multi-scale training "
            "(--min-size 640 --min-size 800): each training image gets one of them at "
            "random; validation, the test split, the checkpoint and the workers use the largest.",
            min=32,
        ),
    ] = (800,)
    max_size: Annotated[int, Flag("Upper bound of the longer image side.", min=32)] = 1333
    hflip: Annotated[float, Flag("Probability of a horizontal flip.", min=0, max=1)] = 0.5
    vflip: Annotated[
        float, Flag("Probability of a vertical flip (litter seen from above).", min=0, max=1)
    ] = 0.0
    scale_jitter: Annotated[
        float,
        Flag(
            "Scale augmentation: 0.3 zooms out up to 1.3x or crops in "
            "to 1/1.3 of a side. 0 turns it off.",
            min=0,
        ),
    ] = 0.0
    photometric: Annotated[
        float,
        Flag("Probability of brightness/contrast/saturation/hue jitter.", min=0, max=1),
    ] = 0.0
    crop_size: Annotated[
        int,
        Flag(
            "Train on N x N tiles cut from the photo at its own resolution (around a random "
            "box, or anywhere: --crop-anywhere), then resized as usual, so small litter is "
            "learnt 3-4x larger. The checkpoint slices at N unless --slice names another side. "
            "0: whole photos.",
            min=0,
        ),
    ] = 0
    crop_anywhere: Annotated[
        float,
        Flag("With --crop-size: share of tiles placed anywhere, not around a box.", min=0, max=1),
    ] = 0.25
    rois_per_image: Annotated[
        int | None,
        Flag("Boxes sampled per image for the box head in training (torchvision: 512).", min=1),
    ] = None
    rpn_proposals: Annotated[
        int | None,
        Flag("RPN proposals kept per image in training (torchvision: 2000).", min=1),
    ] = None
    bn: Annotated[
        Literal["auto", "frozen", "train", "sync"],
        Flag(
            "BatchNorm policy: frozen (statistics and scales fixed), train, or sync "
            "(SyncBatchNorm across DDP processes). auto: frozen from pretrained weights "
            "below 8 images per process, else train (sync under DDP on CUDA).",
        ),
    ] = "auto"
    other_litter: Annotated[
        bool,
        Flag(
            "Boxes of categories outside the class set train as one extra 'other litter' "
            "class (never background); scores leave that class out and treat its boxes "
            "as ignore regions. --no-other-litter drops the images holding such boxes.",
            flags="--other-litter/--no-other-litter",
        ),
    ] = True
    keep_empty: Annotated[
        bool,
        Flag(
            "Keep images with no box of the class set as negatives.",
            flags="--keep-empty/--drop-empty",
        ),
    ] = True
    repeat_threshold: Annotated[
        float,
        Flag(
            "Repeat-factor sampling (LVIS): an image whose rarest class is in a share f < T "
            "of the training images is seen about sqrt(T / f) times per epoch (0: off). "
            "LVIS used 0.001 over 1203 classes; on TACO's taco15, 0.1 repeats a third of "
            "the images, the rarest classes' 1.5x.",
            min=0,
            max=1,
        ),
    ] = 0.0
    device: Annotated[str, Flag("auto, cpu, cuda or cuda:N (torchrun sets one per process).")] = (
        "auto"
    )
    amp: Annotated[bool, Flag("Mixed precision with torch.amp (CUDA only).")] = True
    workers: Annotated[int, Flag("DataLoader worker processes.", min=0)] = 4
    threads: Annotated[
        int | None, Flag("CPU threads for torch (default: torch's choice).", min=1)
    ] = None
    seed: Annotated[int, Flag("Seed of splits, folds, initialisation and augmentation.")] = 42
    resume: Annotated[bool, Flag("Continue from OUT/last.pt if it exists.", flags="--resume")] = (
        False
    )
    val_images: Annotated[
        int, Flag("Validation images saved with their boxes each epoch.", min=0)
    ] = 4
    score_threshold: Annotated[
        float | None,
        Flag(
            "Score threshold stored in the checkpoint for workers (default: the one with "
            "the best F1 on the validation split, at IoU 0.5).",
            min=0,
            max=1,
        ),
    ] = None
    slice_size: Annotated[
        int | None,
        Flag(
            "Tile side (original pixels) stored in the checkpoint for sliced inference: "
            "overlapping native-resolution tiles plus the whole photo (0: off; default: "
            "the --crop-size side when training on crops, else off).",
            flags="--slice",
            min=0,
        ),
    ] = None
    slice_overlap: Annotated[
        float,
        Flag(
            "Overlap of neighbouring tiles, as a share of the side.", min=0, max=MAX_SLICE_OVERLAP
        ),
    ] = 0.2
    name: Annotated[str, Flag("Model name.")] = "trashmap"
    version: Annotated[str | None, Flag("Model version (default: start time, UTC).")] = None
    tensorboard: Annotated[bool, Flag("Write TensorBoard logs to OUT/tensorboard.")] = True
    progress: Annotated[bool, Flag("Show progress bars.")] = True

    def __post_init__(self) -> None:
        # One size or several, in increasing order: the model evaluates at the last one.
        sizes = (self.min_size,) if isinstance(self.min_size, int) else self.min_size
        if not sizes:
            raise ValueError("min_size needs at least one size")
        object.__setattr__(self, "min_size", tuple(sorted(set(sizes))))

    @property
    def input_size(self) -> tuple[int, int]:
        """(min_size, max_size) of evaluation, the checkpoint and the workers: the largest size."""
        return self.min_size[-1], self.max_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, stored in checkpoints."""
        values = dataclasses.asdict(self).items()
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in values}


def _flag(hint: Any) -> Flag:
    return next(m for m in get_args(hint)[1:] if isinstance(m, Flag))


def _value_type(hint: Any) -> Any:
    """The type inside Annotated[...], without None."""
    base = get_args(hint)[0]
    if get_origin(base) in (Union, types.UnionType):
        (base,) = [arg for arg in get_args(base) if arg is not types.NoneType]
    return base


_HINTS = get_type_hints(TrainOptions, include_extras=True)
# Field name -> how it is given on the command line, in declaration order.
FLAGS: dict[str, Flag] = {name: _flag(hint) for name, hint in _HINTS.items()}


def _click_type(flag: Flag, base: Any) -> Any:
    if flag.type is not None:
        return flag.type
    if get_origin(base) is Literal:
        return click.Choice(get_args(base))
    if flag.min is not None or flag.max is not None:
        if base is int:
            return click.IntRange(flag.min, flag.max)
        return click.FloatRange(flag.min, flag.max)
    return base


def _option(field: dataclasses.Field[Any]) -> Callable[[Command], Command]:
    flag, base = FLAGS[field.name], _value_type(_HINTS[field.name])
    kwargs: dict[str, Any] = {"help": flag.help, "show_default": True}
    if field.default is dataclasses.MISSING:
        kwargs["required"] = True
    else:
        kwargs["default"] = field.default
    dashed = "--" + field.name.replace("_", "-")
    if get_origin(base) is tuple:  # a repeatable flag: each use adds one value
        kwargs["multiple"] = True
        (base, _) = get_args(base)
    if base is bool:
        kwargs["is_flag"] = True
        declared = flag.flags or f"{dashed}/--no-{dashed[2:]}"
    else:
        kwargs["type"] = _click_type(flag, base)
        declared = flag.flags or dashed
    # The field name as click's parameter name, however the flag is spelt.
    return click.option(declared, field.name, **kwargs)


def click_options(*, per_fold: bool = True) -> Callable[[Command], Command]:
    """Decorate a command with one click option per TrainOptions field, in field order.

    `cv` passes per_fold=False: it sets the data fields of each fold itself.
    """
    options = [
        _option(field)
        for field in dataclasses.fields(TrainOptions)
        if per_fold or not FLAGS[field.name].per_fold
    ]

    def decorate(command: Command) -> Command:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
