//! The web page kit: what every server-rendered page shares, whichever feature serves it. The
//! pages' words in each language and the choice among them (`texts`).

pub mod texts;
