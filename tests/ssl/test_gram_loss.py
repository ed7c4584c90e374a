import pytest
import torch

from dinogeo.errors import ConfigError
from dinogeo.ssl.gram_loss import gram_loss, resize_token_grid


def test_identical_features_give_zero():
    x = torch.randn(3, 9, 5)
    assert gram_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
    # scale of the tokens does not matter (L2-normalised)
    assert gram_loss(x, 4 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert gram_loss(x, x, img_level=False).item() == pytest.approx(0.0, abs=1e-7)


def test_known_pair():
    # Student tokens orthogonal (Gram = I), teacher tokens parallel (Gram = all ones):
    # difference [[0,-1],[-1,0]], Frobenius^2 = 2, divided by B P^2 = 4.
    student = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    teacher = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])
    assert gram_loss(student, teacher).item() == pytest.approx(0.5)


def test_remove_negatives():
    student = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])  # Gram [[1,-1],[-1,1]]
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # Gram I
    assert gram_loss(student, teacher).item() == pytest.approx(0.5)
    assert gram_loss(student, teacher, remove_neg=True).item() == pytest.approx(0.0)
    # only the teacher's negatives: the student -1 stays (teacher 0 there, not negative)
    assert gram_loss(student, teacher, remove_only_teacher_neg=True).item() == pytest.approx(0.5)
    with pytest.raises(ConfigError):
        gram_loss(student, teacher, remove_neg=True, remove_only_teacher_neg=True)


def test_batch_level_includes_cross_image_pairs():
    # One token per image: per-image Grams are [[1]] for both; the batch Gram differs.
    student = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    teacher = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    assert gram_loss(student, teacher, img_level=True).item() == pytest.approx(0.0)
    assert gram_loss(student, teacher, img_level=False).item() == pytest.approx(0.5)


def test_gradient_and_shape_error():
    s = torch.randn(2, 4, 3, requires_grad=True)
    gram_loss(s, torch.randn(2, 4, 3)).backward()
    assert torch.isfinite(s.grad).all()
    with pytest.raises(ConfigError):
        gram_loss(torch.randn(2, 4, 3), torch.randn(2, 16, 3))


def test_resize_token_grid():
    # A linear ramp along w is reproduced by bicubic downsampling away from the border:
    # output column j samples input coordinate 2j + 0.5.
    h = w = 8
    ramp = torch.arange(w, dtype=torch.float32).repeat(h, 1)  # (8, 8), value = column
    tokens = torch.stack([ramp, 2 * ramp], dim=-1).reshape(1, h * w, 2)
    out = resize_token_grid(tokens, (h, w), (4, 4))
    assert out.shape == (1, 16, 2)
    grid = out.reshape(4, 4, 2)
    torch.testing.assert_close(grid[:, 1:3, 0], torch.tensor([2.5, 4.5]).repeat(4, 1))
    torch.testing.assert_close(grid[:, 1:3, 1], torch.tensor([5.0, 9.0]).repeat(4, 1))
    const = torch.full((2, 16, 3), 0.7)
    torch.testing.assert_close(resize_token_grid(const, (4, 4), (2, 2)), torch.full((2, 4, 3), 0.7))
    assert resize_token_grid(tokens, (8, 8), (8, 8)) is tokens
    with pytest.raises(ConfigError):
        resize_token_grid(tokens, (4, 4), (2, 2))
