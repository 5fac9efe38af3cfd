"""L1, L2 and dropout: the penalty's math, which tensors it touches, and the two forms of L2."""

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_tune.errors import ConfigError
from lightning_tune.module import ClassificationModule
from lightning_tune.optim import build_optimizer
from lightning_tune.regularization import Regularization, SklearnRegularization, split_parameters

WEIGHT = [[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]]  # sum |w| = 21, sum w^2 = 91
BIAS = [0.5, -1.5]  # sum |b| = 2, sum b^2 = 2.5


def known_linear() -> nn.Linear:
    net = nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor(WEIGHT))
        net.bias.copy_(torch.tensor(BIAS))
    return net


def one_batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(8, 3), torch.tensor([0, 1] * 4)


def penalized(net: nn.Module, regularization: Regularization) -> list[nn.Parameter]:
    return split_parameters(net, regularization.exclude_bias_and_norm)[0]


@pytest.mark.parametrize(
    "regularization, expected",
    [
        (Regularization(l1=0.1), 0.1 * 21),
        (Regularization(l1=0.1, exclude_bias_and_norm=False), 0.1 * (21 + 2)),
        (Regularization(l2=0.2, l2_mode="penalty"), 0.2 / 2 * 91),
        (Regularization(l2=0.2, l2_mode="penalty", exclude_bias_and_norm=False), 0.2 / 2 * (91 + 2.5)),
        (Regularization(l1=0.1, l2=0.2, l2_mode="penalty"), 0.1 * 21 + 0.2 / 2 * 91),
        (Regularization(l2=0.2), 0.0),  # weight_decay mode: the optimizer applies L2, not the loss
        (Regularization(), 0.0),
    ],
    ids=["l1", "l1-with-bias", "l2", "l2-with-bias", "elastic", "l2-weight-decay", "none"],
)
def test_penalty_matches_a_hand_computation(regularization: Regularization, expected: float) -> None:
    net = known_linear()
    value = regularization.penalty(penalized(net, regularization))
    assert value.item() == pytest.approx(expected)
    assert regularization.has_loss_penalty == (expected > 0)


def test_penalty_gradient_is_l1_sign_plus_l2_weight() -> None:
    net = known_linear()
    regularization = Regularization(l1=0.1, l2=0.2, l2_mode="penalty")
    regularization.penalty(penalized(net, regularization)).backward()
    weight = torch.tensor(WEIGHT)
    torch.testing.assert_close(net.weight.grad, 0.1 * weight.sign() + 0.2 * weight)
    assert net.bias.grad is None


def test_split_parameters_exempts_biases_and_norms() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    net[2].bias.requires_grad_(False)
    penalized_params, exempt = split_parameters(net)
    assert [id(p) for p in penalized_params] == [id(net[0].weight), id(net[2].weight)]
    assert {id(p) for p in exempt} == {id(net[0].bias), id(net[1].weight), id(net[1].bias)}
    all_penalized, none_exempt = split_parameters(net, exclude_bias_and_norm=False)
    assert len(all_penalized) == 5 and none_exempt == []


def test_optimizer_groups_give_biases_no_weight_decay() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    optimizer = build_optimizer(functools.partial(torch.optim.SGD, lr=0.1), net, Regularization(l2=0.01))
    decayed, exempt = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and exempt["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"]) and len(decayed["params"]) == 2
    assert all(p.ndim == 1 for p in exempt["params"]) and len(exempt["params"]) == 4
    sgd = functools.partial(torch.optim.SGD, lr=0.1)
    in_loss = build_optimizer(sgd, net, Regularization(l2=0.01, l2_mode="penalty"))
    assert [group["weight_decay"] for group in in_loss.param_groups] == [0.0, 0.0]


def step_once(factory, regularization: Regularization) -> nn.Linear:
    """One optimizer step on the known net, with the loss penalty added when the mode asks for it."""
    net = known_linear()
    optimizer = build_optimizer(factory, net, regularization)
    x, y = one_batch()
    loss = F.cross_entropy(net(x), y)
    if regularization.has_loss_penalty:
        loss = loss + regularization.penalty(penalized(net, regularization))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return net


def test_sgd_weight_decay_equals_the_l2_penalty_in_the_loss() -> None:
    sgd = functools.partial(torch.optim.SGD, lr=0.5)
    decayed = step_once(sgd, Regularization(l2=0.1))
    penalized_net = step_once(sgd, Regularization(l2=0.1, l2_mode="penalty"))
    plain = step_once(sgd, Regularization())
    torch.testing.assert_close(decayed.weight, penalized_net.weight)
    torch.testing.assert_close(decayed.bias, penalized_net.bias)
    torch.testing.assert_close(decayed.bias, plain.bias)  # biases are not decayed
    torch.testing.assert_close(decayed.weight, plain.weight - 0.5 * 0.1 * torch.tensor(WEIGHT))


