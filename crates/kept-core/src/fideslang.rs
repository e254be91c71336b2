//! The built-in vocabulary: fideslang data categories (what kind of data) and data uses (why it
//! is used). A manifest may add its own keys on top; these are the ones every Kept knows.
//!
//! Keys are hierarchical: `user.contact.email` is inside `user.contact`, and a statement about a
//! branch covers everything inside it.

/// A fideslang data category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataCategory {
    pub key: &'static str,
    pub name: &'static str,
    /// A special category (GDPR Art. 9 and 10) or CPRA "sensitive personal information":
    /// using it needs explicit consent. Everything inside a sensitive branch is sensitive too.
    pub sensitive: bool,
}

/// A fideslang data use (a purpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataUse {
    pub key: &'static str,
    pub name: &'static str,
}

const fn cat(key: &'static str, name: &'static str) -> DataCategory {
    DataCategory {
        key,
        name,
        sensitive: false,
    }
}

const fn sensitive(key: &'static str, name: &'static str) -> DataCategory {
    DataCategory {
        key,
        name,
        sensitive: true,
    }
}

const fn usage(key: &'static str, name: &'static str) -> DataUse {
    DataUse { key, name }
}

/// The fideslang 2 data categories Kept knows.
pub const DATA_CATEGORIES: &[DataCategory] = &[
    cat("system", "System data"),
    cat("system.authentication", "Authentication data"),
    cat("system.operations", "Operations data"),
    cat("user", "User data"),
    cat("user.account", "Account information"),
    cat("user.account.settings", "Account settings"),
    cat("user.account.username", "Account username"),
    cat("user.authorization", "Authorization information"),
    sensitive("user.authorization.credentials", "Account credentials"),
    sensitive("user.authorization.biometric", "Biometric credentials"),
    sensitive("user.authorization.password", "Password"),
    cat("user.behavior", "Observed behaviour"),
    cat("user.behavior.browsing_history", "Browsing history"),
    cat("user.behavior.media_consumption", "Media consumption"),
    cat("user.behavior.purchase_history", "Purchase history"),
    cat("user.behavior.search_history", "Search history"),
    sensitive("user.biometric", "Biometric data"),
    sensitive("user.biometric.fingerprint", "Fingerprint"),
    sensitive("user.biometric.retinal", "Retina scan"),
    sensitive("user.biometric.voice", "Voice recording"),
    sensitive("user.biometric.health", "Biometric health data"),
    sensitive("user.childrens", "Children's data"),
    cat("user.contact", "Contact data"),
    cat("user.contact.address", "Postal address"),
    cat("user.contact.address.city", "City"),
    cat("user.contact.address.country", "Country"),
    cat("user.contact.address.postal_code", "Postal code"),
    cat("user.contact.address.state", "State"),
    cat("user.contact.address.street", "Street"),
    cat("user.contact.email", "Email address"),
    cat("user.contact.phone_number", "Phone number"),
    cat("user.contact.fax_number", "Fax number"),
    cat("user.contact.url", "Website"),
    cat("user.contact.organization", "Organisation"),
    cat("user.content", "User content"),
    sensitive("user.content.private", "Private content"),
    cat("user.content.public", "Public content"),
    cat("user.content.self_image", "Photograph"),
    sensitive("user.criminal_history", "Criminal history"),
    cat("user.demographic", "Demographic data"),
    cat("user.demographic.age_range", "Age range"),
    cat("user.demographic.date_of_birth", "Date of birth"),
    cat("user.demographic.gender", "Gender"),
    cat("user.demographic.language", "Language"),
    cat("user.demographic.marital_status", "Marital status"),
    sensitive("user.demographic.political_opinion", "Political opinion"),
    cat("user.demographic.profile", "Profile and preferences"),
    sensitive("user.demographic.race_ethnicity", "Racial or ethnic origin"),
    sensitive("user.demographic.religious_belief", "Religious belief"),
    sensitive("user.demographic.sexual_orientation", "Sexual orientation"),
    cat("user.device", "Device data"),
    cat("user.device.cookie", "Cookie data"),
    cat("user.device.cookie_id", "Cookie id"),
    cat("user.device.device_id", "Device id"),
    cat("user.device.ip_address", "IP address"),
    sensitive("user.financial", "Financial data"),
    sensitive("user.financial.bank_account", "Bank account"),
    sensitive("user.financial.credit_card", "Credit card"),
    sensitive("user.government_id", "Government id"),
    sensitive("user.government_id.birth_certificate", "Birth certificate"),
    sensitive(
        "user.government_id.drivers_license_number",
        "Driving licence number",
    ),
    sensitive("user.government_id.immigration", "Immigration id"),
    sensitive(
        "user.government_id.national_identification_number",
        "National identification number",
    ),
    sensitive("user.government_id.passport_number", "Passport number"),
    sensitive(
        "user.government_id.vehicle_registration",
        "Vehicle registration",
    ),
    sensitive("user.health_and_medical", "Health and medical data"),
    sensitive("user.health_and_medical.genetic", "Genetic data"),
    sensitive(
        "user.health_and_medical.insurance_beneficiary_id",
        "Health insurance id",
    ),
    sensitive("user.health_and_medical.record_id", "Medical record id"),
    cat("user.job_title", "Job title"),
    cat("user.location", "Location"),
    cat("user.location.imprecise", "Approximate location"),
    sensitive("user.location.precise", "Precise location"),
    cat("user.name", "Name"),
    cat("user.name.first", "First name"),
    cat("user.name.last", "Last name"),
    cat("user.payment", "Payment data"),
    cat("user.privacy_preferences", "Privacy preferences"),
    cat("user.sensor", "Sensor data"),
    cat("user.social", "Social data"),
    cat("user.telemetry", "Telemetry"),
    cat("user.unique_id", "Unique id"),
    cat("user.unique_id.pseudonymous", "Pseudonymous id"),
    cat("user.user_sensor", "User sensor data"),
    cat("user.workplace", "Workplace"),
];

