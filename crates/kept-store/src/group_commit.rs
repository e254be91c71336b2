//! Group commit: concurrent writers hand their items to one committer task, which writes
//! whatever has queued up in a single transaction and then answers each writer.
