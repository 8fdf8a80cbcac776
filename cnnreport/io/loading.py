"""Turn what the user has (a model spec, a checkpoint, a TorchScript file) into an ``nn.Module``.

Spec forms understood by :func:`load_model`:

* ``path/to/file.py:Name`` - the file is imported as a module of its own (its folder on
  ``sys.path`` only while it imports, so sibling imports work);
* ``package.module:Name`` - an importable module (the current folder is searched too);
* ``Name`` may be an ``nn.Module`` subclass, a factory returning one (both called with
  ``--model-arg`` keyword arguments) or a module-level ``nn.Module`` instance; dotted names
  (``Outer.build``) reach into attributes;
* ``path/to/model.pt`` - a TorchScript archive (``torch.jit.load``), or, only with
  ``trust_checkpoint=True``, a pickled ``nn.Module`` (``torch.save(model, ...)``).

Weights (:func:`load_weights`) come from plain state dicts, training checkpoints that nest one,
``.safetensors`` files or TorchScript archives. ``torch.load`` always runs with
``weights_only=True`` unless the user trusts the file, because unpickling runs arbitrary code.

Every failure the user can fix raises a :class:`~cnnreport.errors.CnnReportError` subclass whose
message names the file, the name or the option to change.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import pickle
import re
import sys
import traceback
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ModelSpecError, OptionError, WeightsError
from ..model.compiled import compiled_inner, compiled_note
from ..support.hashing import file_sha256
from .archives import is_zip, zip_damage

__all__ = [
    "CHECKPOINT_KEYS",
    "Checkpoint",
    "LoadedModel",
    "STRIP_PREFIXES",
    "apply_state_dict",
    "file_sha256",
    "is_torchscript_archive",
    "load_model",
    "load_weights",
    "parse_model_args",
    "read_checkpoint",
    "resolve_device",
]

#: Keys under which training loops nest the state dict, in the order they are tried.
#: The plain model weights come before EMA copies, so an EMA is used only when asked for
#: (``--weights-key ema``) or when it is the only one that fits the model.
CHECKPOINT_KEYS: tuple[str, ...] = (
    "state_dict",
    "model_state_dict",
    "model",
    "net",
    "network",
    "module",
    "params",
    "weights",
    "ema",
    "ema_state_dict",
    "model_ema",
    "state_dict_ema",
)

#: Prefixes added by wrappers: DataParallel/DDP (``module.``), Lightning (``model.``),
#: ``torch.compile`` (``_orig_mod.``). They can stack, e.g. ``module._orig_mod.``.
STRIP_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.", "model.")

#: Checkpoint entries that may carry the class names, in the order they are tried.
_CLASS_NAME_KEYS = ("class_names", "classes", "idx_to_class", "class_to_idx", "labels")

_SHOW = 4  # how many keys an error message lists before "and N more"


@dataclass
class LoadedModel:
    """A model ready for the report, with what is known about where it came from."""

    model: nn.Module
    spec: str  # what the user gave
    checkpoint_path: str = ""  # "" when no weights file
    # sha256 hex of the weights file (or of the TorchScript / pickled file when that is the model)
    checkpoint_sha256: str = ""
    notes: list[str] = field(default_factory=list)  # human lines about what loading did
    class_names: list[str] | None = None  # when the checkpoint carries them
    # Checkpoint tensors whose dtype differs from the model's (by state-dict key), as stored:
    # kept only when asked (``load_model(keep_stored_weights=True)``, for ``diff``).
    stored_weights: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """A state dict read from a weights file, before it meets a model."""

    state_dict: dict[str, torch.Tensor]
    path: str
    sha256: str
    notes: list[str] = field(default_factory=list)
    class_names: list[str] | None = None
    # Other state dicts found in the file, by key path; tried when the first does not fit.
    alternatives: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# small helpers


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's text, prefixed by its type."""
    text = str(exc).strip()
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    # torch decorates some messages with ANSI bold; strip escape codes so the line stays plain.
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _listing(items: Sequence[str], what: str, show: int = _SHOW) -> str:
    """``'3 missing keys (a, b, c)'`` or ``'12 missing keys (a, b, c, d, ... 8 more)'``."""
    count = len(items)
    shown = ", ".join(items[:show])
    if count > show:
        shown += f", ... {count - show} more"
    noun = what if count == 1 else _plural(what)
    return f"{count} {noun} ({shown})"


def _plural(noun: str) -> str:
    # the nouns used here: "missing key", "unexpected key", "shape mismatch"
    return noun + ("es" if noun.endswith(("ch", "sh", "s")) else "s")


