//! halyard-codec (skeleton; being written).
