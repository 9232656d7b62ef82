//! Shared helpers for the integration tests: start a broker process, pick free ports.