def _shape(shape: torch.Size | Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


# --------------------------------------------------------------------------------------------
# options


def parse_model_args(pairs: Sequence[str]) -> dict[str, Any]:
    """Parse ``--model-arg`` pairs such as ``["depth=3", "name='x'", "act=relu"]`` into kwargs.

    Values are Python literals (``ast.literal_eval``: numbers, strings, tuples, lists, dicts,
    ``True``/``False``/``None``); a bare word that is no literal (``act=relu``) stays a string.
    A pair without ``=``, a key that is not an identifier, a key given twice, or a value that
    starts like a literal but does not parse (``sizes=[1,2``) raises :class:`OptionError`.
    """
    result: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise OptionError(
                f"--model-arg {pair!r} is not NAME=VALUE", hint="e.g. --model-arg num_classes=10"
            )
        key, _, text = pair.partition("=")
        key = key.strip()
        if not key.isidentifier():
            raise OptionError(
                f"--model-arg {pair!r}: {key!r} is not a valid argument name",
                hint="e.g. --model-arg num_classes=10",
            )
        if key in result:
            raise OptionError(f"--model-arg {key} is given twice")
        result[key] = _parse_value(pair, text.strip())
    return result


def _parse_value(pair: str, text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        # A value that starts like a literal but does not parse is a typo, not a bare word:
        # passing "[1, 2" on as a string would fail much later with a confusing message.
        if text[:1] in "[({'\"" and text:
            raise OptionError(
                f"--model-arg {pair!r}: value is not a valid Python literal "
                f"({_first_line(exc)})"
            ) from None
        return text


def resolve_device(device: str) -> torch.device:
    """Map ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` to a ``torch.device``.

    ``auto`` picks CUDA when it is available, else the CPU. Asking for CUDA on a machine
    without it raises :class:`OptionError`.
    """
    text = str(device).strip().lower()
    if text == "auto":
        # an explicit index, so it compares equal to the device parameters report (cuda:0)
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise OptionError(f"--device {device!r} is not one of cpu, cuda, cuda:N, auto")
    if not torch.cuda.is_available():
        raise OptionError(
            f"--device {device}: CUDA is not available to this torch ({torch.__version__})",
            hint="use --device cpu, or --device auto to take a GPU only when there is one",
        )
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise OptionError(f"--device {device}: this machine has {count} CUDA device(s)")
    return torch.device("cuda", index)


# --------------------------------------------------------------------------------------------
# model specs


def is_torchscript_archive(path: str | os.PathLike[str]) -> bool:
    """True when *path* is a zip written by ``torch.jit.save`` (it holds ``constants.pkl``/``code/``).

    Plain ``torch.save`` zips hold only ``data.pkl`` and ``data/``, so they do not match.
    """
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                parts = name.split("/")
                if len(parts) >= 2 and (parts[1] == "constants.pkl" or parts[1] == "code"):
                    return True
    except (OSError, zipfile.BadZipFile):
        return False
    return False


def load_model(
    spec: str,
    *,
    weights: str | None = None,
    weights_key: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    trust_checkpoint: bool = False,
    device: str = "cpu",
    keep_stored_weights: bool = False,
) -> LoadedModel:
    """Build the model named by *spec*, load *weights* into it and move it to *device*.

    A checkpoint whose floating tensors have another dtype than the model's is cast on load,
    and a note says so; ``keep_stored_weights`` also keeps those tensors as stored
    (:attr:`LoadedModel.stored_weights`), so a comparison can use their own precision.

    *spec* is ``path/to/file.py:Name``, ``package.module:Name`` or the path of a TorchScript
    archive (or of a pickled ``nn.Module`` when ``trust_checkpoint`` is true). ``model_args``
    are passed as keyword arguments to a class or factory. The model's dtype and its
    ``training`` flag are left as they are. A ``torch.compile``'d model is replaced by the
    module inside it (``_orig_mod``), with a note saying so.

    Raises :class:`ModelSpecError` (spec), :class:`WeightsError` (weights file),
    :class:`OptionError` (``--device``, ``--model-arg``).
    """
    spec = str(spec).strip()
    if not spec:
        raise ModelSpecError("MODEL is empty", hint="give path/to/file.py:Name or package.module:Name")
    target = resolve_device(device)
    kwargs = dict(model_args or {})
    notes: list[str] = []
    loaded = LoadedModel(model=nn.Module(), spec=spec, notes=notes)

    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        raise ModelSpecError(
            f"MODEL {spec} is a folder", hint="give path/to/file.py:Name or package.module:Name"
        )
    if os.path.isfile(path) and not path.endswith(".py"):
        model = _load_model_file(path, trust_checkpoint, notes)
        if kwargs:
            raise OptionError(
                f"--model-arg {', '.join(sorted(kwargs))} cannot be used with {spec}: "
                "a saved model file is not constructed"
            )
        loaded.checkpoint_path = spec
        loaded.checkpoint_sha256 = file_sha256(path)
    else:
        model = _model_from_spec(spec, kwargs, notes)
    # A factory that returns torch.compile(model): the weights go into, and the report is made
    # of, the module inside the wrapper (checkpoints hold its keys, with or without _orig_mod.).
    model, wrappers = compiled_inner(model)
    if wrappers:
        notes.append(compiled_note(wrappers, []))
    loaded.model = model

    if weights is not None:
        checkpoint = read_checkpoint(weights, key=weights_key, trust_checkpoint=trust_checkpoint)
        notes.extend(checkpoint.notes)
        notes.extend(_apply_checkpoint(model, checkpoint, loaded.stored_weights if keep_stored_weights else None))
        loaded.checkpoint_path = str(weights)
        loaded.checkpoint_sha256 = checkpoint.sha256
        loaded.class_names = checkpoint.class_names
    elif weights_key is not None:
        raise OptionError("--weights-key needs --weights")

    current = _module_device(model)
    if current is None:
        model.to(target)  # no tensors to move; keeps any custom .to() logic consistent
    elif current != target:
        model.to(target)
        notes.append(f"moved the model to {target}")
    return loaded


def _module_device(model: nn.Module) -> torch.device | None:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


def _jit_load(path: str) -> Any:
    # torch 2.9+ marks TorchScript deprecated; users with a deployed archive cannot act on that.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(path, map_location="cpu")


def _load_model_file(path: str, trust: bool, notes: list[str]) -> nn.Module:
    """A TorchScript archive, or (trusted only) a pickled ``nn.Module``, as the model."""
    if os.path.getsize(path) == 0:
        raise ModelSpecError(f"model file {path} is empty (0 bytes)")
    _checked_file(path, path, ModelSpecError, "model file")
    if is_torchscript_archive(path):
        try:
            model = _jit_load(path)
        except Exception as exc:  # torch raises RuntimeError for most, but not all, bad archives
            raise ModelSpecError(
                f"cannot load TorchScript archive {path}: {_first_line(exc)}"
            ) from exc
        notes.append(f"loaded TorchScript archive {os.path.basename(path)}")
        return model

    if not trust:
        # Peek with weights_only=True: a state dict is a common mix-up worth naming.
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if _refuses_objects(exc):
                raise ModelSpecError(
                    f"{path} is a pickled Python object, not a TorchScript archive; "
                    f"unpickling it can run arbitrary code{_unsupported_global(exc)}",
                    hint="rerun with --trust-checkpoint only if you trust where the file came "
                    "from, or give the model class as path/to/file.py:Name with --weights",
                ) from None
            raise ModelSpecError(
                f"cannot read model file {path}: {_unpickler_detail(exc)} "
                "(not a TorchScript archive or PyTorch file, or corrupted)"
            ) from exc
        except Exception as exc:
            raise ModelSpecError(
                f"cannot read model file {path}: {_first_line(exc)} "
                "(not a TorchScript archive or PyTorch file, or corrupted)"
            ) from exc
        raise ModelSpecError(_not_a_model_message(path, obj), hint=_WEIGHTS_HINT)

    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ModelSpecError(
            f"cannot unpickle model file {path}: {_first_line(exc)}",
            hint="the code that defined the model class must be importable; run from the "
            "project folder, or give path/to/file.py:Name with --weights",
        ) from exc
    except Exception as exc:
        raise ModelSpecError(f"cannot read model file {path}: {_first_line(exc)}") from exc
    if not isinstance(obj, nn.Module):
        raise ModelSpecError(_not_a_model_message(path, obj), hint=_WEIGHTS_HINT)
    notes.append(
        f"unpickled a whole {type(obj).__name__} from {os.path.basename(path)} (--trust-checkpoint)"
    )
    return obj


_WEIGHTS_HINT = "give the model as path/to/file.py:Name and this file as --weights"


def _checked_file(full: str, shown: str, error: type[ModelSpecError] | type[WeightsError], what: str) -> str:
    """The file's SHA-256, once it is known to be readable and, when it is a zip (``torch.save``
    since torch 1.6, TorchScript), to match every CRC-32 it records: torch's own reader does not
    check them, so flipped bytes would load as silently wrong weights."""
    try:
        sha = file_sha256(full)
        damage = zip_damage(full) if is_zip(full) else None
    except OSError as exc:  # permission denied, an I/O error of the disk
        raise error(f"cannot read {what} {shown}: {exc.strerror or exc}") from None
    if damage:
        raise error(
            f"{what} {shown} is corrupted: {damage}",
            hint="the file changed after it was written; copy or download it again",
        )
    return sha


def _not_a_model_message(path: str, obj: Any) -> str:
    if isinstance(obj, Mapping):
        return f"{path} holds weights (a state dict), not a model"
    return f"{path} holds a value of type {type(obj).__name__}, not a model"


def _unsupported_global(exc: BaseException) -> str:
    """``' (it needs mypkg.Net)'`` from torch's weights_only message, when it names one."""
    match = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f" (it needs {match.group(1)})" if match else ""


def _refuses_objects(exc: BaseException) -> bool:
    """True when weights_only loading refused a Python class or function the file names.

    torch words every weights_only failure "Weights only load failed"; garbage bytes fail
    the same way ("Unsupported operand 110"), so only a named GLOBAL means "needs trust".
    """
    text = str(exc)
    return "Weights only load failed" in text and re.search(r"GLOBAL [\w.]+", text) is not None


def _unpickler_detail(exc: BaseException) -> str:
    """The one informative line of a weights_only failure (``Unsupported operand 110``)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if "Weights only load failed" in text:
        _, _, after = text.partition("WeightsUnpickler error:")
        line = next((part.strip() for part in after.splitlines() if part.strip()), "")
        return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return _first_line(exc)


def _model_from_spec(spec: str, kwargs: dict[str, Any], notes: list[str]) -> nn.Module:
    where, sep, name = spec.rpartition(":")
    if not sep:
        where, name = _split_colonless(spec)
    where, name = where.strip(), name.strip()
    if not where or not name:
        raise ModelSpecError(
            f"MODEL {spec!r} is not path/to/file.py:Name, package.module:Name or a TorchScript file"
        )
    if where.endswith(".py") or os.sep in where or "/" in where:
        module = _import_file(where)
    else:
        module = _import_module(where)
    obj = _lookup(module, name, where)
    return _instantiate(obj, f"{where}:{name}", kwargs, notes)


def _split_colonless(spec: str) -> tuple[str, str]:
    """Help for specs without ``:`` (a missing file, ``file.py`` alone, ``pkg.mod.Name``)."""
    path = os.path.expanduser(spec)
    if path.endswith(".py"):
        if os.path.isfile(path):
            raise ModelSpecError(
                f"MODEL {spec!r} names a file but no class or factory in it",
                hint=f"write it as {spec}:Name",
            )
        raise ModelSpecError(f"model file not found: {spec}")
    if os.sep in spec or "/" in spec or os.path.splitext(spec)[1] in (".pt", ".pth", ".ts", ".jit"):
        raise ModelSpecError(f"model file not found: {spec}")
    # ``package.module.Name`` written with a dot is accepted, as Python itself would import it.
    module, dot, name = spec.rpartition(".")
    if not dot:
        raise ModelSpecError(
            f"MODEL {spec!r} is not path/to/file.py:Name, package.module:Name or a TorchScript file"
        )
    return module, name


def _import_file(where: str) -> Any:
    path = os.path.abspath(os.path.expanduser(where))
    if not os.path.isfile(path):
        raise ModelSpecError(f"model file not found: {where}")
    if not path.endswith(".py"):
        raise ModelSpecError(f"model file {where} is not a .py file", hint="give path/to/file.py:Name")
    # A unique, stable module name per file: two model files both called model.py must not
    # collide in sys.modules, and the same file gives the same name in every run.
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    digest = hashlib.sha1(path.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    module_name = f"_cnnreport_model_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - only for odd file systems
        raise ModelSpecError(f"cannot import model file {where}")
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(path)
    # Registered before it runs, as ``import`` does: dataclasses and pickling look it up there.
    sys.modules[module_name] = module
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # a model file's top level can raise anything
        sys.modules.pop(module_name, None)
        raise ModelSpecError(_import_failure(where, path, exc)) from exc
    finally:
        if added:
            try:
                sys.path.remove(folder)
            except ValueError:  # the user's module removed it itself
                pass
    return module


def _import_module(where: str) -> Any:
    # Console scripts do not put the current folder on sys.path (``python -m`` does); users
    # expect ``models.net:Net`` to work from their project folder, so add it for the import.
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(where)
    except (Exception, SystemExit) as exc:
        raise ModelSpecError(_import_failure(where, None, exc)) from exc
    finally:
        if added:
            try:
                sys.path.remove(cwd)
            except ValueError:
                pass


def _import_failure(where: str, path: str | None, exc: BaseException) -> str:
    """One line saying why *where* did not import, pointing at the file and line when known."""
    if isinstance(exc, ModuleNotFoundError) and path is None and exc.name and (
        where == exc.name or where.startswith(exc.name + ".")
    ):
        return (
            f"cannot import module {where!r}: {_first_line(exc)} "
            "(is it installed, or run from the folder that contains it? "
            "a file can be given as path/to/file.py:Name)"
        )
    if isinstance(exc, SyntaxError):
        location = f"{exc.filename or where}, line {exc.lineno}" if exc.lineno else where
        return f"model file {where} does not import: SyntaxError: {exc.msg} ({location})"
    if isinstance(exc, SystemExit):
        return f"model file {where} called sys.exit({exc.code!r}) while importing"
    location = ""
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # [0] is the call here that raised it
    # The deepest frame inside the user's own code (not importlib's) says where to look;
    # importlib is known by its folder, so a user's folder named after it stays the user's.
    own = os.path.dirname(importlib.__file__) + os.sep
    user = [f for f in frames if not f.filename.startswith(own) and "<frozen" not in f.filename]
    if user:
        frame = user[-1]
        location = f" ({os.path.basename(frame.filename)}, line {frame.lineno})"
    what = f"model file {where}" if path is not None else f"module {where!r}"
    return f"{what} does not import: {_first_line(exc)}{location}"


def _lookup(module: Any, name: str, where: str) -> Any:
    obj = module
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModelSpecError(_not_found_message(module, name, where)) from None
    return obj


def _candidates(module: Any) -> list[str]:
    """Names in *module* that could be a MODEL: its own nn.Module classes, then its callables."""
    own = getattr(module, "__name__", "")
    classes, others = [], []
    for attr, value in sorted(vars(module).items()):
        if attr.startswith("_"):
            continue
        if isinstance(value, type) and issubclass(value, nn.Module):
            # torch's own layers (``from torch.nn import Conv2d``) are not what the user means
            if not value.__module__.startswith("torch"):
                classes.append(attr)
        elif isinstance(value, nn.Module):
            classes.append(attr)
        elif inspect.isfunction(value) and value.__module__ == own:
            others.append(attr)
    return classes + others


def _not_found_message(module: Any, name: str, where: str) -> str:
    names = _candidates(module)
    message = f"{where} has no {name!r}"
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    if names:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        message += f" (models and factories there: {shown})"
    else:
        message += " (it defines no nn.Module subclass or function)"
    return message


def _instantiate(obj: Any, label: str, kwargs: dict[str, Any], notes: list[str]) -> nn.Module:
    if isinstance(obj, nn.Module):
        if kwargs:
            raise OptionError(
                f"--model-arg {', '.join(sorted(kwargs))} cannot be used: {label} is a model "
                "instance, not a class or factory"
            )
        return obj
    if not callable(obj):
        raise ModelSpecError(
            f"{label} is a value of type {type(obj).__name__}, "
            "not an nn.Module class, factory or instance"
        )
    _check_arguments(obj, label, kwargs)
    try:
        model = obj(**kwargs)
    except TypeError as exc:
        raise ModelSpecError(f"calling {label} failed: {_first_line(exc)}",
                             hint="pass constructor arguments with --model-arg NAME=VALUE") from exc
    except Exception as exc:
        raise ModelSpecError(f"calling {label} raised {_first_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise ModelSpecError(
            f"{label} returned a value of type {type(model).__name__}, not a torch.nn.Module",
            hint="MODEL must name an nn.Module class or a factory that returns a model",
        )
    if kwargs:
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        notes.append(f"built {label}({shown})")
    return model


def _check_arguments(obj: Any, label: str, kwargs: dict[str, Any]) -> None:
    """Name missing or unknown constructor arguments before calling, with the option to use."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # builtins and some C types have none; just call it
        return
    params = signature.parameters.values()
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params)
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in kwargs if k not in named]
    if unknown and not accepts_any:
        takes = ", ".join(named) if named else "no arguments"
        raise OptionError(
            f"--model-arg {', '.join(unknown)}: {label} does not take "
            f"{'it' if len(unknown) == 1 else 'them'} (it takes: {takes})"
        )
    missing = [
        p.name
        for p in params
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.POSITIONAL_ONLY)
        and p.name not in kwargs
    ]
    if missing:
        example = " ".join(f"--model-arg {m}=VALUE" for m in missing)
        raise ModelSpecError(
            f"{label} needs argument{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            hint=f"give {'them' if len(missing) > 1 else 'it'} with {example}",
        )


