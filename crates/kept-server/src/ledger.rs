//! The consent ledger service: appends through the store and signs checkpoints.
