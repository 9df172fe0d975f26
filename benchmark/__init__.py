"""dsr-bench harness: data, configs, registries, metrics, runs, grids and leaderboards."""
__version__ = "0.1.0"
