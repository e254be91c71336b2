//! One module per subcommand; each has `Args` (or a `Command` enum) and `run`. `source` is
//! where the offline ones read from.

pub mod admin;
pub mod audience;
pub mod decide;
pub mod dsr;
pub mod dsr_connect;
pub mod init;
pub mod keys;
pub mod ledger;
pub mod lint;
pub mod openapi;
pub mod rules;
pub mod serve;
pub mod source;
