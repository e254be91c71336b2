//! The HTTP kit every feature's handlers share. So far: the JSON writer (`json`).

pub mod json;
