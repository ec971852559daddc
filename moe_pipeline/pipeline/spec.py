"""The pipeline schema: pydantic v2 models of one pipeline YAML file.

This module is the authority on what a pipeline file may say. It only validates shapes
and values of single fields; references between experts and sources are checked by
`graph`, and reading YAML is `loader`'s job. It must not import torch, mlflow or yaml.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
IMPORT_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"
EXPERT_OUTPUTS = ("logits", "probs", "embedding")

ImportPath = Annotated[str, Field(pattern=IMPORT_PATH_PATTERN, max_length=200, description="`package.module:name`")]
# Bounds on sizes a machine cannot hold or a file system cannot name: a value outside them
# is a schema error with FILE:LINE:COL, not a traceback (or a 32 GB allocation) later.
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="0 .. 2^32-1 (numpy's seed range)")]
Width = Annotated[int, Field(ge=1, le=65_536)]


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------- sources


class Split(Strict):
    """Fractions of the rows held out for validation and test; the rest is train."""

    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, ge=0.0, lt=1.0)

    @field_validator("test")
    @classmethod
    def _leaves_train_rows(cls, test: float, info: Any) -> float:
        if info.data.get("val", 0.0) + test >= 0.9:
            raise ValueError("val + test must leave at least 10% of rows for training")
        return test


class DigitsSource(Strict):
    """scikit-learn's bundled 8x8 digits (1797 images); nothing is downloaded."""

    loader: Literal["sklearn.digits"]
    split: Split = Split()

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields this source gives: the 8x8 image and its label."""
        return ("image", "label")


MAX_PLANTED_CELLS = 500_000_000  # rows x columns of a synthetic source (2 GiB as float32)


class PlantedSource(Strict):
    """Seeded synthetic data whose target depends only on the `informative` coordinates.

    task `signs`: class = binary number formed by sign(x_i) over the informative i.
    task `gated_product`: y = prod(x_i, i in informative[:-1]) * [x_informative[-1] > 0].
    """

    loader: Literal["synthetic.planted"]
    n: int = Field(2000, ge=20, le=10_000_000)
    d: int = Field(30, ge=2, le=100_000)
    informative: list[int] = Field(default_factory=lambda: [0, 1], min_length=1)
    task: Literal["signs", "gated_product"] = "signs"
    noise: float = Field(0.0, ge=0.0)
    seed: Seed = 0
    split: Split = Split()

    @model_validator(mode="after")
    def _fits(self) -> "PlantedSource":
        if self.n * self.d > MAX_PLANTED_CELLS:
            raise ValueError(f"{self.n} rows x {self.d} columns is {self.n * self.d:,} values; a planted source "
                             f"holds at most {MAX_PLANTED_CELLS:,} ({MAX_PLANTED_CELLS * 4 / 2**30:.0f} GiB as float32)")
        return self

    @field_validator("informative")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or min(value) < 0:
            raise ValueError("informative coordinates must be distinct, non-negative indices")
        return value

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields this source gives: its features and the planted label."""
        return ("x", "y")


TransformKind = Literal["standardize", "minmax", "onehot"]


class CustomSource(Strict):
    """A `module:function` returning a dict of equally long tensors (or arrays)."""

    loader: ImportPath
    fields: list[Name] = Field(min_length=1, max_length=256)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    split: Split = Split()
    transform: dict[Name, TransformKind] = Field(
        default_factory=dict, description="per field, fitted on the train split only and stored with each version")


class FileSource(Strict):
    """A data file (or folder) of the user's. `path` is relative to the project root, or absolute."""

    path: str = Field(min_length=1, max_length=4096)
    split: Split = Split()
    transform: dict[Name, TransformKind] = Field(
        default_factory=dict, description="per field, fitted on the train split only and stored with each version")


class TableField(Strict):
    """One field of a table: a group of columns and what they hold."""

    columns: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, max_length=100_000, description="column names or glob patterns (`mean *`); file order is kept")
    kind: Literal["features", "categorical", "numeric"] = Field(
        "features", description="features: float columns, names kept; categorical: one column of classes (names = "
        "the sorted values); numeric: numbers, e.g. a regression target")


