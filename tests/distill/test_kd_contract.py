"""Every registered KD term, walked as a set (timm's habit): on a batch carrying what its
`needs` says, it gives a finite scalar with a gradient on the student's outputs."""

import pytest
import torch

from edgekd.distill.losses import KD_LOSSES, KDInputs, KDSettings, needs, parse_kd
from edgekd.distill.trainer import make_adapters
from edgekd.errors import ConfigError


def batch_for(need: frozenset[str]) -> tuple[KDInputs, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    leaves = []

    def leaf(*shape):
        t = torch.randn(*shape, generator=g, requires_grad=True)
        leaves.append(t)
        return t

    b = KDInputs(student_logits=leaf(8, 5), labels=torch.randint(0, 5, (8,), generator=g),
                 teacher_logits=[torch.randn(8, 5, generator=g)])
    if "teachers" in need:
        b.teacher_logits.append(torch.randn(8, 5, generator=g))
    if "features" in need:
        b.student_feats = [leaf(8, 4, 6, 6)]
        b.teacher_feats = [torch.randn(8, 7, 3, 3, generator=g)]
        b.adapters = make_adapters([4], [7], [(0, 0)])
    if "embedding" in need:
        b.student_emb, b.teacher_emb = leaf(8, 16), torch.randn(8, 32, generator=g)
    if "dense" in need:  # segmentation: the logit maps the rows came from
        b.student_dense, b.teacher_dense = leaf(2, 5, 4, 4), torch.randn(2, 5, 4, 4, generator=g)
    if "unlabeled" in need:
        b.unlabeled_student_logits = leaf(6, 5)
        b.unlabeled_teacher_logits = torch.randn(6, 5, generator=g)
    if "detection" in need:  # detector rows N x A x (K + 5) of a 64 px input, boxes N x M x 5 as labels
        b.student_logits = leaf(2, 84, 8)
        b.teacher_logits = [torch.randn(2, 84, 8, generator=g) + torch.tensor([0.0, 0, 6, 0, 0, 0, 0, 6])]
        b.labels = torch.tensor([[[0.0, 8, 8, 40, 24], [2.0, 30, 30, 60, 50]], [[1.0, 0, 0, 20, 20], [-1.0] * 5]])
    if "edges" in need:  # GFL-style heads: each location's 4 side distributions over 0..16 strides
        b.student_edges, b.teacher_edges = leaf(2, 84, 4, 17), torch.randn(2, 84, 4, 17, generator=g)
    return b, leaves


@pytest.mark.parametrize("name", KD_LOSSES.names())
def test_every_term_is_a_finite_scalar_with_a_gradient(name):
    need = KD_LOSSES.meta(name)["needs"]
    assert need <= {"features", "embedding", "unlabeled", "teachers", "dense", "detection", "edges"}
    b, leaves = batch_for(need)
    loss = KD_LOSSES.get(name)(b, KDSettings(teacher_weights=(1.0, 2.0)))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [t.grad for t in leaves if t.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    # what a term says it needs is what it learns from
    read = {"features": b.student_feats[:1], "embedding": [b.student_emb], "unlabeled": [b.unlabeled_student_logits],
            "dense": [b.student_dense], "edges": [b.student_edges],
            "detection": [b.student_edges if "edges" in need else b.student_logits]}
    for key in need & read.keys():
        assert all(t.grad is not None for t in read[key]), key


@pytest.mark.parametrize("name", KD_LOSSES.names())
def test_every_term_is_a_named_function_whose_docstring_states_its_formula(name):
    fn = KD_LOSSES.get(name)
    assert fn.__name__.endswith("_term") and fn.__doc__ and any(c in fn.__doc__ for c in "=+*")


def test_needs_are_the_union_of_the_terms_needs():
    assert needs(parse_kd("response,feature,relation")) == {"features", "embedding"}


def test_unknown_term_suggests_the_close_name():
    with pytest.raises(ConfigError, match="unknown KD loss 'relaton'; did you mean 'relation'\\? choose one of"):
        parse_kd("relaton")
