"""`encoder.gelu_exact`'s hand-written derivative against autodiff and PyTorch."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn

from mlir_train import encoder

pytestmark = [pytest.mark.fast, pytest.mark.torch]


def _inputs():
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(0, 3, 4000), np.linspace(-12, 12, 97), [0.0, -0.0, 1e-8]])
  return x.astype(np.float32), rng.normal(size=x.shape).astype(np.float32)


def test_gelu_exact_forward_and_gradient_equal_autodiff_and_torch():
  x, w = _inputs()
  ours = jax.grad(lambda v: jnp.sum(w * encoder.gelu_exact(v)))(x)
  autodiff = jax.grad(lambda v: jnp.sum(w * nn.gelu(v, approximate=False)))(x)
  np.testing.assert_allclose(ours, autodiff, rtol=2e-6, atol=5e-7)
  xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
  y = torch.nn.functional.gelu(xt)  # erf form, in float64: the truth
  (y * torch.tensor(w, dtype=torch.float64)).sum().backward()
  truth = xt.grad.numpy()
  np.testing.assert_allclose(ours, truth, rtol=2e-6, atol=5e-7)
  # relative accuracy where the derivative does not cancel to 0 (at x = -0.75) or underflow:
  # 1 - erf(|x| / sqrt 2) in place of erfc loses it in the left tail (0.14 at x = -5.4)
  away = ((x > -6) & (x < -1)) | (x > -0.5)
  rel = np.abs(ours - truth) / np.abs(truth)
  assert rel[away].max() < 5e-6, rel[away].max()
  np.testing.assert_allclose(encoder.gelu_exact(x), y.detach().numpy(), rtol=2e-6, atol=1e-6)


def test_gelu_exact_under_jit_remat_and_bfloat16():
  x, w = _inputs()
  f = jax.jit(jax.grad(lambda v: jnp.sum(w * jax.checkpoint(encoder.gelu_exact)(v))))
  np.testing.assert_allclose(f(x), jax.grad(lambda v: jnp.sum(w * encoder.gelu_exact(v)))(x),
                             rtol=1e-6, atol=5e-7)
  xb = jnp.asarray(x, jnp.bfloat16)
  gb = jax.grad(lambda v: jnp.sum(w * encoder.gelu_exact(v).astype(jnp.float32)))(xb)
  assert gb.dtype == jnp.bfloat16
  ref = jax.grad(lambda v: jnp.sum(w * nn.gelu(v, approximate=False).astype(jnp.float32)))(xb)
  np.testing.assert_allclose(np.asarray(gb, np.float32), np.asarray(ref, np.float32),
                             rtol=2e-2, atol=2e-2)


def test_encoder_uses_it_for_hugging_face_gelu():
  assert encoder._act("gelu") is encoder.gelu_exact
  assert encoder._act("gelu_python") is encoder.gelu_exact
