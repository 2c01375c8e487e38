"""YAML files + `key.sub=value` overrides for any pydantic model.

One typed tree of pydantic models holds every default. A YAML file holds only what differs
from those defaults (a nested mapping); command-line overrides address one key each::

    lcd.learning_rate=1e-4            # values are YAML scalars or flow collections
    reward.model=null
    data.validation_prompts=[a red circle, a blue square]
    serve.scorers.0.max_batch_size=8  # list items by index

A YAML file may build on others with `extends: FILE` or `extends: [FILE, ...]` (paths relative
to it): a teacher file and a method file, say, composed into one recipe.

Merge rules: a section (a nested model) in the YAML is merged key by key with its defaults;
any other value (a list, a dict-typed field such as `serve.vaes`, a scalar) replaces the default
whole. An override that reaches into a list or dict the YAML did not set starts from the
default value, so `serve.scorers.0.max_batch_size=8` keeps the other default scorers.

Override values: a field typed `str` takes the text verbatim (`run_name=2024` stays a string;
`null` or `~` still mean None where the field allows it); everything else is parsed as YAML 1.2
(`1e-4` is a float, only true/false are booleans, `key=` is null).

Every problem (unknown key, wrong type, failed cross-field check, malformed override) raises
`ConfigError`, a `ValueError` whose message names the full dotted key, what was wrong and what
is allowed, instead of pydantic's raw error dump.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from rglcd.recipe_names import renamed_recipe
from rglcd.recipes import RECIPES_DIR, resolve_recipe, shipped_recipes

M = TypeVar("M", bound=BaseModel)

_BOOL_TAG = "tag:yaml.org,2002:bool"
_FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.1 (PyYAML) reads `1e-4` as a string; YAML 1.2 and every ML config reader read a float.
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class ConfigError(ValueError):
    """A configuration problem a user can fix; `problems` holds one line per problem."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems) or [message]


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: `1e-4` is a float, only true/false are booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(_FLOAT_TAG, _EXPONENT_FLOAT, list("-+0123456789"))


class _Dumper(yaml.SafeDumper):
    """SafeDumper that also quotes strings like `1e5`, which `_Loader` would read as floats."""


_Dumper.add_implicit_resolver(_FLOAT_TAG, _EXPONENT_FLOAT, list("-+0123456789"))


def to_yaml(data: Any) -> str:
    """Plain-data YAML in the key order given (readable by `load_config`)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def load_config(
    model_cls: type[M], path: str | Path | None = None, overrides: Sequence[str] = ()
) -> M:
    """Build `model_cls` from its defaults, an optional YAML file, then `key.sub=value` overrides.

    Raises ConfigError for a missing or malformed file, a malformed override, an unknown key,
    a wrong value, or a failed cross-field check of the model.
    """
    data = read_config_file(model_cls, path) if path is not None else {}
    origins: dict[str, str] = {}
    for raw in overrides:
        keys, text = _split_override(raw)
        try:
            _apply_override(model_cls, data, keys, text)
        except ConfigError as err:
            raise ConfigError(f"override {raw!r}: {err}") from None
        origins[".".join(keys)] = raw
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        source = f"{path}" if path is not None else "defaults"
        if overrides:
            source += f" + {len(overrides)} override(s)"
        problems = [p for e in err.errors() for p in _describe_error(model_cls, e, origins)]
        header = f"invalid {model_cls.__name__} configuration ({source}):"
        raise ConfigError("\n  - ".join([header, *problems]), problems) from None


def dump_config(cfg: BaseModel, *, minimal: bool = False) -> str:
    """YAML of the full resolved config (or, with `minimal`, only what differs from defaults).

    `load_config(type(cfg), <file with this text>)` gives back an equal model either way.
    """
    return to_yaml(diff_from_defaults(cfg) if minimal else cfg.model_dump(mode="json"))


def diff_from_defaults(cfg: BaseModel) -> dict[str, Any]:
    """The nested mapping of fields whose values differ from `type(cfg)()` (JSON-able values).

    Sections are compared key by key; lists and dict-typed fields are emitted whole when they
    differ, because a YAML value replaces such a default whole (module docstring).
    """
    try:
        default = type(cfg)()
    except ValidationError as err:
        raise ConfigError(f"{type(cfg).__name__} has required fields; it has no defaults") from err
    return _diff(cfg, default)


def _diff(value: BaseModel, default: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in type(value).model_fields:
        mine, theirs = getattr(value, name), getattr(default, name)
        if isinstance(mine, BaseModel) and type(mine) is type(theirs):
            sub = _diff(mine, theirs)
            if sub:
                out[name] = sub
        elif _jsonable(mine) != _jsonable(theirs):
            out[name] = _jsonable(mine)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------- reading YAML and overrides


def _read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        new = renamed_recipe(path)
        if new is not None:
            raise ConfigError(
                f"config file {str(path)!r} was renamed {str(new)!r} (recipes are named "
                "<teacher>-<method>[-<expert>]); pass that one"
            )
        raise ConfigError(
            f"config file {str(path)!r} does not exist; pass an existing YAML file or a shipped "
            f"recipe: {', '.join(shipped_recipes())} (in {RECIPES_DIR})"
        )
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if data is None:  # an empty file (or only comments) means "all defaults"
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of sections, "
            f"got a {type(data).__name__}"
        )
    return data


def read_config_file(model_cls: type, path: str | Path) -> dict[str, Any]:
    """The mapping a YAML file holds with its `extends:` files merged in (not yet validated);
    `path` may also name a shipped recipe (rglcd/recipes.py)."""
    return _read_recipe(model_cls, resolve_recipe(path), ())


def _read_recipe(model_cls: type, path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """A YAML file with its `extends:` files (paths relative to it) merged in beneath it.

    `extends: base.yaml` or `extends: [teacher.yaml, method.yaml]`: the files are merged in
    order, each later one over the earlier, and the file itself last, by the same rules as
    the YAML over the defaults (a section key by key; any other value replaces whole).
    """
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"config files extend each other in a cycle: {cycle}")
    data = _read_yaml(path)
    bases = data.pop("extends", None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(
            f"config file {str(path)!r}: `extends` must be a file name or a list of them, "
            f"got {bases!r}"
        )
    merged: dict[str, Any] = {}
    for base in bases:
        layer = _read_recipe(model_cls, path.parent / base, (*chain, resolved))
        merged = _merge(model_cls, merged, layer)
    return _merge(model_cls, merged, data)


def _merge(annotation: Any, base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`: model sections merge key by key, every other value replaces whole."""
    core, _ = _unwrap(annotation)
    out = dict(base)
    for key, value in top.items():
        field = core.model_fields.get(key) if _is_model(core) else None
        sub = _unwrap(field.annotation)[0] if field is not None else None
        if _is_model(sub) and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(sub, out[key], value)
        else:
            out[key] = value
    return out


