//! Load generator for a running dispatcher (being built).
