//! Gates a data subject request puts on a subject's data: restriction (GDPR Art. 18),
//! objection (Art. 21), opt-out of sale or sharing (Cal. Civ. Code 1798.120) and the limit on
//! the use of sensitive data (1798.121). A gate is stored as its request said it
//! (`SubjectGate`), compiled against the manifest once (`GateRule`: a bit per purpose), and
//! read by the walk right after the subject gate, so checking one costs a bit test.
//!
//! What is never gated: uses necessary for the service (purposes of class `essential`) and
//! uses under a legal obligation where the subject is. Art. 18(2) and 21(1) leave them, and
//! 1798.121 limits sensitive data to what is necessary.

use super::compiled::{Compiled, PurposeId, Query, Requirement};
use super::{Evidence, ReasonCode};
use crate::UnixMillis;
use crate::manifest::{LegalBasis, is_within};
use crate::requests::RequestKind;
use crate::rulebook::PurposeClass;
use serde::{Deserialize, Serialize};

/// Which right a gate carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    /// Art. 18: the purposes (or categories) in scope; all but the necessary and legally
    /// obliged uses when the scope is empty. Can be lifted.
    Restriction,
    /// Art. 21: the purposes in scope; an objection to a direct-marketing purpose stops all
    /// direct marketing and the profiling related to it (21(2)-(3)).
    Objection,
    /// 1798.120: every purpose that sells or shares personal data.
    OptOutOfSale,
    /// 1798.121: every use of sensitive categories beyond what is necessary.
    LimitSensitive,
}

impl GateKind {
    pub const ALL: [GateKind; 4] = [
        GateKind::Restriction,
        GateKind::Objection,
        GateKind::OptOutOfSale,
        GateKind::LimitSensitive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GateKind::Restriction => "restriction",
            GateKind::Objection => "objection",
            GateKind::OptOutOfSale => "opt_out_of_sale",
            GateKind::LimitSensitive => "limit_sensitive",
        }
    }

    pub fn parse(s: &str) -> Option<GateKind> {
        GateKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The gate a request of `kind` puts on the subject, if it puts one.
    pub fn of(kind: RequestKind) -> Option<GateKind> {
        match kind {
            RequestKind::Restriction => Some(GateKind::Restriction),
            RequestKind::Objection => Some(GateKind::Objection),
            RequestKind::OptOut => Some(GateKind::OptOutOfSale),
            RequestKind::LimitSensitive => Some(GateKind::LimitSensitive),
            RequestKind::Access
            | RequestKind::Portability
            | RequestKind::Erasure
            | RequestKind::Rectification => None,
        }
    }

    /// The reason a decision it denies carries.
    pub fn reason(self) -> ReasonCode {
        match self {
            GateKind::Restriction => ReasonCode::DeniedRestrictedByRequest,
            GateKind::Objection => ReasonCode::DeniedObjectedByRequest,
            GateKind::OptOutOfSale => ReasonCode::DeniedOptedOutOfSale,
            GateKind::LimitSensitive => ReasonCode::DeniedSensitiveUseLimited,
        }
    }

    /// Whether the person (or the privacy team for them) may lift it. Only a restriction is
    /// temporary (Art. 18(3)); an objection or an opt-out stands until the person gives
    /// consent again, which is a new record, not the lifting of this one.
    pub fn can_lift(self) -> bool {
        self == GateKind::Restriction
    }
}

/// A gate as the store keeps it: what its request asked, from when.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubjectGate {
    /// The request that put it there.
    pub request: u64,
    pub subject: crate::SubjectId,
    pub kind: GateKind,
    /// Purpose keys of the request's scope (a key covers the purposes within it).
    pub purposes: Vec<String>,
    /// Category keys of the request's scope (a restriction only).
    pub categories: Vec<String>,
    pub since: UnixMillis,
}

