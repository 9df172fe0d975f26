"""DCRec's item graphs and their sparse GCN (specs/dcrec.md §1-§3, §7), built without loops.

* ``transition_graph``: every consecutive pair (a, b) of a row adds 2 to ``A[a, b]`` and to
  ``A[b, a]`` (the reference links each position to both neighbours), the diagonal of all
  ``N + 1`` nodes is then set to 1 and ``A`` is normalised ``D^-1/2 A D^-1/2`` (row sums).
* ``similarity_graph``: cosine similarity of the item columns of the user x item count matrix,
  the top ``k + 1`` per item (itself included), weights row-normalised. Edge direction follows
  the reference's DGL graph: source = the item, destination = its neighbour.
* ``user_edges``: per user, the ids of the (both-direction) transition edges of its consecutive
  pairs — self-pairs excluded, so self-loops are never removed (§3).
* ``gcn``: LightGCN-style propagation with DGL ``GraphConv(norm='both', weight=False)``
  semantics: a self-loop (weight 1) is added to every node, edge dropout zeroes weights but
  keeps edges, and each message ``w * x[src]`` is scaled by ``outdeg(src)^-1/2 indeg(dst)^-1/2``
  of the *structural* (unweighted) degrees, self-loops included. Removing a batch's edges (the
  conformity view) changes those degrees, as removing edges from a DGL graph does.
  ``degree_norm=False`` gives plain weighted propagation ``x <- A x``.

Edges are stored sorted by ``(dst, src)`` so the propagation matrix ``M[dst, src]`` is a
coalesced sparse COO tensor; ``ptr`` is the CSR pointer over ``dst``. Graphs are symmetric
where neighbour lists are read (the transition graph), so "neighbours of i" are the sources of
the edges entering i.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp
import torch

from benchmark.data.sequences import Sequences


@dataclass
class ItemGraph:
    """A weighted directed item graph on nodes ``0..n_nodes-1`` (node 0 = padding).

    ``src, dst`` int64 ``[E]`` sorted by ``(dst, src)``; ``weight`` float32 ``[E]``; ``ptr``
    int64 ``[n_nodes + 1]`` (edges entering node v are ``ptr[v]:ptr[v+1]``). For the transition
    graph of the training data, ``user_ptr [U + 2]`` / ``user_edge_ids`` list each user's edges."""

    n_nodes: int
    src: torch.Tensor
    dst: torch.Tensor
    weight: torch.Tensor
    ptr: torch.Tensor
    user_ptr: torch.Tensor | None = None
    user_edge_ids: torch.Tensor | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_edges(self) -> int:
        return int(self.src.numel())

    def to(self, device: torch.device | str) -> "ItemGraph":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, src=move(self.src), dst=move(self.dst), weight=move(self.weight), ptr=move(self.ptr),
                       user_ptr=move(self.user_ptr), user_edge_ids=move(self.user_edge_ids), _cache={})

    def dense(self) -> torch.Tensor:
        """``[n, n]`` matrix with ``[src, dst]`` = weight (for tests and small graphs)."""
        out = torch.zeros(self.n_nodes, self.n_nodes)
        out[self.src, self.dst] = self.weight
        return out

    def degrees(self, exists: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Structural out/in degrees ``[n]`` (float) of the existing edges plus the self-loop."""
        key = "degrees"
        if exists is None and key in self._cache:
            return self._cache[key]
        src, dst = (self.src, self.dst) if exists is None else (self.src[exists], self.dst[exists])
        out_deg = torch.bincount(src, minlength=self.n_nodes).float() + 1.0
        in_deg = torch.bincount(dst, minlength=self.n_nodes).float() + 1.0
        if exists is None:
            self._cache[key] = (out_deg, in_deg)
        return out_deg, in_deg

    def removed_by_users(self, users: torch.Tensor) -> torch.Tensor:
        """bool ``[E]``: the edges of every distinct user in ``users [B]`` (the §3 augmentation)."""
        if self.user_ptr is None:
            raise ValueError("this graph has no per-user edge lists (only the training transition graph has)")
        users = torch.unique(users)
        starts, ends = self.user_ptr[users], self.user_ptr[users + 1]
        counts = ends - starts
        total = int(counts.sum())
        removed = torch.zeros(self.n_edges, dtype=torch.bool, device=self.src.device)
        if total:
            first = torch.repeat_interleave(starts - torch.cumsum(counts, 0) + counts, counts)
            removed[self.user_edge_ids[first + torch.arange(total, device=first.device)]] = True
        return removed


# ---------------------------------------------------------------------- construction
def _from_coo(n: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> ItemGraph:
    """Edges ``rows -> cols`` (src -> dst) as an ``ItemGraph`` sorted by (dst, src)."""
    order = np.lexsort((rows, cols))
    src, dst, w = rows[order], cols[order], vals[order]
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=ptr[1:])
    return ItemGraph(n, torch.from_numpy(src.astype(np.int64)), torch.from_numpy(dst.astype(np.int64)),
                     torch.from_numpy(w.astype(np.float32)), torch.from_numpy(ptr))


def consecutive_pairs(seqs: Sequences) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(previous item, item, row)`` of every position t >= 1 of every row."""
    t = np.nonzero(seqs.position_in_row >= 1)[0]
    return seqs.items[t - 1], seqs.items[t], seqs.row_of_position[t]


def transition_graph(seqs: Sequences, n_items: int, users: bool = False) -> ItemGraph:
    """Normalised transition graph on ``N + 1`` nodes; with ``users`` also each user's edge ids."""
    n = n_items + 1
    a, b, row = consecutive_pairs(seqs)
    counts = sp.coo_matrix((np.full(2 * len(a), 2.0), (np.concatenate([a, b]), np.concatenate([b, a]))),
                           shape=(n, n)).tocsr().tocoo()  # csr conversion sums duplicate pairs
    off = counts.row != counts.col  # the diagonal is overwritten with 1 for every node
    rows = np.concatenate([counts.row[off], np.arange(n)]).astype(np.int64)
    cols = np.concatenate([counts.col[off], np.arange(n)]).astype(np.int64)
    data = np.concatenate([counts.data[off], np.ones(n)])
    rowsum = np.bincount(rows, weights=data, minlength=n)
    d_inv = rowsum ** -0.5  # >= 1 everywhere thanks to the diagonal
    graph = _from_coo(n, rows, cols, d_inv[rows] * data * d_inv[cols])
    if users:
        graph.user_ptr, graph.user_edge_ids = user_edges(graph, seqs.users[row], a, b, int(seqs.users.max(initial=0)))
    return graph


def edge_ids(graph: ItemGraph, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Ids of the edges ``src -> dst`` (every pair must exist)."""
    n = graph.n_nodes
    keys = graph.dst.numpy() * n + graph.src.numpy()  # sorted by construction
    query = dst.astype(np.int64) * n + src.astype(np.int64)
    ids = np.searchsorted(keys, query)
    if len(query) and (ids.max() >= len(keys) or not np.array_equal(keys[ids], query)):
        raise ValueError("edge_ids: some (src, dst) pairs are not edges of the graph")
    return ids


def user_edges(graph: ItemGraph, pair_users: np.ndarray, a: np.ndarray, b: np.ndarray, max_user: int):
    """CSR ``(user_ptr [max_user + 2], edge_ids)`` of the distinct non-loop edges of each user."""
    off_diagonal = a != b
    u, a, b = pair_users[off_diagonal], a[off_diagonal], b[off_diagonal]
    ids = np.concatenate([edge_ids(graph, a, b), edge_ids(graph, b, a)])
    owners = np.concatenate([u, u])
    pairs = np.unique(owners * graph.n_edges + ids) if len(ids) else np.zeros(0, dtype=np.int64)
    owners, ids = pairs // max(graph.n_edges, 1), pairs % max(graph.n_edges, 1)
    ptr = np.zeros(max_user + 2, dtype=np.int64)
    np.cumsum(np.bincount(owners, minlength=max_user + 1), out=ptr[1:])
    return torch.from_numpy(ptr), torch.from_numpy(ids.astype(np.int64))


def similarity_graph(seqs: Sequences, n_items: int, k: int) -> ItemGraph:
    """Top-``k + 1`` cosine neighbours per item (user x item counts), weights row-normalised.

    Items without any co-user keep only the neighbours with non-zero similarity (the reference
    adds arbitrary zero-weight filler edges; they carry no weight)."""
    n = n_items + 1
    users = seqs.users[seqs.row_of_position]
    x = sp.csr_matrix((np.ones(len(seqs.items)), (users, seqs.items)), shape=(int(users.max(initial=0)) + 1, n))
    co = (x.T @ x).tocoo()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
    sim = co.data / (norms[co.row] * norms[co.col])
    order = np.lexsort((co.col, -sim, co.row))
    row, col, sim = co.row[order].astype(np.int64), co.col[order].astype(np.int64), sim[order]
    first = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=n), out=first[1:])
    rank = np.arange(len(row)) - first[row]
    keep = (rank < k + 1) & (sim > 0)
    row, col, sim = row[keep], col[keep], sim[keep]
    total = np.bincount(row, weights=sim, minlength=n)
    return _from_coo(n, row, col, sim / total[row])


# ---------------------------------------------------------------------- propagation
def edge_dropout_masks(graph: ItemGraph, p: float, generator: torch.Generator | None = None):
    """Reference edge dropout: ``int(p * (E + n))`` edge ids drawn with replacement over the edges
    and the added self-loops; returns ``(edge_kept [E], loop_kept [n])`` bool."""
    total = graph.n_edges + graph.n_nodes
    dropped = torch.zeros(total, dtype=torch.bool, device=graph.src.device)
    draws = int(p * total)
    if draws:
        dropped[torch.randint(total, (draws,), generator=generator, device=graph.src.device)] = True
    return ~dropped[: graph.n_edges], ~dropped[graph.n_edges :]


def gcn(
    graph: ItemGraph,
    x: torch.Tensor,
    layers: int = 2,
    edge_dropout: float = 0.0,
    removed: torch.Tensor | None = None,
    degree_norm: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean of ``[x, M x, M^2 x, ...]`` (``layers`` propagations) for node features ``x [n, d]``.

    ``removed`` (bool ``[E]``) deletes edges (structure and weight); ``edge_dropout`` zeroes the
    weights of random edges and self-loops (structure kept)."""
    n = graph.n_nodes
    edge_w = graph.weight.to(x.dtype)
    loop_w = torch.ones(n, dtype=x.dtype, device=x.device)
    if edge_dropout > 0:
        edge_kept, loop_kept = edge_dropout_masks(graph, edge_dropout, generator)
        edge_w = edge_w * edge_kept
        loop_w = loop_w * loop_kept
    exists = None
    if removed is not None:
        exists = ~removed
        edge_w = edge_w * exists
    if degree_norm:
        out_deg, in_deg = graph.degrees(exists)
        out_n, in_n = out_deg.to(x.dtype).rsqrt(), in_deg.to(x.dtype).rsqrt()
        edge_w = edge_w * out_n[graph.src] * in_n[graph.dst]
        loop_w = loop_w * out_n * in_n
    matrix = torch.sparse_coo_tensor(torch.stack([graph.dst, graph.src]), edge_w, (n, n), is_coalesced=True,
                                     check_invariants=False)
    outputs = [x]
    for _ in range(layers):
        x = torch.sparse.mm(matrix, x) + loop_w.unsqueeze(1) * x
        outputs.append(x)
    return torch.stack(outputs).mean(0)


# ---------------------------------------------------------------------- neighbour readout
def _rank_in_groups(group: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Rank (0-based) of each element among the elements of its group, ordered by ``keys``."""
    order = torch.argsort(keys)
    order = order[torch.argsort(group[order], stable=True)]
    sorted_group = group[order]
    start = torch.ones_like(sorted_group, dtype=torch.bool)
    start[1:] = sorted_group[1:] != sorted_group[:-1]
    first = torch.cummax(torch.where(start, torch.arange(len(order), device=group.device), 0), 0).values
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=group.device) - first
    return rank


def neighbour_readout(
    graph: ItemGraph,
    nodes: torch.Tensor,
    removed: torch.Tensor,
    features: torch.Tensor,
    samples: int = 10,
    civil_after_foreign_sampling: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Civil and foreign neighbour means ``([B, d], [B, d])`` of ``nodes [B]`` (§3).

    Neighbours of i = all nodes linked to i in the (symmetric) graph, i itself included through
    its diagonal entry. Foreign = still linked after ``removed``; civil = the rest. At most
    ``samples`` of each are drawn uniformly; a node without civil neighbours gets a zero vector.
    ``civil_after_foreign_sampling`` reproduces the reference, which subtracts only the *sampled*
    foreign neighbours from all neighbours."""
    B = len(nodes)
    start, count = graph.ptr[nodes], graph.ptr[nodes + 1] - graph.ptr[nodes]
    owner = torch.repeat_interleave(torch.arange(B, device=nodes.device), count)
    offset = torch.repeat_interleave(start - torch.cumsum(count, 0) + count, count)
    eid = offset + torch.arange(len(owner), device=nodes.device)
    neighbour = graph.src[eid]
    foreign = ~removed[eid]
    keys = torch.rand(len(eid), generator=generator, device=nodes.device)
    foreign_rank = _rank_in_groups(owner * 2 + (~foreign).long(), keys)
    foreign_pick = foreign & (foreign_rank < samples)
    civil = ~foreign_pick if civil_after_foreign_sampling else ~foreign
    civil_rank = _rank_in_groups(owner * 2 + (~civil).long(), keys)
    civil_pick = civil & (civil_rank < samples)

    def mean_of(pick: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(B, features.shape[1], dtype=features.dtype, device=features.device)
        total = total.index_add(0, owner[pick], features[neighbour[pick]])
        size = torch.bincount(owner[pick], minlength=B).clamp(min=1).unsqueeze(1).to(features.dtype)
        return total / size

    return mean_of(civil_pick), mean_of(foreign_pick)
