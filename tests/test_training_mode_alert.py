"""The training-mode note on tiny models: a model given in training mode, or an eval model with
some modules left in training mode, named with the dropout and BatchNorm layers that would act
differently outside the report; modules whose mode changes nothing are not named."""

from __future__ import annotations

from literal_captures import context, plain
from torch import nn

from cnnreport.analysis.alerts import check_training_mode

TAIL = "; the report ran it in eval mode and left its flags as they were"
EVAL = ": call model.eval() before inference"
NOTHING = "; it has no dropout or BatchNorm layer, so only code reading self.training would behave differently"


class Custom(nn.Module):
    """Code of the user's own, which may read ``self.training``."""

    def forward(self, x):
        return x


def root(**modules: nn.Module) -> nn.Module:
    model = nn.Module()
    for name, module in modules.items():
        setattr(model, name, module)
    return model.eval()


def note(model, flags=None):
    ctx = context([], model)
    ctx.training_flags = flags
    found = check_training_mode(ctx)
    return [(*f, a.numbers, a.section_id) for f, (a, _) in zip(plain(found), found)]


def test_a_model_given_in_training_mode_names_its_dropout_and_batchnorm():
    model = root(conv=nn.Conv2d(1, 1, 1), drop=nn.Dropout(0.25), bn=nn.BatchNorm2d(2), relu=nn.ReLU()).train()
    message = (
        f"the model was given in training mode{TAIL}; outside it, 1 dropout layer would drop values at random (drop p=0.25) "
        f"and 1 BatchNorm layer would normalise by each batch's own statistics and update their running ones (bn){EVAL}"
    )
    numbers = {"modules_in_training": 5.0, "dropout_active": 1.0, "batchnorm_updating": 1.0}
    assert note(model) == [("training_mode", "info", "", message, 5.0, -1.0, numbers, "")]


def test_an_eval_model_with_some_modules_in_training_mode():
    model = root(drop=nn.Dropout(0.5), drop0=nn.Dropout(0.0), relu=nn.ReLU(), custom=Custom(), conv=nn.Conv2d(1, 1, 1))
    for name in ("drop", "drop0", "relu", "custom", "conv"):
        getattr(model, name).train()
    message = f"the model is in eval mode, but 3 of its modules are in training mode (drop, drop0, custom){TAIL}; outside it, 1 dropout layer would drop values at random (drop p=0.5){EVAL}"
    assert note(model) == [("training_mode", "info", "", message, 3.0, -1.0, {"modules_in_training": 3.0, "dropout_active": 1.0, "batchnorm_updating": 0.0}, "")]


def test_one_module_of_the_user_s_own_in_training_mode():
    model = root(custom=Custom(), relu=nn.ReLU())
    model.custom.train()
    message = f"the model is in eval mode, but 1 of its modules is in training mode (custom){TAIL}{NOTHING}"
    assert note(model) == [("training_mode", "info", "", message, 1.0, -1.0, {"modules_in_training": 1.0, "dropout_active": 0.0, "batchnorm_updating": 0.0}, "")]


def test_plural_dropout_and_batchnorm_and_norms_without_running_statistics():
    model = root(a=nn.Dropout(0.125), b=nn.Dropout2d(0.5), c=nn.BatchNorm2d(2), d=nn.BatchNorm1d(2), e=nn.BatchNorm2d(2, track_running_stats=False), f=nn.InstanceNorm2d(2), g=nn.RReLU())
    for module in model.children():
        module.train()
    message = (
        f"the model is in eval mode, but 7 of its modules are in training mode (a, b, c, d, e, f … (+1)){TAIL}; outside it, "
        f"2 dropout layers would drop values at random (a p=0.125, b p=0.5) and 2 BatchNorm layers would normalise by each batch's own "
        f"statistics and update their running ones (c, d){EVAL}"
    )
    assert note(model)[0][3] == message
    assert note(model)[0][6] == {"modules_in_training": 7.0, "dropout_active": 2.0, "batchnorm_updating": 2.0}


def test_only_batchnorm_or_many_dropouts():
    model = root(bn=nn.BatchNorm2d(2))
    model.bn.train()
    assert note(model)[0][3] == (
        f"the model is in eval mode, but 1 of its modules is in training mode (bn){TAIL}; outside it, 1 BatchNorm layer would normalise "
        f"by each batch's own statistics and update their running ones (bn){EVAL}"
    )
    model = root(**{f"d{i}": nn.Dropout(0.5) for i in range(7)})
    for module in model.children():
        module.train()
    names = ", ".join(f"d{i} p=0.5" for i in range(6))
    assert note(model)[0][3] == (
        f"the model is in eval mode, but 7 of its modules are in training mode (d0, d1, d2, d3, d4, d5 … (+1)){TAIL}; outside it, "
        f"7 dropout layers would drop values at random ({names} … (+1)){EVAL}"
    )


def test_a_dropout_model_itself_in_training_mode_is_named_as_the_model():
    assert note(nn.Dropout(0.5).train())[0][3] == f"the model was given in training mode{TAIL}; outside it, 1 dropout layer would drop values at random ((model) p=0.5){EVAL}"


def test_the_flags_as_given_win_over_the_model_s_own():
    model = root(drop=nn.Dropout(0.5), relu=nn.ReLU())
    assert note(model) == []
    assert note(model, {"": False, "drop": True, "relu": True})[0][3] == (
        f"the model is in eval mode, but 1 of its modules is in training mode (drop){TAIL}; outside it, 1 dropout layer would drop values at random (drop p=0.5){EVAL}"
    )
    assert note(model, {"": True, "drop": False, "relu": False})[0][3] == f"the model was given in training mode{TAIL}{NOTHING}"
    assert note(model, {"ghost": True, "relu": True}) == []  # a name the model has not, and a module whose mode changes nothing
    assert note(model, {"drop": True})[0][4] == 1.0  # no root flag: eval
    assert note(model.train(), {}) == []


def test_a_batchnorm_model_itself_and_exactly_six_names():
    assert note(nn.BatchNorm2d(2).train())[0][3] == (
        f"the model was given in training mode{TAIL}; outside it, 1 BatchNorm layer would normalise by each batch's own statistics "
        f"and update their running ones ((model)){EVAL}"
    )
    model = root(**{f"c{i}": Custom() for i in range(6)})
    for module in model.children():
        module.train()
    assert note(model)[0][3] == f"the model is in eval mode, but 6 of its modules are in training mode (c0, c1, c2, c3, c4, c5){TAIL}{NOTHING}"
