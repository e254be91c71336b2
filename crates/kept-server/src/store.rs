//! Opens the store a database URL names: a `postgres://` URL or an SQLite path.
