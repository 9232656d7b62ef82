//! halyard-tune (skeleton; being written).
