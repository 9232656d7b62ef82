//! halyard-auth (skeleton; being written).
