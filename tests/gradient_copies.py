"""Ways of computing a value from a tensor outside torch's graph, for the tests of the checks
that a user's function follows its parameters (latentfit._gradient_cut): the numbers are
right, the gradient is lost, and no call on the tensor itself shows it."""

import numpy as np
import torch


def no_grad(f):
    """``f``'s value computed under torch.no_grad()."""

    def inner(t):
        with torch.no_grad():
            return f(t)

    return inner


#: For a tensor of any shape (a parameter, a batch of latent draws).
COPIES = {
    "torch.tensor": lambda t: torch.tensor(t),
    "torch.as_tensor(detach)": lambda t: torch.as_tensor(t.detach()),
    "numpy": lambda t: torch.from_numpy(np.array(t.detach().numpy())),
    "no_grad": no_grad(lambda t: t * 1.0),
}
#: For a 0-d tensor (a scalar parameter): also its copy through a list.
SCALAR_COPIES = {**COPIES, "torch.tensor([t])": lambda t: torch.tensor([t])[0]}
