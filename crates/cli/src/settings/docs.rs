//! The settings tables of the docs and the README, written from the definitions.
