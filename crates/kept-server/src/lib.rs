//! Kept's HTTP server: the APIs, the pages, configuration and authentication.
//!
//! `router::router` builds the axum application (what tests drive with `oneshot`) over the
//! shared `state::AppState`; `server::Server` opens the store, binds and serves until a signal;
//! `config` is the layered configuration. Kits several features share (`http`, `web`,
//! `identity`, `subjects`, `index`) sit below the feature folders (`collect`, `decide`,
//! `consent`, `prefcenter`, `connect`, `admin`, `snippet`); ARCHITECTURE.md has the rule.

pub mod admin;
pub mod announce;
pub mod clock;
pub mod collect;
pub mod config;
pub mod connect;
pub mod consent;
pub mod console;
pub mod decide;
pub mod demo;
pub mod http;
pub mod identity;
pub mod index;
pub mod observe;
pub mod openapi;
pub mod prefcenter;
pub mod requests;
pub mod router;
pub mod server;
pub mod snippet;
pub mod state;
pub mod store;
pub mod subjects;
pub mod sync;
pub mod system;
pub mod web;

pub use config::Config;
pub use http::error::ApiError;
pub use router::router;
pub use server::{ServeError, Server, serve};
pub use state::AppState;
