//! Kept's HTTP server: the APIs, the pages, configuration and authentication.
//!
//! `app::router` builds the axum application (what tests drive with `oneshot`);
//! `server::Server` opens the store, binds and serves until a signal; `config` is the layered
//! configuration.

pub mod app;
pub mod auth;
pub mod client_ip;
pub mod collect;
pub mod config;
pub mod decision_log;
pub mod demo;
pub mod error;
pub mod forward;
pub mod http;
pub mod index;
pub mod input;
pub mod json_shape;
pub mod ledger;
pub mod observe;
pub mod openapi;
pub mod prefcenter;
pub mod resolve;
pub mod routes;
pub mod server;
pub mod snippet;
pub mod store;
pub mod sync;
pub mod uses;
pub mod witness;

pub use app::{AppState, router};
pub use config::Config;
pub use error::ApiError;
pub use server::{ServeError, Server, serve};
