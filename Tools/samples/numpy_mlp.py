"""A ReLU MLP trained in plain numpy (exact backpropagation, float32), for the sample runs that
need no framework: Linear layers `0`, `2`, `4` with ReLUs `1`, `3` between them, as a PyTorch
`nn.Sequential` names them (weights [out, in]), softmax cross-entropy, SGD or Adam."""

from __future__ import annotations

import numpy as np


class MLP:
    def __init__(self, rng: np.random.Generator, widths=(16, 24, 24, 2)):
        self.names = []
        self.params = {}
        for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
            name = str(2 * i)
            self.params[f"{name}.weight"] = (rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
            self.params[f"{name}.bias"] = np.zeros(fan_out, np.float32)
            self.names.append(name)

    def forward(self, x):
        """Logits and the post-ReLU hidden outputs (the inputs of each Linear layer)."""
        inputs = [x]
        h = x
        for i, name in enumerate(self.names):
            z = h @ self.params[f"{name}.weight"].T + self.params[f"{name}.bias"]
            if i < len(self.names) - 1:
                h = np.maximum(z, 0)
                inputs.append(h)
            else:
                h = z
        return h, inputs

    def loss_and_grads(self, x, y):
        """Mean softmax cross-entropy and the exact gradient of every parameter."""
        logits, inputs = self.forward(x)
        shifted = logits - logits.max(1, keepdims=True)
        p = np.exp(shifted)
        p /= p.sum(1, keepdims=True)
        n = len(y)
        loss = float(-np.log(p[np.arange(n), y] + 1e-30).mean())
        delta = p
        delta[np.arange(n), y] -= 1
        delta /= n
        grads = {}
        for i in reversed(range(len(self.names))):
            name = self.names[i]
            grads[f"{name}.weight"] = (delta.T @ inputs[i]).astype(np.float32)
            grads[f"{name}.bias"] = delta.sum(0).astype(np.float32)
            if i > 0:
                delta = (delta @ self.params[f"{name}.weight"]) * (inputs[i] > 0)
        return loss, grads


class SGD:
    name = "SGD"

    def __init__(self, lr):
        self.lr = lr

    def step(self, params, grads, lr=None):
        for k in params:
            params[k] = (params[k] - np.float32(lr or self.lr) * grads[k]).astype(np.float32)

    def state(self):
        return None


class Adam:
    """torch.optim.Adam's update (exp_avg, exp_avg_sq, bias correction), in float32."""

    name = "Adam"

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        self.lr, self.betas, self.eps, self.t = lr, betas, eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params, grads, lr=None):
        self.t += 1
        b1, b2 = self.betas
        lr = lr or self.lr
        for k in params:
            g = grads[k]
            self.m[k] = (b1 * self.m[k] + (1 - b1) * g).astype(np.float32)
            self.v[k] = (b2 * self.v[k] + (1 - b2) * g * g).astype(np.float32)
            m_hat = self.m[k] / (1 - b1**self.t)
            v_hat = self.v[k] / (1 - b2**self.t)
            params[k] = (params[k] - lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(np.float32)

    def state(self):
        return {"exp_avg": dict(self.m), "exp_avg_sq": dict(self.v)}


def teacher_data(rng, n=2048, d_in=16):
    """Standard-normal features; two balanced classes from a fixed random linear teacher."""
    x = rng.standard_normal((n, d_in)).astype(np.float32)
    t = rng.standard_normal(d_in).astype(np.float32)
    y = (x @ t > 0).astype(np.int64)
    return x, y
