"""The streaming AMD network (torch; training only — serving runs the exported ONNX graph).

Why this shape: every 100 ms step brings 10 log-mel frames. A small dense front-end summarises the
step (energy, voicing, tonality: what the step *is*), and a GRU carries the call so far (how long
speech has run, how long the silence after it has lasted: what the call *is*). The GRU state is an
explicit input/output of the step graph (the Silero-VAD pattern), so one ONNX session serves any
number of calls, each holding its own state.
"""

from __future__ import annotations

import torch
from torch import nn

from amd_model.features import FRAMES_PER_STEP, N_MELS


class AmdNet(nn.Module):
    """Dense front-end per 100 ms step + GRU over steps + linear head."""

    def __init__(
        self, n_classes: int, hidden: int = 128, width: int = 256, dropout: float = 0.2, n_extra: int = 0
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.n_extra = n_extra  # per-step inputs beside the log-mels, straight into the GRU (measurement only)
        self.register_buffer("feat_mean", torch.zeros(N_MELS))
        self.register_buffer("feat_std", torch.ones(N_MELS))
        # The whole step (10 frames x 40 mels) flattened: a dense layer over it acts as a 10-frame conv
        # with full receptive field and is a single GEMM (a real Conv1d over 10 frames was 5x slower on CPU).
        self.front = nn.Sequential(
            nn.Linear(FRAMES_PER_STEP * N_MELS, width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, hidden),
            nn.ReLU(),
        )
        self.drop = nn.Dropout(dropout)  # on the GRU output, training only (identity in the export)
        self.gru = nn.GRU(hidden + n_extra, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, FRAMES_PER_STEP, N_MELS) raw log-mel -> (N, hidden) per-step summary."""
        x = (feats - self.feat_mean) / self.feat_std
        return self.front(x.reshape(x.shape[0], FRAMES_PER_STEP * N_MELS))

    def forward(
        self, feats: torch.Tensor, h0: torch.Tensor | None = None, extra: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training form: feats (B, T, F, M) [+ extra (B, T, n_extra)] -> logits (B, T, C), final state (1, B, H)."""
        b, t = feats.shape[:2]
        e = self.embed(feats.reshape(b * t, FRAMES_PER_STEP, N_MELS)).reshape(b, t, -1)
        if self.n_extra:
            e = torch.cat([e, extra if extra is not None else e.new_zeros(b, t, self.n_extra)], -1)
        if h0 is None:
            h0 = feats.new_zeros(1, b, self.hidden)
        out, h = self.gru(e, h0)
        return self.head(self.drop(out)), h


class AmdEnsemble(nn.Module):
    """K independently trained nets whose probabilities are averaged.

    Why: the members overfit different voices and templates, so their average is better calibrated
    early in the call, where the decision layer's fast detectors act. One member is the plain net.
    """

    def __init__(self, nets: list[AmdNet]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)
        self.hidden = sum(n.hidden for n in nets)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Training form: feats (B, T, F, M) -> averaged probabilities (B, T, C)."""
        return torch.stack([torch.softmax(n(feats)[0], -1) for n in self.nets]).mean(0)


class AmdStep(nn.Module):
    """Export form: one 100 ms step for a batch of calls -> probabilities and the next state.

    The members' GRU states are concatenated into one state tensor, so the runtime still carries a
    single (1, B, H) array per call whatever the ensemble size.
    """

    def __init__(self, model: AmdEnsemble) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, F, M), state (1, B, H) -> probs (B, C), state_out (1, B, H)."""
        probs, states = [], []
        start = 0
        for net in self.model.nets:
            e = net.embed(feats).unsqueeze(1)
            out, h = net.gru(e, state[:, :, start : start + net.hidden])
            start += net.hidden
            probs.append(torch.softmax(net.head(out[:, 0]), dim=-1))
            states.append(h)
        return torch.stack(probs).mean(0), torch.cat(states, dim=-1)
