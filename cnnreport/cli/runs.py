"""The steps every report command shares: refusing options that cannot apply, planning the
outputs before any work, loading the probes, building and writing the report, the summary line
and the ``--fail-on`` gate.

The commands (:mod:`.main`, :mod:`.diff`) call these in order; the heavy stages are imported
inside the functions, so that ``cnnreport --help`` does not import torch.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Iterator

import click
from click.core import ParameterSource

from ..errors import CnnReportError, HealthCheckFailed, OptionError, terminal_safe
from ..support.gcpause import paused_gc
from .exits import ExitCode, fail
from .values import report_overrides


def partial_path(output: str) -> str:
    """``report.html`` -> ``report.partial.html``: where a failed run leaves what it has."""
    path = Path(output)
    suffix = f".partial{path.suffix or '.html'}"
    stem = path.stem
    # Keep the name within the file system's usual 255 bytes, where the output's own name fits.
    while stem and len(os.fsencode(stem + suffix)) > 255:
        stem = stem[:-1]
    return str(path.with_name(f"{stem}{suffix}"))


def spec_file(spec: str | None) -> str | None:
    """The file a MODEL spec reads (``net.py`` of ``net.py:Net``, a TorchScript file), if any."""
    if not spec:
        return None
    path = os.path.expanduser(spec)
    if os.path.isfile(path):
        return path
    head = path.rpartition(":")[0]
    return head if head and os.path.isfile(head) else None


def class_names_file(value: str | None) -> str | None:
    """The --class-names value when it names a file (it is an input then)."""
    return value if value and os.path.isfile(value) else None


def plan_run_outputs(kwargs: dict[str, Any], inputs: list[tuple[str, str | None]], *, output_key: str = "output") -> Any:
    """Check every output of this run before any work (see :func:`cnnreport.render.outputs.plan_outputs`):
    an output that is an input or another output, or cannot be written, is refused."""
    # Lazy: the probe and output modules import torch (and --help must not); with the collector
    # paused, since every object an import makes stays alive (its walks cost ~0.1 s here).
    with paused_gc():
        from ..io.probes import SUPPORTED_SUFFIXES
        from ..render.outputs import plan_outputs

    output = kwargs[output_key]
    return plan_outputs(
        [("-o", output), ("--json", kwargs.get("json_path")), ("--markdown", kwargs.get("markdown"))],
        inputs,
        partial=partial_path(output) if output else None,
        folder_suffixes=SUPPORTED_SUFFIXES,
    )


def probe_inputs(paths: list[str], probes: Any = None) -> list[tuple[str, str | None]]:
    """The probe paths as given (files, folders, globs) and every file the loaded probes came from."""
    found: list[tuple[str, str | None]] = [("the probe", p) for p in paths]
    for source in getattr(probes, "sources", None) or []:
        if source:
            found.append(("the probe", source))
    return found


def write_planned(report: Any, plan: Any) -> None:
    """Write the report's views to the planned outputs, all or none."""
    try:
        report.write(html=_str(plan.path_of("-o")), json=_str(plan.path_of("--json")), markdown=_str(plan.path_of("--markdown")))
    except KeyboardInterrupt as exc:
        exc.planned_outputs = [out.given for out in plan.outputs]  # type: ignore[attr-defined]
        raise


def _str(path: Any) -> str | None:
    return None if path is None else str(path)


def write_partial(report: Any, plan: Any) -> None:
    """A failed forward pass: write the partial report beside the output, then exit with the
    forward pass's own error. If the partial report cannot be written, the error still leads."""
    where = plan.partial.given
    error_line = report.failure.summary
    try:
        report.write(html=str(plan.partial.path))
    except CnnReportError as write_error:
        fail(f"{error_line}; the partial report {where} could not be written either: {write_error.one_line()}", ExitCode.FORWARD_FAILED)
    click.echo(f"cnnreport: error: {error_line}", err=True)
    click.echo(terminal_safe(f"cnnreport: wrote a partial report of what ran to {where}"), err=True)
    sys.exit(ExitCode.FORWARD_FAILED)


