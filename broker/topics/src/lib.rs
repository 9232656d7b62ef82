//! halyard-topics (skeleton; being written).
