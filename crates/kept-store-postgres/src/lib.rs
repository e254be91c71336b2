//! Kept's `Store` on PostgreSQL, selected by a `postgres://` database URL.
