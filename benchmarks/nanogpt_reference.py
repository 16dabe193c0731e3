"""The peer of the generate-text benchmark: nanoGPT (karpathy/nanoGPT, model.py + train.py)
reimplemented in PyTorch at its documented CPU configuration for shakespeare_char.

That configuration is `config/train_shakespeare_char.py` with the README's CPU overrides
(`--device=cpu --compile=False --block_size=64 --batch_size=12 --n_layer=4 --n_head=4
--n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`), everything else at
train.py's defaults: bias=False, weight_decay 0.1, beta1 0.9, grad_clip 1.0, one
gradient-accumulation step, float32 on CPU. The model: learned token and position
embeddings, pre-norm blocks (LayerNorm without bias, causal self-attention through
`scaled_dot_product_attention`, a 4x GELU MLP), a final LayerNorm and an output head tied to
the token embedding; weights N(0, 0.02), the residual projections N(0, 0.02 / sqrt(2 n_layer)).
AdamW decays the 2-D weights only; the learning rate warms up linearly for 100 iterations and
then follows a cosine from 1e-3 to 1e-4 at lr_decay_iters. Every iteration draws `batch_size`
random windows of the training ids (torch.randint on the seeded global generator, as train.py).
nanoGPT's reported "val loss at iter 2000" is measured after 2,000 optimizer steps, which is
what `train_nanogpt` runs; its periodic evaluation on random batches is left out (the benchmark
scores the model once, on the whole validation split, with lm_eval).

Needs only torch (the benchmark environment pins torch==2.13.0, CPU build).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class NanoGPTConfig:
    """The model and optimisation settings of nanoGPT's CPU shakespeare_char run."""

    vocab_size: int = 65
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = False
    batch_size: int = 12
    max_iters: int = 2000
    lr_decay_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.proj_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        heads = self.qkv(x).view(batch, steps, 3, self.n_head, width // self.n_head)
        q, k, v = heads.permute(2, 0, 3, 1, 4)  # each (batch, head, steps, head width)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).reshape(batch, steps, width)
        return self.proj_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    """nanoGPT's GPT: ids (B, T) -> logits (B, T, vocab_size), T <= block_size."""

    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied embeddings
        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        for name, parameter in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(parameter, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.drop(self.wte(ids) + self.wpe(positions))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def num_parameters(self) -> int:
        """Parameters without the position embedding (as nanoGPT reports them)."""
        return sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()


def adamw(model: nn.Module, config: NanoGPTConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the 2-D weights (matmuls, embeddings) only."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in parameters if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2))


def learning_rate(step: int, config: NanoGPTConfig) -> float:
    """train.py's get_lr: linear warmup, cosine decay to min_lr, then min_lr."""
    if step < config.warmup_iters:
        return config.learning_rate * (step + 1) / (config.warmup_iters + 1)
    if step > config.lr_decay_iters:
        return config.min_lr
    ratio = (step - config.warmup_iters) / (config.lr_decay_iters - config.warmup_iters)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (
        config.learning_rate - config.min_lr
    )


def random_windows(
    data: torch.Tensor, batch_size: int, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` random windows of `data` and the same windows one token later."""
    starts = torch.randint(len(data) - block_size, (batch_size,))
    index = starts[:, None] + torch.arange(block_size)
    return data[index], data[index + 1]


def train_nanogpt(
    train_ids: np.ndarray,
    vocab_size: int,
    seed: int = 1337,
    max_iters: int = 2000,
    time_limit: float | None = None,
    threads: int = 2,
) -> tuple[NanoGPT, float, list[float]]:
    """Train nanoGPT's CPU shakespeare_char model on `train_ids` for `max_iters` steps.

    `time_limit` (seconds) stops earlier, after the step that crosses it; the learning-rate
    schedule stays the one of `max_iters` (lr_decay_iters = max_iters). Returns the model,
    the wall seconds of building and training it, and the training loss of every step taken.
    """
    torch.set_num_threads(threads)
    config = NanoGPTConfig(vocab_size=vocab_size, max_iters=max_iters, lr_decay_iters=max_iters)
    data = torch.from_numpy(np.asarray(train_ids, dtype=np.int64))
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = NanoGPT(config)
    model.train()
    optimizer = adamw(model, config)
    losses: list[float] = []
    for step in range(config.max_iters):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        inputs, targets = random_windows(data, config.batch_size, config.block_size)
        logits = model(inputs)
        loss = F.cross_entropy(logits.view(-1, vocab_size), targets.view(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if time_limit is not None and time.perf_counter() - started >= time_limit:
            break
    return model, time.perf_counter() - started, losses


def logits_fn(model: NanoGPT):
    """A numpy callable for lm_eval: int64 ids (B, T) -> float32 logits (B, T, V)."""
    model.eval()

    def logits(ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.asarray(ids, dtype=np.int64))).float().numpy()

    return logits
