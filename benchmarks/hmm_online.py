"""Online EM (GaussianHMM.partial_fit, Cappé 2011) against batch Baum-Welch on one long series.

A seeded 4-state GaussianHMM sample (T steps, D = 2, full covariances) is fitted (a) by batch
EM from the k-means start until the gain per iteration is below ``--tol``, and (b) by one pass
of ``partial_fit`` over chunks of ``--chunk`` steps from the same kind of start, for each
(learning_decay, mstep_every) asked. Printed: wall and CPU seconds, and the log-likelihood of
the whole series under the result per 1,000 steps (``score``), with the batch optimum's.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hmm_online.py --steps 100000
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from latentfit.em.hmm import GaussianHMM


def truth(k: int) -> GaussianHMM:
    rng = np.random.default_rng(0)
    m = GaussianHMM(k, covariance_type="full")
    m.startprob_ = np.full(k, 1.0 / k)
    A = np.full((k, k), 0.08 / (k - 1))
    np.fill_diagonal(A, 0.92)
    m.transmat_ = A
    m.means_ = rng.normal(0, 2.5, (k, 2))
    rho = rng.uniform(-0.5, 0.5, k)
    sd = rng.uniform(0.7, 1.3, (k, 2))
    m.covars_ = np.stack(
        [[[a * a, r * a * b], [r * a * b, b * b]] for (a, b), r in zip(sd, rho, strict=True)]
    )
    m.n_features = 2
    return m


def timed(f):
    w, c = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--states", type=int, default=4)
    p.add_argument("--chunk", type=int, default=10_000)
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--settings", default="0.9:50,0.9:10,0.6:50", help="decay:mstep_every,...")
    a = p.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.2f}")
    T, k = a.steps, a.states
    X = truth(k).sample(T, random_state=1)[0]
    batch, w, c = timed(
        lambda: GaussianHMM(k, covariance_type="full", n_iter=500, tol=a.tol, random_state=0).fit(X)
    )
    best = batch.score(X) / T * 1000
    print(f"batch EM: {batch.n_iter_} iterations, wall {w:.2f} s (CPU {c:.2f} s), "
          f"log-lik/1000 steps {best:.3f}")  # fmt: skip
    for setting in a.settings.split(","):
        decay, every = float(setting.split(":")[0]), int(setting.split(":")[1])
        model = GaussianHMM(k, covariance_type="full", random_state=0)

        def run(model=model, decay=decay, every=every):
            for i in range(0, T, a.chunk):
                model.partial_fit(
                    X[i : i + a.chunk], new_sequence=i == 0, learning_decay=decay,
                    mstep_every=every,
                )  # fmt: skip
            return model

        _, w, c = timed(run)
        ll = model.score(X) / T * 1000
        print(f"online decay {decay} mstep_every {every}: wall {w:.2f} s (CPU {c:.2f} s), "
              f"log-lik/1000 steps {ll:.3f}, gap {best - ll:.3f} nats")  # fmt: skip


if __name__ == "__main__":
    main()
