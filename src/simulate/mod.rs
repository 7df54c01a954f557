//! Discrete-event simulation of a pool (being built).
