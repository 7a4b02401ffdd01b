"""An independent NumPy implementation of the LHOPT inner update.

Written from the update's equations (LHOPT's docstring) line by line, in float64, sharing no code
with keras_lopt, so the tests compare two implementations of one spec.
"""

import numpy as np


class ReferenceLHOPT:
    def __init__(self, params, **hyperparameters):
        self.params = [np.array(p, dtype=np.float64) for p in params]
        self.hp = dict(learning_rate=1e-3, beta_1=0.9, beta_2=0.99, epsilon=1e-6,
                       weight_decay=1e-2, clip_threshold=0.8, clip_ema=1e-2,
                       update_norm_ema=0.05)
        self.hp.update(hyperparameters)
        self.R = 0.0
        self.bc1 = 0.0
        self.did_clip = 0.0
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.n = [0.0 for _ in self.params]
        self.bn = [0.0 for _ in self.params]

    def step(self, grads):
        grads = [np.array(g, dtype=np.float64) for g in grads]
        G = np.sqrt(sum(np.sum(g * g) for g in grads))
        if not np.isfinite(G):
            return  # skipped step: nothing changes
        hp = self.hp
        beta_1, beta_2 = hp["beta_1"], hp["beta_2"]
        self.R = max(G, self.R * (1 - hp["clip_ema"]))
        c = hp["clip_threshold"] * self.R / (G + 1e-6)
        self.did_clip = 0.0
        if c < 1:
            grads = [c * g for g in grads]
            self.did_clip = 1.0
        self.bc1 = self.bc1 * beta_1 + (1 - beta_1)
        for i, (p, g) in enumerate(zip(self.params, grads)):
            self.m[i] = beta_1 * self.m[i] + (1 - beta_1) * g
            self.v[i] = np.maximum(beta_2 * self.v[i], np.abs(g))
            u = self.m[i] / (self.v[i] + hp["epsilon"]) / self.bc1 + hp["weight_decay"] * p
            lr_p = hp["learning_rate"]
            if p.ndim >= 2:
                self.n[i] = self.n[i] * (1 - hp["update_norm_ema"]) + hp["update_norm_ema"] * np.linalg.norm(u)
                self.bn[i] = self.bn[i] * (1 - hp["update_norm_ema"]) + hp["update_norm_ema"]
                p_norm = np.linalg.norm(p)
                n_hat = self.n[i] / self.bn[i]
                if p_norm >= 1e-8 and n_hat >= 1e-8:
                    lr_p = hp["learning_rate"] * max(p_norm / n_hat, 1e-3)
            self.params[i] = p - lr_p * u
