//! Benchmark support: the load generator and the side-by-side runner (being written).
