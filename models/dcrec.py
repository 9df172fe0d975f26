"""DCRec (Yang et al., "Debiased Contrastive Learning for Sequential Recommendation", WWW 2023;
specs/dcrec.md) as a standalone backbone ``dcrec``.

DCRec changes the architecture (graph views fused into the user state) and adds losses that
need its own graph encoders, so it is a model, not a hook on other backbones
(docs/dcrec_note.md). Per step (batch B, window L, ``d``):

1. ``h_seq = Transformer(LN(E[items] + P))[:, -1]`` — bidirectional attention over the
   history (padding keys blocked); a second pass with fresh dropout gives ``h_seq'``.
2. ``G_adj = GCN(A)``, ``G_sim = GCN(S)`` over the whole item table (``models.dcrec_graph``),
   ``G_adj' = GCN(A minus every edge of the batch users' sequences)``.
3. Conformity ``a [B]`` of the last item ``i`` (``conformity_weights``); ``w_c = a``,
   ``w_p = max(a) - a``.
4. ``L_cl = coef * mean(w_c * NCE(h_seq', G_adj[i]) + w_p * NCE(G_adj[i], G_sim[i]))`` and
   ``L_kl = kl_weight * sorted_kl(a)``.
5. Fusion: attention over ``[h_seq, G_adj[i], G_sim[i]]`` -> ``h``; CE over all items.

Graphs come from the run's data (``setup`` reads the datamodule's split, or call
``prepare_split(split)``): training graphs from ``split.train``, validation graphs from the
validation histories, test graphs from the test histories (train + valid items), so the test
graphs never contain test targets. Evaluation uses no dropout (``eval_edge_dropout: true``
reproduces the reference, which also drops graph edges at test time).

Deviations from the reference, all minor: left padding with slot positions (as SASRec here);
the item table has no extra mask row (DCRec never uses it as input); the padding column is
excluded from the softmax; similarity filler edges of weight 0 are omitted.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.data.sequences import SplitData
from benchmark.metrics import mask_history
from benchmark.registry import BACKBONES
from denoisers.base import StepContext
from models.base import SequentialRecommender, init_normal
from models.dcrec_graph import ItemGraph, gcn, neighbour_readout, similarity_graph, transition_graph
from models.layers import FastDropout, PositionalInput, TransformerStack

LENGTH_ONE_WEIGHT = 0.5  # the reference's fixed conformity weight for one-item histories


@dataclass
class DCRecConfig:
    embedding_size: int = 64
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    hidden_dropout: float = 0.3
    attn_dropout: float = 0.3
    layer_norm_eps: float = 1e-12
    graph_dropout: float = 0.3  # edge dropout of every training GCN pass
    gcn_layers: int = 2
    gcn_degree_norm: bool = True  # DGL GraphConv norm='both' on structural degrees (reference)
    graphcl_coefficient: float = 1e-4
    cl_temp: float = 1.0
    sim_group: int = 4  # k: similarity neighbours per item (plus itself)
    weight_mean: float = 0.5
    kl_weight: float = 1e-2
    graph_view_fusion: bool = True
    neighbour_samples: int = 10
    civil_after_foreign_sampling: bool = False  # true = reference quirk (spec §3 semantics by default)
    eval_edge_dropout: bool = False  # true = reference (edge dropout also at evaluation)
    schedule_step: int = 0  # StepLR period in epochs (0 = constant lr); Beauty preset: 30
    schedule_gamma: float = 0.2


@dataclass
class GraphSet:
    """Transition and similarity graphs of one stage's data."""

    adj: ItemGraph
    sim: ItemGraph

    def to(self, device) -> "GraphSet":
        return GraphSet(self.adj.to(device), self.sim.to(device))


# ---------------------------------------------------------------------- loss pieces
def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row InfoNCE ``[B]`` of ``z1, z2 [B, d]``: cosine similarity / temperature, in-batch
    negatives, positive included in the denominator, ``-log(1e-8 + p_pos)`` (reference)."""
    sim = F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).T / temperature
    return -torch.log(1e-8 + sim.softmax(dim=1).diagonal())


def conformity_weights(
    item_vec: torch.Tensor,
    item_vec_aug: torch.Tensor,
    civil: torch.Tensor,
    foreign: torch.Tensor,
    weight_mean: float,
) -> torch.Tensor:
    """Conformity ``a [B]`` from ``[B, d]`` views of the last items (§3).

    ``a = sigmoid(mean(cos(v, v_aug), cos(v, foreign), cos(civil, foreign)))``, min-max
    normalised over the batch and rescaled to mean ``weight_mean`` (a constant batch gets
    ``weight_mean`` everywhere)."""
    v1 = F.cosine_similarity(item_vec, item_vec_aug, dim=-1, eps=1e-12)
    v2 = F.cosine_similarity(item_vec, foreign, dim=-1, eps=1e-12)
    v3 = F.cosine_similarity(civil, foreign, dim=-1, eps=1e-12)
    a = torch.sigmoid((v1 + v2 + v3) / 3)
    spread = a.max() - a.min()
    if spread <= 1e-12:
        return torch.full_like(a, weight_mean)
    a = (a - a.min()) / spread
    return a * (weight_mean / a.mean())


def sorted_kl(weights: torch.Tensor, weight_mean: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The reference's ``cal_kl_1``: sorted draws of N(weight_mean, 0.1) (clipped at 1e-8) as a
    log-target against ``log_softmax`` of the sorted weights; ``batchmean`` KL."""
    expected = torch.normal(weight_mean, 0.1, size=weights.shape, generator=generator, device=weights.device)
    target = torch.log(expected.sort().values.clamp(min=1e-8) + 1e-8)
    log_input = torch.log_softmax(weights.sort().values + 1e-8, dim=0)
    return F.kl_div(log_input, target, reduction="batchmean", log_target=True)


