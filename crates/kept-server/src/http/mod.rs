//! The HTTP kit every feature's handlers share: the one error-to-HTTP mapping (`error`), API
//! keys and roles (`auth`), the client's address behind proxies (`client_ip`), request bodies
//! read as their schemas' object shapes (`json_shape`), the limits of client input (`input`)
//! and the JSON writer (`json`).

pub mod auth;
pub mod client_ip;
pub mod error;
pub mod input;
pub mod json;
pub mod json_shape;