/// A gate compiled against the manifest: which purposes it stops, as a bit per purpose id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateRule {
    pub request: u64,
    pub kind: GateKind,
    purposes: Box<[u64]>,
    /// Uses reading one of these categories (or one within them) are stopped too.
    categories: Box<[String]>,
}

impl GateRule {
    fn stops(&self, purpose: PurposeId) -> bool {
        let i = purpose.index();
        self.purposes
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    fn reads(&self, query: &Query) -> bool {
        !self.categories.is_empty()
            && query
                .categories
                .iter()
                .any(|c| self.categories.iter().any(|g| is_within(c, g)))
    }
}

impl Compiled {
    /// Whether a purpose sells or shares personal data: advertising, sale and sharing by its
    /// fideslang branch, or declared so by the manifest (`sale_or_sharing = true`).
    pub fn is_sale_or_sharing(&self, purpose: PurposeId) -> bool {
        self.purpose(purpose).is_some_and(|p| {
            p.class == PurposeClass::Advertising
                || self
                    .manifest()
                    .purposes
                    .get(&p.key)
                    .is_some_and(|m| m.sale_or_sharing)
        })
    }

    /// `gate` compiled: the purposes it stops. Keys the manifest does not know stop nothing
    /// (intake refuses them; a manifest that dropped a purpose since has nothing to stop).
    pub fn compile_gate(&self, gate: &SubjectGate) -> GateRule {
        let n = self.purposes.len();
        let mut bits = vec![0u64; n.div_ceil(64)];
        let mut set = |i: usize| {
            if let Some(w) = bits.get_mut(i / 64) {
                *w |= 1u64 << (i % 64);
            }
        };
        let in_scope = |key: &str| gate.purposes.iter().any(|p| is_within(key, p));
        let unscoped = gate.purposes.is_empty() && gate.categories.is_empty();
        let direct_marketing = gate.kind == GateKind::Objection
            && self
                .purposes
                .iter()
                .any(|p| in_scope(&p.key) && p.class.is_direct_marketing());
        for (i, p) in self.purposes.iter().enumerate() {
            let stopped = match gate.kind {
                GateKind::Restriction | GateKind::Objection => {
                    unscoped
                        || in_scope(&p.key)
                        || (direct_marketing
                            && (p.class.is_direct_marketing()
                                || p.class == PurposeClass::Personalize))
                }
                GateKind::OptOutOfSale => {
                    u16::try_from(i).is_ok_and(|id| self.is_sale_or_sharing(PurposeId(id)))
                }
                GateKind::LimitSensitive => true,
            };
            if stopped {
                set(i);
            }
        }
        GateRule {
            request: gate.request,
            kind: gate.kind,
            purposes: bits.into_boxed_slice(),
            categories: if gate.kind == GateKind::Restriction {
                gate.categories.clone().into_boxed_slice()
            } else {
                Box::default()
            },
        }
    }
}

/// Whether a use escapes every gate: necessary for the service, or under a legal obligation
/// where the subject is.
pub(crate) fn exempt(query: &Query, req: Option<&Requirement>) -> bool {
    query.class == PurposeClass::Essential
        || req.is_some_and(|r| r.basis == Some(LegalBasis::LegalObligation))
}

/// The first of `gates` (in the order of `GateKind::ALL`, then the request) that stops `query`,
/// with the request as evidence. `req` is the use's requirement where the subject is.
pub(crate) fn stopped_by(
    gates: &[GateRule],
    query: &Query,
    req: Option<&Requirement>,
) -> Option<(ReasonCode, Evidence)> {
    if gates.is_empty() || exempt(query, req) {
        return None;
    }
    gates
        .iter()
        .filter(|g| {
            let hit = g.stops(query.purpose) || g.reads(query);
            match g.kind {
                GateKind::LimitSensitive => query.sensitive && hit,
                _ => hit,
            }
        })
        .min_by_key(|g| (g.kind, g.request))
        .map(|g| (g.kind.reason(), Evidence::Request { id: g.request }))
}
