"""The JSON config: defaults, validation naming every unknown key, dotted overrides, building."""

from __future__ import annotations

import copy
import inspect
import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from utils.imagery import Imagery
from utils.preprocessing import NORMALISATIONS


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the key and what is expected.
    ``mistakes``: the message of each mistake, when several were found at once."""

    def __init__(self, message: str, mistakes: list[str] | None = None) -> None:
        super().__init__(message)
        self.mistakes = mistakes or [message]


def _several(mistakes: list[str]) -> ConfigError:
    """One :class:`ConfigError` for ``mistakes``: a single one's message unchanged, several
    listed one per line."""
    if len(mistakes) == 1:
        return ConfigError(mistakes[0])
    listed = "\n".join(f"  - {message}" for message in mistakes)
    return ConfigError(f"{len(mistakes)} mistakes in the config:\n{listed}", mistakes)


# Plain sections: every key with its default. A user key not listed here is an error.
DEFAULTS: dict[str, Any] = {
    "name": "U2Net",
    "seed": 42,
    "n_gpu": 1,
    "distributed": {"mode": "auto", "backend": "auto", "sync_bn": False, "timeout_min": 10.0},
    "amp": "off",
    "channels_last": False,
    "threads": 0,  # CPU cores for training, 0: every usable core (utils/runtime/threads.py)
    "normalisation": "imagenet",
    "imagery": None,  # band selection and scaling of rasters (utils/imagery.py); null: 8-bit RGB
    "trainer": {
        "epochs": 100,
        "save_dir": "saved/",
        "save_period": 1,
        "keep_last": 3,
        "monitor": "max maxF",
        "early_stop": 0,
        "val": True,
        "val_per_epochs": 1,
        "log_per_iter": 20,
        "tensorboard": True,
        "vis_samples": 4,
        "deterministic": False,
        "prefetch": True,
        "clip_grad_norm": 0.0,
        "max_bad_files": 0.01,
        "resume": "never",
        "save_every_iters": 0,
        "print_metrics": ["MAE", "maxF", "Sm", "IoU"],
    },
}
CHOICES = {  # plain keys with a fixed set of values
    "distributed.mode": ("auto", "none", "dp", "ddp"),
    "distributed.backend": ("auto", "nccl", "gloo"),
    "amp": ("off", "fp16", "bf16"),
    "normalisation": NORMALISATIONS,
    "trainer.resume": ("never", "auto"),
}

# Built sections: {"type": NAME, "args": {...}}; NAME is looked up in the section's registry,
# which the caller hands in (see ``Registries``). The arguments the code passes itself (listed
# here) are not config keys.
BUILT_SECTIONS: dict[str, tuple[str, ...]] = {
    "arch": (),
    "train_loader": ("seed", "evaluation", "normalisation", "imagery"),
    "val_loader": ("seed", "evaluation", "normalisation", "imagery"),
    "loss": (),
    "optimizer": ("params",),
    "lr_scheduler": ("optimizer", "total_iters"),
}
Registry = Mapping[str, type]
"""The classes a built section may name: ``{type name: class}``."""
Registries = Mapping[str, Registry]
"""One registry per built section (``train.registries()`` assembles them)."""
REQUIRED_SECTIONS = ("arch", "train_loader", "loss", "optimizer")
OPTIONAL_SECTIONS = ("val_loader", "lr_scheduler")  # may be absent or null


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a JSON config file (not yet validated)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'trainer.epochs=5'`` -> (['trainer', 'epochs'], 5); values are JSON, else strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--opt {text!r}: expected KEY.PATH=VALUE, e.g. trainer.epochs=5")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(
    config: dict[str, Any],
    overrides: list[str],
    registries: Registries,
    metrics: Collection[str] | None = None,
) -> dict[str, Any]:
    """Apply every dotted ``--opt`` override to a copy of ``config``, then validate it once (see
    :func:`validate_config`, which ``registries`` and ``metrics`` are for), so that overrides
    may depend on each other (``train_loader.type=VOCBinary 'train_loader.args={...}'``).
    Returns the complete, validated config. Raises :class:`ConfigError`; an error about a key
    that an override sets (or a key above or below it) names that override."""
    config = copy.deepcopy(config)
    parsed = [(text, *parse_override(text)) for text in overrides]
    for _, path, value in parsed:
        node = config
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    try:
        return validate_config(config, registries, metrics)
    except ConfigError as err:
        mistakes = [_blamed(message, parsed) for message in err.mistakes]
        if mistakes == err.mistakes:
            raise
        raise _several(mistakes) from None


def _blamed(message: str, parsed: list[tuple[str, list[str], Any]]) -> str:
    """``message`` prefixed with the ``--opt`` overrides that set a key it names (or a key
    above or below one), if any."""
    named = _keys_named(message)
    blamed = [text for text, path, _ in parsed if _related(".".join(path), named)]
    return f"--opt {' '.join(blamed)}: {message}" if blamed else message


_KEY_IN_MESSAGE = re.compile(r"'(\w+)'|(\w+(?:\.\w+)+)")
"""A config key in an error message: a quoted name (``'seed'``) or a dotted path."""


def _keys_named(message: str) -> set[str]:
    return {quoted or dotted for quoted, dotted in _KEY_IN_MESSAGE.findall(message)}


def _related(key: str, named: set[str]) -> bool:
    """Whether ``key`` is one of ``named``, a key above or below one of them, or the ``type``
    of a built section that one of them is in (the type decides which ``args`` are valid)."""
    above = key.removesuffix("type") if key.endswith(".type") else f"{key}."
    return any(key == n or key.startswith(f"{n}.") or n.startswith(above) for n in named)


def classes_in(module: ModuleType, exclude: Iterable[type] = ()) -> dict[str, type]:
    """The registry of ``module``: the concrete classes named in its ``__all__``, less
    ``exclude`` (e.g. a base class that ``__all__`` lists beside its subclasses)."""
    excluded = set(exclude)
    found = {name: getattr(module, name) for name in getattr(module, "__all__", [])}
    return {
        name: obj
        for name, obj in found.items()
        if inspect.isclass(obj) and not inspect.isabstract(obj) and obj not in excluded
    }


def accepted_params(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword parameters ``cls`` accepts, by name (the most derived definition of each);
    ``**kwargs`` lead to the parent class, or to the ``dataset_class`` of a data loader."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if klass is object:
            break
        if "__init__" not in vars(klass):
            continue
        found = inspect.signature(klass.__init__).parameters.values()
        for p in found:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                params.setdefault(p.name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in found):
            break
        if hasattr(cls, "dataset_class"):
            for name, p in accepted_params(cls.dataset_class).items():
                params.setdefault(name, p)
            break
    return params


def accepted_args(cls: type) -> set[str]:
    """Names of the keyword arguments ``cls`` accepts (see :func:`accepted_params`)."""
    return set(accepted_params(cls))


KIND_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
}
"""The kinds of value whose type the validation checks, as its messages name them."""
_NOT_JSON = {"Tensor", "torch.Tensor"}  # alternatives of an annotation that JSON cannot give


def expected_kind(param: inspect.Parameter) -> tuple[type, bool] | None:
    """The kind of value (a key of :data:`KIND_NAMES`; ``float``: any number) ``param`` takes
    and whether it also takes null, read from its annotation (``int``, ``float | None``,
    ``float | Tensor``...), else from the type of its default (an int default: any number);
    None where neither says one kind (e.g. ``Sequence[float]``): the value is not checked."""
    if param.annotation is not param.empty:
        annotation = param.annotation
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        parts = {part.strip() for part in (text or str(annotation)).split("|")} - _NOT_JSON
    elif type(param.default) in KIND_NAMES:
        parts = {"float" if type(param.default) is int else type(param.default).__name__}
    else:
        return None
    nullable = "None" in parts or param.default is None
    parts.discard("None")
    if parts == {"int", "float"}:
        parts = {"float"}
    kinds = [kind for kind in KIND_NAMES if parts == {kind.__name__}]
    return (kinds[0], nullable) if kinds else None


def _check_built(section: str, spec: Any, classes: Registry) -> None:
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f'\'{section}\' must be an object {{"type": NAME, "args": {{...}}}}')
    extra = sorted(set(spec) - {"type", "args"})
    if extra:
        raise ConfigError(f"unknown config key '{section}.{extra[0]}'; expected 'type' and 'args'")
    if spec["type"] not in classes:
        raise ConfigError(
            f"{section}.type: unknown {section} type {spec['type']!r}; "
            f"available: {', '.join(sorted(classes))}"
        )
    args = spec.get("args", {})
    if not isinstance(args, dict):
        raise ConfigError(f"'{section}.args' must be an object, got {type(args).__name__}")
    _check_args(section, spec["type"], args, classes[spec["type"]])


def _check_args(section: str, name: str, args: dict[str, Any], cls: type) -> None:
    """Every key of ``args`` (of the class ``cls`` named ``name``) is an argument it accepts
    (the injected ones excepted), of the kind its annotation says (:func:`expected_kind`)."""
    params = accepted_params(cls)
    allowed = set(params) - set(BUILT_SECTIONS[section])
    for key, value in args.items():
        if key not in allowed:
            raise ConfigError(
                f"unknown config key '{section}.args.{key}' for {name}; "
                f"accepted: {', '.join(sorted(allowed))}"
            )
        kind = expected_kind(params[key])
        if kind is not None:
            _check_kind(f"{section}.args.{key}", value, *kind)


def _check_plain(
    prefix: str, value: dict[str, Any], defaults: dict[str, Any], mistakes: _Mistakes
) -> None:
    """Each key of ``value`` (under ``prefix``) is one of ``defaults``, of its default's kind;
    every mistake goes to ``mistakes``."""
    for key, item in value.items():
        where = f"{prefix}{key}"
        expected = defaults.get(key)
        with mistakes.check():
            if key not in defaults:
                raise ConfigError(
                    f"unknown config key '{where}'; valid keys here: {', '.join(sorted(defaults))}"
                )
            if isinstance(expected, dict) and not isinstance(item, dict):
                raise ConfigError(f"'{where}' must be an object")
            if not isinstance(expected, dict):
                _check_kind(where, item, type(expected))
        if key in defaults and isinstance(expected, dict) and isinstance(item, dict):
            _check_plain(f"{where}.", item, expected, mistakes)


def _check_kind(where: str, value: Any, kind: type, nullable: bool = False) -> None:
    """Raise :class:`ConfigError` naming the key ``where`` and the expected kind unless
    ``value`` is of ``kind`` (a key of :data:`KIND_NAMES`; ``float``: any number, a bool is
    no number), or null where ``nullable``."""
    if nullable and value is None:
        return
    if kind is bool or isinstance(value, bool):
        ok = kind is bool and isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float) if kind is float else kind)
    if not ok:
        expected = KIND_NAMES[kind] + (" or null" if nullable else "")
        raise ConfigError(
            f"'{where}' must be {expected}, got {json.dumps(value, default=repr)} "
            f"({type(value).__name__})"
        )


def _check_trainer(trainer: dict[str, Any]) -> None:
    for key in ("epochs", "save_period", "keep_last", "val_per_epochs", "log_per_iter"):
        if trainer[key] < 1:
            raise ConfigError(f"'trainer.{key}' must be at least 1, got {trainer[key]}")
    if trainer["clip_grad_norm"] < 0:
        raise ConfigError(
            f"'trainer.clip_grad_norm' must be 0 (off) or a positive norm, got "
            f"{trainer['clip_grad_norm']}"
        )
    for key in ("early_stop", "vis_samples", "save_every_iters"):
        if trainer[key] < 0:
            raise ConfigError(f"'trainer.{key}' must be 0 (off) or more, got {trainer[key]}")
    max_bad = trainer["max_bad_files"]
    if max_bad < 0 or (max_bad >= 1 and max_bad != int(max_bad)):
        raise ConfigError(
            "'trainer.max_bad_files' must be a fraction in [0, 1) of the samples of an epoch or "
            f"a whole count >= 1 of unreadable samples allowed per epoch, got {max_bad}"
        )
    monitor = trainer["monitor"].split()
    if monitor != ["off"] and (len(monitor) != 2 or monitor[0] not in ("min", "max")):
        raise ConfigError(
            f'\'trainer.monitor\' must be "off" or "min METRIC" / "max METRIC" '
            f'(e.g. "max maxF", "min MAE"), got {trainer["monitor"]!r}'
        )


def check_print_metrics(trainer: dict[str, Any], metrics: Collection[str] | None) -> None:
    """``trainer.print_metrics`` is a list of metric names, each one of ``metrics`` (the names
    validation can report; None: only the list is checked). Raises :class:`ConfigError`."""
    for name in trainer["print_metrics"]:
        if not isinstance(name, str):
            raise ConfigError(
                f"'trainer.print_metrics' must be a list of metric names, got {json.dumps(name)} "
                f"({type(name).__name__}) in it"
            )
        if metrics is not None and name not in metrics:
            raise ConfigError(
                f"'trainer.print_metrics': unknown metric {name!r}; validation reports "
                f"{', '.join(metrics)}"
            )


def _check_threads(threads: int) -> None:
    if threads < 0:
        raise ConfigError(
            f"'threads' must be 0 (every usable core) or a number of cores, got {threads}"
        )


def _check_imagery(full: dict[str, Any]) -> None:
    """``imagery`` is null or a valid section (:meth:`utils.imagery.Imagery.from_config`), and the
    model takes one input channel per band it selects (3 without it: images are read as RGB);
    with an imagery section, an ``arch.args.in_channels`` left out is set to that number here,
    and the section gets its defaults (``scale``, ``percentiles``)."""
    try:
        imagery = Imagery.from_config(full["imagery"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if imagery is None:
        channels, in_channels = 3, full["arch"].get("args", {}).get("in_channels", 3)
    else:
        full["imagery"] = imagery.to_config()  # its defaults filled in
        channels = imagery.channels
        in_channels = full["arch"].setdefault("args", {}).setdefault("in_channels", channels)
    if in_channels != channels:
        reason = (
            "images are read as RGB without an 'imagery' section (which selects the bands of "
            "multi-band rasters)"
            if imagery is None
            else f"'imagery.bands' selects {channels} band(s)"
        )
        raise ConfigError(
            f"'arch.args.in_channels' is {in_channels} but {reason}: the model needs "
            f"in_channels {channels} (or leave the key out)"
        )


def _check_distributed(distributed: dict[str, Any]) -> None:
    if distributed["timeout_min"] <= 0:
        raise ConfigError(
            "'distributed.timeout_min' must be a positive number of minutes (e.g. 10, or 0.5), "
            f"got {distributed['timeout_min']}"
        )


def _check_validation(full: dict[str, Any], metrics: Collection[str] | None) -> None:
    """The validation data come from ``val_loader`` or ``train_loader.args.val_split``, not both;
    the metric of ``trainer.monitor`` is one of ``metrics`` (when given)."""
    val_split = full["train_loader"].get("args", {}).get("val_split")
    is_count = isinstance(val_split, int) and not isinstance(val_split, bool) and val_split >= 1
    is_fraction = isinstance(val_split, float) and 0 < val_split < 1
    if val_split not in (None, 0) and not (is_count or is_fraction):
        raise ConfigError(
            f"'train_loader.args.val_split' must be 0 (none), a fraction 0 < val_split < 1 of "
            f"the samples (e.g. 0.1) or a whole count of them (an integer, e.g. 50), got "
            f"{json.dumps(val_split)}"
        )
    if val_split and full["val_loader"] is not None:
        raise ConfigError(
            f"'train_loader.args.val_split' ({val_split}) and 'val_loader' are both set: "
            "validation uses val_loader, so the held-out images would only be lost to "
            "training; remove one of them (e.g. --opt train_loader.args.val_split=0, or "
            "--opt val_loader=null to validate on the held-out images)"
        )
    if (full["val_loader"] or {}).get("args", {}).get("val_split"):
        raise ConfigError(
            "'val_loader.args.val_split' would only drop validation images: val_split holds out "
            "training images for validation, so it belongs to train_loader.args (without a "
            "val_loader)"
        )
    monitor = full["trainer"]["monitor"].split()
    if metrics is not None and monitor != ["off"] and monitor[1] not in metrics:
        raise ConfigError(
            f"'trainer.monitor': unknown metric {monitor[1]!r}; validation reports "
            f"{', '.join(metrics)}"
        )


class _Mistakes:
    """The :class:`ConfigError` of each independent check (:meth:`check`), raised together."""

    def __init__(self) -> None:
        self.found: list[str] = []

    @contextmanager
    def check(self) -> Iterator[None]:
        """Run the block; a :class:`ConfigError` it raises is kept, not raised."""
        try:
            yield
        except ConfigError as err:
            self.found.append(str(err))

    def raise_found(self) -> None:
        """Raise one :class:`ConfigError` with every mistake kept (:func:`_several`)."""
        if self.found:
            raise _several(self.found)


def validate_config(
    config: dict[str, Any], registries: Registries, metrics: Collection[str] | None = None
) -> dict[str, Any]:
    """Check every key and fill in defaults; returns the complete config (input unchanged).

    ``registries`` holds the classes each built section may name; ``metrics`` the metric names
    ``trainer.monitor`` may name (``utils.metrics.HIGHER_IS_BETTER``; None: not checked here,
    the trainer checks it). Values of the keys of built sections are checked against the
    annotations of the classes' arguments (:func:`expected_kind`). Raises one
    :class:`ConfigError` naming every wrong key found: first the keys and their kinds of value;
    when those are right, the values."""
    mistakes = _Mistakes()
    known = set(DEFAULTS) | set(BUILT_SECTIONS)
    for key in config:
        with mistakes.check():
            if key not in known:
                raise ConfigError(
                    f"unknown config key '{key}'; valid top-level keys: {', '.join(sorted(known))}"
                )
    for section in REQUIRED_SECTIONS:
        with mistakes.check():
            if config.get(section) is None:
                raise ConfigError(f"the config needs a '{section}' section")
    plain = {k: v for k, v in config.items() if k in DEFAULTS and k != "imagery"}
    _check_plain("", plain, DEFAULTS, mistakes)
    for section in BUILT_SECTIONS:
        if config.get(section) is not None:
            with mistakes.check():
                _check_built(section, config[section], registries[section])
    mistakes.raise_found()
    full = merge(DEFAULTS, config)
    for section in OPTIONAL_SECTIONS:
        full.setdefault(section, None)
    for check in _value_checks(full, metrics):
        with mistakes.check():
            check()
    mistakes.raise_found()
    return full


def _value_checks(
    full: dict[str, Any], metrics: Collection[str] | None
) -> list[Callable[[], None]]:
    """The independent checks of the values of a complete config whose keys are right."""

    def seed() -> None:
        if full["seed"] < 0:
            raise ConfigError(f"'seed' must be 0 or more, got {full['seed']}")

    def n_gpu() -> None:
        if full["n_gpu"] < 0:
            raise ConfigError(f"'n_gpu' must be 0 (CPU) or more, got {full['n_gpu']}")

    def choice(key: str, choices: tuple[Any, ...]) -> None:
        section, _, name = key.rpartition(".")
        value = full[section][name] if section else full[name]
        if value not in choices:
            raise ConfigError(
                f"'{key}' must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
            )

    return [
        lambda: _check_imagery(full),
        seed,
        n_gpu,
        lambda: _check_threads(full["threads"]),
        *(partial(choice, key, choices) for key, choices in CHOICES.items()),
        lambda: _check_trainer(full["trainer"]),
        lambda: check_print_metrics(full["trainer"], metrics),
        lambda: _check_distributed(full["distributed"]),
        lambda: _check_validation(full, metrics),
    ]


def build(
    config: dict[str, Any], section: str, registry: Registry, *args: Any, **kwargs: Any
) -> Any:
    """Build the object of a built section: ``cls(*args, **config_args, **kwargs)`` with ``cls``
    the ``registry`` class its ``type`` names. Raises :class:`ConfigError` naming the section
    when the class refuses its arguments."""
    spec = config[section]
    cls = registry[spec["type"]]
    try:
        return cls(*args, **spec.get("args", {}), **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{section} ({spec['type']}): {err}") from err


def _flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every leaf of nested dicts (an empty dict is a leaf)."""
    items: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items |= _flatten(value, f"{path}.")
        else:
            items[path] = value
    return items


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key.path: old -> new`` for every value that differs between two configs (a key present
    in one only shows ``(absent)`` on the other side), sorted by key."""
    before, after = _flatten(old), _flatten(new)
    missing = "(absent)"
    return [
        f"{key}: {json.dumps(before[key]) if key in before else missing} -> "
        f"{json.dumps(after[key]) if key in after else missing}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key, missing) != after.get(key, missing)
    ]
