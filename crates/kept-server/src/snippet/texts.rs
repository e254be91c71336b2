//! The banner's own words (buttons, headings) in the languages Kept ships. The purposes and
//! notices come from the manifest; these are the frame around them.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Texts {
    pub title: &'static str,
    pub intro: String,
    pub accept: &'static str,
    pub reject: &'static str,
    pub choose: &'static str,
    pub save: &'static str,
    /// The link that reopens the choices once made.
    pub manage: &'static str,
    pub do_not_sell: &'static str,
    /// Shown once the visitor opted out of sale and sharing.
    pub opted_out: &'static str,
    /// Shown when the browser sends Global Privacy Control.
    pub gpc: &'static str,
    /// Said of contract and legal-obligation uses, which are not asked about.
    pub essential: &'static str,
}

struct Words {
    title: &'static str,
    /// `{org}` is replaced with the organisation's name.
    intro: &'static str,
    accept: &'static str,
    reject: &'static str,
    choose: &'static str,
    save: &'static str,
    manage: &'static str,
    do_not_sell: &'static str,
    opted_out: &'static str,
    gpc: &'static str,
    essential: &'static str,
}

const EN: Words = Words {
    title: "Your privacy choices",
    intro: "{org} uses your data for the purposes below only if you agree. You can change your mind at any time.",
    accept: "Accept all",
    reject: "Reject all",
    choose: "Choose",
    save: "Save choices",
    manage: "Privacy choices",
    do_not_sell: "Do not sell or share my personal information",
    opted_out: "You have opted out of the sale and sharing of your personal information.",
    gpc: "Your browser's Global Privacy Control signal is honoured: your personal information is not sold or shared.",
    essential: "What is needed to run the site and deliver your orders is always on.",
};

const DE: Words = Words {
    title: "Ihre Datenschutzeinstellungen",
    intro: "{org} verwendet Ihre Daten für die folgenden Zwecke nur mit Ihrer Einwilligung. Sie können Ihre Entscheidung jederzeit ändern.",
    accept: "Alle akzeptieren",
    reject: "Alle ablehnen",
    choose: "Auswählen",
    save: "Auswahl speichern",
    manage: "Datenschutzeinstellungen",
    do_not_sell: "Meine personenbezogenen Daten nicht verkaufen oder weitergeben",
    opted_out: "Sie haben dem Verkauf und der Weitergabe Ihrer personenbezogenen Daten widersprochen.",
    gpc: "Das Global-Privacy-Control-Signal Ihres Browsers wird beachtet: Ihre personenbezogenen Daten werden weder verkauft noch weitergegeben.",
    essential: "Was für den Betrieb der Website und die Lieferung Ihrer Bestellungen nötig ist, bleibt immer aktiv.",
};

const FR: Words = Words {
    title: "Vos choix de confidentialité",
    intro: "{org} n'utilise vos données pour les finalités ci-dessous qu'avec votre accord. Vous pouvez changer d'avis à tout moment.",
    accept: "Tout accepter",
    reject: "Tout refuser",
    choose: "Choisir",
    save: "Enregistrer mes choix",
    manage: "Choix de confidentialité",
    do_not_sell: "Ne pas vendre ni partager mes informations personnelles",
    opted_out: "Vous vous êtes opposé à la vente et au partage de vos informations personnelles.",
    gpc: "Le signal Global Privacy Control de votre navigateur est respecté : vos informations personnelles ne sont ni vendues ni partagées.",
    essential: "Ce qui est nécessaire au fonctionnement du site et à la livraison de vos commandes reste toujours actif.",
};

const ES: Words = Words {
    title: "Tus opciones de privacidad",
    intro: "{org} solo usa tus datos para los fines siguientes si lo aceptas. Puedes cambiar de opinión en cualquier momento.",
    accept: "Aceptar todo",
    reject: "Rechazar todo",
    choose: "Elegir",
    save: "Guardar selección",
    manage: "Opciones de privacidad",
    do_not_sell: "No vender ni compartir mi información personal",
    opted_out: "Te has opuesto a la venta y el uso compartido de tu información personal.",
    gpc: "Se respeta la señal Global Privacy Control de tu navegador: tu información personal no se vende ni se comparte.",
    essential: "Lo necesario para que funcione el sitio y se entreguen tus pedidos está siempre activo.",
};

/// The words for `locale` (its primary language; English when Kept has no translation).
pub fn for_locale(locale: &str, organisation: &str) -> Texts {
    let primary = locale
        .split(['-', '_'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let w = match primary.as_str() {
        "de" => &DE,
        "fr" => &FR,
        "es" => &ES,
        _ => &EN,
    };
    Texts {
        title: w.title,
        intro: w.intro.replace("{org}", organisation),
        accept: w.accept,
        reject: w.reject,
        choose: w.choose,
        save: w.save,
        manage: w.manage,
        do_not_sell: w.do_not_sell,
        opted_out: w.opted_out,
        gpc: w.gpc,
        essential: w.essential,
    }
}
