"""The weight EMA: its warm-up rule and the update it applies."""

import torch

from tim_core.ema import averaged_copy, ema_update, warmed_decay


def test_warmed_decay_ramps_then_caps():
    assert warmed_decay(0.999, 0) == 0.1
    assert abs(warmed_decay(0.999, 90) - 0.91) < 1e-12
    assert warmed_decay(0.999, 10**6) == 0.999
    steps = [warmed_decay(0.999, s) for s in range(0, 20000, 500)]
    assert steps == sorted(steps)


def test_ema_forgets_the_random_start():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 4)
    ema = averaged_copy(net)
    start = ema.weight.clone()
    with torch.no_grad():
        net.weight.fill_(1.0)
    plain, warmed = averaged_copy(ema), averaged_copy(ema)
    for step in range(1500):
        ema_update(plain, net, 0.999)
        ema_update(warmed, net, 0.999, step)
    left_plain = (plain.weight - 1.0).abs().max() / (start - 1.0).abs().max()
    left_warmed = (warmed.weight - 1.0).abs().max() / (start - 1.0).abs().max()
    assert 0.2 < left_plain < 0.25  # e^-1.5 of the start is still there
    assert left_warmed < 0.01
    assert not ema.weight.requires_grad