# --------------------------------------------------------------------------------------------
# weights


def read_checkpoint(
    path: str | os.PathLike[str], *, key: str | None = None, trust_checkpoint: bool = False
) -> Checkpoint:
    """Read the state dict inside a weights file, without a model.

    Understands plain state dicts, training checkpoints that nest one (under the first of
    :data:`CHECKPOINT_KEYS` present, or *key*, which may be a dotted path like ``ema.module``),
    whole pickled modules (trusted only), ``.safetensors`` files and TorchScript archives.
    Raises :class:`WeightsError`.
    """
    path = os.fspath(path)
    full = os.path.expanduser(path)
    if not os.path.exists(full):
        raise WeightsError(f"weights file not found: {path}")
    if os.path.isdir(full):
        raise WeightsError(f"--weights {path} is a folder, not a file")
    if os.path.getsize(full) == 0:
        raise WeightsError(f"weights file {path} is empty (0 bytes)")
    sha = _checked_file(full, path, WeightsError, "weights file")
    notes: list[str] = []
    class_names: list[str] | None = None

    if full.endswith(".safetensors") or _looks_like_safetensors(full):
        obj, class_names = _read_safetensors(full, path)
    elif is_torchscript_archive(full):
        try:
            obj = _jit_load(full).state_dict()
        except Exception as exc:
            raise WeightsError(f"cannot load TorchScript archive {path}: {_first_line(exc)}") from exc
        notes.append(f"took the weights of TorchScript archive {os.path.basename(path)}")
    else:
        obj = _torch_load(full, path, trust_checkpoint)

    if isinstance(obj, nn.Module):
        notes.append(f"checkpoint holds a whole {type(obj).__name__}; used its state_dict()")
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise WeightsError(
            f"weights file {path} holds a value of type {type(obj).__name__}, "
            "not a state dict or checkpoint"
        )
    if class_names is None:
        class_names = _class_names(obj)

    alternatives: dict[str, dict[str, torch.Tensor]] = {}
    if key is not None:
        state = _state_at(obj, key, path)
        notes.append(f"used checkpoint key {key!r}")
    elif _is_state_dict(obj):
        state = obj
    else:
        found = _find_state_dicts(obj)
        if not found:
            raise WeightsError(
                f"no state dict found in weights file {path} "
                f"(top-level keys: {_key_list(obj)})",
                hint="choose the entry with --weights-key NAME (a dotted path like ema.module works)",
            )
        first, state = next(iter(found.items()))
        alternatives = {k: v for k, v in found.items() if k != first}
        line = f"used checkpoint key {first!r}"
        if alternatives:
            others = ", ".join(repr(k) for k in alternatives)
            line += f" (also found {others}; choose with --weights-key)"
        notes.append(line)
    ordered: OrderedDict[str, Any] = OrderedDict(state)
    if hasattr(state, "_metadata"):
        # Version metadata lets BatchNorm and friends upgrade old checkpoints; keep it.
        ordered._metadata = state._metadata  # type: ignore[attr-defined]
    return Checkpoint(
        state_dict=ordered,
        path=path,
        sha256=sha,
        notes=notes,
        class_names=class_names,
        alternatives=alternatives,
    )


