//! halyard-cluster (skeleton; being written).