def test_adamw_decay_is_decoupled_from_the_adaptive_step() -> None:
    """AdamW: w <- w - lr * l2 * w - lr * m_hat / (sqrt(v_hat) + eps); after one step m_hat / sqrt(v_hat) = sign(g)."""
    lr, l2, eps = 0.01, 0.1, 1e-8
    net = known_linear()
    x, y = one_batch()
    F.cross_entropy(net(x), y).backward()
    grad = net.weight.grad.clone()
    adam_update = lr * grad / (grad.abs() + eps)

    adamw = step_once(functools.partial(torch.optim.AdamW, lr=lr, eps=eps), Regularization(l2=l2))
    weight = torch.tensor(WEIGHT)
    torch.testing.assert_close(adamw.weight, weight - lr * l2 * weight - adam_update)
    # Coupled (Adam's weight_decay, or the loss penalty) passes the decay through the adaptive step instead.
    coupled = step_once(functools.partial(torch.optim.Adam, lr=lr, eps=eps), Regularization(l2=l2))
    in_loss = step_once(functools.partial(torch.optim.AdamW, lr=lr, eps=eps), Regularization(l2=l2, l2_mode="penalty"))
    assert not torch.allclose(adamw.weight, coupled.weight)
    torch.testing.assert_close(coupled.weight, in_loss.weight)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"l1": -0.1}, "regularization.l1"),
        ({"l2": -1e-4}, "regularization.l2"),
        ({"dropout": 1.5}, "regularization.dropout"),
        ({"dropout": -0.1}, "regularization.dropout"),
        ({"dropout": 1.0}, "regularization.dropout"),
        ({"l2_mode": "decoupled"}, "regularization.l2_mode"),
    ],
)
def test_bad_values_raise_one_line_config_error_naming_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        Regularization(**kwargs)
    message = str(error.value)
    assert key in message and "\n" not in message
    if key == "regularization.l2_mode":
        assert "weight_decay" in message and "penalty" in message


@pytest.mark.filterwarnings("ignore:.*self.log.*")
def test_training_step_loss_is_cross_entropy_plus_penalty() -> None:
    net = known_linear()
    module = ClassificationModule(
        net, functools.partial(torch.optim.SGD, lr=0.1), num_classes=2, regularization=Regularization(l1=0.01)
    )
    x, y = one_batch()
    expected = F.cross_entropy(net(x), y) + 0.01 * 21
    torch.testing.assert_close(module.training_step((x, y), 0), expected)
    plain = ClassificationModule(net, functools.partial(torch.optim.SGD, lr=0.1), num_classes=2)
    torch.testing.assert_close(plain.training_step((x, y), 0), F.cross_entropy(net(x), y))


@pytest.mark.parametrize(
    "penalty, l1, l2",
    [("l1", 1 / 60, 0.0), ("l2", 0.0, 1 / 60), ("elasticnet", 0.25 / 60, 0.75 / 60), ("none", 0.0, 0.0)],
)
def test_sklearn_c_and_penalty_become_l1_and_l2_over_c_times_n(penalty: str, l1: float, l2: float) -> None:
    """scikit-learn's C * sum(loss) + penalty(w) is mean loss + penalty(w) / (C * n): C=0.5, n=120."""
    regularization = SklearnRegularization(C=0.5, penalty=penalty, l1_ratio=0.25, dropout=0.1).for_train_size(120)
    assert (regularization.l1, regularization.l2) == (pytest.approx(l1), pytest.approx(l2))
    assert regularization.l2_mode == "penalty" and regularization.dropout == 0.1
    assert regularization.exclude_bias_and_norm  # the intercept is not penalized, as in scikit-learn


def test_sklearn_solution_is_a_stationary_point_of_our_loss() -> None:
    """Our training loss with regularization=sklearn has zero gradient at LogisticRegression's own optimum."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    x = StandardScaler().fit_transform(x)
    fitted = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(x, y)  # l2, multinomial
    net = nn.Linear(4, 3).double()
    with torch.no_grad():
        net.weight.copy_(torch.from_numpy(fitted.coef_))
        net.bias.copy_(torch.from_numpy(fitted.intercept_))
    regularization = SklearnRegularization(C=0.5, penalty="l2").for_train_size(len(y))
    module = ClassificationModule(net, functools.partial(torch.optim.SGD, lr=0.1), 3, regularization=regularization)
    module.training_step((torch.from_numpy(x), torch.from_numpy(y)), 0).backward()
    assert net.weight.grad.abs().max() < 1e-6 and net.bias.grad.abs().max() < 1e-6
    wrong = SklearnRegularization(C=0.5, penalty="l2").for_train_size(1)  # 1/C without n: not the optimum
    net.zero_grad()
    ClassificationModule(net, functools.partial(torch.optim.SGD, lr=0.1), 3, regularization=wrong).training_step(
        (torch.from_numpy(x), torch.from_numpy(y)), 0
    ).backward()
    assert net.weight.grad.abs().max() > 1e-3


@pytest.mark.parametrize(
    "kwargs, key",
    [({"C": 0.0}, "regularization.C"), ({"penalty": "l3"}, "regularization.penalty"),
     ({"l1_ratio": 1.5}, "regularization.l1_ratio"), ({"dropout": 1.0}, "regularization.dropout")],
)  # fmt: skip
def test_bad_sklearn_values_raise_one_line_config_error_naming_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        SklearnRegularization(**kwargs)
    message = str(error.value)
    assert key in message and "\n" not in message