def _looks_like_safetensors(path: str) -> bool:
    """safetensors files start with an 8-byte little-endian header length, then ``{"``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(10)
    except OSError:
        return False
    if len(head) < 10 or head[8:9] != b"{":
        return False
    size = int.from_bytes(head[:8], "little")
    return 2 <= size <= os.path.getsize(path) - 8


def _read_safetensors(full: str, path: str) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    try:
        from safetensors import safe_open  # optional: only .safetensors checkpoints need it
    except ImportError:
        raise WeightsError(
            f"reading {path} needs the safetensors package",
            hint='pip install "cnnreport[safetensors]"',
        ) from None
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(full, framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            for name in handle.keys():
                tensors[name] = handle.get_tensor(name)
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError
        raise WeightsError(f"cannot read safetensors file {path}: {_first_line(exc)}") from exc
    names = None
    for meta_key in _CLASS_NAME_KEYS:
        if meta_key in metadata:
            try:
                names = _as_class_names(json.loads(metadata[meta_key]))
            except ValueError:
                names = None
            if names:
                break
    return tensors, names


def _torch_load(full: str, path: str, trust: bool) -> Any:
    try:
        with warnings.catch_warnings():
            # torch warns (not errors) about some legacy formats; the user cannot act on it.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(full, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if _refuses_objects(exc):
            raise WeightsError(
                f"weights file {path} holds Python objects beyond tensors"
                f"{_unsupported_global(exc)}, and unpickling them can run arbitrary code",
                hint="rerun with --trust-checkpoint only if you trust where the file came from",
            ) from None
        raise WeightsError(
            f"cannot read weights file {path}: {_unpickler_detail(exc)} "
            "(not a PyTorch checkpoint, or corrupted)"
        ) from exc
    except (ModuleNotFoundError, AttributeError) as exc:
        # Only reachable when trusted: the pickle names a class that cannot be imported here.
        raise WeightsError(
            f"cannot unpickle weights file {path}: {_first_line(exc)}",
            hint="run from the project folder so the classes it names can be imported",
        ) from exc
    except Exception as exc:  # RuntimeError (bad zip), EOFError (truncated), KeyError, ...
        raise WeightsError(
            f"cannot read weights file {path}: {_first_line(exc)} "
            "(not a PyTorch checkpoint, or corrupted)"
        ) from exc


def _is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of names to tensors (``*_extra_state`` entries may be anything)."""
    if not isinstance(obj, Mapping) or not obj:
        return False
    has_tensor = False
    for name, value in obj.items():
        if not isinstance(name, str):
            return False
        if isinstance(value, torch.Tensor):
            has_tensor = True
        elif not name.endswith("_extra_state"):
            return False
    return has_tensor


