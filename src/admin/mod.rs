//! The admin HTTP API, metrics and dashboard (being built).
