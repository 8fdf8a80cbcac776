"""Where a run's files go: every output path checked before any work, all replaced together.

A run writes up to three views of one report (HTML, JSON, Markdown) and, when its forward pass
fails, a partial HTML report. Two promises hold for all of them:

* **Nothing lost.** Before the model runs, :func:`plan_outputs` resolves every output path
  (symlinks followed) and refuses one that is an input of the run (the checkpoint, the model's
  source or any Python module loaded, a probe, the class-name file), another output, a folder, a
  device, a name the file system cannot hold, or a folder that cannot be written. The refusal
  names both paths, and nothing has been written.
* **One set.** :func:`write_output_set` writes every file to a temporary file beside its target
  first; only when all are complete are they renamed over their targets, with signals held back
  for those few renames, so a run's outputs are all new or all as they were. A failing rename
  puts back the files already replaced. Temporary files never outlive the call.
"""

from __future__ import annotations

import errno
import glob as globlib
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..errors import OutputError

#: The signals held back while a set of outputs is renamed into place.
_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM} | ({signal.SIGHUP} if hasattr(signal, "SIGHUP") else set())


@dataclass(frozen=True)
class PlannedOutput:
    """One file a run may write: the option that named it, as given, and where it really goes."""

    role: str  # "-o", "--json", "--markdown", "the partial report"
    given: str
    path: Path  # absolute, symlinks followed: the file that is replaced


@dataclass(frozen=True)
class OutputPlan:
    """Every output of one run, checked against each other and against the run's inputs."""

    outputs: tuple[PlannedOutput, ...]
    partial: PlannedOutput | None = None

    def path_of(self, role: str) -> Path | None:
        for out in self.outputs:
            if out.role == role:
                return out.path
        return None


def _temp_prefix(target: Path) -> str:
    # The temporary name must fit wherever the target's does: a target name near NAME_MAX
    # would not leave room for ``.{name}.XXXXXXXX.tmp``, so long names are cut in the prefix.
    return f".{target.name[:64]}."


def _resolve(given: str | os.PathLike[str], role: str = "output") -> Path:
    """The file a write to ``given`` replaces: absolute, every symlink followed."""
    text = os.fspath(given)
    if not text:
        raise OutputError(f"{role} is empty; give a file name such as report.html")
    path = Path(os.path.realpath(os.path.abspath(os.path.expanduser(text))))
    try:
        looped = stat.S_ISLNK(os.lstat(path).st_mode)  # realpath stops at a link it cannot follow
    except OSError:  # no such file yet, or a name too long to look up (refused by _check_target)
        looped = False
    if looped:
        raise OutputError(f"cannot write {role} {text}: it is a symbolic link that loops; remove the link or choose another name")
    return path


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _identity(path: Path) -> tuple[int, int] | Path:
    """What makes two paths one file: device and inode (hard links, bind mounts, symlinks), or
    the resolved path of a file that does not exist."""
    try:
        info = os.stat(path)
        return (info.st_dev, info.st_ino)
    except (OSError, ValueError):
        return Path(os.path.realpath(path))


