"""Compiled templates kept between processes, so only the first report on a machine compiles them.

Compiling the page's templates costs a fresh process 0.1-0.3 s, a tenth of a small report and
the same again for every ``cnnreport generate``. Jinja2 can keep the compiled code in a bytecode
cache (its own format: marshal'd code, keyed by the template's name and checked against a hash
of its source, so an edited template is compiled again). This module gives the environments one
that is safe to use unattended:

* it lives in the user's own cache folder, ``$CNNREPORT_CACHE_DIR`` or
  ``$XDG_CACHE_HOME/cnnreport`` or ``~/.cache/cnnreport``, in a sub-folder per cnnreport, Jinja2
  and Python version; ``CNNREPORT_CACHE_DIR=`` (empty) turns it off;
* the folder is used only when it belongs to this user and nobody else may write to it (the
  cache holds code that runs): otherwise, and wherever it cannot be made, read or written (a
  read-only home in CI), templates are compiled as before, silently; the page is the same;
* each environment has its own file names, from a hash of the settings its code depends on
  (escaping, whitespace control, the Markdown finalizer, the filters' names): the same
  template compiles to different code under different settings, and Jinja2 keys its files by
  the template's name and source only.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from pathlib import Path

import jinja2
from jinja2.bccache import Bucket, FileSystemBytecodeCache

from ..support.version import __version__

#: The environment variable that moves the cache; set to an empty string, it turns it off.
CACHE_DIR_VARIABLE = "CNNREPORT_CACHE_DIR"


def cache_root() -> Path | None:
    """The folder that holds cnnreport's caches, or None where the cache is turned off."""
    chosen = os.environ.get(CACHE_DIR_VARIABLE)
    if chosen is not None:
        return Path(chosen).expanduser() if chosen.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cnnreport"


def _private_folder(folder: Path) -> bool:
    """Make ``folder`` (mode 0700) if needed; True when it is a real folder of this user's that
    no one else can write to."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = os.lstat(folder)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        return False  # a symlink or a file: another user's redirect is not followed
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return False
    return not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class _QuietBytecodeCache(FileSystemBytecodeCache):
    """Jinja2's file cache, where a file that cannot be read or written means "compile": a cache
    must never be why a report fails."""

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # unreadable, truncated or foreign: compile it instead
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:  # full or read-only disk: the next process compiles again
            pass


def _settings_key(env: jinja2.Environment) -> str:
    """A short hash of what an environment's compiled code depends on besides the source."""
    settings = (
        env.block_start_string, env.block_end_string, env.variable_start_string, env.variable_end_string,
        env.comment_start_string, env.comment_end_string, env.line_statement_prefix, env.line_comment_prefix,
        env.trim_blocks, env.lstrip_blocks, env.newline_sequence, env.keep_trailing_newline,
        repr(env.autoescape), env.finalize is not None, env.optimized, env.undefined.__name__,
        sorted(env.filters), sorted(env.tests), sorted(env.extensions),
    )
    return hashlib.sha256(repr(settings).encode("utf-8")).hexdigest()[:16]


def attach_template_cache(env: jinja2.Environment) -> jinja2.Environment:
    """``env`` with the bytecode cache, where there is a usable cache folder (else as it was)."""
    root = cache_root()
    if root is None:
        return env
    python = f"py{sys.version_info[0]}{sys.version_info[1]}"
    folder = root / f"templates-{__version__}-jinja{jinja2.__version__}-{python}"
    if _private_folder(root) and _private_folder(folder):
        env.bytecode_cache = _QuietBytecodeCache(str(folder), pattern=f"{_settings_key(env)}-%s.cache")
    return env