def _find_state_dicts(obj: Mapping[str, Any]) -> dict[str, Any]:
    """State dicts inside a checkpoint, by key path, known keys first (one level deeper too)."""
    found: dict[str, Any] = {}

    def visit(value: Any, where: str, depth: int) -> None:
        if isinstance(value, nn.Module):
            value = value.state_dict()
        if _is_state_dict(value):
            found.setdefault(where, value)
        elif isinstance(value, Mapping) and depth < 2:
            for sub in _ordered_keys(value):
                visit(value[sub], f"{where}.{sub}", depth + 1)

    for name in _ordered_keys(obj):
        visit(obj[name], str(name), 1)
    return found


def _ordered_keys(obj: Mapping[Any, Any]) -> list[Any]:
    known = [k for k in CHECKPOINT_KEYS if k in obj]
    return known + [k for k in obj if k not in CHECKPOINT_KEYS and isinstance(k, str)]


def _state_at(obj: Mapping[str, Any], key: str, path: str) -> Any:
    """The entry at *key*: a literal top-level key first, else a dotted path."""
    if key in obj:
        value = obj[key]
    else:
        value = obj
        walked: list[str] = []
        for part in key.split("."):
            if isinstance(value, nn.Module):
                value = value.state_dict()
            if not isinstance(value, Mapping) or part not in value:
                here = ".".join(walked) or "the top level"
                keys = _key_list(value) if isinstance(value, Mapping) else type(value).__name__
                raise WeightsError(
                    f"--weights-key {key!r}: {path} has no {part!r} at {here} (keys there: {keys})"
                )
            value = value[part]
            walked.append(part)
    if isinstance(value, nn.Module):
        value = value.state_dict()
    if not _is_state_dict(value):
        what = f"keys: {_key_list(value)}" if isinstance(value, Mapping) else type(value).__name__
        raise WeightsError(
            f"--weights-key {key!r} in {path} is not a state dict of tensors ({what})"
        )
    return value


