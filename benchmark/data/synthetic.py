"""Synthetic interaction data with known clusters and planted, labelled noise.

Model of the data (all drawn from one ``numpy.random.default_rng(cfg.seed)``, vectorised):

* Items ``1..n_items`` are split into ``n_clusters`` clusters of (almost) equal size by a
  random permutation. Item titles: two words of the cluster's vocabulary plus an
  item-specific made-up word (e.g. "tent lantern Kovaremi"), so a text encoder can tell
  clusters apart while every title stays unique.
* Each user prefers 1 or 2 clusters (2 only when ``n_clusters >= 3``, so that every user has
  a disliked cluster to draw noise from).
* Lengths are uniform in ``[min_len, max_len]``; timestamps are the positions ``0..n-1``.
* Clean items follow the preferred clusters. ``transition: cluster`` — each clean position
  picks a preferred cluster uniformly and an item of it uniformly. ``transition:
  deterministic`` — clean positions alternate over the user's preferred clusters, and within
  a cluster the user walks its items in a fixed cyclic order from a random start; so the next
  clean item is the successor (in its cluster) of the previous clean item of that cluster:
  of the last clean item for 1-cluster users, of the clean item two clean steps back for
  2-cluster users. Noise does not advance the walk, so removing the noise leaves a sequence a
  model can predict perfectly.
* Noise: every position except the last two (validation and test targets) is, with
  probability ``noise_rate``, an item of a cluster the user does NOT prefer (cluster and item
  uniform); it is labelled 1 in ``Sequences.noise``.

``meta``: ``item_cluster`` int64 ``[n_items + 1]`` (-1 at 0), ``user_clusters`` int64
``[n_users + 1, 2]`` (preferred clusters, -1 where absent and on row 0), ``n_clusters``,
``transition``.
"""
from __future__ import annotations

import numpy as np

from benchmark.config import ConfigError, SyntheticConfig
from benchmark.data.raw import Interactions
from benchmark.data.sequences import Sequences

_THEMES = [
    "tent lantern trail compass backpack canteen hiking campfire",
    "lipstick mascara eyeliner blush foundation concealer palette gloss",
    "skillet saucepan whisk spatula colander ladle kettle cookware",
    "guitar violin drum piano trumpet flute cello harmonica",
    "puppy leash collar kibble aquarium birdcage catnip litter",
    "notebook stapler binder pencil eraser folder envelope highlighter",
    "tire wrench bumper headlight brake muffler radiator spark",
    "novel mystery thriller romance poetry biography saga fantasy",
    "dumbbell treadmill yoga kettlebell barbell stretching cardio protein",
    "seedling shovel compost fertilizer trowel pruner greenhouse mulch",
    "rattle pacifier stroller crib diaper bottle teether bib",
    "joystick console gamepad arcade quest dungeon pixel controller",
    "shampoo conditioner lotion moisturizer serum cleanser toner scrub",
    "hammer screwdriver drill chisel sandpaper pliers toolbox saw",
    "sweater scarf jacket mitten boots overcoat beanie cardigan",
    "telescope microscope magnet circuit robot beaker prism chemistry",
]
_SYLLABLES = [
    "ka", "lo", "mi", "re", "su", "to", "vi", "na", "pe", "zu", "bo", "ri",
    "da", "fe", "go", "hu", "ja", "ke", "lu", "mo", "ne", "po", "qui", "sa",
]


def _validate(cfg: SyntheticConfig) -> None:
    where = "dataset.synthetic"
    if cfg.n_users < 1:
        raise ConfigError(f"{where}.n_users={cfg.n_users}; expected >= 1")
    if cfg.n_clusters < 1 or cfg.n_items < cfg.n_clusters:
        raise ConfigError(
            f"{where}.n_clusters={cfg.n_clusters}, n_items={cfg.n_items}; expected 1 <= n_clusters <= n_items"
        )
    if not 3 <= cfg.min_len <= cfg.max_len:
        raise ConfigError(
            f"{where}.min_len={cfg.min_len}, max_len={cfg.max_len}; expected 3 <= min_len <= max_len "
            "(the last two items are the validation and test targets)"
        )
    if not 0.0 <= cfg.noise_rate < 1.0:
        raise ConfigError(f"{where}.noise_rate={cfg.noise_rate}; expected a probability in [0, 1)")
    if cfg.noise_rate > 0 and cfg.n_clusters < 2:
        raise ConfigError(
            f"{where}.noise_rate={cfg.noise_rate} needs n_clusters >= 2 (noise comes from other clusters)"
        )
    if cfg.transition not in ("cluster", "deterministic"):
        raise ConfigError(f"{where}.transition={cfg.transition!r}; expected cluster or deterministic")


