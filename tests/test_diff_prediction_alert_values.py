"""compare_predictions and compare_alerts on literal reports: the top-1 class per probe, old ->
new, what counts as changed, the new probability of the old class; alerts matched by kind and
layer only."""

from __future__ import annotations

from cnnreport.analysis.diff import compare_alerts, compare_predictions
from cnnreport.datamodel import Alert, AlertKind, ModelSummary, Prediction, ProbeInfo, Provenance, ReportOptions, Severity
from cnnreport.report.document import Report


def report(*, probes=(), alerts=()) -> Report:
    summary = ModelSummary(class_name="Net", input_shape=[1, 2], output_shape=[1, 2], total_params=0, trainable_params=0, non_trainable_params=0, mult_adds=0, param_bytes=0)
    return Report(title="t", model=summary, layers=[], sections=[], probes=list(probes), options=ReportOptions(progress=False), provenance=Provenance("0", "0", "0"), alerts=list(alerts))


def probe(name: str, *top: tuple[int, float]) -> ProbeInfo:
    return ProbeInfo(name=name, thumbnail=None, predictions=[Prediction(class_index=c, label=f"class {c}", probability=p) for c, p in top])


def test_top1_per_probe_and_the_old_class_under_the_new_model():
    old = report(probes=[
        probe("o-kept", (2, 0.75), (0, 0.125)),
        probe("o-moved", (1, 0.5), (2, 0.25)),
        probe("o-gone", (0, 0.875), (1, 0.0625)),
        probe("o-lost", (3, 0.625)),
        probe("o-nothing"),
        probe("o-born"),
    ])
    new = report(probes=[
        probe("kept", (2, 0.625), (1, 0.25)),
        probe("moved", (2, 0.5), (0, 0.3125), (1, 0.1875)),
        probe("gone", (2, 0.5), (1, 0.375)),
        probe("lost"),
        probe("nothing"),
        probe("born", (4, 0.9375)),
    ])
    out = compare_predictions(old, new)
    # named as the new report names them; a probe with no prediction on either side: no row
    assert [p.probe for p in out] == ["kept", "moved", "gone", "lost", "born"]
    assert [p.changed for p in out] == [False, True, True, True, True]
    assert [p.old_class_new_probability for p in out] == [0.625, 0.1875, None, None, None]
    assert [(p.old.class_index, p.old.probability) if p.old else None for p in out] == [(2, 0.75), (1, 0.5), (0, 0.875), (3, 0.625), None]
    assert [(p.new.class_index, p.new.probability) if p.new else None for p in out] == [(2, 0.625), (2, 0.5), (2, 0.5), None, (4, 0.9375)]


def test_probes_pair_by_position_up_to_the_shorter_list():
    old = report(probes=[probe("a", (0, 0.5)), probe("b", (1, 0.5)), probe("c", (1, 0.5))])
    new = report(probes=[probe("x", (0, 0.25)), probe("y", (0, 0.75))])
    out = compare_predictions(old, new)
    assert [(p.probe, p.changed, p.old_class_new_probability) for p in out] == [("x", False, 0.25), ("y", True, None)]
    assert compare_predictions(report(), new) == []


def alert(kind, layer: str, message: str = "m", severity: Severity = Severity.WARNING) -> Alert:
    return Alert(kind=kind, severity=severity, layer=layer, message=message)


def test_alerts_match_by_kind_and_layer_only():
    kept_old = alert(AlertKind.DEAD_CHANNELS, "conv1", "2 of 4 channels constant")
    kept_new = alert(AlertKind.DEAD_CHANNELS, "conv1", "3 of 4 channels constant", Severity.ERROR)
    moved_old = alert(AlertKind.DEAD_FILTERS, "conv1")
    moved_new = alert(AlertKind.DEAD_FILTERS, "conv2")
    other_kind = alert(AlertKind.NON_FINITE, "conv1")
    appeared, disappeared, kept = compare_alerts(report(alerts=[kept_old, moved_old]), report(alerts=[moved_new, kept_new, other_kind]))
    assert appeared == [moved_new, other_kind]
    assert disappeared == [moved_old]
    assert kept == 1


def test_alert_kinds_given_as_plain_strings_match_the_enum():
    old = [alert(AlertKind.DEAD_CHANNELS, "a"), alert("saturation", "b")]
    new = [alert("dead_channels", "a"), alert(AlertKind.SATURATION, "b"), alert("batchnorm", "b")]
    appeared, disappeared, kept = compare_alerts(report(alerts=old), report(alerts=new))
    assert appeared == [new[2]] and disappeared == [] and kept == 2


def test_kept_counts_each_kind_and_layer_once_and_repeats_are_listed():
    twice = [alert(AlertKind.SATURATION, "act", "first"), alert(AlertKind.SATURATION, "act", "second")]
    new = [alert(AlertKind.BATCHNORM, "bn", "one"), alert(AlertKind.BATCHNORM, "bn", "two"), alert(AlertKind.SATURATION, "act")]
    appeared, disappeared, kept = compare_alerts(report(alerts=twice), report(alerts=new))
    assert appeared == new[:2] and disappeared == [] and kept == 1
    appeared, disappeared, kept = compare_alerts(report(alerts=new), report(alerts=twice))
    assert appeared == [] and disappeared == new[:2] and kept == 1
    assert compare_alerts(report(), report()) == ([], [], 0)
