//! halyard-xdp (skeleton; being written).