@BACKBONES.register("dcrec")
class DCRec(SequentialRecommender):
    Config = DCRecConfig
    default_instances = "prefix"
    causal = False
    supported_losses = ("ce",)
    compared_with = "sasrec"  # its sequence view is a SASRec-sized Transformer
    # Leading all-padding slots are masked keys for every query, and only the last slot is read
    # (graph views use the last item, conformity the length), so dropping them is exact; on
    # Beauty (mean length 9 of 50 slots) a step is ~3x faster.
    accepts_trimmed_batches = True

    def __init__(self, cfg: DCRecConfig, shape, train_cfg=None, eval_cfg=None, denoiser=None) -> None:
        super().__init__(cfg, shape, train_cfg, eval_cfg, denoiser)
        d = cfg.embedding_size
        self.item_embedding = nn.Embedding(shape.n_items + 1, d, padding_idx=0)
        self.input = PositionalInput(shape.max_len, d, cfg.hidden_dropout, cfg.layer_norm_eps)
        self.blocks = TransformerStack(d, cfg.n_layers, cfg.n_heads, cfg.inner_size, cfg.hidden_dropout,
                                       cfg.attn_dropout, cfg.layer_norm_eps)
        self.graph_dropout = FastDropout(cfg.hidden_dropout)  # on the item table before each GCN
        self.graph_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.fusion_weight = nn.Parameter(torch.empty(d, d))
        self.fusion_query = nn.Parameter(torch.empty(1, d))
        init_normal(self)
        nn.init.normal_(self.fusion_weight, 0.0, 0.02)
        nn.init.normal_(self.fusion_query, 0.0, 0.02)
        self._graphs: dict[str, GraphSet] = {}
        self._graph_split: SplitData | None = None
        self._device_graphs: dict[tuple[str, str], GraphSet] = {}
        self._eval_views: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ graphs
    def prepare_split(self, split: SplitData) -> None:
        """Build the train / valid / test graph pairs from ``split`` (once per split object)."""
        if self._graph_split is split:
            return
        n, k = split.n_items, self.cfg.sim_group
        built: dict[int, GraphSet] = {}

        def graphs_of(seqs, with_users: bool) -> GraphSet:
            if id(seqs) not in built:
                built[id(seqs)] = GraphSet(transition_graph(seqs, n, users=with_users), similarity_graph(seqs, n, k))
            return built[id(seqs)]

        self._graphs = {
            "train": graphs_of(split.train, True),
            "valid": graphs_of(split.valid.history, False),
            "test": graphs_of(split.test.history, False),
        }
        self._graph_split = split
        self._device_graphs.clear()
        self._eval_views.clear()

    def graphs(self, stage: str) -> GraphSet:
        if stage not in self._graphs:
            raise ValueError("dcrec has no item graphs yet: call prepare_split(split) (Trainer.fit/test do it "
                             "through the datamodule)")
        key = (stage, str(self.device))
        if key not in self._device_graphs:
            self._device_graphs[key] = self._graphs[stage].to(self.device)
        return self._device_graphs[key]

    def graph_view(self, graph: ItemGraph, removed: torch.Tensor | None = None, edge_dropout: float | None = None):
        """``LN(GCN(dropout(E)) + dropout(E))`` ``[N+1, d]`` over the whole item table."""
        table = self.graph_dropout(self.item_embedding.weight)
        p = self.cfg.graph_dropout if edge_dropout is None else edge_dropout
        out = gcn(graph, table, self.cfg.gcn_layers, p, removed, self.cfg.gcn_degree_norm)
        return self.graph_norm(out + table)

    # ------------------------------------------------------------------ encoder and fusion
    def encode(self, embedded: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = self.input(embedded)
        return self.blocks(x, pad_mask, causal=False)

    def fuse(self, h_seq: torch.Tensor, adj_vec: torch.Tensor, sim_vec: torch.Tensor) -> torch.Tensor:
        """Attention over the three views ``[B, d]`` each -> ``[B, d]``."""
        views = torch.stack([h_seq, adj_vec, sim_vec])  # [3, B, d]
        scores = ((views @ self.fusion_weight) * self.fusion_query).sum(-1)  # [3, B]
        return (views * scores.softmax(0).unsqueeze(-1)).sum(0)

    def training_inputs(self, batch):
        items, targets = batch["items"], batch["targets"]
        if bool((targets[:, :-1] > 0).any()) or not bool((targets[:, -1] > 0).all()):
            raise ValueError("dcrec encodes the history bidirectionally and predicts from the last slot only: "
                             "use train.train_instances=prefix (default) or last_only")
        return items, targets

    # ------------------------------------------------------------------ training
    def graph_terms(self, items: torch.Tensor, users: torch.Tensor, h_second: torch.Tensor | None) -> dict:
        """Graph views of the last items and, with ``h_second`` (the second sequence pass
        ``[B, d]``), the contrastive and KL terms and the conformity weights."""
        cfg = self.cfg
        graphs = self.graphs("train")
        last = items[:, -1]
        g_adj = self.graph_view(graphs.adj)
        g_sim = self.graph_view(graphs.sim)
        out = {"adj": g_adj[last], "sim": g_sim[last]}
        if h_second is None:
            return out
        removed = graphs.adj.removed_by_users(users)
        g_aug = self.graph_view(graphs.adj, removed=removed)
        civil, foreign = neighbour_readout(graphs.adj, last, removed, g_adj, cfg.neighbour_samples,
                                           cfg.civil_after_foreign_sampling)
        a = conformity_weights(g_adj[last], g_aug[last], civil, foreign, cfg.weight_mean)
        a = torch.where((items > 0).sum(1) == 1, torch.full_like(a, LENGTH_ONE_WEIGHT), a)
        cl_adj = info_nce(h_second, out["adj"], cfg.cl_temp)
        cl_a2s = info_nce(out["adj"], out["sim"], cfg.cl_temp)
        out["conformity"] = a
        out["cl_loss"] = cfg.graphcl_coefficient * (a * cl_adj + (a.max() - a) * cl_a2s).mean()
        out["kl_loss"] = cfg.kl_weight * sorted_kl(a, cfg.weight_mean)
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self._eval_views.clear()
        cfg = self.cfg
        items, targets = self.training_inputs(batch)
        ctx = StepContext(self, batch, "train", self.current_epoch)
        ctx.extras["input_items"] = items
        ctx.extras["targets"] = targets
        hidden = self(items, ctx)
        state = hidden[:, -1]
        log: dict[str, torch.Tensor] = {}
        total = state.new_zeros(())
        contrastive = cfg.graphcl_coefficient > 0 or cfg.kl_weight > 0
        if cfg.graph_view_fusion or contrastive:
            h_second = self.encode(ctx.embedded, items == 0)[:, -1] if contrastive else None
            terms = self.graph_terms(items, batch["users"], h_second)
            if contrastive:
                total = total + terms["cl_loss"] + terms["kl_loss"]
                log.update({"train/cl_loss": terms["cl_loss"].detach(), "train/kl_loss": terms["kl_loss"].detach(),
                            "train/conformity_std": terms["conformity"].detach().std(unbiased=False)})
            if cfg.graph_view_fusion:
                state = self.fuse(state, terms["adj"], terms["sim"])
        per_target = self.next_item_loss(state, targets[:, -1], items)
        last_slot = (slice(None), -1)  # one target per instance, in the last slot
        return self.finish_training_step(ctx, per_target, last_slot, batch_idx, extra_loss=total, log=log)

    # ------------------------------------------------------------------ evaluation
    def eval_views(self, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(G_adj, G_sim)`` ``[N+1, d]`` of a stage's graphs, cached until the next training step."""
        if stage not in self._eval_views:
            graphs = self.graphs(stage)
            p = self.cfg.graph_dropout if self.cfg.eval_edge_dropout else 0.0
            self._eval_views[stage] = (self.graph_view(graphs.adj, edge_dropout=p),
                                       self.graph_view(graphs.sim, edge_dropout=p))
        return self._eval_views[stage]

    def fused_scores(self, items: torch.Tensor, hidden: torch.Tensor, stage: str) -> torch.Tensor:
        state = hidden[:, -1]
        if self.cfg.graph_view_fusion:
            g_adj, g_sim = self.eval_views(stage)
            last = items[:, -1]
            state = self.fuse(state, g_adj[last], g_sim[last])
        return self.score(state)

    def _eval_scores(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        items = batch["items"]
        ctx = StepContext(self, batch, stage, self.current_epoch)
        ctx.extras["input_items"] = items
        scores = self.fused_scores(items, self(items, ctx), stage)
        if self.eval_cfg.exclude_history:
            scores = mask_history(scores, batch["items"], batch["targets"])
        return scores

    def on_validation_epoch_start(self) -> None:
        self._eval_views.clear()

    def on_test_epoch_start(self) -> None:
        self._eval_views.clear()

    @torch.no_grad()
    def predict_scores(self, items: torch.Tensor, stage: str = "test") -> torch.Tensor:
        """Scores ``[B, N+1]`` for histories ``items [B, L]`` with the ``stage`` graphs."""
        self._eval_views.clear()
        return self.fused_scores(items, self.encode(self.embed(items), items == 0), stage)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.train_cfg.lr, weight_decay=self.train_cfg.weight_decay)
        if self.cfg.schedule_step <= 0:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, self.cfg.schedule_step, self.cfg.schedule_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