def _pseudo_word(codes: np.ndarray, n_syllables: int) -> list[str]:
    """Made-up words from integer codes (base-len(_SYLLABLES) digits), capitalised."""
    base = len(_SYLLABLES)
    digits = (codes[:, None] // base ** np.arange(n_syllables)[None, :]) % base
    return ["".join(_SYLLABLES[d] for d in row).capitalize() for row in digits]


def _vocabularies(n_clusters: int, rng: np.random.Generator) -> list[list[str]]:
    vocab = [theme.split() for theme in _THEMES[:n_clusters]]
    extra = n_clusters - len(vocab)
    if extra > 0:  # more clusters than themes: made-up 2-syllable words, distinct across clusters
        codes = rng.choice(len(_SYLLABLES) ** 2, size=extra * 8, replace=False)
        words = [w.lower() for w in _pseudo_word(codes, 2)]
        vocab += [words[8 * c : 8 * c + 8] for c in range(extra)]
    return vocab


def _titles(item_cluster: np.ndarray, rng: np.random.Generator, n_clusters: int) -> list[str]:
    n_items = len(item_cluster) - 1
    vocab = _vocabularies(n_clusters, rng)
    # item word: 3 syllables from a code unique per item (24**3 = 13,824 codes; more items reuse)
    codes = rng.permutation(max(n_items, len(_SYLLABLES) ** 3))[:n_items] % len(_SYLLABLES) ** 3
    item_words = _pseudo_word(codes, 3)
    first = rng.integers(0, 8, size=n_items)
    second = (first + rng.integers(1, 8, size=n_items)) % 8
    clusters = item_cluster[1:]
    return [""] + [
        f"{vocab[c][a % len(vocab[c])]} {vocab[c][b % len(vocab[c])]} {w}"
        for c, a, b, w in zip(clusters.tolist(), first.tolist(), second.tolist(), item_words)
    ]


def generate(cfg: SyntheticConfig) -> Interactions:
    """Synthetic ``Interactions`` (see module docstring); deterministic in ``cfg.seed``."""
    _validate(cfg)
    rng = np.random.default_rng(cfg.seed)
    n_users, n_items, n_clusters = cfg.n_users, cfg.n_items, cfg.n_clusters

    item_cluster = np.full(n_items + 1, -1, np.int64)
    item_cluster[1:][rng.permutation(n_items)] = np.arange(n_items) % n_clusters
    members = np.argsort(item_cluster[1:], kind="stable") + 1  # items grouped by cluster, ascending id
    size = np.bincount(item_cluster[1:], minlength=n_clusters)
    first_member = np.cumsum(size) - size

    # preferred clusters: slot 0 always, slot 1 for half of the users when n_clusters >= 3
    n_pref = np.where((n_clusters >= 3) & (rng.random(n_users) < 0.5), 2, 1)
    pref = np.empty((n_users, 2), np.int64)
    pref[:, 0] = rng.integers(0, n_clusters, size=n_users)
    pref[:, 1] = (pref[:, 0] + 1 + rng.integers(0, max(n_clusters - 1, 1), size=n_users)) % n_clusters
    walk_start = rng.integers(0, size[pref])  # [n_users, 2] start of each cluster walk

    lengths = rng.integers(cfg.min_len, cfg.max_len + 1, size=n_users)
    nnz = int(lengths.sum())
    user = np.repeat(np.arange(n_users), lengths)
    row_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    pos = np.arange(nnz) - row_start
    noise = (rng.random(nnz) < cfg.noise_rate) & (pos < np.repeat(lengths, lengths) - 2)

    # clean items
    clean = ~noise
    clean_csum = np.cumsum(clean)
    clean_rank = clean_csum - clean - (clean_csum - clean)[row_start]  # clean positions before, same row
    if cfg.transition == "deterministic":
        slot = clean_rank % n_pref[user]
        step = clean_rank // n_pref[user]
        cluster = pref[user, slot]
        within = (walk_start[user, slot] + step) % size[cluster]
    else:
        slot = rng.integers(0, n_pref[user])
        cluster = pref[user, slot]
        within = rng.integers(0, size[cluster])
    items = members[first_member[cluster] + within]

    # noise items: uniform over the clusters the user does not prefer, then uniform in it
    if noise.any():
        nu = user[noise]
        k = n_pref[nu]
        off = rng.integers(0, n_clusters - k)
        lo = np.where(k == 2, np.minimum(pref[nu, 0], pref[nu, 1]), pref[nu, 0])
        hi = np.where(k == 2, np.maximum(pref[nu, 0], pref[nu, 1]), n_clusters)  # n_clusters: no 2nd skip
        off = off + (off >= lo)
        off = off + (off >= hi)
        items[noise] = members[first_member[off] + rng.integers(0, size[off])]

    titles = _titles(item_cluster, rng, n_clusters)
    seqs = Sequences.from_lengths(
        items, lengths, np.arange(1, n_users + 1), noise=noise.astype(np.int8), timestamps=pos.astype(np.float64)
    )
    user_clusters = np.full((n_users + 1, 2), -1, np.int64)
    user_clusters[1:, 0] = pref[:, 0]
    user_clusters[1:, 1] = np.where(n_pref == 2, pref[:, 1], -1)
    return Interactions(
        sequences=seqs,
        n_users=n_users,
        n_items=n_items,
        item_text=titles,
        item_raw_ids=np.array([""] + [f"i{i}" for i in range(1, n_items + 1)], dtype=object),
        user_raw_ids=np.array([""] + [f"u{u}" for u in range(1, n_users + 1)], dtype=object),
        meta={"item_cluster": item_cluster, "user_clusters": user_clusters, "n_clusters": n_clusters,
              "transition": cfg.transition, "source": "synthetic"},
    )
