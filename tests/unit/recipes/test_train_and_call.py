"""TrainAndCall: a small VAE on digits whose decoder samples reach TensorBoard and the run folder."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from trainforge.callbacks import EpochMetricAvg, Optimizer
from trainforge.data import load_digits_split
from trainforge.loggers import TensorBoardLogger
from trainforge.recipes import TrainAndCall


class VAE(nn.Module):
    def __init__(self, latent=8):
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, 64), nn.ReLU(), nn.Linear(64, 64), nn.Sigmoid())

    def forward(self, x):
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        return self.decoder(z).view(-1, 1, 8, 8), mean, log_var


def test_vae_samples_go_to_tensorboard_and_the_run_folder(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    train, _ = load_digits_split()
    loader = DataLoader(train, batch_size=64, shuffle=True)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fixed_z = torch.randn(16, model.latent)
    modes = []

    def train_fn(batch):
        x, _ = batch
        recon, mean, log_var = model(x)
        reconstruction = nn.functional.binary_cross_entropy(recon, x, reduction="sum") / len(x)
        kl = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp()) / len(x)
        loss = reconstruction + kl
        loss.backward()
        return {"loss": loss}

    def call_fn():
        modes.append((model.training, torch.is_grad_enabled()))
        return model.decoder(fixed_z).view(-1, 1, 8, 8)  # an image grid

    recipe = TrainAndCall(model, train_fn, call_fn, loader, call_every=20, log_every=10, checkpoint=tmp_path / "run")
    board = TensorBoardLogger(tmp_path / "run" / "tensorboard", log_every=10)
    recipe.callbacks.add_callbacks([Optimizer(opt), EpochMetricAvg("loss"), board])
    state = recipe.run(3)
    board.close()
    steps = 3 * len(loader)
    assert set(modes) == {(False, False)} and model.training
    assert state.metrics["loss"] < 30  # a trained VAE (about 45 nats per digit at the start)
    pngs = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert pngs == [f"samples-step{s:06d}.png" for s in range(20, steps + 1, 20)]
    from PIL import Image

    assert Image.open(tmp_path / "run" / "samples" / pngs[-1]).size[0] > 8  # a grid, not one image
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == ["samples"]
    assert [e.step for e in events.Images("samples")] == list(range(20, steps + 1, 20))  # each new grid once
    assert "loss" in events.Tags()["scalars"]
    assert (tmp_path / "run" / "checkpoints" / "last").is_dir()
