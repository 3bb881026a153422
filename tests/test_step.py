"""The hand-written SGD step (prm.step.sgd_step) against the readable one (prm.reference).

The reference is written the plain way, one run at a time: the objective as ordinary torch
code, gradients from ``torch.autograd.grad``, then HAT's rules from ``prm.masks`` (keep
multipliers, cosh compensation, the regulariser) and clip_grad_norm_'s clipping. The fast
step must match it for every parameter, per run, when several runs are stacked.
"""

from __future__ import annotations

import pytest
import torch

from prm import masks as M
from prm import step as S
from prm.reference import Stepped, reference_step

D, WIDTHS, C, B = 5, (6, 4), 3, 7


def _params(runs: int, gen: torch.Generator, *, masked: bool) -> dict:
    def r(*shape, scale=0.5):
        return (torch.rand(runs, *shape, generator=gen) - 0.5) * 2 * scale

    sizes = [D, *WIDTHS]
    return {
        "layers": [(r(o, i), r(o)) for i, o in zip(sizes[:-1], sizes[1:])],
        "head": (r(C, WIDTHS[-1]), r(C)),
        "embedding": r(sum(WIDTHS), scale=2.0) if masked else None,
    }


def _clone(params: dict) -> dict:
    return {
        "layers": [(w.clone(), b.clone()) for w, b in params["layers"]],
        "head": tuple(t.clone() for t in params["head"]),
        "embedding": None if params["embedding"] is None else params["embedding"].clone(),
    }


def _inputs(runs: int, gen: torch.Generator, *, real: int = B) -> dict:
    weight = torch.zeros(runs, B)
    weight[:, :real] = 1.0 / real
    rates = torch.cat([torch.full((D,), 0.2), torch.full((sum(WIDTHS),), 0.5)]).expand(runs, -1).clone()
    return {
        "x": torch.rand(runs, B, D, generator=gen),
        "y": torch.randint(0, C, (runs, B), generator=gen),
        "weight": weight,
        "noise": torch.rand(runs, B, D + sum(WIDTHS), generator=gen),
        "rates": rates,
        "s": torch.tensor([3.0, 50.0, 400.0])[:runs],
        "lr": torch.tensor([0.1, 0.05, 0.2])[:runs],
    }


def _hyper(runs: int, *, clip: float = 1e4, lamb: float = 0.75) -> S.Hyper:
    """Each run its own smax, thresholds and lambda: a mix-up between runs shows."""
    def v(*values):
        return torch.tensor(values[:runs], dtype=torch.float32)

    return S.Hyper(smax=v(400.0, 300.0, 200.0), lamb=v(lamb, lamb * 0.5, lamb * 2), thres_cosh=v(50.0, 40.0, 30.0),
                   thres_emb=v(6.0, 5.0, 1.5), clip=v(clip, clip, clip))


def _reference(params: dict, inputs: dict, r: int, *, protect, used, hyper: S.Hyper, train_features=True,
               penalty=None, real: int = B) -> Stepped:
    """Run r's step by ``prm.reference``: its slice of every stacked tensor, its first ``real`` examples."""
    return reference_step(
        layers=[(w[r], b[r]) for w, b in params["layers"]], head=(params["head"][0][r], params["head"][1][r]),
        embedding=None if params["embedding"] is None else params["embedding"][r],
        x=inputs["x"][r][:real], y=inputs["y"][r][:real], noise=inputs["noise"][r][:real], rates=inputs["rates"][r],
        s=float(inputs["s"][r]), lr=float(inputs["lr"][r]), smax=float(hyper.smax[r]), lamb=float(hyper.lamb[r]),
        thres_cosh=float(hyper.thres_cosh[r]), thres_emb=float(hyper.thres_emb[r]), clip=float(hyper.clip[r]),
        protect=protect, used=used, penalty=penalty, train_features=train_features)


def _check(stepped: dict, loss: torch.Tensor, expected: Stepped, r: int) -> None:
    for (w, b), (ew, eb) in zip(stepped["layers"], expected.layers):
        torch.testing.assert_close(w[r], ew, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b[r], eb, rtol=1e-5, atol=1e-6)
    for t, et in zip(stepped["head"], expected.head):
        torch.testing.assert_close(t[r], et, rtol=1e-5, atol=1e-6)
    if expected.embedding is not None:
        torch.testing.assert_close(stepped["embedding"][r], expected.embedding, rtol=1e-5, atol=1e-5)
    assert float(loss[r]) == pytest.approx(expected.loss, rel=1e-5)


def _protect(runs: int, gen: torch.Generator) -> list[list[torch.Tensor]]:
    """Per run, an earlier task's mask per layer: a mix of held (~1), free (~0) and partial units."""
    return [[torch.sigmoid(8 * (torch.rand(w, generator=gen) - 0.5)) for w in WIDTHS] for _ in range(runs)]


