//! First-party collection's pure parts: the Segment message model and its checks (`message`),
//! the consent an event carries and what it permits (`consent`), and what it adds to a profile
//! and for how long (`profile`). The server does the I/O around them.

pub mod consent;
pub mod message;
pub mod profile;

pub use consent::{
    ConsentChange, ConsentSnapshot, CurrentConsent, PurposeChoices, consent_changes, level_of,
    purpose_choices, usable_purposes,
};
pub use message::{
    Context, FieldError, Message, MessageError, MessageKind, field_path, parse_message,
    parse_message_json, parse_time,
};
pub use profile::{
    COLLECTION_SOURCE, IDENTIFIER_TRAITS, Location, TraitCutoffs, UNMAPPED_CATEGORY, event_cutoff,
    event_retain_until, location, profile_traits, trait_cutoffs,
};