def _key_list(obj: Mapping[Any, Any], show: int = 8) -> str:
    keys = [str(k) for k in obj]
    if not keys:
        return "none"
    return ", ".join(keys[:show]) + (f", ... {len(keys) - show} more" if len(keys) > show else "")


def _class_names(obj: Mapping[str, Any]) -> list[str] | None:
    for key in _CLASS_NAME_KEYS:
        if key in obj:
            value = obj[key]
            if key == "class_to_idx" and isinstance(value, Mapping):
                try:
                    value = [name for name, _ in sorted(value.items(), key=lambda kv: int(kv[1]))]
                except (TypeError, ValueError):
                    continue
            names = _as_class_names(value)
            if names:
                return names
    return None


def _as_class_names(value: Any) -> list[str] | None:
    """A list of class names from a list/tuple, or an ``{index: name}`` mapping."""
    if isinstance(value, Mapping):
        try:
            items = sorted((int(k), v) for k, v in value.items())
        except (TypeError, ValueError):
            return None
        # Only a dense 0..n-1 index makes a usable list.
        if [i for i, _ in items] != list(range(len(items))):
            return None
        value = [v for _, v in items]
    if isinstance(value, (list, tuple)) and value and all(
        isinstance(v, (str, int)) for v in value
    ):
        return [str(v) for v in value]
    return None