def _stacked_keeps(protect: list[list[torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    per_run = [M.layer_keeps(p) for p in protect]
    return [(torch.stack([k[l][0] for k in per_run]), torch.stack([k[l][1] for k in per_run]))
            for l in range(len(WIDTHS))]


@pytest.mark.parametrize("real", [B, 4])
def test_masked_step_matches_autograd_per_run(real):
    gen = torch.Generator().manual_seed(1)
    runs = 3
    params, inputs = _params(runs, gen, masked=True), _inputs(runs, gen, real=real)
    protect = _protect(runs, gen)
    weights = [M.regulariser_weights(p, WIDTHS) for p in protect]
    stepped = _clone(params)
    loss, logits = S.sgd_step(
        **stepped, **inputs, keeps=_stacked_keeps(protect), reg_weights=torch.stack([w for w, _ in weights]),
        reg_norm=torch.stack([n for _, n in weights]), hyper=_hyper(runs))
    assert logits.shape == (runs, B, C)
    for r in range(runs):
        expected = _reference(params, inputs, r, protect=protect[r], used=protect[r], hyper=_hyper(runs), real=real)
        _check(stepped, loss, expected, r)


def test_protected_units_do_not_move_and_free_units_do():
    """A fully held unit (mask 1) freezes its incoming weights and bias; a free one trains."""
    gen = torch.Generator().manual_seed(2)
    params, inputs = _params(1, gen, masked=True), _inputs(1, gen)
    held = [torch.zeros(w) for w in WIDTHS]
    held[0][:3] = 1.0
    held[1][:2] = 1.0
    weights, norm = M.regulariser_weights(held, WIDTHS)
    stepped = _clone(params)
    S.sgd_step(**stepped, **inputs, keeps=_stacked_keeps([held]), reg_weights=weights[None], reg_norm=norm[None],
               hyper=_hyper(1))
    (w0, b0), (w1, _) = stepped["layers"]
    assert torch.equal(w0[0, :3], params["layers"][0][0][0, :3])
    assert torch.equal(b0[0, :3], params["layers"][0][1][0, :3])
    assert torch.equal(w1[0, :2, :3], params["layers"][1][0][0, :2, :3])  # both ends held
    assert not torch.equal(w0[0, 3:], params["layers"][0][0][0, 3:])


def test_head_only_trains_the_head_alone():
    gen = torch.Generator().manual_seed(3)
    params, inputs = _params(2, gen, masked=True), _inputs(2, gen)
    stepped = _clone(params)
    loss, _ = S.sgd_step(**stepped, **inputs, keeps=None, reg_weights=None, reg_norm=None, hyper=_hyper(2),
                         train_features=False)
    for r in range(2):
        expected = _reference(params, inputs, r, protect=None, used=None, hyper=_hyper(2), train_features=False)
        _check(stepped, loss, expected, r)
    assert all(torch.equal(a, b) for pa, pb in zip(stepped["layers"], params["layers"]) for a, b in zip(pa, pb))
    assert torch.equal(stepped["embedding"], params["embedding"])


def test_unmasked_step_with_ewc_penalty_and_clipping():
    gen = torch.Generator().manual_seed(4)
    runs = 2
    params, inputs = _params(runs, gen, masked=False), _inputs(runs, gen)
    fisher = [(torch.rand(runs, *w.shape[1:], generator=gen), torch.rand(runs, *b.shape[1:], generator=gen))
              for w, b in params["layers"]]
    anchor = [(w + 0.3, b - 0.2) for w, b in params["layers"]]
    hyper = _hyper(runs, clip=0.05)  # small enough to clip: the rule, not just the norm, is checked
    stepped = _clone(params)
    loss, _ = S.sgd_step(**stepped, **inputs, keeps=None, reg_weights=None, reg_norm=None, hyper=hyper,
                         penalty=(fisher, anchor, torch.full((runs,), 7.0)))
    for r in range(runs):
        penalty = ([(fw[r], fb[r]) for fw, fb in fisher], [(aw[r], ab[r]) for aw, ab in anchor], 7.0)
        expected = _reference(params, inputs, r, protect=None, used=None, hyper=hyper, penalty=penalty)
        _check(stepped, loss, expected, r)


def test_compiled_step_equals_eager_over_several_steps():
    """The compiled step agrees with the eager one to float rounding over 20 steps."""
    if not S.compiler_available():
        pytest.skip("no C++ compiler for torch.compile")
    gen = torch.Generator().manual_seed(5)
    runs = 2
    params = _params(runs, gen, masked=True)
    protect = _protect(runs, gen)
    weights = [M.regulariser_weights(p, WIDTHS) for p in protect]
    fixed = dict(keeps=_stacked_keeps(protect), reg_weights=torch.stack([w for w, _ in weights]),
                 reg_norm=torch.stack([n for _, n in weights]), hyper=_hyper(runs))
    eager, compiled = _clone(params), _clone(params)
    for _ in range(20):
        inputs = _inputs(runs, gen)
        with torch.no_grad():
            S.sgd_step(**eager, **inputs, **fixed)
            S.compiled()(**compiled, **inputs, **fixed)
    for (w, b), (cw, cb) in zip(eager["layers"], compiled["layers"]):
        torch.testing.assert_close(cw, w, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(cb, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled["embedding"], eager["embedding"], rtol=1e-4, atol=1e-4)
    assert not torch.equal(eager["layers"][0][0], params["layers"][0][0])  # it did train


def test_compile_modes_and_the_auto_rule():
    from types import SimpleNamespace

    from tests.conftest import tiny_config

    def sequence(sizes):
        return SimpleNamespace(tasks=[SimpleNamespace(x_train=range(n)) for n in sizes])

    cfg = tiny_config()  # batch 16
    assert S.use_compiled("off", config=cfg, sequence=None) is False
    with pytest.raises(ValueError, match="unknown mode"):
        S.use_compiled("fast", config=cfg, sequence=None)
    # digits-mixed: 96 batches an epoch over its tasks, ~9600 steps: eager alone, compiled in a stack of 2;
    # mnist5k-mixed: 505 batches, compiled
    assert not S.compile_pays(config=cfg, sequence=sequence([160] * 9 + [96]))
    assert S.compile_pays(config=cfg, sequence=sequence([160] * 9 + [96]), runs=2)
    assert S.compile_pays(config=cfg, sequence=sequence([1000] * 3 + [600] * 7))
    assert not S.compile_pays(config=cfg.replace(device="cuda"), sequence=sequence([1000] * 10))  # not measured