def command_line() -> str:
    """This run's command line as the report records it (shell-quoted, so it can be re-run)."""
    return "cnnreport " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def load_probe_set(kwargs: dict[str, Any], probe_paths: list[str], model: Any, *, mean: Any, std: Any, max_probes: int | None = None) -> Any:
    """The probes of ``probe_paths`` as the model takes them (channels and sample rank read off the
    model), with the probe options of ``kwargs``; None when no probe path is given."""
    if not probe_paths:
        return None
    # Lazy: probe loading imports torch and Pillow.
    from ..io.probes import expected_input_ndim, image_channels, load_probes

    image_size = kwargs.get("image_size")
    return load_probes(
        probe_paths if len(probe_paths) > 1 else probe_paths[0],
        image_size=tuple(image_size) if image_size else None,
        resize=kwargs.get("resize", "crop"),
        mean=mean,
        std=std,
        channels=image_channels(model),
        sample_ndim=expected_input_ndim(model),
        recursive=bool(kwargs.get("recursive")),
        max_probes=max_probes,
        max_image_pixels=kwargs.get("max_image_pixels"),
    )


NO_PROBES = "no probes: pass --probes PATH (images, a folder or tensors), or --input-size C H W for a synthetic input"


def refuse_inapplicable(ctx: click.Context, rules: list[tuple[str, bool, str]]) -> None:
    """Refuse an option given on the command line that the rest of the command makes meaningless.

    Each rule is ``(parameter name, whether it cannot apply, why)``; only options the user typed
    (not defaults) are refused.
    """
    for name, cannot_apply, why in rules:
        source = ctx.get_parameter_source(name)
        if cannot_apply and source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            option = next((p.opts[-1] if len(p.opts) == 1 else max(p.opts, key=len) for p in ctx.command.params if p.name == name), name)
            raise OptionError(f"{option} {why}")