def load_weights(
    model: nn.Module,
    path: str,
    *,
    key: str | None = None,
    trust_checkpoint: bool = False,
) -> list[str]:
    """Load the weights file at *path* into *model* in place and return notes on what was done.

    Wrapper prefixes (:data:`STRIP_PREFIXES`) are stripped only when that makes more keys match;
    the load is then strict: missing or unexpected keys and shape mismatches raise one
    :class:`WeightsError` listing the first few of each with counts.
    """
    checkpoint = read_checkpoint(path, key=key, trust_checkpoint=trust_checkpoint)
    return checkpoint.notes + _apply_checkpoint(model, checkpoint)


def _apply_checkpoint(model: nn.Module, checkpoint: Checkpoint, stored: dict[str, torch.Tensor] | None = None) -> list[str]:
    # When the first state dict found does not fit but another one does (a checkpoint whose
    # "model" entry is something else), use the one that fits and say so.
    try:
        return apply_state_dict(model, checkpoint.state_dict, source=checkpoint.path, stored=stored)
    except WeightsError as first_error:
        for where, state in checkpoint.alternatives.items():
            try:
                notes = apply_state_dict(model, state, source=checkpoint.path, stored=stored)
            except WeightsError:
                continue
            return [f"the first entry did not fit the model; used checkpoint key {where!r}"] + notes
        raise first_error


def apply_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "the checkpoint",
    stored: dict[str, torch.Tensor] | None = None,
) -> list[str]:
    """Load *state_dict* into *model* strictly after stripping wrapper prefixes that get in the way.

    Returns notes such as ``"stripped prefix 'module.' from 42 keys"``, and one saying so
    when floating tensors were cast to the model's dtype. *stored*, when given, receives those
    tensors as the checkpoint holds them (by the model's key). Raises :class:`WeightsError`
    naming missing/unexpected keys and shape mismatches.
    """
    expected = model.state_dict()
    metadata = getattr(state_dict, "_metadata", None)
    state, notes, renames = _strip_prefixes(dict(state_dict), list(expected))

    _keep_own_batch_counters(state, expected, notes)
    model_name = type(model).__name__
    if getattr(model, "original_name", None):  # TorchScript modules keep the class name here
        model_name = str(model.original_name)
    _refuse_misfit(state, expected, f"weights {source} do not fit {model_name}")

    if metadata is not None:
        ordered: OrderedDict[str, Any] = OrderedDict(state)
        ordered._metadata = OrderedDict(  # type: ignore[attr-defined]
            (renames(k), v) for k, v in metadata.items()
        )
        state = ordered
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # e.g. a dtype that cannot be copied, or custom load hooks
        raise WeightsError(
            f"loading weights {source} into {model_name} failed: {_first_line(exc)}"
        ) from exc
    notes.append(f"loaded {len(state)} tensors into {model_name}")
    cast = {
        k: v for k, v in state.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and k in expected
        and isinstance(expected[k], torch.Tensor) and expected[k].is_floating_point() and v.dtype != expected[k].dtype
    }
    if cast:
        notes.append(_cast_note(cast, expected))
        if stored is not None:
            stored.update({k: v.detach() for k, v in cast.items()})
    return notes


def _keep_own_batch_counters(state: dict[str, Any], expected: Mapping[str, Any], notes: list[str]) -> None:
    """Checkpoints from before PyTorch 0.4.1 lack BatchNorm's num_batches_tracked; the model's
    own counter is the right value then, not an error (when the layer's statistics are there)."""
    filled = [
        k for k in expected
        if k not in state
        and k.endswith("num_batches_tracked")
        and k[: -len("num_batches_tracked")] + "running_mean" in state
    ]
    for name in filled:
        state[name] = expected[name]
    if filled:
        notes.append(f"kept the model's own num_batches_tracked for {len(filled)} BatchNorm layer(s)")


