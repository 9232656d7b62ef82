//! The side-by-side runner (being written).
