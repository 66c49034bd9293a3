"""DEEN's denoising score-matching loss for ``networks.MLP`` (paper 002), with its
parameter gradient derived by hand (equal to the generic gradient, which is checked against
central differences: ``tests/test_deen.py``, ``tests/test_networks.py``).

The loss:

    L(theta) = (1/B) sum_b || x_b - xi_b + sigma^2 grad_xi E(xi_b) ||^2

in three passes (forward, input-gradient backward, then the reverse of both)
instead of the generic ``grad`` + ``grad_params_directional`` (which repeats
the forward pass).  Derivation, with z_l = a_{l-1} W_l^T + b_l, a_l = sigma(z_l),
delta_{L} = 1, ga_{l-1} = delta_l W_l, delta_l = ga_l * sigma'(z_l):
reverse of the backward, l = 1..L, from  gab_0 = dL/dgrad = 2 sigma^2 r / B:
    deltab_l = gab_{l-1} W_l^T,  Wb_l += delta_l^T gab_{l-1},
    gab_l = deltab_l * sigma'(z_l),  zb_l += deltab_l * ga_l * sigma''(z_l);
reverse of the forward, l = L-1..1:
    Wb_l += zb_l^T a_{l-1},  bb_l = sum zb_l,  zb_{l-1} += (zb_l W_l) * sigma'(z_{l-1}).
Returns (L, grads dict like ``params``); batches are processed in chunks of
``batch_size``, summed in a fixed order.
"""
from ..backend import array_module
from . import mlp_cpu
from .layers import activation_derivatives


def dsm_loss_and_grad(net, x, x_noisy, sigma, flat=False):
    """(L, grads like ``net.params``) of the MLP ``net`` at clean ``x`` and noisy
    ``x_noisy`` [B, d] with noise level ``sigma`` (see the module doc); ``flat``: the
    gradient as one vector in ``net.params`` order instead (what an optimiser of the
    flattened parameters takes; the whole-pass kernel computes it so)."""
    net._check(x)
    net._check(x_noisy, "x_noisy")
    if x.shape != x_noisy.shape:
        raise ValueError(f"x and x_noisy must have the same shape; got {x.shape} and {x_noisy.shape}")
    if not (float(sigma) > 0):
        raise ValueError(f"sigma must be > 0; got {sigma}")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one sample (the loss is a mean over the batch)")
    out = (mlp_cpu.dsm_loss_and_flat_grad if flat else mlp_cpu.dsm_loss_and_grad)(net, x, x_noisy,
                                                                                 float(sigma) ** 2)
    if out is not None:
        return out
    parts = net._map(x, lambda s: _chunk(net, x[s], x_noisy[s], float(sigma) ** 2, x.shape[0]))
    loss = 0.0
    for part, _ in parts:
        loss += float(part)
    grads = net._sum_in_order([g for _, g in parts])
    if flat:
        xp = array_module(x)
        return loss, xp.concatenate([xp.ravel(v) for v in grads.values()])
    return loss, grads


def _chunk(net, x, x_noisy, sigma2, B):
        xp = array_module(x)
        dense = net.dense_layers()
        act = net.layers[1] if len(net.layers) > 1 else None
        n_layers = len(dense)
        s2 = x.dtype.type(sigma2)
        # forward, keeping a_l, sigma'(z_l), sigma''(z_l)
        a = [x_noisy]
        d1 = [None]
        d2 = [None]
        for l, layer in enumerate(dense[:-1], start=1):
            z = a[-1] @ layer.params["weight"].T + layer.params["bias"]
            s, p1, p2 = activation_derivatives(act.name, z, act.alpha, second=True)
            a.append(s)
            d1.append(p1)
            d2.append(p2)
        # backward for grad_x E: ga[l] = dE/da_l, delta[l] = dE/dz_l
        delta = [None] * (n_layers + 1)
        ga = [None] * n_layers
        delta[n_layers] = xp.ones((x.shape[0], 1), dtype=x.dtype)
        for l in range(n_layers, 0, -1):
            ga[l - 1] = delta[l] @ dense[l - 1].params["weight"]
            if l - 1 >= 1:
                delta[l - 1] = ga[l - 1] * d1[l - 1]
        r = x - x_noisy + s2 * ga[0]
        loss = (r * r).sum() / B
        grads = {}
        Wb = [None] * (n_layers + 1)
        zb = [None] * n_layers
        gab = (2 * s2 / B) * r
        for l in range(1, n_layers + 1):                     # reverse of the backward
            W = dense[l - 1].params["weight"]
            Wb[l] = delta[l].T @ gab
            if l == n_layers:
                break
            deltab = gab @ W.T
            gab = deltab * d1[l]
            zb[l] = deltab * ga[l] * d2[l]
        bb = [None] * (n_layers + 1)
        bb[n_layers] = xp.zeros_like(dense[-1].params["bias"])
        for l in range(n_layers - 1, 0, -1):                 # reverse of the forward
            Wb[l] = Wb[l] + zb[l].T @ a[l - 1]
            bb[l] = zb[l].sum(0)
            if l - 1 >= 1:
                zb[l - 1] = zb[l - 1] + (zb[l] @ dense[l - 1].params["weight"]) * d1[l - 1]
        for l in range(1, n_layers + 1):
            grads[f"{2 * (l - 1)}.weight"] = Wb[l]
            grads[f"{2 * (l - 1)}.bias"] = bb[l]
        return loss, grads


