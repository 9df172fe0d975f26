"""SSDRec — Self-augmented Sequence Denoising (Zhang et al., ICDE '24; specs/ssdrec.md).

SSDRec = HSD (``denoisers.hsd``) + a graph-based front stage run before HSD in every
training step:

1. global relation encoder: multi-relation user/item graphs built once from the TRAINING
   histories (``denoisers.graphs``, sparse) and one GNN pass per step (``GraphEncoder``)
   giving graph-enhanced tables ``I'``, ``U'``; sequence features ``z_t = I'[s_t] + U'[u]/n``;
2. self-augmentation: a slot is drawn and two catalogue items inserted around it;
3. hierarchical denoising: (a) one item of the inserted window may be deleted again, (b) HSD
   decides on the augmented sequence, its item-level scorer reading ``z``.

At evaluation/export the augmentation is skipped and HSD's item-level scorer reads
``I'[s_t]`` of the original sequence. ``export`` therefore yields keep masks of the original
training histories (no insertions).

Presets: ``benchmark`` (default; argmax decisions at evaluation, mask recomputed after
augmentation) and ``reference`` (Gumbel samples at evaluation, the stale padding mask that
drops the two most recent items of augmented sequences, "-0 slice" loss-filter rows).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark.config import ConfigError
from benchmark.registry import DENOISERS
from denoisers.graphs import GraphSet, normalised_graphs, relation_counts
from denoisers.hsd import HSD, HSDConfig, HSDView
from denoisers.seq_ops import left_to_right
from denoisers.ssdrec_dna import GraphEncoder, SelfAugmenter

PRESETS = {
    "benchmark": {"eval_decision": "argmax", "filter_zero_k": "none", "stale_mask": False},
    "reference": {"eval_decision": "sample", "filter_zero_k": "reference", "stale_mask": True},
}


@dataclass
class SSDRecConfig(HSDConfig):
    stale_mask: bool | None = None  # reference bug: HSD keeps the pre-augmentation padding mask
    less_freq: float = 10.0  # item co-occurrence edges need base count > less_freq
    cold_item_ratio: float = 0.8  # least frequent items excluded from incompatibility edges
    cold_user_ratio: float = 0.9  # least active users excluded from incompatibility edges
    graph_source: str = "train"  # train | test_histories (reference: histories before the test item)
    graph_max_len: int = 50  # most recent items per history used for the graphs (0 = all)
    gnn_layers: int = 1
    dna_dropout: float = 0.3  # dropout_prob of the GNN
    position_sampler: str = "gumbel"  # gumbel (all L slots, reference) | gumbel_valid (real slots only)
    allow_padding_insert: bool = True  # reference: item 0 may be drawn as an inserted item


@DENOISERS.register("ssdrec")
class SSDRec(HSD):
    """HSD with SSDRec's graph encoder and self-augmentation in front (see module docstring)."""

    Config = SSDRecConfig
    registry_name = "ssdrec"
    presets = PRESETS

    def __init__(self, cfg: SSDRecConfig | None = None, resources=None) -> None:
        super().__init__(cfg, resources)
        c = self.cfg
        self.stale_mask = bool(PRESETS[c.preset]["stale_mask"] if c.stale_mask is None else c.stale_mask)
        where = f"denoiser '{self.registry_name}'"
        if c.graph_source not in ("train", "test_histories"):
            raise ConfigError(f"{where}: graph_source={c.graph_source!r}; expected train or test_histories")
        if c.position_sampler not in ("gumbel", "gumbel_valid"):
            raise ConfigError(f"{where}: position_sampler={c.position_sampler!r}; expected gumbel or gumbel_valid")
        if c.gnn_layers < 1:
            raise ConfigError(f"{where}: gnn_layers={c.gnn_layers}; expected >= 1")
        if c.less_freq < 0 or not (0 <= c.cold_item_ratio <= 1) or not (0 <= c.cold_user_ratio <= 1):
            raise ConfigError(f"{where}: less_freq must be >= 0 and cold_*_ratio in [0, 1]")
        if not 0.0 <= c.dna_dropout < 1.0:
            raise ConfigError(f"{where}: dna_dropout={c.dna_dropout}; expected a value in [0, 1)")
        self.graphs: GraphSet | None = None
        self.graph_info: dict = {}
        self._aug = {"augmented": 0.0, "deleted": 0.0, "rows": 0.0}
        self.epoch_augmentation: list[dict] = []
        self._eval_cache: tuple | None = None

    # ------------------------------------------------------------------ setup
    def attach(self, model) -> None:
        super().attach(model)
        if self.resources is None:
            raise ValueError("ssdrec builds its graphs from the training split: create it with resources (benchmark.resources.Resources)")
        split = self.resources.split
        c = self.cfg
        source = split.train if c.graph_source == "train" else split.test.history
        rel = relation_counts(source, split.n_users, split.n_items, c.less_freq, c.cold_item_ratio,
                              c.cold_user_ratio, c.graph_max_len)
        self.graphs = normalised_graphs(rel, c.less_freq)
        self.graph_info = {"source": c.graph_source, "max_len": c.graph_max_len, "edges": self.graphs.edges()}
        H = model.embedding_size
        self.encoder = GraphEncoder(H, c.gnn_layers, c.dna_dropout)
        self.augmenter = SelfAugmenter(H, c.position_sampler, c.allow_padding_insert)

    def _graphs_on(self, device) -> GraphSet:
        if self.graphs.ui.device != torch.device(device):
            self.graphs = self.graphs.to(device)
        return self.graphs

    def enhanced_tables(self, model, users: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(I' [N+1, H], U' [U+1, H])``: one GNN pass over the shared item table and HSD's
        user table; with ``users [B]``, ``U'`` of those users only (``[B, H]``, same values)."""
        table = model.item_embedding.weight[: model.n_items + 1]
        graphs = self._graphs_on(table.device)
        if users is None:
            return self.encoder(table, self.scorer.user_embedding.weight, graphs)
        distinct, inverse = torch.unique(users, return_inverse=True)  # prefixes of one user share a row
        I_plus, U_rows = self.encoder(table, self.scorer.user_embedding.weight, graphs, user_rows=distinct)
        return I_plus, U_rows[inverse]

    def _eval_items(self, model) -> torch.Tensor:
        """``I'`` in eval mode, recomputed only when a parameter changed (in-place version)."""
        params = [model.item_embedding.weight, self.scorer.user_embedding.weight, *self.encoder.parameters()]
        key = tuple((id(p), p._version) for p in params)
        if self._eval_cache is None or self._eval_cache[0] != key:
            with torch.no_grad():
                self._eval_cache = (key, self.enhanced_tables(model)[0])
        return self._eval_cache[1]

    def export_cache(self, model) -> dict:
        return {"items": self._eval_items(model)}

    # ------------------------------------------------------------------ the view HSD scores
    def view(self, model, items, embedded, users, train, tau, cache=None) -> HSDView:
        lengths = (items > 0).sum(1)
        ids = left_to_right(items, lengths)
        if not train:
            table = cache["items"] if cache else self._eval_items(model)
            x = left_to_right(embedded, lengths)
            return HSDView(ids, x, table[ids], (ids > 0).to(x.dtype), lengths)
        I_plus, U_batch = self.enhanced_tables(model, users)
        n = lengths.clamp(min=1).to(I_plus.dtype).view(-1, 1, 1)
        z = I_plus[ids] + U_batch.unsqueeze(1) / n
        out = self.augmenter(ids, z, lengths, I_plus, tau)
        x_seq = model.embed(out.ids)
        mask = (ids > 0) if self.stale_mask else (out.ids > 0)
        B = ids.shape[0]
        self._aug["augmented"] += float(out.augmented.sum())
        self._aug["deleted"] += float(out.deleted.sum())
        self._aug["rows"] += B
        self._log(model, {"train/ssdrec_augmented": float(out.augmented.float().mean()),
                          "train/ssdrec_deleted": float(out.deleted.float().mean())}, B)
        return HSDView(out.ids, x_seq, out.z, mask.to(x_seq.dtype), out.lengths)

    def on_train_epoch_end(self, model, epoch: int) -> None:
        super().on_train_epoch_end(model, epoch)
        rows = max(self._aug["rows"], 1.0)
        self.epoch_augmentation.append({"augmented": self._aug["augmented"] / rows, "deleted": self._aug["deleted"] / rows})
        self._aug = {"augmented": 0.0, "deleted": 0.0, "rows": 0.0}

    def resume_state(self) -> dict:
        return {**super().resume_state(), "epoch_augmentation": [dict(e) for e in self.epoch_augmentation]}

    def load_resume_state(self, state: dict) -> None:
        super().load_resume_state(state)
        self.epoch_augmentation = [dict(e) for e in state["epoch_augmentation"]]

    def report(self) -> dict:
        out = super().report()
        out.update(stale_mask=self.stale_mask, graphs=self.graph_info,
                   augmentation_per_epoch=[{k: round(v, 5) for k, v in e.items()} for e in self.epoch_augmentation])
        return out