class TableSource(FileSource):
    """CSV or parquet. Its fields are column groups (`fields:`), or in the shorthand `label`/`columns`:
    `features` (float32, one column per feature, names kept) and `label` (classes)."""

    loader: Literal["csv", "parquet"]
    label: str | None = Field(None, max_length=256, description="shorthand: the label column -> field `label`; "
                              "class names are its values, sorted")
    columns: list[Annotated[str, Field(max_length=256)]] | None = Field(
        None, min_length=1, max_length=100_000, description="shorthand: feature columns -> field `features` "
        "(default: every other column, in order)")
    groups: dict[Name, TableField] | None = Field(
        None, alias="fields", min_length=1, max_length=256,
        description="named column groups, each a field with a kind: one table feeds many experts")
    delimiter: str = Field(",", min_length=1, max_length=1, description="csv only")

    @model_validator(mode="after")
    def _one_way_to_name_fields(self) -> "TableSource":
        if self.groups is not None and (self.label is not None or self.columns is not None):
            raise ValueError("give either `fields:` (column groups) or the shorthand `label:`/`columns:`, not both")
        return self

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields this source gives: its column groups, then the label, if any."""
        if self.groups is not None:
            return tuple(self.groups)
        return ("features", "label") if self.label else ("features",)


class ArraySource(FileSource):
    """`npz`: one field per array (`fields` lists them; read from the file when absent).
    `npy`: one field named after the source."""

    loader: Literal["npz", "npy"]
    arrays: list[Name] | None = Field(None, alias="fields", max_length=256)

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields this source gives: the arrays its `fields:` names."""
        return tuple(self.arrays or ())


class ImageFolderSource(FileSource):
    """`path/<class>/<image>`: fields `image` (n, c, h, w) in [0, 1] and `label` (class = subfolder name)."""

    loader: Literal["imagefolder"]
    size: tuple[Annotated[int, Field(ge=1, le=4096)], Annotated[int, Field(ge=1, le=4096)]] = Field(
        description="[height, width] every image must have")
    mode: Literal["L", "RGB"] = "L"

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields this source gives: the image and its label (the class folder)."""
        return ("image", "label")


IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})  # an image folder's images
SPLITS = ("train", "val", "test")  # every source's rows are cut into these, in this order
FILE_LOADERS = ("csv", "parquet", "npz", "npy", "imagefolder")
_TAGS = {"sklearn.digits": "sklearn.digits", "synthetic.planted": "synthetic.planted", "csv": "table",
         "parquet": "table", "npz": "array", "npy": "array", "imagefolder": "imagefolder"}


def _source_tag(value: Any) -> str:
    loader = value.get("loader") if isinstance(value, dict) else getattr(value, "loader", None)
    return _TAGS.get(loader, "custom") if isinstance(loader, str) else "custom"


Source = Annotated[
    Union[
        Annotated[DigitsSource, Tag("sklearn.digits")],
        Annotated[PlantedSource, Tag("synthetic.planted")],
        Annotated[TableSource, Tag("table")],
        Annotated[ArraySource, Tag("array")],
        Annotated[ImageFolderSource, Tag("imagefolder")],
        Annotated[CustomSource, Tag("custom")],
    ],
    Discriminator(_source_tag),
]

# ---------------------------------------------------------------- models


class MLPModel(Strict):
    """A multilayer perceptron: `hidden` widths, then the expert's outputs."""

    kind: Literal["mlp"]
    hidden: list[Width] = Field(default_factory=lambda: [64], min_length=1, max_length=32)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class CNNModel(Strict):
    """A small convolutional network for image fields: `channels` per conv block, then `hidden`."""

    kind: Literal["cnn"]
    channels: list[Width] = Field(default_factory=lambda: [8, 16], min_length=1, max_length=16)
    kernel_size: int = Field(3, ge=1, le=31)
    hidden: Width = Field(32, description="width of the embedding layer after the convolutions")


class LinearModel(Strict):
    """One linear layer: the most inspectable expert."""

    kind: Literal["linear"]


class CustomModel(Strict):
    """A `module:Class` of the project's own, built with the input shape, the outputs and `kwargs`."""

    kind: Literal["custom"]
    cls: ImportPath = Field(alias="class", description="`module:Class` of an nn.Module")
    kwargs: dict[str, Any] = Field(default_factory=dict)


ModelSpec = Annotated[Union[MLPModel, CNNModel, LinearModel, CustomModel], Field(discriminator="kind")]

# ---------------------------------------------------------------- experts


class TrainSpec(Strict):
    """How an expert trains: epochs, batch size, optimiser, learning rate, early stopping, seed."""

    epochs: int = Field(20, ge=1, le=100_000)
    batch_size: int = Field(64, ge=1, le=1_048_576)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    patience: int | None = Field(5, ge=1, description="early stopping on validation loss; null disables")
    seed: Seed | None = Field(None, description="defaults to the pipeline seed")
    # One seed used to set both the initial weights and the batch order; these separate the two
    # sources of learning opacity (see `inspect --opacity`). Unset, each follows `seed`.
    init_seed: Seed | None = Field(None, description="seed of the initial weights; defaults to `seed`")
    order_seed: Seed | None = Field(None, description="seed of the batch order; defaults to `seed`")


