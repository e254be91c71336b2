//! Who a subject is: linking the identifiers collected messages carry to subjects, with the
//! guard rails (`link`), and finding the subject a caller names (`resolve`).

pub mod link;
pub mod resolve;
