"""The output set's writes, one function call at a time: every file new or every file as it was,
no temporary or backup file left behind, the modes and links of the files kept.

Each test builds its own files in ``tmp_path`` and makes one step fail with monkeypatch; the
expected bytes, names and modes are written out literally here.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import threading
from pathlib import Path

import pytest

from cnnreport.errors import OutputError
from cnnreport.render import outputs


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_a_set_is_written_and_its_paths_returned(tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "b.json"
    a.write_text("old a")
    written = outputs.write_output_set([(a, "new a\n"), (str(b), "new é\n")])
    assert written == [str(a), str(b)]
    assert a.read_bytes() == b"new a\n"
    assert b.read_bytes() == b"new \xc3\xa9\n"  # UTF-8, newlines as given
    assert names(tmp_path) == ["a.html", "b.json"]


def test_output_set_records_which_targets_were_replaced(tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "b.json"
    out = outputs.OutputSet([a, str(b)])
    assert out.replaced == []
    assert out.targets == [a, b]
    assert out.write(["1", "2"]) == [str(a), str(b)]
    assert out.replaced == [a, b]


def test_one_text_per_target_or_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="^one text per target$"):
        outputs.OutputSet([tmp_path / "a", tmp_path / "b"]).write(["only one"])
    assert names(tmp_path) == []


def test_a_symbolic_link_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "real.html"
    real.write_text("old")
    link = tmp_path / "link.html"
    link.symlink_to("real.html")
    out = outputs.OutputSet([link])
    assert out.targets == [real]
    out.write(["new"])
    assert link.is_symlink() is True
    assert os.readlink(link) == "real.html"
    assert real.read_text() == "new"
    assert names(tmp_path) == ["link.html", "real.html"]


def test_a_new_file_gets_mode_644_and_a_replaced_one_keeps_its_mode(tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    b.write_text("old")
    os.chmod(b, 0o600)
    old_umask = os.umask(0o077)  # the new file's mode is set, not left to the umask
    try:
        outputs.write_output_set([(a, "x"), (b, "y")])
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(a.stat().st_mode) == 0o644
    assert stat.S_IMODE(b.stat().st_mode) == 0o600


def test_a_mode_that_cannot_be_set_does_not_stop_the_write(tmp_path, monkeypatch):
    a = tmp_path / "a.html"

    def chmod(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(outputs.os, "chmod", chmod)
    assert outputs.write_output_set([(a, "text")]) == [str(a)]
    assert a.read_text() == "text"
    assert names(tmp_path) == ["a.html"]


def test_temporary_and_backup_files_sit_beside_the_target_with_a_short_prefix(tmp_path, monkeypatch):
    """A name near the file system's limit leaves room for the temporary suffix: the prefix
    keeps 64 characters of it. The backup is a hard link with its own suffix."""
    long_name = "r" * 200 + ".html"
    a = tmp_path / long_name
    a.write_text("old")
    replaced, linked = [], []
    real_replace, real_link = os.replace, os.link

    def replace(src, dst):
        replaced.append((os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst)

    def link(src, dst):
        linked.append((os.fspath(src), os.fspath(dst)))
        return real_link(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    monkeypatch.setattr(outputs.os, "link", link)
    outputs.write_output_set([(a, "new")])
    ((tmp, dst),) = replaced
    assert dst == str(a)
    assert os.path.dirname(tmp) == str(tmp_path)
    name = os.path.basename(tmp)  # "." + 64 characters + "." + mkstemp's 8 + ".tmp"
    assert (name[:66], len(name), name[-4:]) == ("." + "r" * 64 + ".", 78, ".tmp")
    ((src, backup),) = linked
    assert src == str(a)
    assert os.path.dirname(backup) == str(tmp_path)
    name = os.path.basename(backup)
    assert (name[:66], len(name), name[-8:]) == ("." + "r" * 64 + ".", 82, ".old.tmp")
    assert a.read_text() == "new"
    assert names(tmp_path) == [long_name]


def test_a_target_in_a_missing_folder_is_refused_in_words(tmp_path):
    target = tmp_path / "nope" / "a.html"
    with pytest.raises(OutputError) as caught:
        outputs.write_output_set([(target, "x")])
    assert str(caught.value) == f"cannot write {target}: folder {tmp_path / 'nope'} does not exist"


def test_a_target_that_is_a_folder_is_refused_and_the_other_outputs_kept(tmp_path):
    a = tmp_path / "a.html"
    a.write_text("old a")
    folder = tmp_path / "b"
    folder.mkdir()
    with pytest.raises(OutputError) as caught:
        outputs.write_output_set([(a, "new a"), (folder, "new b")])
    assert str(caught.value) == f"cannot write {folder}: it is a folder; give a file name such as {folder / 'report.html'}"
    assert a.read_text() == "old a"
    assert names(tmp_path) == ["a.html", "b"]
    assert names(folder) == []


@pytest.mark.parametrize("strerror, shown", [("No space left on device", "No space left on device"), (None, "no temporary file today")])
def test_a_temporary_file_that_cannot_be_made_is_one_error(tmp_path, monkeypatch, strerror, shown):
    a = tmp_path / "a.html"
    a.write_text("old a")

    def mkstemp(*args, **kwargs):
        raise OSError(28, strerror) if strerror else OSError("no temporary file today")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", mkstemp)
    with pytest.raises(OutputError) as caught:
        outputs.write_output_set([(a, "new a")])
    assert str(caught.value) == f"cannot write {a}: {shown}"
    assert a.read_text() == "old a"
    assert names(tmp_path) == ["a.html"]


def test_a_write_error_without_strerror_names_the_error(tmp_path, monkeypatch):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    a.write_text("old a")
    b.write_text("old b")
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError("disk went away")

    monkeypatch.setattr(outputs.os, "fsync", fsync)
    with pytest.raises(OutputError) as caught:
        outputs.write_output_set([(a, "new a"), (b, "new b")])
    assert str(caught.value) == f"cannot write {b}: disk went away"
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert names(tmp_path) == ["a.html", "b.html"]


def test_an_interrupt_while_staging_propagates_and_leaves_nothing(tmp_path, monkeypatch):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    a.write_text("old a")
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(outputs.os, "fsync", fsync)
    with pytest.raises(KeyboardInterrupt) as caught:
        outputs.write_output_set([(a, "new a"), (b, "new b")])
    assert caught.value.replaced_outputs == []
    assert a.read_text() == "old a"
    assert names(tmp_path) == ["a.html"]


def test_text_that_is_not_utf8_is_one_error_naming_the_codec(tmp_path):
    a = tmp_path / "a.html"
    with pytest.raises(OutputError) as caught:
        outputs.write_output_set([(a, "x\udc80")])
    message = str(caught.value)
    assert message.startswith(f"cannot write {a}: 'utf-8' codec can't encode character '\\udc80'")
    assert names(tmp_path) == []


def test_a_failing_rename_of_a_third_file_restores_the_first_two(tmp_path, monkeypatch):
    """a existed (put back from its backup), b was new (removed again), c fails."""
    a, b, c = tmp_path / "a.html", tmp_path / "b.json", tmp_path / "c.md"
    a.write_text("old a")
    c.write_text("old c")
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == c:
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    out = outputs.OutputSet([a, b, c])
    with pytest.raises(OutputError) as caught:
        out.write(["new a", "new b", "new c"])
    assert str(caught.value) == f"cannot write {c}: Input/output error"
    assert out.replaced == []
    assert (a.read_text(), c.read_text()) == ("old a", "old c")
    assert names(tmp_path) == ["a.html", "c.md"]


def test_a_rename_error_without_strerror_names_the_error(tmp_path, monkeypatch):
    a = tmp_path / "a.html"
    a.write_text("old a")

    def replace(src, dst):
        raise OSError("rename refused")

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(OutputError) as caught:
        outputs.write_output_set([(a, "new a")])
    assert str(caught.value) == f"cannot write {a}: rename refused"
    assert a.read_text() == "old a"
    assert names(tmp_path) == ["a.html"]


def test_a_roll_back_step_that_fails_does_not_stop_the_others(tmp_path, monkeypatch):
    """Putting back b fails (its backup cannot be renamed); a is still put back, c still removed."""
    a, b, c, d = (tmp_path / n for n in ("a.html", "b.html", "c.html", "d.html"))
    a.write_text("old a")
    b.write_text("old b")
    d.write_text("old d")
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == d:
            raise OSError(errno.EIO, "Input/output error")
        if Path(dst) == b and str(src).endswith(".old.tmp"):
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(OutputError, match="Input/output error"):
        outputs.write_output_set([(a, "new a"), (b, "new b"), (c, "new c"), (d, "new d")])
    assert a.read_text() == "old a"
    assert b.read_text() == "new b"  # the one step that failed
    assert d.read_text() == "old d"
    assert names(tmp_path) == ["a.html", "b.html", "d.html"]


def test_a_new_file_that_cannot_be_removed_again_does_not_stop_the_roll_back(tmp_path, monkeypatch):
    a, b, c = tmp_path / "a.html", tmp_path / "b.html", tmp_path / "c.html"
    a.write_text("old a")
    real_replace, real_unlink = os.replace, os.unlink

    def replace(src, dst):
        if Path(dst) == c:
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    def unlink(path, *args, **kwargs):
        if Path(path) == b:
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(outputs.os, "replace", replace)
    monkeypatch.setattr(outputs.os, "unlink", unlink)
    with pytest.raises(OutputError, match="Input/output error"):
        outputs.write_output_set([(a, "new a"), (b, "new b"), (c, "new c")])
    assert a.read_text() == "old a"
    assert names(tmp_path) == ["a.html", "b.html"]  # b could not be removed


@pytest.mark.parametrize("code", [errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP])
def test_without_hard_links_the_backup_is_a_copy(tmp_path, monkeypatch, code):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    a.write_text("old a")

    def link(src, dst):
        raise OSError(code, os.strerror(code))

    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == b:
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "link", link)
    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(OutputError, match="Input/output error"):
        outputs.write_output_set([(a, "new a"), (b, "new b")])
    assert a.read_text() == "old a"  # put back from the copy
    assert names(tmp_path) == ["a.html"]


def test_without_hard_links_a_set_that_succeeds_leaves_no_copy(tmp_path, monkeypatch):
    a = tmp_path / "a.html"
    a.write_text("old a")

    def link(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(outputs.os, "link", link)
    outputs.write_output_set([(a, "new a")])
    assert a.read_text() == "new a"
    assert names(tmp_path) == ["a.html"]


def test_a_backup_that_fails_for_another_reason_is_one_error(tmp_path, monkeypatch):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    a.write_text("old a")
    b.write_text("old b")
    real_link = os.link

    def link(src, dst):
        if Path(src) == b:
            raise OSError(errno.EACCES, "Permission denied")
        return real_link(src, dst)

    monkeypatch.setattr(outputs.os, "link", link)
    with pytest.raises(OutputError) as caught:
        outputs.write_output_set([(a, "new a"), (b, "new b")])
    assert str(caught.value) == f"cannot write {b}: Permission denied"
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert names(tmp_path) == ["a.html", "b.html"]


def test_a_backup_left_after_success_is_removed(tmp_path):
    a = tmp_path / "a.html"
    a.write_text("old a")
    os.link(a, tmp_path / "other-link")  # a file with two names: its backup is a third
    outputs.write_output_set([(a, "new a")])
    assert a.read_text() == "new a"
    assert (tmp_path / "other-link").read_text() == "old a"
    assert names(tmp_path) == ["a.html", "other-link"]
    assert (tmp_path / "other-link").stat().st_nlink == 1


# -- signals during the renames ----------------------------------------------------------------


def _signal_during_renames(tmp_path, monkeypatch, signals):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    a.write_text("old a")
    real_replace = os.replace
    sent = []

    def replace(src, dst):
        if not sent:
            sent.append(dst)
            for sig in signals:
                os.kill(os.getpid(), sig)
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    return a, b


def test_the_first_held_signal_goes_to_its_own_handler_once_the_set_is_written(tmp_path, monkeypatch):
    seen = []

    def term_handler(signum, frame):
        seen.append(("term", signum, frame))

    def int_handler(signum, frame):
        seen.append(("int", signum, frame))

    old_term = signal.signal(signal.SIGTERM, term_handler)
    old_int = signal.signal(signal.SIGINT, int_handler)
    try:
        a, b = _signal_during_renames(tmp_path, monkeypatch, [signal.SIGTERM, signal.SIGINT])
        assert outputs.write_output_set([(a, "new a"), (b, "new b")]) == [str(a), str(b)]
        assert signal.getsignal(signal.SIGTERM) is term_handler
        assert signal.getsignal(signal.SIGINT) is int_handler
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    assert seen == [("term", signal.SIGTERM, None)]
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert names(tmp_path) == ["a.html", "b.html"]


def test_an_ignored_signal_during_the_renames_stays_ignored(tmp_path, monkeypatch):
    raised = []
    monkeypatch.setattr(outputs.signal, "raise_signal", raised.append)
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        a, b = _signal_during_renames(tmp_path, monkeypatch, [signal.SIGTERM])
        outputs.write_output_set([(a, "new a"), (b, "new b")])
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old)
    assert raised == []
    assert (a.read_text(), b.read_text()) == ("new a", "new b")


def test_a_default_signal_during_the_renames_is_raised_again_after_them(tmp_path, monkeypatch):
    """SIGTERM with its default action: held until both files are new, then raised as it
    came (raise_signal is replaced here, so the test process lives)."""
    raised = []
    monkeypatch.setattr(outputs.signal, "raise_signal", raised.append)
    old = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        held = outputs._DeferredSignals()
        with held:
            assert signal.getsignal(signal.SIGTERM) == held._record
            held._record(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, old)
    assert raised == [signal.SIGTERM]


def test_no_signal_held_means_nothing_raised(monkeypatch):
    raised = []
    monkeypatch.setattr(outputs.signal, "raise_signal", raised.append)
    old = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with outputs._DeferredSignals():
            pass
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, old)
    assert raised == []


def test_a_set_written_outside_the_main_thread_sets_no_handler(tmp_path):
    a = tmp_path / "a.html"
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    errors, held = [], []

    def work():
        try:
            with outputs._DeferredSignals() as deferred:
                held.append(dict(deferred._old))
            outputs.write_output_set([(a, "from a thread")])
        except BaseException as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == []
    assert held == [{}]
    assert a.read_text() == "from a thread"
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_the_held_signals_are_int_term_and_hup(monkeypatch):
    swapped = []
    real_signal = signal.signal

    def spy(sig, handler):
        swapped.append(sig)
        return real_signal(sig, handler)

    monkeypatch.setattr(outputs.signal, "signal", spy)
    with outputs._DeferredSignals() as held:
        inside = sorted(held._old)
    assert inside == sorted([signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
    assert sorted(swapped) == sorted([signal.SIGINT, signal.SIGTERM, signal.SIGHUP] * 2)


def test_a_signal_that_cannot_be_swapped_is_left_alone(monkeypatch):
    real_signal = signal.signal

    def picky(sig, handler):
        if sig == signal.SIGHUP:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_signal(sig, handler)

    monkeypatch.setattr(outputs.signal, "signal", picky)
    with outputs._DeferredSignals() as held:
        assert sorted(held._old) == sorted([signal.SIGINT, signal.SIGTERM])


def test_a_signal_refused_with_value_error_is_left_alone(monkeypatch):
    real_signal = signal.signal

    def picky(sig, handler):
        if sig == signal.SIGTERM:
            raise ValueError("signal only works in main thread")
        return real_signal(sig, handler)

    monkeypatch.setattr(outputs.signal, "signal", picky)
    with outputs._DeferredSignals() as held:
        assert sorted(held._old) == sorted([signal.SIGINT, signal.SIGHUP])