class CutoffSpec(Strict):
    """Tolerances of the behavioural early cutoff (see DESIGN.md)."""

    max_abs: float = Field(1.0, ge=0.0, description="largest allowed |p_new - p_ref| on one probe output; "
                           "1.0 (the default) sets no limit, since one borderline sample may flip legitimately")
    mean_abs: float = Field(0.01, ge=0.0, description="allowed mean |p_new - p_ref|")
    agreement: float = Field(0.98, ge=0.0, le=1.0, description="fraction of probe predictions that must agree")
    metric_drop: float = Field(0.01, ge=0.0, description="allowed drop of the validation metric")
    probe_size: int = Field(256, ge=1, le=1_000_000)


class TargetSpec(Strict):
    """An expert's target: a source field, optionally mapped by a `module:function`."""

    source: str = Field(alias="from", description="a source field, `source.field`")
    fn: ImportPath | None = Field(None, description="`module:function` mapping the field to the target")


class ResourcesSpec(Strict):
    """Where and within what an expert trains: device, memory budget, executor, CPUs and GPUs."""

    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    max_memory_gb: float = Field(8.0, gt=0.0, le=4096.0)
    max_host_memory_gb: float | None = Field(
        None, gt=0.0, le=4096.0, description="host memory for the data while an expert trains: its parquet or npy "
        "source is read a block at a time and its rows shuffled within a buffer (a quarter of this); default: read "
        "whole")
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_cpus: int | None = Field(None, ge=1, le=4096, description="CPU cores per expert: torch threads, and the "
                                 "Ray task's request; default: torch's own choice, one core on Ray")
    num_gpus: float = Field(0.0, ge=0.0, le=64.0, description="GPUs per expert's Ray task")
    executor: Literal["local", "ray"] = Field("local", description="`ray`: each expert a Ray task once its "
                                              "upstreams are done (`run --executor` overrides)")


class ExpertSpec(Strict):
    """One expert: its inputs, target, model, training, cutoff tolerances and resources."""

    description: str = Field("", max_length=2000)
    inputs: list[str] = Field(min_length=1, max_length=256, description="`source.field` or `expert.(logits|probs|embedding)`")
    target: str | TargetSpec
    task: Literal["classification", "regression"] | None = Field(
        None, description="inferred from the target's dtype when absent (integers -> classification)"
    )
    classes: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None, max_length=10_000, description="names of class ids 0..C-1, for reports and predictions (not behavioural)")
    model: ModelSpec
    train: TrainSpec = TrainSpec()
    cutoff: CutoffSpec | Literal["off"] = CutoffSpec()
    resources: ResourcesSpec | None = None

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, value: list[str] | None) -> list[str] | None:
        # two classes of one name would make one column of the predictions' table hide the other
        seen: set[str] = set()
        for name in value or ():
            if name in seen:
                raise ValueError(f"{name!r} is listed twice; each class needs its own name")
            seen.add(name)
        return value

    @property
    def target_field(self) -> str:
        """The `source.field` the target is read from."""
        return self.target if isinstance(self.target, str) else self.target.source

    @property
    def target_fn(self) -> str | None:
        """The `module:function` that turns the target field into the target, if any."""
        return None if isinstance(self.target, str) else self.target.fn


class RegistrySpec(Strict):
    """Where the MLflow registry is (default: `registry/mlflow.db` under the project root)."""

    tracking_uri: str | None = Field(
        None, description="defaults to sqlite:///registry/mlflow.db under the project root; MLFLOW_TRACKING_URI overrides"
    )


class Pipeline(Strict):
    """A whole pipeline file: name, seed, sources, experts, resources, registry."""

    name: Name
    seed: Seed = 0
    sources: dict[Name, Source] = Field(min_length=1)
    experts: dict[Name, ExpertSpec] = Field(min_length=1, max_length=10_000)
    resources: ResourcesSpec = ResourcesSpec()
    registry: RegistrySpec = RegistrySpec()

    def resources_for(self, expert: str) -> ResourcesSpec:
        """The expert's own `resources:`, else the pipeline's."""
        return self.experts[expert].resources or self.resources

    def source_fields(self, name: str) -> tuple[str, ...]:
        """Every `source.field` the pipeline's sources give."""
        source = self.sources[name]
        if getattr(source, "loader", None) == "npy":
            return (name,)
        return tuple(source.fields)


def json_schema() -> dict[str, Any]:
    """The JSON Schema editors use to complete and check pipeline files."""
    schema = Pipeline.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "moe-pipeline pipeline file"
    return schema


def json_schema_text() -> str:
    """The pipeline file's JSON Schema, as text (the `schema` command prints it)."""
    return json.dumps(json_schema(), indent=2, sort_keys=True)
