//! The web page kit: what every server-rendered page shares, whichever feature serves it (the
//! preference center today, the admin console next): the frame and how a page is answered
//! (`frame`), cookies (`cookie`), signed-in sessions with their CSRF token and the same-site
//! check (`session`), form posts (`form`), the token buckets that slow sign-ins down (`limit`), the language a page speaks (`i18n`) and the pages'
//! words in each language (`texts`).

pub mod cookie;
pub mod form;
pub mod frame;
pub mod i18n;
pub mod limit;
pub mod session;
pub mod texts;