def _split_override(raw: str) -> tuple[list[str], str]:
    key, sep, text = raw.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"malformed override {raw!r}: expected key.sub=value (e.g. lcd.learning_rate=1e-4); "
            "use key=null to unset a value"
        )
    keys = key.split(".")
    if any(not k for k in keys):
        raise ConfigError(f"malformed override {raw!r}: empty part in the key {key!r}")
    return keys, text.strip()


def _parse_value(text: str, annotation: Any) -> Any:
    core, optional = _unwrap(annotation)
    if core is str:  # verbatim, so `run_name=2024` or `model.revision=1e5` stay strings
        return None if optional and text in ("null", "~", "None") else text
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"cannot parse {text!r} as a YAML value ({problem})") from None


def _apply_override(model_cls: type, data: dict, keys: list[str], text: str) -> None:
    """Set `data[k0][k1]... = value`, checking every key against the schema on the way."""
    annotation: Any = model_cls
    container: Any = data
    for depth, key in enumerate(keys):
        parent = ".".join(keys[:depth]) or "the top level"
        owner = _unwrap(annotation)[0]
        annotation, slot = _step(annotation, container, key, ".".join(keys[: depth + 1]), parent)
        if depth == len(keys) - 1:
            container[slot] = _parse_value(text, annotation)
            return
        if isinstance(container, dict) and slot not in container:
            container[slot] = _starting_value(owner, key, annotation)
        container = container[slot]


def _step(annotation: Any, container: Any, key: str, dotted: str, parent: str) -> tuple[Any, Any]:
    """Schema type of `key` below `annotation`, and the slot (str or int) it occupies."""
    core, _ = _unwrap(annotation)
    if _is_model(core):
        if key not in core.model_fields:
            raise ConfigError(
                f"unknown key {dotted!r}; keys allowed in {parent}: {', '.join(core.model_fields)}"
            )
        _expect_mapping(container, parent)
        return core.model_fields[key].annotation, key
    if _is_list(core):
        if not re.fullmatch(r"\d+", key):
            raise ConfigError(f"{parent} is a list; address an item by index ({parent}.0...)")
        size = len(container) if isinstance(container, list) else 0
        if int(key) >= size:
            raise ConfigError(
                f"index {key} is out of range for {parent} ({size} item(s)); "
                f"set the whole list instead ({parent}=[...])"
            )
        args = get_args(core)
        return (args[0] if args else Any), int(key)
    if _is_dict(core):
        _expect_mapping(container, parent)
        args = get_args(core)
        return (args[1] if len(args) == 2 else Any), key
    raise ConfigError(
        f"{parent} is a value ({_type_name(annotation)}), not a section; it has no key {key!r}"
    )