def _refuse_misfit(state: Mapping[str, Any], expected: Mapping[str, Any], what: str) -> None:
    """Raise :class:`WeightsError` (``what``: the misfit) naming the missing and unexpected keys
    and the shape mismatches, or saying that no key matches at all; nothing when every key fits."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {_shape(state[k].shape)} vs model {_shape(expected[k].shape)}"
        for k in expected
        if k in state
        and isinstance(state[k], torch.Tensor)
        and isinstance(expected[k], torch.Tensor)
        and state[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return
    matched = sum(1 for k in state if k in expected)
    parts = []
    if matched == 0 and not mismatched:
        parts.append(
            f"none of its {len(state)} keys match the model's {len(expected)} "
            f"(checkpoint: {', '.join(list(state)[:3])}; model: {', '.join(list(expected)[:3])})"
        )
    else:
        if missing:
            parts.append(_listing(missing, "missing key"))
        if unexpected:
            parts.append(_listing(unexpected, "unexpected key"))
        if mismatched:
            parts.append(_listing(mismatched, "shape mismatch", show=2))
    raise WeightsError(
        f"{what}: " + "; ".join(parts),
        hint="weights for another architecture? check MODEL and --model-arg, "
        "or pick another checkpoint entry with --weights-key",
    )


def _cast_note(cast: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str:
    """One line on the checkpoint tensors whose dtype the model's own tensors changed."""
    pairs: dict[tuple[torch.dtype, torch.dtype], int] = {}
    for key, tensor in cast.items():
        pair = (tensor.dtype, expected[key].dtype)
        pairs[pair] = pairs.get(pair, 0) + 1
    parts = []
    for (have, want), count in pairs.items():
        exact = _represents(want, have)
        parts.append(
            f"{count} {_dtype_name(have)} tensor{'s' if count != 1 else ''} "
            + (f"copied exactly into the model's {_dtype_name(want)}" if exact else f"rounded to the model's {_dtype_name(want)}")
        )
    return "the checkpoint's dtype is not the model's: " + "; ".join(parts)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _represents(wide: torch.dtype, narrow: torch.dtype) -> bool:
    """Whether every finite value of *narrow* is exactly a value of *wide* (float16 in float32: yes)."""
    a, b = torch.finfo(wide), torch.finfo(narrow)
    if b.bits == 8:
        # torch.finfo misleads for float8 (float8_e5m2fnuz's eps is half its step at 1, and
        # tiny ignores subnormals); a one-byte format's 256 values are quickly tried instead
        values = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(narrow).to(torch.float64)
        values = values[torch.isfinite(values)]
        return torch.equal(values.to(wide).to(torch.float64), values)
    return a.bits >= b.bits and a.eps <= b.eps and a.max >= b.max and a.tiny <= b.tiny


def _strip_prefixes(
    state: dict[str, Any], model_keys: list[str]
) -> tuple[dict[str, Any], list[str], Any]:
    """Strip wrapper prefixes from checkpoint keys while each strip makes more keys match.

    Known prefixes are tried first; then one common first component (``net.``, ``backbone.``)
    shared by every key, a Lightning module's attribute name. Returns the new state dict, notes,
    and a function that renames a module path the same way (for ``_metadata``).
    """
    wanted = set(model_keys)

    def score(keys: Any) -> int:
        return sum(1 for k in keys if k in wanted)

    def strips(current: dict[str, Any]) -> list[tuple[str, set[str]]]:
        prefixes = list(STRIP_PREFIXES)
        heads = {k.split(".", 1)[0] + "." for k in current}
        if len(heads) == 1 and all("." in k for k in current):
            prefixes += [h for h in heads if h not in prefixes]
        found = []
        for prefix in prefixes:
            # a key whose stripped form already exists stays as it is (no silent overwrite)
            hits = {k for k in current if k.startswith(prefix) and k[len(prefix):] not in current}
            if hits:
                found.append((prefix, hits))
        return found

    Found = tuple[int, list[tuple[str, int]], dict[str, Any]]

    def search(current: dict[str, Any], depth: int) -> Found:
        # Stacked wrappers (``_orig_mod.module.``) only match after every layer is gone, so
        # look a few strips ahead; the shortest sequence reaching the best score wins.
        best = (score(current), [], current)
        if depth == 0 or best[0] == len(wanted):
            return best
        for prefix, hits in strips(current):
            trial = {(k[len(prefix):] if k in hits else k): v for k, v in current.items()}
            got, steps, result = search(trial, depth - 1)
            if got > best[0] or (got == best[0] > score(current) and len(steps) + 1 < len(best[1])):
                best = (got, [(prefix, len(hits))] + steps, result)
        return best

    _, steps, state = search(state, 4)
    stripped = [prefix for prefix, _ in steps]
    notes = [
        f"stripped prefix {prefix!r} from {count} key{'s' if count != 1 else ''}"
        for prefix, count in steps
    ]

    def rename(module_path: str) -> str:
        for prefix in stripped:
            bare = prefix[:-1]
            if module_path == bare:
                module_path = ""
            elif module_path.startswith(prefix):
                module_path = module_path[len(prefix):]
        return module_path

    return state, notes, rename
