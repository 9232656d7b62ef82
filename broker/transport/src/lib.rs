//! halyard-transport (skeleton; being written).
