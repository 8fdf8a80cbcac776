"""compare_architecture on tiny hand-built models: which modules count as added, removed, changed
in type or in shapes, the words of each change, the order of the rows and the unchanged count.

Every expected value here is written out by hand from the models built in the test."""

from __future__ import annotations

import torch
from torch import nn

from cnnreport.analysis.diff import compare_architecture
from cnnreport.datamodel import LayerRow, ModelSummary, Provenance, ReportOptions
from cnnreport.report.document import Report


class Holder(nn.Module):
    """A layer holding one parameter per keyword, of that shape, registered in that order."""

    def __init__(self, **shapes: tuple[int, ...]) -> None:
        super().__init__()
        for key, shape in shapes.items():
            self.register_parameter(key, nn.Parameter(torch.zeros(shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def box(**children: nn.Module) -> nn.Module:
    """A container with no parameters of its own, holding the children in that order."""
    model = nn.Module()
    for name, child in children.items():
        model.add_module(name, child)
    return model


def row(name: str, output_shape) -> LayerRow:
    return LayerRow(name=name, type="Holder", depth=1, input_shape=[], output_shape=output_shape, kernel_size=None, params=0, param_percent=0.0, mult_adds=0, trainable="", is_leaf=True)


def report(rows: list[LayerRow]) -> Report:
    summary = ModelSummary(class_name="Net", input_shape=[1, 2], output_shape=[1, 2], total_params=0, trainable_params=0, non_trainable_params=0, mult_adds=0, param_bytes=0)
    return Report(title="t", model=summary, layers=rows, sections=[], probes=[], options=ReportOptions(progress=False), provenance=Provenance("0", "0", "0"))


def rows_of(changes):
    return [(c.name, c.status, c.old_type, c.new_type, c.old_params, c.new_params, c.detail) for c in changes]


def test_parameter_shape_changes_are_listed_old_names_first_then_new_ones():
    old = box(layer=Holder(weight=(2, 3), bias=(2,), scale=(4,)))
    new = box(layer=Holder(weight=(4, 3), scale=(4,), alpha=()))
    changes, unchanged = compare_architecture(old, new)
    # old keys by name (bias, scale, weight; scale kept its shape), then keys only new has (alpha)
    assert rows_of(changes) == [("layer", "shape changed", "Holder", "Holder", 2 * 3 + 2 + 4, 4 * 3 + 4 + 1, "bias 2 → –; weight 2×3 → 4×3; alpha – → scalar")]
    assert changes[0].param_delta == 5
    assert unchanged == 0


def test_added_and_removed_modules_carry_their_parameter_shapes():
    old = box(a=Holder(w=(3, 2)), b=nn.ReLU(), gone=Holder(k=(7,), s=()))
    new = box(a=Holder(w=(3, 2)), c=Holder(w=(5,), s=()))
    changes, unchanged = compare_architecture(old, new)
    assert rows_of(changes) == [
        ("b", "removed", "ReLU", "", 0, 0, ""),
        ("gone", "removed", "Holder", "", 8, 0, "k 7, s scalar"),
        ("c", "added", "", "Holder", 0, 6, "w 5, s scalar"),
    ]
    assert [c.param_delta for c in changes] == [0, -8, 6]
    assert unchanged == 1  # a


def test_a_type_change_is_reported_as_such_even_when_the_shapes_differ_too():
    old = box(a=nn.Linear(2, 3), keep=nn.ReLU())
    new = box(a=nn.Conv2d(2, 3, 3), keep=nn.ReLU())
    changes, unchanged = compare_architecture(old, new)
    assert rows_of(changes) == [("a", "type changed", "Linear", "Conv2d", 2 * 3 + 3, 2 * 3 * 9 + 3, "Linear → Conv2d")]
    assert changes[0].param_delta == 48
    assert unchanged == 1


def test_rows_follow_both_models_in_place():
    # a: shape change, b replaced by x, c and d: shape changes, e appended
    old = box(a=Holder(w=(1,)), b=Holder(w=(1,)), c=Holder(w=(1,)), d=Holder(w=(1,)))
    new = box(a=Holder(w=(2,)), x=Holder(w=(1,)), c=Holder(w=(2,)), d=Holder(w=(3,)), e=Holder(w=(1,)))
    changes, unchanged = compare_architecture(old, new)
    assert [(c.name, c.status) for c in changes] == [
        ("a", "shape changed"),
        ("b", "removed"),
        ("x", "added"),
        ("c", "shape changed"),
        ("d", "shape changed"),
        ("e", "added"),
    ]
    assert [c.detail for c in changes] == ["w 1 → 2", "w 1", "w 1", "w 1 → 2", "w 1 → 3", "w 1"]
    assert unchanged == 0


def test_a_module_dropped_from_the_middle_is_one_removed_row():
    old = box(a=Holder(w=(2,)), b=Holder(w=(3,)), c=Holder(w=(4,)))
    new = box(a=Holder(w=(2,)), c=Holder(w=(4,)))
    changes, unchanged = compare_architecture(old, new)
    assert rows_of(changes) == [("b", "removed", "Holder", "", 3, 0, "w 3")]
    assert unchanged == 2


def test_modules_in_another_order_are_each_counted_once():
    old = box(p=Holder(w=(1,)), q=nn.ReLU(), r=Holder(w=(2, 2)))
    new = box(r=Holder(w=(2, 2)), q=nn.ReLU(), p=Holder(w=(1,)))
    assert compare_architecture(old, new) == ([], 3)
    # the same, each changed, shows the order: the new model's first, then the old one's rest
    new = box(r=Holder(w=(2, 3)), q=nn.Tanh(), p=Holder(w=(5,)))
    changes, unchanged = compare_architecture(old, new)
    assert [(c.name, c.status) for c in changes] == [("r", "shape changed"), ("q", "type changed"), ("p", "shape changed")]
    assert unchanged == 0


def test_nested_modules_are_compared_by_path_and_a_container_without_parameters_is_no_row():
    old = box(block=box(conv=Holder(w=(2, 2)), act=nn.ReLU()), head=Holder(w=(3,)))
    new = box(block=box(conv=Holder(w=(2, 4)), act=nn.ReLU()), head=Holder(w=(3,)))
    changes, unchanged = compare_architecture(old, new)
    assert rows_of(changes) == [("block.conv", "shape changed", "Holder", "Holder", 4, 8, "w 2×2 → 2×4")]
    assert unchanged == 3  # block, block.act, head (the root holds no parameters: no row)


def test_the_root_is_a_row_when_it_holds_parameters_of_its_own():
    old, new = Holder(scale=(3,)), Holder(scale=(4,))
    old.add_module("conv", Holder(w=(2,)))
    new.add_module("conv", Holder(w=(2,)))
    changes, unchanged = compare_architecture(old, new)
    # only its own parameter counts, not its child's
    assert rows_of(changes) == [("(model)", "shape changed", "Holder", "Holder", 3, 4, "scale 3 → 4")]
    assert unchanged == 1  # conv


def test_identical_models_have_no_rows():
    assert compare_architecture(box(a=Holder(w=(2, 3)), b=nn.ReLU()), box(a=Holder(w=(2, 3)), b=nn.ReLU())) == ([], 2)


def test_output_shapes_from_the_reports_count_as_a_shape_change():
    names = ["a", "b", "c", "d", "e", "f", "g", "h"]
    old = box(**{n: Holder(w=(2,)) for n in names})
    new = box(**{n: Holder(w=(3,) if n == "b" else (2,)) for n in names})
    old_rows = [
        row("a", [1, 4, 8, 8]),
        row("b", [1, 2]),
        row("c", [[1, 4], [1, 2]]),
        row("d", [1, 9]),  # the new report has no row for d
        row("e", [1, 5]),
        row("e", [1, 6]),  # a second call: the first one's shape is the layer's
        row("f", [2, 2]),
        row("g", []),
        row("h", "?"),  # not a list of sizes: shown as it is
    ]
    new_rows = [
        row("a", [1, 8, 8, 8]),
        row("b", [1, 3]),
        row("c", [[1, 4], [1, 3]]),
        row("e", [1, 5]),
        row("e", [1, 7]),
        row("f", [2, 2]),
        row("g", [1]),
        row("h", [1, 2]),
    ]
    changes, unchanged = compare_architecture(old, new, report(old_rows), report(new_rows))
    assert [(c.name, c.status, c.detail) for c in changes] == [
        ("a", "shape changed", "output 1×4×8×8 → 1×8×8×8"),
        ("b", "shape changed", "w 2 → 3; output 1×2 → 1×3"),
        ("c", "shape changed", "output 1×4, 1×2 → 1×4, 1×3"),
        ("g", "shape changed", "output scalar → 1"),
        ("h", "shape changed", "output ? → 1×2"),
    ]
    assert unchanged == 3  # d, e, f


def test_output_shapes_of_one_report_alone_change_nothing():
    old, new = box(a=Holder(w=(2,))), box(a=Holder(w=(2,)))
    assert compare_architecture(old, new, report([row("a", [1, 2])]), None) == ([], 1)
    assert compare_architecture(old, new, None, report([row("a", [1, 2])])) == ([], 1)
