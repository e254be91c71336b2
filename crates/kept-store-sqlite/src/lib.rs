//! Kept's `Store` on SQLite: the embedded default (`./kept-data/kept.db`, WAL).
