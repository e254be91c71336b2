//! One module per subcommand; each has `Args` (or a `Command` enum) and `run`.

pub mod audience;
pub mod decide;
pub mod init;
pub mod keys;
pub mod ledger;
pub mod lint;
pub mod openapi;
pub mod rules;
pub mod serve;