def report_option_rules(kwargs: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Rules of :func:`refuse_inapplicable` for the options ``generate`` and ``demo`` share."""
    off = bool(kwargs.get("no_attributions"))
    why = "has no effect with --no-attributions, which turns Grad-CAM and saliency off; leave one out"
    return [("saliency", off, why), ("target_class", off, why), ("cam_layer", off, why)]


def probe_option_rules(kwargs: dict[str, Any], probe_paths: list[str], *, weights_given: bool) -> list[tuple[str, bool, str]]:
    """Rules of :func:`refuse_inapplicable` for the model and probe options of ``generate``/``diff``."""
    return [
        ("input_size", bool(probe_paths), "sets a synthetic input, but probes are given and would be used instead: drop --input-size or the probes"),
        ("resize", not kwargs.get("image_size"), "says how --image-size resizes; without --image-size H W nothing is resized"),
        ("recursive", not probe_paths, "looks for probes in sub-folders, but no probe folder is given"),
        ("weights_key", not weights_given, "chooses the state dict inside a checkpoint, but no checkpoint (--weights) is given"),
        ("image_size", not probe_paths, "resizes probe images, but no --probes are given"),
        ("mean", not probe_paths, "normalises probe images, but no --probes are given"),
        ("std", not probe_paths, "normalises probe images, but no --probes are given"),
        ("max_image_pixels", not probe_paths, "limits probe images, but no --probes are given"),
    ]


def example_option_rules(kwargs: dict[str, Any], probe_paths: list[str]) -> list[tuple[str, bool, str]]:
    """Rules of :func:`refuse_inapplicable` for the dataset examples' options of ``generate``."""
    without = not kwargs.get("examples")
    return [
        ("examples", not probe_paths, "takes its image size from the probe images, but no --probes are given"),
        ("example_channels", without, "chooses the channels that get examples, but no --examples folder is given"),
        ("example_top_k", without, "sets the examples per channel, but no --examples folder is given"),
        ("example_batch_size", without, "sets the examples' batch size, but no --examples folder is given"),
        ("example_workers", without, "sets the examples' decoding workers, but no --examples folder is given"),
    ]


def example_set_of(kwargs: dict[str, Any], *, mean: Any, std: Any) -> Any:
    """The ``--examples`` folder as an example set read like the probes (the same resize,
    normalisation, pixel limit and ``--recursive``; size and channels from the probes), or None."""
    if not kwargs.get("examples"):
        return None
    # Lazy: the example set imports torch.
    from ..io.examples import ExampleImages

    return ExampleImages(
        kwargs["examples"],
        resize=kwargs.get("resize", "crop"),
        mean=mean,
        std=std,
        recursive=bool(kwargs.get("recursive")),
        max_image_pixels=kwargs.get("max_image_pixels"),
    )


@contextlib.contextmanager
def sharded_run(kwargs: dict[str, Any]) -> Iterator[None]:
    """Under ``torchrun`` (``WORLD_SIZE`` above 1): this process in one ``torch.distributed``
    group for the block (gloo on CPUs; NCCL and the process's own GPU, ``LOCAL_RANK``, with
    ``--device cuda``), so the examples split across the processes and rank 0 writes the report.
    Only the examples are split: without ``--examples`` such a run is refused."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        yield
        return
    if not kwargs.get("examples"):
        raise OptionError(f"running as {world} processes (torchrun), but only --examples is split across processes: add --examples DIR, or run one process")
    # Lazy: torch.distributed is only for sharded runs.
    import torch
    import torch.distributed as dist

    if dist.is_initialized():  # the caller's own group
        yield
        return
    gpu = kwargs.get("device") in ("cuda", "auto") and torch.cuda.is_available()
    if gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if gpu else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def gate(report: Any, fail_on: str | None) -> None:
    if not fail_on:
        return
    from ..datamodel import Severity  # lazy, with the report it reads

    threshold = Severity(fail_on).rank
    hits = [a for a in report.alerts if a.severity.rank >= threshold]
    if hits:
        first = hits[0]
        raise HealthCheckFailed(
            f"{len(hits)} alert(s) of severity {fail_on} or worse (--fail-on {fail_on}); first: "
            f"{first.layer + ': ' if first.layer else ''}{first.message}"
        )


def run_report(
    model: Any,
    probes: Any,
    kwargs: dict[str, Any],
    *,
    plan: Any,
    provenance: Any = None,
    input_size: Any = None,
    class_names: list[str] | None = None,
    notes: list[str] | None = None,
    examples: Any = None,
) -> None:
    """Build, write and gate one report; a failed forward pass leaves a partial report. In a
    sharded run (``--examples`` under torchrun) only rank 0 writes, gates and prints."""
    # Lazy: the pipeline is the heavy part of the package (torch, torchinfo, Pillow).
    with paused_gc():
        from ..io.provenance import default_provenance
        from ..report.pipeline import build_report

    output = kwargs["output"]
    prov = provenance or default_provenance()
    prov.command_line = command_line()
    try:
        overrides = report_overrides(kwargs)
        if class_names and "class_names" not in overrides:
            overrides["class_names"] = class_names  # names the checkpoint carries
        on_failure = "partial" if plan.partial is not None else "raise"
        report = build_report(model, probes, input_size=input_size, provenance=prov, notes=notes or [], on_failure=on_failure, examples=examples, **overrides)
        if report is None:  # another process of a sharded run writes the report
            return
        if report.failure is not None:
            write_partial(report, plan)
        write_planned(report, plan)
    except KeyboardInterrupt as exc:
        if not hasattr(exc, "planned_outputs"):
            exc.planned_outputs = [out.given for out in plan.outputs]  # type: ignore[attr-defined]
        raise
    if not kwargs.get("quiet"):
        counts = {s: sum(1 for a in report.alerts if a.severity.value == s) for s in ("error", "warning")}
        probes = report.probe_count
        shown = f" ({len(report.probes)} shown)" if probes > len(report.probes) else ""
        summary_line(output, f"{len(report.sections)} layer sections, {probes} probes{shown}, {counts['error']} errors, {counts['warning']} warnings")
    gate(report, kwargs.get("fail_on"))


def summary_line(output: str, what: str) -> None:
    """``wrote report.html (1.2 MB): <what>`` on stderr; names from the model are escaped."""
    size = Path(output).stat().st_size / 1e6
    click.echo(terminal_safe(f"wrote {output} ({size:.1f} MB): {what}"), err=True)


__all__ = [
    "NO_PROBES", "class_names_file", "command_line", "gate", "load_probe_set", "partial_path", "plan_run_outputs",
    "probe_inputs", "probe_option_rules", "refuse_inapplicable", "report_option_rules", "run_report", "spec_file",
    "summary_line", "write_partial", "write_planned",
]