def _same_file(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts, case-insensitive file systems
    except OSError:
        return False


def loaded_module_files() -> list[tuple[str, Path]]:
    """The source file of every Python module loaded now: the model's code and what it imports.

    Overwriting one would destroy code the user runs; they are inputs of every run.
    """
    found = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and file:
            found.append((name, Path(file)))
    return found


def _check_target(out: PlannedOutput) -> None:
    """Refuse a target that cannot be written, before any work: the same checks a write makes."""
    path, given, role = out.path, out.given, out.role
    where = f"{role} {given}"
    folder = path.parent
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(os.fsencode(path.name)) > limit:
        raise OutputError(f"cannot write {where}: the file name is {len(os.fsencode(path.name))} bytes, over this file system's {limit}; choose a shorter name")
    if _exists(path):
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise OutputError(f"cannot write {where}: it is a folder; give a file name such as {Path(given) / 'report.html'}")
        if not stat.S_ISREG(mode):
            raise OutputError(f"cannot write {where}: it is not a regular file (a device, pipe or socket); give a file path")
    if not folder.is_dir():
        raise OutputError(f"cannot write {where}: folder {folder} does not exist")
    # The only sure test of writability is to create the temporary file a write would create.
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write {where}: {exc.strerror or exc} in folder {folder}") from None
    os.close(fd)
    os.unlink(tmp)


def plan_outputs(
    outputs: Sequence[tuple[str, str | os.PathLike[str] | None]],
    inputs: Iterable[tuple[str, str | os.PathLike[str] | None]] = (),
    *,
    partial: str | os.PathLike[str] | None = None,
    protect_loaded_modules: bool = True,
    folder_suffixes: Sequence[str] = (),
) -> OutputPlan:
    """Resolve and check every output of a run before any work; raise :class:`OutputError` if one
    is unusable, names the same file as another output, or is one of the run's ``inputs``.

    ``outputs`` and ``inputs`` are ``(role, path)`` pairs (a role is how the user named the path:
    ``"-o"``, ``"--weights"``, ``"probe"``); paths that are None are skipped. ``partial`` is the
    file a failed forward pass would write; it is checked like the others. An input may be a
    folder (an existing output below it with one of ``folder_suffixes`` is an input: a probe it
    holds) or a glob pattern (the files it matches). Every loaded Python module's source is an
    input too, unless ``protect_loaded_modules`` is false.
    """
    planned = [PlannedOutput(role, os.fspath(given), _resolve(given, role)) for role, given in outputs if given is not None]
    partial_out = PlannedOutput("the partial report", os.fspath(partial), _resolve(partial, "the partial report")) if partial else None
    everything = planned + ([partial_out] if partial_out else [])
    for i, a in enumerate(everything):
        for b in everything[:i]:
            if _same_file(a.path, b.path):
                raise OutputError(f"{a.role} {a.given} and {b.role} {b.given} are the same file; give each output its own name")
    known_inputs = [(role, os.fspath(p)) for role, p in inputs if p is not None and os.fspath(p) != ""]
    if protect_loaded_modules:
        known_inputs += [(f"the source of Python module {name}", str(file)) for name, file in loaded_module_files()]
    # Only a file that exists now can be destroyed: outputs that do not exist yet collide with no input.
    existing = [out for out in everything if _exists(out.path)]
    if existing:
        # One stat per input file: thousands of loaded modules stay cheap.
        by_identity = {_identity(out.path): out for out in existing}
        for role, given in known_inputs:
            for source in _input_files(given, existing, folder_suffixes):
                out = by_identity.get(_identity(source))
                if out is not None:
                    what = f"{role} {given}" if Path(given) == source else f"{source}, in {role} {given}"
                    raise OutputError(f"{out.role} {out.given} is {what}: writing there would destroy an input; choose another output name")
    _refuse_outputs_read_as_inputs(everything, known_inputs, folder_suffixes)
    for out in planned:
        _check_target(out)
    return OutputPlan(outputs=tuple(planned), partial=partial_out)


def _refuse_outputs_read_as_inputs(outputs: Sequence[PlannedOutput], inputs: Sequence[tuple[str, str]], folder_suffixes: Sequence[str]) -> None:
    """An output not there yet, but with a suffix an input folder's files are read by, inside
    that folder: written, it would be read as a probe (or an example) by the next run, which
    would then fail on it."""
    suffixes = {s.lower() for s in folder_suffixes}
    if not suffixes:
        return
    folders = []
    for role, given in inputs:
        path = Path(os.path.expanduser(given))
        if path.is_dir():
            folders.append((role, given, Path(os.path.realpath(path))))
    for out in outputs:
        if out.path.suffix.lower() not in suffixes:
            continue
        for role, given, folder in folders:
            if folder in out.path.parents:
                raise OutputError(f"{out.role} {out.given} is inside {role} {given} and has an input's suffix ({out.path.suffix}): the next run would read it as one of its files; choose another output name or folder")


def _input_files(given: str, outputs: Sequence[PlannedOutput], folder_suffixes: Sequence[str]) -> Iterator[Path]:
    """The files of one input that could be among ``outputs``: the file itself, the outputs a
    probe folder holds, or what a glob pattern matches."""
    path = Path(os.path.expanduser(given))
    if path.is_dir():
        folder = Path(os.path.realpath(path))
        suffixes = {s.lower() for s in folder_suffixes}
        linked = set()
        for out in outputs:
            if out.path.suffix.lower() in suffixes and folder in out.path.parents:
                yield out.path
            else:
                info = out.path.stat()
                if info.st_nlink > 1:  # a hard link: the probe may be this file under another name
                    linked.add((info.st_dev, info.st_ino))
        if linked:
            for root, _dirs, files in os.walk(folder):
                for name in files:
                    if os.path.splitext(name)[1].lower() in suffixes:
                        candidate = Path(root) / name
                        try:
                            info = candidate.stat()
                        except OSError:
                            continue
                        if (info.st_dev, info.st_ino) in linked:
                            yield candidate
    elif path.exists():
        yield path
    elif any(ch in given for ch in "*?["):
        for match in globlib.glob(os.path.expanduser(given), recursive=True):
            yield Path(match)


class _DeferredSignals:
    """Hold SIGINT/SIGTERM/SIGHUP back while a few renames finish together, then act on the
    first one that came as its handler would have.

    The Python-level handlers are swapped for a recorder (a signal mask would not do: the kernel
    delivers a process signal to any thread that does not block it, torch's among them). Only
    the main thread can set handlers; elsewhere nothing is needed, since Python runs handlers,
    and raises their KeyboardInterrupt, in the main thread only.
    """

    def __enter__(self) -> "_DeferredSignals":
        self._old: dict[int, object] = {}
        self._caught: list[int] = []
        if threading.current_thread() is threading.main_thread():
            for sig in _DEFERRED_SIGNALS:
                try:
                    self._old[sig] = signal.signal(sig, self._record)
                except (ValueError, OSError):
                    pass
        return self

    def _record(self, signum: int, _frame: object) -> None:
        self._caught.append(signum)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        if not self._caught:
            return
        signum = self._caught[0]
        old = self._old.get(signum)
        if callable(old):
            old(signum, None)  # Python's default for SIGINT raises KeyboardInterrupt here
        elif old == signal.SIG_DFL:
            signal.raise_signal(signum)


class OutputSet:
    """The files one run replaces; ``replaced`` says which are new once :meth:`write` returns or
    raises (all of them, or none)."""

    def __init__(self, targets: Sequence[Path | str]) -> None:
        # A symlink is written through: the file it names is replaced, the link stays.
        self.targets = [Path(os.path.realpath(os.fspath(t))) for t in targets]
        self.replaced: list[Path] = []

    def write(self, texts: Sequence[str]) -> list[str]:
        """Write ``texts[i]`` to ``targets[i]``, all or none (see the module docstring).

        An interrupt (KeyboardInterrupt, or the CLI's :class:`~cnnreport.errors.Interrupted` for
        SIGTERM/SIGHUP) leaves no temporary file and carries ``replaced_outputs``: the paths
        already replaced, which is every target (a signal during the renames is held until they
        are done) or none.
        """
        if len(texts) != len(self.targets):
            raise ValueError("one text per target")
        staged: list[tuple[Path, str]] = []
        try:
            for target, text in zip(self.targets, texts):
                staged.append((target, _stage(target, text)))
            self._commit(staged)
        except KeyboardInterrupt as exc:
            exc.replaced_outputs = [str(p) for p in self.replaced]  # type: ignore[attr-defined]
            raise
        finally:
            for _target, tmp in staged:
                _unlink_quietly(tmp)
        return [str(t) for t in self.targets]

    def _commit(self, staged: list[tuple[Path, str]]) -> None:
        backups: list[tuple[Path, str | None]] = []
        with _DeferredSignals():
            try:
                for target, tmp in staged:
                    try:
                        backups.append((target, _backup(target)))
                        os.replace(tmp, target)
                    except OSError as exc:
                        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
                    self.replaced.append(target)
            except BaseException:
                _roll_back(self.replaced, backups)
                self.replaced = []
                raise
            finally:
                for _target, backup in backups:
                    if backup:
                        _unlink_quietly(backup)


def _stage(target: Path, text: str) -> str:
    """A complete, fsynced temporary copy of ``text`` beside ``target``; its path."""
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {target}: folder {folder} does not exist")
    if target.is_dir():
        raise OutputError(f"cannot write {target}: it is a folder; give a file name such as {target / 'report.html'}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
            os.chmod(tmp, mode)
        except OSError:
            pass
    except BaseException as exc:
        _unlink_quietly(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
        if isinstance(exc, UnicodeError):  # a name that is not valid text reached the page
            raise OutputError(f"cannot write {target}: {exc}") from None
        raise
    return tmp


def _backup(target: Path) -> str | None:
    """A hard link to the file ``target`` holds now (None when there is none), so a failed set
    can put it back; a copy where the file system has no hard links."""
    if not target.exists():
        return None
    fd, backup = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".old.tmp", dir=target.parent)
    os.close(fd)
    os.unlink(backup)
    try:
        os.link(target, backup)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, getattr(errno, "EOPNOTSUPP", errno.ENOTSUP)):
            raise

        shutil.copy2(target, backup)
    return backup


def _roll_back(replaced: list[Path], backups: list[tuple[Path, str | None]]) -> None:
    old = dict(backups)
    for target in reversed(replaced):
        backup = old.get(target)
        try:
            if backup:
                os.replace(backup, target)
            else:
                os.unlink(target)
        except OSError:
            pass


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_output_set(files: Sequence[tuple[Path | str, str]]) -> list[str]:
    """Write every ``(path, text)`` pair, all or none; see :class:`OutputSet`."""
    return OutputSet([p for p, _ in files]).write([t for _, t in files])
