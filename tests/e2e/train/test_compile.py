"""compile=true: torch.compile (Inductor, which starts compiler processes) gives the eager
loss and gradients."""

import pytest
import torch

from capgen.models.losses import caption_loss


@pytest.mark.slow
def test_torch_compile_gives_the_same_loss_and_gradients():
    """compile=true (Captioner.use_torch_compile): the shapes attention model's loss and
    gradients equal the eager ones (float32, so a float32 tolerance), parameter names unchanged."""
    from hydra import compose, initialize_config_dir

    from capgen.config import CONF_DIR
    from capgen.models import build_captioner
    from capgen.vocab import Vocabulary

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train")
    vocab = Vocabulary([*"<pad> <start> <end> <unk>".split(), *(f"w{i}" for i in range(20))])
    nets = []
    for compiled in (False, True):
        torch.manual_seed(0)
        net = build_captioner({"encoder": cfg.model.encoder, "decoder": cfg.model.decoder}, len(vocab)).eval()  # no dropout
        if compiled:
            net.use_torch_compile()
        nets.append(net)
    assert list(nets[0].state_dict()) == list(nets[1].state_dict())
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 96, 96), dtype=torch.uint8, generator=g)
    captions = torch.randint(4, len(vocab), (6, 9), generator=g)
    captions[2, 5:] = 0  # ragged: the compiled cell sees shrinking batches
    results = []
    for net in nets:
        logits, _ = net(images, captions[:, :-1])
        loss = caption_loss(logits, captions[:, 1:])
        results.append((loss, torch.autograd.grad(loss, list(net.parameters()))))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