def _expect_mapping(container: Any, parent: str) -> None:
    if not isinstance(container, dict):
        raise ConfigError(f"{parent} is set to {container!r}, not a mapping")


def _starting_value(owner: Any, key: str, annotation: Any) -> Any:
    """An override reaches into a key the YAML did not set: start from the field's default."""
    default: Any = PydanticUndefined
    if _is_model(owner):
        default = owner.model_fields[key].get_default(call_default_factory=True)
    if default is PydanticUndefined or default is None:
        return [] if _is_list(_unwrap(annotation)[0]) else {}
    return _sparse(default)


def _sparse(value: Any) -> Any:
    """A default as plain data, keeping only the explicitly set keys of nested models."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    if isinstance(value, Mapping):
        return {k: _sparse(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sparse(v) for v in value]
    return value


# ---------------------------------------------------------------- schema introspection


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(core type, accepts None): strips Annotated and Optional; a union with one model -> it."""
    optional = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if origin not in (Union, types.UnionType):
            return annotation, optional
        args = get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        optional = optional or len(rest) < len(args)
        models = [a for a in rest if _is_model(a)]
        if len(rest) == 1 or len(models) == 1:
            annotation = rest[0] if len(rest) == 1 else models[0]
            continue
        return annotation, optional


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and get_origin(tp) is None and issubclass(tp, BaseModel)


def _is_list(tp: Any) -> bool:
    return get_origin(tp) in (list, tuple, Sequence) or tp in (list, tuple)


def _is_dict(tp: Any) -> bool:
    return get_origin(tp) in (dict, Mapping) or tp in (dict, Any)


def _type_name(annotation: Any) -> str:
    core, optional = _unwrap(annotation)
    if get_origin(core) is Literal:
        name = "one of " + ", ".join(repr(a) for a in get_args(core))
    elif _is_model(core):
        name = f"a mapping (section {core.__name__})"
    elif core is Any:
        name = "any value"
    elif isinstance(core, type) and get_origin(core) is None:
        name = core.__name__
    else:
        name = str(core).replace("typing.", "")
    return f"{name} or null" if optional else name


def _resolve_loc(model_cls: type, loc: tuple) -> tuple[str, Any, type | None]:
    """Pydantic error location -> (dotted key, its schema type, the section that holds it).

    Location parts that are not keys (union branch tags) end the walk.
    """
    annotation: Any = model_cls
    parts: list[str] = []
    owner: type | None = None
    for part in loc:
        core, _ = _unwrap(annotation)
        if _is_model(core) and isinstance(part, str):
            owner = core
            parts.append(part)
            if part not in core.model_fields:  # an unknown key: nothing below it
                return ".".join(parts), Any, owner
            annotation = core.model_fields[part].annotation
        elif _is_list(core) and isinstance(part, int):
            args = get_args(core)
            parts.append(str(part))
            annotation = args[0] if args else Any
        elif _is_dict(core) and isinstance(part, str):
            args = get_args(core)
            parts.append(part)
            annotation = args[1] if len(args) == 2 else Any
        else:
            break
    return ".".join(parts), annotation, owner


def _describe_error(
    model_cls: type, error: Mapping[str, Any], origins: Mapping[str, str]
) -> list[str]:
    """Readable lines for one pydantic error, each naming the full dotted key.

    A validator may report several problems at once, one per line of its message.
    """
    dotted, annotation, owner = _resolve_loc(model_cls, tuple(error["loc"]))
    kind, msg = error["type"], str(error["msg"])
    if kind == "extra_forbidden":
        parent = dotted.rpartition(".")[0] or "the top level"
        allowed = ", ".join(owner.model_fields) if owner is not None else "none"
        text = f"unknown key {dotted!r}; keys allowed in {parent}: {allowed}"
    elif kind == "missing":
        text = f"{dotted} is required ({_type_name(annotation)})"
    elif kind in ("value_error", "assertion_error"):  # a validator's own message(s)
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        lines = [line.strip() for line in msg.splitlines() if line.strip()]
        return [line if line.startswith(dotted) else f"{dotted}: {line}" for line in lines]
    else:
        text = f"{dotted or 'the top level'}: {msg}, got {_short(error.get('input'))}"
        if kind != "literal_error":
            text += f"; expected {_type_name(annotation)}"
    source = next((raw for key, raw in origins.items() if _within(dotted, key)), None)
    return [f"{text} (from override {source!r})" if source else text]


def _within(dotted: str, key: str) -> bool:
    return dotted == key or dotted.startswith(key + ".")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
