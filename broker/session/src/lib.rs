//! halyard-session (skeleton; being written).