/// The fideslang 2 data uses Kept knows.
pub const DATA_USES: &[DataUse] = &[
    usage("analytics", "Analytics"),
    usage("analytics.reporting", "Reporting"),
    usage(
        "analytics.reporting.ad_performance",
        "Advertising performance",
    ),
    usage("analytics.reporting.campaign_insights", "Campaign insights"),
    usage(
        "analytics.reporting.content_performance",
        "Content performance",
    ),
    usage("analytics.reporting.system", "System activity"),
    usage(
        "analytics.reporting.system.performance",
        "System performance",
    ),
    usage("collect", "Collect"),
    usage("employment", "Employment"),
    usage("employment.recruitment", "Recruitment"),
    usage("essential", "Essential"),
    usage("essential.fraud_detection", "Fraud detection"),
    usage("essential.legal_obligation", "Legal obligation"),
    usage("essential.service", "Provide the service"),
    usage("essential.service.authentication", "Authentication"),
    usage("essential.service.notifications", "Service notifications"),
    usage(
        "essential.service.notifications.email",
        "Service notifications by email",
    ),
    usage(
        "essential.service.notifications.sms",
        "Service notifications by text message",
    ),
    usage("essential.service.operations", "Operations"),
    usage("essential.service.operations.improve", "Improve support"),
    usage("essential.service.operations.support", "Support"),
    usage("essential.service.payment_processing", "Payment processing"),
    usage("essential.service.security", "Security"),
    usage("essential.service.upgrades", "Service upgrades"),
    usage("finance", "Finance"),
    usage("functional", "Functional"),
    usage("functional.service", "Service functions"),
    usage("functional.service.improve", "Improve the service"),
    usage("functional.storage", "Local data storage"),
    usage("marketing", "Marketing"),
    usage("marketing.advertising", "Advertising"),
    usage(
        "marketing.advertising.first_party",
        "First-party advertising",
    ),
    usage(
        "marketing.advertising.first_party.contextual",
        "First-party contextual advertising",
    ),
    usage(
        "marketing.advertising.first_party.targeted",
        "First-party targeted advertising",
    ),
    usage(
        "marketing.advertising.frequency_capping",
        "Frequency capping",
    ),
    usage(
        "marketing.advertising.negative_targeting",
        "Negative targeting",
    ),
    usage(
        "marketing.advertising.profiling",
        "Profiling for advertising",
    ),
    usage("marketing.advertising.serving", "Serving ads"),
    usage(
        "marketing.advertising.third_party",
        "Third-party advertising",
    ),
    usage(
        "marketing.advertising.third_party.targeted",
        "Third-party targeted advertising",
    ),
    usage("marketing.communications", "Marketing communications"),
    usage("marketing.communications.email", "Marketing email"),
    usage("marketing.communications.sms", "Marketing text messages"),
    usage("operations", "Business operations"),
    usage("personalize", "Personalisation"),
    usage("personalize.content", "Content personalisation"),
    usage(
        "personalize.content.limited",
        "Limited content personalisation",
    ),
    usage(
        "personalize.content.profiled",
        "Profiled content personalisation",
    ),
    usage(
        "personalize.content.profiling",
        "Profiling for personalisation",
    ),
    usage("personalize.system", "System personalisation"),
    usage("sales", "Sales"),
    usage("third_party_sharing", "Third-party sharing"),
    usage(
        "third_party_sharing.legal_obligation",
        "Sharing for a legal obligation",
    ),
    usage("train_ai_system", "Train an AI system"),
];

/// The fideslang data category with this exact key.
pub fn data_category(key: &str) -> Option<&'static DataCategory> {
    DATA_CATEGORIES.iter().find(|c| c.key == key)
}

/// The fideslang data use with this exact key.
pub fn data_use(key: &str) -> Option<&'static DataUse> {
    DATA_USES.iter().find(|u| u.key == key)
}

/// Whether a built-in category is sensitive: it, or a branch it belongs to, is marked so.
/// Unknown keys are not judged here (the manifest's own categories say for themselves).
pub fn is_sensitive_category(key: &str) -> bool {
    DATA_CATEGORIES
        .iter()
        .any(|c| c.sensitive && crate::manifest::is_within(key, c.key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn keys_are_unique_and_every_parent_is_listed() {
        for (list, keys) in [
            (
                "categories",
                DATA_CATEGORIES.iter().map(|c| c.key).collect::<Vec<_>>(),
            ),
            ("uses", DATA_USES.iter().map(|u| u.key).collect::<Vec<_>>()),
        ] {
            let set: BTreeSet<_> = keys.iter().copied().collect();
            assert_eq!(set.len(), keys.len(), "duplicate key in {list}");
            for key in &keys {
                if let Some((parent, _)) = key.rsplit_once('.') {
                    assert!(set.contains(parent), "{key} has no parent in {list}");
                }
            }
        }
    }

    #[test]
    fn sensitivity_follows_the_branch() {
        assert!(is_sensitive_category("user.health_and_medical"));
        assert!(is_sensitive_category("user.health_and_medical.genetic"));
        assert!(is_sensitive_category("user.location.precise"));
        assert!(!is_sensitive_category("user.location.imprecise"));
        assert!(!is_sensitive_category("user.contact.phone_number"));
        assert!(!is_sensitive_category("user.demographic"));
        assert!(is_sensitive_category("user.demographic.religious_belief"));
    }
}
