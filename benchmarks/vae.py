"""Variational autoencoders: test log-likelihood of VAE vs IWAE, and training throughput.

(a) quality: the bundled MNIST digits (4,000 train / 1,000 test, dynamically binarised; the test
    set binarised once), the one-stochastic-layer architecture of Burda et al. (2016)
    784-200-200-50 (tanh, Bernoulli), trained alike with the ELBO (VAE), IWAE k=5 and IWAE k=50;
    test NLL by importance sampling with k=5000, and active units.
(b) speed: images/s of latentfit's trainer vs a bare PyTorch loop with the same network vs Pyro
    SVI with Trace_ELBO (the Pyro VAE tutorial's 784-400-50 network, batch 128), interleaved,
    best of --repeats; and k=5000 evaluation throughput.

Run: .venv/bin/python benchmarks/vae.py [--part quality|speed|all] [--epochs 30] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
from torch import nn

from latentfit.datasets import load_mnist_5k
from latentfit.train import TrainConfig, train
from latentfit.vae import ELBO, IWAE, active_units, build_model, marginal_log_likelihood


def mnist():
    X = load_mnist_5k().data.float()
    perm = torch.randperm(5000, generator=torch.Generator().manual_seed(0))
    X = X[perm]
    test = torch.bernoulli(X[4000:], generator=torch.Generator().manual_seed(1))
    return X[:4000], test


def quality(epochs: int, k_eval: int) -> None:
    X, test = mnist()
    print(
        f"(a) quality: MNIST 4000/1000, 784-200-200-50 tanh, Adam 1e-3, batch 100, {epochs} epochs"
    )
    print(
        f"{'objective':<12}{'train s':>9}{'test NLL (k=' + str(k_eval) + ')':>22}{'eval s':>8}"
        f"{'active':>8}"
    )
    for name, objective in [("VAE (ELBO)", ELBO()), ("IWAE k=5", IWAE(5)), ("IWAE k=50", IWAE(50))]:
        model = build_model(seed=0)
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=100,
            lr=1e-3,
            binarize=True,
            patience=None,
            restore_best=False,
            diagnostics=False,
            progress=False,
            seed=0,
        )
        t0 = time.perf_counter()
        train(model, objective, X, None, cfg)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        ll = marginal_log_likelihood(
            model, test, k=k_eval, generator=torch.Generator().manual_seed(2)
        )
        t_eval = time.perf_counter() - t0
        n_active, _ = active_units(model, test)
        print(f"{name:<12}{t_train:>9.1f}{ll.nll:>22.2f}{t_eval:>8.1f}{n_active:>8}", flush=True)


# ---- (b) speed ------------------------------------------------------------------------------


class BareVAE(nn.Module):
    """The same 784-400-50 network as build_model(hidden=[400], activation='softplus')."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(784, 400), nn.Softplus())
        self.head = nn.Linear(400, 100)
        self.dec = nn.Sequential(nn.Linear(50, 400), nn.Softplus(), nn.Linear(400, 784))


def bare_loop(X, epochs, batch, fused=False):
    torch.manual_seed(0)
    m = BareVAE()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, fused=fused)
    n = X.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(0, n, batch):
            x = X[perm[i : i + batch]]
            mu, logvar = m.head(m.enc(x)).chunk(2, -1)
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
            rec = nn.functional.binary_cross_entropy_with_logits(m.dec(z), x, reduction="none").sum(
                -1
            )
            kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
            loss = (rec + kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


def latentfit_loop(X, epochs, batch):
    model = build_model(x_dim=784, z_dim=50, hidden=[400], activation="softplus")
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch,
        patience=None,
        restore_best=False,
        diagnostics=False,
        progress=False,
    )
    train(model, ELBO(), X, None, cfg)


def pyro_loop(X, epochs, batch):
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam

    pyro.clear_param_store()
    pyro.set_rng_seed(0)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc21, self.fc22 = (
                nn.Linear(784, 400),
                nn.Linear(400, 50),
                nn.Linear(400, 50),
            )

        def forward(self, x):
            h = nn.functional.softplus(self.fc1(x))
            return self.fc21(h), torch.exp(self.fc22(h))

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc21 = nn.Linear(50, 400), nn.Linear(400, 784)

        def forward(self, z):
            return torch.sigmoid(self.fc21(nn.functional.softplus(self.fc1(z))))

    class PyroVAE(nn.Module):  # the Pyro VAE tutorial, verbatim in structure
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = Encoder(), Decoder()

        def model(self, x):
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", x.shape[0]):
                z_loc = x.new_zeros((x.shape[0], 50))
                z_scale = x.new_ones((x.shape[0], 50))
                z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
                loc_img = self.decoder(z)
                pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1), obs=x)

        def guide(self, x):
            pyro.module("encoder", self.encoder)
            with pyro.plate("data", x.shape[0]):
                z_loc, z_scale = self.encoder(x)
                pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    vae = PyroVAE()
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), loss=Trace_ELBO())
    n = X.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(0, n, batch):
            svi.step(X[perm[i : i + batch]])


def speed(epochs: int, repeats: int, k_eval: int) -> None:
    X, test = mnist()
    Xb = torch.bernoulli(X, generator=torch.Generator().manual_seed(3))  # static binarisation
    n = Xb.shape[0]
    loops = {
        "latentfit trainer": latentfit_loop,
        "bare PyTorch loop": bare_loop,
        "bare loop, fused Adam": lambda X, e, b: bare_loop(X, e, b, fused=True),
        "Pyro SVI Trace_ELBO": pyro_loop,
    }
    for fn in loops.values():  # warm-up
        fn(Xb[:512], 1, 128)
    wall = dict.fromkeys(loops, math.inf)
    cpu = dict.fromkeys(loops, math.inf)
    for _ in range(repeats):  # interleaved, so a burst of load hits all of them alike
        for name, fn in loops.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn(Xb, epochs, 128)
            wall[name] = min(wall[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    print(
        f"(b) speed: 784-400-50 softplus, batch 128, {epochs} epochs of {n} images, "
        f"best of {repeats}; the trainer uses fused Adam (one kernel for all parameters)"
    )
    print(f"{'':<24}{'wall images/s':>14}{'ratio':>7}{'CPU-time images/s':>19}{'ratio':>7}")
    ref = "bare PyTorch loop"
    for name in loops:
        w, c = n * epochs / wall[name], n * epochs / cpu[name]
        print(
            f"{name:<24}{w:>14.0f}{wall[ref] / wall[name]:>6.2f}x{c:>19.0f}"
            f"{cpu[ref] / cpu[name]:>6.2f}x"
        )
    model = build_model(seed=0)
    cfg = TrainConfig(
        epochs=2, batch_size=100, binarize=True, patience=None, diagnostics=False, progress=False
    )
    train(model, ELBO(), X, None, cfg)
    pts = test[:100]
    t0 = time.perf_counter()
    marginal_log_likelihood(model, pts, k=k_eval, generator=torch.Generator().manual_seed(4))
    t = time.perf_counter() - t0
    print(
        f"k={k_eval} evaluation (784-200-200-50): {pts.shape[0] / t:.1f} test points/s, "
        f"{pts.shape[0] * k_eval / t:,.0f} importance samples/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["quality", "speed", "all"], default="all")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs for (a)")
    parser.add_argument("--speed-epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=5000, help="importance samples for log p(x)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if args.part in ("speed", "all"):
        speed(args.speed_epochs, args.repeats, args.k)
    if args.part in ("quality", "all"):
        quality(args.epochs, args.k)


if __name__ == "__main__":
    main()
